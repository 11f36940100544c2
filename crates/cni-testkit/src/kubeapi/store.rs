//! The server's state: nodes (serialized once per change), the event history, list snapshots.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::node::{FakeNode, Identity};
use super::query::{continue_token, parse_continue, Failure, Filter, ListQuery};

/// A node's JSON without `kind` and `apiVersion` (as list items carry it); watch events add them.
pub(super) type Json = Arc<[u8]>;

/// How many list snapshots (consistent states that continue tokens page through) are kept.
const SNAPSHOTS: usize = 8;

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a \
    consistent list result. You can start a new list without the continue parameter.";

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Added,
    Modified,
    Deleted,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Added => "ADDED",
            Kind::Modified => "MODIFIED",
            Kind::Deleted => "DELETED",
        }
    }
}

/// One change, as watchers are sent it.
#[derive(Debug, Clone)]
pub(super) struct Event {
    pub resource_version: u64,
    pub kind: Kind,
    pub name: Arc<str>,
    pub json: Json,
}

struct Stored {
    node: FakeNode,
    name: Arc<str>,
    /// The version of its last change, which its JSON carries.
    resource_version: u64,
    id: Identity,
    json: Json,
}

/// A consistent state: every node's name and JSON, sorted by name.
type Snapshot = Arc<Vec<(Arc<str>, Json)>>;

/// One page of a list.
pub(super) struct Page {
    pub resource_version: u64,
    pub items: Vec<Json>,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

pub(super) struct Store {
    /// The global version: that of the last change (1 before any).
    pub resource_version: u64,
    /// Lists and watches from an older version get 410 Gone.
    pub compacted: u64,
    nodes: BTreeMap<String, Stored>,
    /// Every change after `compacted`, in order (and older ones a live watcher still needs).
    history: Vec<Event>,
    snapshots: VecDeque<(u64, Snapshot)>,
    /// Where each open watch stands: the history it has not been sent yet is kept.
    cursors: HashMap<u64, u64>,
}

fn serialize(node: &FakeNode, resource_version: u64, id: &Identity) -> Json {
    let bytes = serde_json::to_vec(&node.object(resource_version, id)).expect("node serializes");
    bytes.into()
}

impl Store {
    pub fn new() -> Store {
        Store {
            resource_version: 1,
            compacted: 0,
            nodes: BTreeMap::new(),
            history: Vec::new(),
            snapshots: VecDeque::new(),
            cursors: HashMap::new(),
        }
    }

    /// Creates or replaces the node; its new version.
    pub fn put(&mut self, node: FakeNode) -> u64 {
        self.resource_version += 1;
        let rv = self.resource_version;
        let (kind, id, name) = match self.nodes.get(&node.name) {
            Some(old) => (Kind::Modified, old.id.clone(), old.name.clone()),
            None => (
                Kind::Added,
                Identity::fresh(&node.name, rv),
                node.name.as_str().into(),
            ),
        };
        let json = serialize(&node, rv, &id);
        self.history.push(Event {
            resource_version: rv,
            kind,
            name: Arc::clone(&name),
            json: Arc::clone(&json),
        });
        let stored = Stored {
            node,
            name,
            resource_version: rv,
            id,
            json,
        };
        self.nodes.insert(stored.node.name.clone(), stored);
        rv
    }

    pub fn delete(&mut self, name: &str) -> Option<u64> {
        let stored = self.nodes.remove(name)?;
        self.resource_version += 1;
        let rv = self.resource_version;
        self.history.push(Event {
            resource_version: rv,
            kind: Kind::Deleted,
            name: stored.name,
            json: serialize(&stored.node, rv, &stored.id),
        });
        Some(rv)
    }

    pub fn node(&self, name: &str) -> Option<FakeNode> {
        self.nodes.get(name).map(|s| s.node.clone())
    }

    pub fn json(&self, name: &str) -> Option<Json> {
        self.nodes.get(name).map(|s| Arc::clone(&s.json))
    }

    pub fn names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    pub fn compact(&mut self) {
        self.compacted = self.resource_version;
        self.snapshots.retain(|(rv, _)| *rv >= self.compacted);
        self.trim();
    }

    /// Drops the history no watch can ask for any more.
    fn trim(&mut self) {
        let floor = self.cursors.values().copied().min().unwrap_or(u64::MAX);
        let floor = floor.min(self.compacted);
        let n = self
            .history
            .partition_point(|e| e.resource_version <= floor);
        self.history.drain(..n);
    }

    /// The 410 message for a version older than the compaction point.
    pub fn too_old(&self, resource_version: u64) -> Option<Failure> {
        (resource_version < self.compacted).then(|| {
            let message = format!(
                "too old resource version: {resource_version} ({})",
                self.compacted
            );
            (410, message)
        })
    }

    /// The changes after `after` that pass `filter`, in order.
    pub fn events_after(&self, after: u64, filter: &Filter) -> Vec<Event> {
        let from = self
            .history
            .partition_point(|e| e.resource_version <= after);
        let events = self.history[from..].iter();
        events
            .filter(|e| filter.matches(&e.name))
            .cloned()
            .collect()
    }

    /// The current state as ADDED events (what a watch from no version starts with).
    pub fn current_as_added(&self, filter: &Filter) -> Vec<Event> {
        let nodes = self.nodes.values().filter(|s| filter.matches(&s.name));
        let event = |s: &Stored| Event {
            resource_version: s.resource_version,
            kind: Kind::Added,
            name: Arc::clone(&s.name),
            json: Arc::clone(&s.json),
        };
        nodes.map(event).collect()
    }

    /// Records where watch `id` stands (`None`: it ended).
    pub fn set_cursor(&mut self, id: u64, cursor: Option<u64>) {
        match cursor {
            Some(c) => self.cursors.insert(id, c),
            None => self.cursors.remove(&id),
        };
        if self
            .history
            .first()
            .is_some_and(|e| e.resource_version <= self.compacted)
        {
            self.trim();
        }
    }

    /// One page of the list `q` asks for.
    pub fn list(&mut self, q: &ListQuery) -> Result<Page, Failure> {
        let (resource_version, snapshot, start) = match &q.continue_token {
            Some(token) => {
                let invalid = || (400, format!("continue key is not valid: {token:?}"));
                let (rv, start) = parse_continue(token).ok_or_else(invalid)?;
                let expired = || (410, CONTINUE_EXPIRED.to_string());
                if rv < self.compacted {
                    return Err(expired());
                }
                let snapshot = self.snapshots.iter().find(|(v, _)| *v == rv);
                let snapshot = match snapshot {
                    Some((_, s)) => Arc::clone(s),
                    None if rv == self.resource_version => self.snapshot(),
                    None => return Err(expired()),
                };
                (rv, snapshot, start)
            }
            None => {
                if let Some(failure) = q.resource_version.and_then(|rv| self.too_old(rv)) {
                    return Err(failure);
                }
                (self.resource_version, self.snapshot(), String::new())
            }
        };
        Ok(page(&snapshot, resource_version, &start, q))
    }

    /// The current state, shared by every list at this version.
    fn snapshot(&mut self) -> Snapshot {
        if let Some((_, s)) = self
            .snapshots
            .iter()
            .find(|(v, _)| *v == self.resource_version)
        {
            return Arc::clone(s);
        }
        let all = self.nodes.values();
        let snapshot: Snapshot = Arc::new(
            all.map(|s| (Arc::clone(&s.name), Arc::clone(&s.json)))
                .collect(),
        );
        if self.snapshots.len() == SNAPSHOTS {
            self.snapshots.pop_front();
        }
        let entry = (self.resource_version, Arc::clone(&snapshot));
        self.snapshots.push_back(entry);
        snapshot
    }
}

/// The items of `snapshot` from `start` on that pass the filter, at most `limit`.
fn page(snapshot: &Snapshot, resource_version: u64, start: &str, q: &ListQuery) -> Page {
    let from = snapshot.partition_point(|(name, _)| &**name < start);
    let limit = q.limit.unwrap_or(usize::MAX);
    let mut items = Vec::new();
    let mut last: Option<&str> = None;
    let mut more_at = None;
    for (i, (name, json)) in snapshot[from..].iter().enumerate() {
        if !q.filter.matches(name) {
            continue;
        }
        if items.len() == limit {
            more_at = Some(from + i);
            break;
        }
        items.push(Arc::clone(json));
        last = Some(name);
    }
    let (continue_token, remaining) = match (more_at, last) {
        (Some(at), Some(last)) => {
            let token = continue_token(resource_version, &format!("{last}\0"));
            let remaining = q.filter.is_empty().then(|| snapshot.len() - at);
            (Some(token), remaining)
        }
        _ => (None, None),
    };
    Page {
        resource_version,
        items,
        continue_token,
        remaining,
    }
}
