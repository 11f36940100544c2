//! The query parameters of list and watch requests: versions, pages, selectors.

use std::time::Duration;

use serde_json::{json, Value};

use super::http::Request;
use super::node::node_labels;

/// How long a watch lasts when the client gives no `timeoutSeconds` (or 0).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// A failure to answer with a Status: HTTP code and message.
pub(super) type Failure = (u16, String);

/// `resourceVersion` as a number; absent, empty and "0" (any version) are `None`.
fn resource_version(req: &Request) -> Result<Option<u64>, Failure> {
    match req.param("resourceVersion") {
        None | Some("") | Some("0") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            let message = format!("resourceVersion: Invalid value: {v:?}: must be a number");
            (400, message)
        }),
    }
}

/// Go's `strconv.ParseBool`, which the API server parses booleans with.
fn boolean(req: &Request, key: &str) -> Result<bool, Failure> {
    match req.param(key) {
        None | Some("") => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(v) => Err((400, format!("{key}: Invalid value: {v:?}: not a boolean"))),
    }
}

fn number(req: &Request, key: &str) -> Result<Option<u64>, Failure> {
    req.param(key)
        .filter(|v| !v.is_empty())
        .map(|v| v.parse())
        .transpose()
        .map_err(|_| {
            (
                400,
                format!("{key}: Invalid value: must be a non-negative number"),
            )
        })
}

/// Whether the request asks for a watch (`watch=true`, `watch=1`, ...).
pub(super) fn is_watch(req: &Request) -> Result<bool, Failure> {
    boolean(req, "watch")
}

/// A list request's parameters.
pub(super) struct ListQuery {
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<u64>,
    pub filter: Filter,
}

impl ListQuery {
    pub fn parse(req: &Request, name: Option<&str>) -> Result<ListQuery, Failure> {
        let limit = number(req, "limit")?.filter(|&n| n > 0);
        Ok(ListQuery {
            limit: limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            continue_token: req
                .param("continue")
                .filter(|c| !c.is_empty())
                .map(Into::into),
            resource_version: resource_version(req)?,
            filter: Filter::parse(req, name),
        })
    }
}

/// A watch request's parameters.
pub(super) struct WatchQuery {
    /// Replay what happened after this version; `None`: start with the current state.
    pub resource_version: Option<u64>,
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: the current state, then a bookmark marking its end.
    pub initial_events: bool,
    pub timeout: Duration,
    pub filter: Filter,
}

impl WatchQuery {
    pub fn parse(req: &Request, name: Option<&str>) -> Result<WatchQuery, Failure> {
        let timeout = number(req, "timeoutSeconds")?
            .filter(|&s| s > 0)
            .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
        Ok(WatchQuery {
            resource_version: resource_version(req)?,
            bookmarks: boolean(req, "allowWatchBookmarks")?,
            initial_events: boolean(req, "sendInitialEvents")?,
            timeout,
            filter: Filter::parse(req, name),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Exists,
    Absent,
}

/// One `key=value`, `key!=value`, `key` or `!key` requirement.
#[derive(Debug, Clone)]
struct Requirement {
    key: String,
    op: Op,
    value: String,
}

impl Requirement {
    /// `None` for what is not understood (set-based `in`/`notin`): such requirements match
    /// everything, which is harmless for a test double.
    fn parse(text: &str) -> Option<Requirement> {
        let text = text.trim();
        if text.is_empty() || text.contains('(') {
            return None;
        }
        let req = |key: &str, op, value: &str| {
            Some(Requirement {
                key: key.trim().to_string(),
                op,
                value: value.trim().to_string(),
            })
        };
        if let Some((k, v)) = text.split_once("!=") {
            req(k, Op::Ne, v)
        } else if let Some((k, v)) = text.split_once("==") {
            req(k, Op::Eq, v)
        } else if let Some((k, v)) = text.split_once('=') {
            req(k, Op::Eq, v)
        } else if let Some(k) = text.strip_prefix('!') {
            req(k, Op::Absent, "")
        } else {
            req(text, Op::Exists, "")
        }
    }

    fn matches(&self, value: Option<&str>) -> bool {
        match self.op {
            Op::Eq => value == Some(self.value.as_str()),
            Op::Ne => value != Some(self.value.as_str()),
            Op::Exists => value.is_some(),
            Op::Absent => value.is_none(),
        }
    }
}

/// `labelSelector` and the `metadata.name` part of `fieldSelector` (other fields are ignored);
/// `/api/v1/nodes/NAME` requests filter on the name too.
#[derive(Debug, Clone, Default)]
pub(super) struct Filter {
    labels: Vec<Requirement>,
    names: Vec<Requirement>,
}

impl Filter {
    fn parse(req: &Request, name: Option<&str>) -> Filter {
        let labels = split_selector(req.param("labelSelector").unwrap_or(""))
            .filter_map(Requirement::parse)
            .collect();
        let mut names: Vec<Requirement> = split_selector(req.param("fieldSelector").unwrap_or(""))
            .filter_map(Requirement::parse)
            .filter(|r| r.key == "metadata.name" && matches!(r.op, Op::Eq | Op::Ne))
            .collect();
        if let Some(name) = name {
            names.push(Requirement {
                key: "metadata.name".into(),
                op: Op::Eq,
                value: name.into(),
            });
        }
        Filter { labels, names }
    }

    /// Whether it filters nothing out (lists then report `remainingItemCount`).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.names.is_empty()
    }

    /// Whether the node of that name passes (its labels depend on the name only).
    pub fn matches(&self, name: &str) -> bool {
        if !self.names.iter().all(|r| r.matches(Some(name))) {
            return false;
        }
        if self.labels.is_empty() {
            return true;
        }
        let labels = node_labels(name);
        self.labels.iter().all(|r| {
            let value = labels.iter().find(|(k, _)| *k == r.key);
            r.matches(value.map(|(_, v)| v.as_str()))
        })
    }
}

/// Requirements separated by commas outside parentheses (`a=b,c in (d,e)`).
fn split_selector(selector: &str) -> impl Iterator<Item = &str> {
    let mut depth = 0i32;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    parts.into_iter()
}

/// A continue token like the real server's: base64url of
/// `{"v":"meta.k8s.io/v1","rv":N,"start":"NAME\u0000"}` (clients treat it as opaque).
pub(super) fn continue_token(resource_version: u64, start: &str) -> String {
    let key = json!({ "v": "meta.k8s.io/v1", "rv": resource_version, "start": start });
    base64url(key.to_string().as_bytes())
}

/// The version and start key of a continue token.
pub(super) fn parse_continue(token: &str) -> Option<(u64, String)> {
    let key: Value = serde_json::from_slice(&unbase64url(token)?).ok()?;
    if key["v"] != "meta.k8s.io/v1" {
        return None;
    }
    Some((key["rv"].as_u64()?, key["start"].as_str()?.to_string()))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Unpadded base64url (padding and the standard alphabet are accepted too).
fn unbase64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'+' => 62,
            b'/' => 63,
            _ => B64.iter().position(|&b| b == c)? as u32,
        };
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeapi::http::parse_query;

    fn request(query: &str) -> Request {
        Request {
            method: "GET".into(),
            path: "/api/v1/nodes".into(),
            query: parse_query(query),
            authorization: None,
            keep_alive: true,
        }
    }

    #[test]
    fn kubeapi_query_tokens_and_selectors() {
        for start in ["", "a", "node-0001\0", "ab", "abc"] {
            let token = continue_token(42, start);
            assert!(!token.contains(['+', '/', '=']), "{token}");
            assert_eq!(parse_continue(&token), Some((42, start.to_string())));
        }
        assert_eq!(parse_continue("garbage!"), None);
        let q =
            request("fieldSelector=metadata.name%3Dn1&labelSelector=kubernetes.io%2Fos%3Dlinux");
        let f = ListQuery::parse(&q, None).unwrap().filter;
        assert!(f.matches("n1") && !f.matches("n2"));
        let f = ListQuery::parse(&request("labelSelector=kubernetes.io/os!=linux"), None)
            .unwrap()
            .filter;
        assert!(!f.matches("n1"));
        let q = request("labelSelector=a+in+(x,y),!missing,kubernetes.io/hostname");
        assert!(ListQuery::parse(&q, None).unwrap().filter.matches("n1"));
        let w = WatchQuery::parse(&request("watch=1&resourceVersion=0&timeoutSeconds=5"), None);
        let w = w.unwrap();
        assert_eq!(
            (w.resource_version, w.timeout),
            (None, Duration::from_secs(5))
        );
        assert!(WatchQuery::parse(&request("allowWatchBookmarks=yes"), None).is_err());
        assert_eq!(
            ListQuery::parse(&request("resourceVersion=12&limit=3"), None)
                .map(|q| (q.resource_version, q.limit))
                .unwrap(),
            (Some(12), Some(3))
        );
    }
}
