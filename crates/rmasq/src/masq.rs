//! [`Masq`]: setup, teardown, check, GC and status of one node's masquerade, over the state
//! dir (`state`) and the backends (`backend`).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;

use cni_netlink::netfilter::Netfilter;
use cni_types::error::{CniError, Result, CHECK_MISMATCH, PLUGIN_NOT_AVAILABLE};
use cni_types::Attachment;
use ipnet::IpNet;

use crate::backend::{self, backend, detect, Plan};
use crate::class::{BackendKind, Class, Options};
use crate::fingerprint::{fingerprint, unchanged};
use crate::state::{self, Entry, Locked, Record, Store};

/// Where state lives unless configured otherwise (`stateDir`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/rmasq";

/// Masquerade state of one node (one state dir and the firewall of the current netns).
#[derive(Debug, Clone)]
pub struct Masq {
    store: Store,
}

fn same_addrs(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.iter().collect::<HashSet<_>>() == b.iter().collect::<HashSet<_>>()
}

impl Masq {
    pub fn new(state_dir: impl Into<PathBuf>) -> Masq {
        Masq {
            store: Store::new(state_dir),
        }
    }

    pub fn state_dir(&self) -> &std::path::Path {
        self.store.dir()
    }

    /// The backend `opts` asks for, or the node's (detected once, then remembered in the state
    /// dir so every pod of the node agrees; delete `default-backend` there to detect again).
    fn resolve_backend(&self, opts: &Options) -> Result<BackendKind> {
        if let Some(b) = opts.backend {
            return Ok(b);
        }
        let path = self.store.default_backend_path();
        if let Ok(text) = std::fs::read_to_string(&path) {
            match text.trim() {
                "nftables" => return Ok(BackendKind::Nftables),
                "iptables" => return Ok(BackendKind::Iptables),
                _ => {}
            }
        }
        let kind = detect()?;
        let _ = std::fs::create_dir_all(self.store.dir());
        let _ = std::fs::write(&path, kind.as_str());
        Ok(kind)
    }

    pub(crate) fn classes_for(
        &self,
        backend: BackendKind,
        network: &str,
        addrs: &[IpNet],
        opts: &Options,
    ) -> Vec<(Class, IpAddr)> {
        let mut out: Vec<(Class, IpAddr)> = Vec::new();
        for a in addrs {
            if out.iter().any(|(_, x)| *x == a.addr()) {
                continue;
            }
            out.push((Class::new(backend, network, *a, addrs, opts), a.addr()));
        }
        out
    }

    /// Masquerades traffic from `addrs` (the pod's addresses with their prefixes) leaving the
    /// non-masquerade destinations. Repeating it for the same attachment replaces what it set.
    pub fn setup(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
        addrs: &[IpNet],
        opts: &Options,
    ) -> Result<()> {
        cni_types::validate::network_name(network)?;
        if addrs.is_empty() {
            return Err(CniError::invalid_config(
                "the pod has no IP address to masquerade",
            ));
        }
        // Declared before the lock, so the socket closes after it is released (see `apply`).
        let mut nl = None;
        let l = self.store.lock()?;
        // Under the lock, so concurrent first ADDs agree on the detected backend.
        let kind = self.resolve_backend(opts)?;
        let pairs = self.classes_for(kind, network, addrs, opts);
        if let Some(old) = self.own_record(&l, network, container_id, ifname)? {
            // ADD again without DEL (a retried ADD): start from a clean slate, unless it asks
            // for exactly what is there (a retried ADD that got the same addresses), which is
            // then re-applied without being removed first: a live pod's traffic keeps its
            // masquerade throughout.
            let same = old.backend == kind
                && old.entries.len() == pairs.len()
                && pairs.iter().all(|(c, a)| {
                    old.entries
                        .iter()
                        .any(|e| e.class == c.id && e.address == *a)
                });
            if !same {
                self.teardown_locked(&l, &mut nl, &old)?;
            }
        }
        let owner = state::owner_key(network, container_id, ifname);
        let (plan, unsaved) = setup_plan(&l, kind, &pairs)?;
        if let Err(e) = self.apply(&l, &mut nl, kind, &plan) {
            undo(&l, &mut nl, kind, &plan, &owner)?;
            return Err(e);
        }
        // Class specs first, then the record, then ownership: after a crash at any point, DEL
        // still finds enough to remove what was added (see state.rs).
        for c in unsaved {
            l.put_class(c)?;
        }
        l.put_record(&Record {
            network: network.to_string(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            backend: kind,
            entries: pairs
                .iter()
                .map(|(c, a)| Entry {
                    class: c.id.clone(),
                    address: *a,
                })
                .collect(),
        })?;
        for (c, addr) in &pairs {
            l.add_owner(&c.id, *addr, &owner)?;
        }
        Ok(())
    }

    /// Applies `plan` to the firewall. When every class it touches exists already (every pod
    /// after a class's first, every DEL but a class's last), no process runs: nftables set
    /// elements change over netlink after a netlink check of the classes' rules, and the
    /// classes' iptables rules (nat rules of the iptables backend, forward accepts) are checked
    /// with `iptables` only if the chains they live in changed since they were last written or
    /// checked (see the fingerprint module). Otherwise, or if that fast path fails, the backend
    /// writes everything it is responsible for, as on a class's first ADD.
    ///
    /// `nl` is the call's netfilter socket, opened here when first needed. Callers keep it
    /// past their lock: closing a netfilter socket waits until nf_tables has freed what
    /// recent transactions removed (an RCU grace period after a DEL's element removal), and
    /// that wait must not hold up other pods' calls.
    fn apply(
        &self,
        l: &Locked<'_>,
        nl: &mut Option<Netfilter>,
        kind: BackendKind,
        plan: &Plan,
    ) -> Result<()> {
        let with_iptables: Vec<&Class> = plan
            .ensure
            .iter()
            .map(|(c, _)| c)
            .filter(|c| backend::has_rules(c))
            .collect();
        if nl.is_none() && (kind == BackendKind::Nftables || !with_iptables.is_empty()) {
            *nl = Netfilter::open().ok();
        }
        let fingerprint_of =
            |nl: &mut Option<Netfilter>, c: &Class| nl.as_mut().and_then(|nl| fingerprint(nl, c));
        let classes_exist = plan.drop.is_empty() && plan.ensure.iter().all(|(_, fresh)| !fresh);
        let fast = classes_exist
            && match kind {
                BackendKind::Nftables => nl
                    .as_mut()
                    .is_some_and(|nl| backend::update_elements(nl, plan).is_ok()),
                // Pods are not in the iptables rules: nothing to do per pod.
                BackendKind::Iptables => true,
            };
        if !fast {
            backend(kind).apply(plan, nl)?;
            for c in with_iptables {
                if let Some(fp) = fingerprint_of(nl, c) {
                    l.put_verified(&c.id, &fp);
                }
            }
            return Ok(());
        }
        for c in with_iptables {
            let verdict = match (nl.as_mut(), l.verified(&c.id)) {
                (Some(nl), Some(stored)) => unchanged(nl, c, &stored),
                _ => None,
            };
            match verdict {
                Some(None) => continue,
                Some(Some(fresh)) => {
                    l.put_verified(&c.id, &fresh);
                    continue;
                }
                None => {}
            }
            backend::ensure_existing(c, nl)?;
            if let Some(fp) = fingerprint_of(nl, c) {
                l.put_verified(&c.id, &fp);
            }
        }
        Ok(())
    }

    /// Removes what the attachment added, unless another attachment owns it too. Succeeds if
    /// there is nothing to remove.
    pub fn teardown(&self, network: &str, container_id: &str, ifname: &str) -> Result<()> {
        cni_types::validate::network_name(network)?;
        let mut nl = None;
        let l = self.store.lock()?;
        match self.own_record(&l, network, container_id, ifname)? {
            Some(r) => self.teardown_locked(&l, &mut nl, &r),
            None => Ok(()),
        }
    }

    /// The attachment's record. A corrupt one cannot be acted upon: it is dropped (which keeps
    /// DEL idempotent and lets a retried ADD start afresh), and GC's orphan sweep removes what
    /// it referenced.
    fn own_record(
        &self,
        l: &Locked<'_>,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<Record>> {
        match l.record(network, container_id, ifname) {
            Err(e) if e.code == cni_types::error::DECODING_FAILURE => {
                let _ = std::fs::remove_file(
                    self.store
                        .dir()
                        .join("attachments")
                        .join(network)
                        .join(format!("{container_id}:{ifname}")),
                );
                Ok(None)
            }
            other => other,
        }
    }

    fn teardown_locked(
        &self,
        l: &Locked<'_>,
        nl: &mut Option<Netfilter>,
        r: &Record,
    ) -> Result<()> {
        let owner = r.owner();
        let mut plan = Plan::default();
        let mut leaving: Vec<(String, Vec<IpAddr>)> = Vec::new();
        for e in &r.entries {
            let Some(c) = l.class(&e.class)? else {
                continue;
            };
            if l.other_owners(&e.class, e.address, &owner)? {
                continue;
            }
            plan.remove.push((c, e.address));
            match leaving.iter_mut().find(|(id, _)| *id == e.class) {
                Some((_, addrs)) => addrs.push(e.address),
                None => leaving.push((e.class.clone(), vec![e.address])),
            }
        }
        for (id, addrs) in &leaving {
            if !l.other_members(id, addrs)? {
                if let Some(c) = l.class(id)? {
                    plan.drop.push(c);
                }
            }
        }
        if !plan.remove.is_empty() || !plan.drop.is_empty() {
            plan.live = l
                .classes(r.backend)?
                .into_iter()
                .filter(|c| !plan.drop.iter().any(|d| d.id == c.id))
                .collect();
            self.apply(l, nl, r.backend, &plan)?;
        }
        for e in &r.entries {
            l.remove_owner(&e.class, e.address, &owner)?;
        }
        for c in &plan.drop {
            l.remove_class(&c.id)?;
        }
        l.remove_record(r)
    }

    /// Checks that what setup added is still in place (code 102 otherwise). With `addrs`, also
    /// that they, `opts` and the recorded state agree.
    pub fn check(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
        addrs: Option<&[IpNet]>,
        opts: &Options,
    ) -> Result<()> {
        cni_types::validate::network_name(network)?;
        let l = self.store.lock()?;
        let Some(r) = l.record(network, container_id, ifname)? else {
            return Err(CniError::new(
                CHECK_MISMATCH,
                format!(
                    "no masquerade state for container {container_id} ifname {ifname} in network {network} (state dir {}): ADD did not run here or its state was lost",
                    self.store.dir().display()
                ),
            ));
        };
        if let Some(addrs) = addrs {
            let want: Vec<IpAddr> = addrs.iter().map(IpNet::addr).collect();
            let have: Vec<IpAddr> = r.entries.iter().map(|e| e.address).collect();
            if !same_addrs(&want, &have) {
                return Err(CniError::new(
                    CHECK_MISMATCH,
                    format!("prevResult has addresses {want:?} but ADD masqueraded {have:?}"),
                ));
            }
            if opts.backend.is_some_and(|b| b != r.backend) {
                return Err(CniError::new(
                    CHECK_MISMATCH,
                    format!(
                        "config asks for backend {} but ADD used {}",
                        opts.backend.unwrap(),
                        r.backend
                    ),
                ));
            }
            for (c, addr) in self.classes_for(r.backend, network, addrs, opts) {
                if !r
                    .entries
                    .iter()
                    .any(|e| e.address == addr && e.class == c.id)
                {
                    return Err(CniError::new(
                        CHECK_MISMATCH,
                        format!("masquerade settings for {addr} differ from the config (nonMasqueradeCIDRs, masqLinkLocal or allowForward changed since ADD)"),
                    ));
                }
            }
        }
        let be = backend(r.backend);
        for e in &r.entries {
            let Some(c) = l.class(&e.class)? else {
                return Err(CniError::new(
                    CHECK_MISMATCH,
                    format!(
                        "state of masquerade class {} is missing from {}",
                        e.class,
                        self.store.dir().display()
                    ),
                ));
            };
            be.check(&c, e.address)?;
        }
        Ok(())
    }

    /// Removes everything of `network` owned by attachments not in `valid`, but what was
    /// written at or after `keep_after` (an ADD that started after the list was drawn up).
    pub fn gc(
        &self,
        network: &str,
        valid: &[Attachment],
        keep_after: Option<std::time::SystemTime>,
    ) -> Result<()> {
        cni_types::validate::network_name(network)?;
        let keep = |cid: &str, ifname: &str| {
            valid
                .iter()
                .any(|a| a.container_id == cid && a.ifname == ifname)
        };
        let recent =
            |t: Option<std::time::SystemTime>| keep_after.is_some_and(|k| t.is_none_or(|t| t >= k));
        let mut nl = None;
        let l = self.store.lock()?;
        for r in l.records(network)? {
            if !keep(&r.container_id, &r.ifname) && !recent(l.record_modified(&r)) {
                self.teardown_locked(&l, &mut nl, &r)?;
            }
        }
        // Ownership left without a record (a crash inside setup or teardown).
        for (class, addr, cid, ifname) in l.orphan_owners(network)? {
            let owner = state::owner_key(network, &cid, &ifname);
            if keep(&cid, &ifname) || recent(l.owner_modified(&class, addr, &owner)) {
                continue;
            }
            let Some(c) = l.class(&class)? else {
                l.remove_owner(&class, addr, &owner)?;
                continue;
            };
            let r = Record {
                network: network.to_string(),
                container_id: cid,
                ifname,
                backend: c.backend,
                entries: vec![Entry {
                    class,
                    address: addr,
                }],
            };
            self.teardown_locked(&l, &mut nl, &r)?;
        }
        Ok(())
    }

    /// Code 50 unless the backend `opts` resolves to works and the state dir is writable.
    pub fn status(&self, opts: &Options) -> Result<()> {
        let kind = self
            .resolve_backend(opts)
            .map_err(|e| CniError::new(PLUGIN_NOT_AVAILABLE, e.msg))?;
        std::fs::create_dir_all(self.store.dir()).map_err(|e| {
            CniError::new(
                PLUGIN_NOT_AVAILABLE,
                format!(
                    "state dir {} is not usable: {e}",
                    self.store.dir().display()
                ),
            )
        })?;
        backend(kind).status()
    }
}

/// The plan of an ADD of `pairs` (class, address), and the classes whose stored spec is
/// missing or differs (the first pod of a class).
fn setup_plan<'a>(
    l: &Locked<'_>,
    kind: BackendKind,
    pairs: &'a [(Class, IpAddr)],
) -> Result<(Plan, Vec<&'a Class>)> {
    let mut plan = Plan {
        live: l.classes(kind)?,
        ..Plan::default()
    };
    let mut unsaved: Vec<&Class> = Vec::new();
    for (c, addr) in pairs {
        if !plan.ensure.iter().any(|(e, _)| e.id == c.id) {
            // Classes of other backends have other ids, so `live` holds every saved one.
            let saved = plan.live.iter().find(|x| x.id == c.id).cloned();
            let fresh = saved.is_none() || !l.other_members(&c.id, &[])?;
            if saved.as_ref() != Some(c) {
                unsaved.push(c);
            }
            plan.ensure.push((c.clone(), fresh));
        }
        if !plan.live.iter().any(|x| x.id == c.id) {
            plan.live.push(c.clone());
        }
        plan.add.push((c.clone(), *addr));
    }
    Ok((plan, unsaved))
}

/// Undoes what a failed ADD's `plan` may have applied: the classes it created go, so a failed
/// ADD leaves nothing behind, and its addresses go unless another attachment owns them.
fn undo(
    l: &Locked<'_>,
    nl: &mut Option<Netfilter>,
    kind: BackendKind,
    plan: &Plan,
    owner: &str,
) -> Result<()> {
    let fresh: Vec<Class> = plan
        .ensure
        .iter()
        .filter(|(_, f)| *f)
        .map(|(c, _)| c.clone())
        .collect();
    let mut remove = Vec::new();
    for (c, addr) in &plan.add {
        if !l.other_owners(&c.id, *addr, owner)? {
            remove.push((c.clone(), *addr));
        }
    }
    let undo = Plan {
        live: plan
            .live
            .iter()
            .filter(|c| !fresh.iter().any(|f| f.id == c.id))
            .cloned()
            .collect(),
        remove,
        drop: fresh,
        ..Plan::default()
    };
    let _ = backend(kind).apply(&undo, nl);
    Ok(())
}
