//! The verbs on a locked store: what to reserve, release, check or collect.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::SystemTime;

use cni_types::error::{
    CniError, Result, ADDRESS_IN_USE, ADDRESS_POOL_EXHAUSTED, CHECK_MISMATCH, PLUGIN_NOT_AVAILABLE,
    UNKNOWN_CONTAINER,
};
use cni_types::{Attachment, CniResult};

use crate::config::{Config, Requested};
use crate::netdir::{NetworkDir, Slot};
use crate::owner::Owner;
use crate::store::{Rebuilt, Store};

/// One address handed out: the range set it is from and the address.
pub type Allocation = (usize, IpAddr);

/// What `owner` holds: its exact reservations, and all it holds including old-format ones of
/// the same container (which upstream also counts as this attachment's), sorted.
fn held(store: &mut Store, owner: &Owner) -> Result<(Vec<IpAddr>, Vec<IpAddr>)> {
    let exact = store.owned(owner)?;
    let mut all = exact.clone();
    all.extend(store.owned(&owner.old_format())?);
    all.sort();
    all.dedup();
    Ok((exact, all))
}

/// ADD: one address per range set, all or nothing. An attachment that already holds addresses
/// (ADD retried without DEL) gets them back; only the missing range sets are allocated.
pub fn add(
    store: &mut Store,
    conf: &Config,
    owner: &Owner,
    requested: &[Option<Requested>],
) -> Result<Vec<Allocation>> {
    let (mut mine, had) = held(store, owner)?;
    let mut fresh: Vec<Allocation> = Vec::new();
    let outcome = allocate(store, conf, owner, requested, &had, &mut fresh);
    match outcome {
        Ok(all) => {
            if fresh.is_empty() {
                return Ok(all);
            }
            for (set, ip) in &fresh {
                store.set_last_reserved(*set, *ip)?;
            }
            mine.extend(fresh.iter().map(|(_, ip)| *ip));
            store.set_owned(owner, &mine)?;
            Ok(all)
        }
        Err(e) => {
            for (_, ip) in &fresh {
                store.release(*ip, owner)?;
            }
            Err(e)
        }
    }
}

fn allocate(
    store: &mut Store,
    conf: &Config,
    owner: &Owner,
    requested: &[Option<Requested>],
    had: &[IpAddr],
    fresh: &mut Vec<Allocation>,
) -> Result<Vec<Allocation>> {
    let existing: Vec<Option<IpAddr>> = conf
        .range_sets
        .iter()
        .map(|set| had.iter().copied().find(|ip| set.contains(*ip)))
        .collect();
    // Conflicts of requested addresses first, so that a refused ADD writes nothing at all.
    check_requested(store, conf, owner, requested, &existing)?;
    let mut out = Vec::with_capacity(conf.range_sets.len());
    for i in 0..conf.range_sets.len() {
        let ip = match (existing[i], &requested[i]) {
            (Some(ip), _) => ip,
            (None, Some(req)) => {
                reserve_requested(store, conf, owner, req)?;
                fresh.push((i, req.ip));
                req.ip
            }
            (None, None) => {
                let ip = reserve_next(store, conf, owner, i)?;
                fresh.push((i, ip));
                ip
            }
        };
        out.push((i, ip));
    }
    Ok(out)
}

/// Refuses requested addresses the attachment cannot have: another address of the same range
/// set already held by it, or an address held by someone (or something) else.
fn check_requested(
    store: &Store,
    conf: &Config,
    owner: &Owner,
    requested: &[Option<Requested>],
    existing: &[Option<IpAddr>],
) -> Result<()> {
    for (i, set) in conf.range_sets.iter().enumerate() {
        let Some(req) = &requested[i] else { continue };
        match existing[i] {
            Some(ip) if ip != req.ip => {
                return Err(CniError::new(
                    ADDRESS_IN_USE,
                    format!(
                        "{owner} already holds {ip} in {} of network {:?}, but {} was requested ({}): DEL the attachment first to change its address",
                        set.describe(i),
                        conf.network,
                        req.ip,
                        req.source
                    ),
                ));
            }
            Some(_) => {}
            None => match store.dir().slot(req.ip)? {
                Slot::Held(other) => return Err(in_use(conf, req, &other.to_string())),
                Slot::NotAFile => {
                    return Err(in_use(
                        conf,
                        req,
                        "something that is not a reservation file",
                    ))
                }
                Slot::Free | Slot::Leftover => {}
            },
        }
    }
    Ok(())
}

/// The next free address of range set `i`, round-robin after `last_reserved_ip.<i>` as upstream.
fn reserve_next(store: &mut Store, conf: &Config, owner: &Owner, i: usize) -> Result<IpAddr> {
    let set = &conf.range_sets[i];
    let last = store.dir().last_reserved(i);
    for (_, ip) in set.candidates(last) {
        if store.reserve(ip, owner)? {
            return Ok(ip);
        }
    }
    Err(CniError::new(
        ADDRESS_POOL_EXHAUSTED,
        format!(
            "network {:?}: no free address in {}: every one of its {} allocatable addresses is in use; release some (DEL, GC) or widen {}",
            conf.network,
            set.describe(i),
            set.capacity(),
            set.source
        ),
    ))
}

fn in_use(conf: &Config, req: &Requested, holder: &str) -> CniError {
    CniError::new(
        ADDRESS_IN_USE,
        format!(
            "requested address {} ({}) is in use by {holder} in network {:?}",
            req.ip, req.source, conf.network
        ),
    )
}

fn reserve_requested(
    store: &mut Store,
    conf: &Config,
    owner: &Owner,
    req: &Requested,
) -> Result<()> {
    if store.reserve(req.ip, owner)? {
        return Ok(());
    }
    // Checked free or a leftover before; under the lock only a leftover can be in the way.
    if store.dir().slot(req.ip)? == Slot::Leftover {
        store.release(req.ip, owner)?;
        if store.reserve(req.ip, owner)? {
            return Ok(());
        }
    }
    let holder = match store.dir().slot(req.ip)? {
        Slot::Held(o) => o.to_string(),
        _ => "an unreadable file".to_string(),
    };
    Err(in_use(conf, req, &holder))
}

/// DEL: releases what the attachment holds; if it holds nothing, what old-format reservations
/// of its container hold (upstream's rule). Returns the released addresses.
pub fn del(store: &mut Store, owner: &Owner) -> Result<Vec<IpAddr>> {
    let mut victim = owner.clone();
    let mut ips = store.owned(&victim)?;
    if ips.is_empty() {
        victim = owner.old_format();
        ips = store.owned(&victim)?;
    }
    let mut released = Vec::new();
    for ip in ips {
        if store.release(ip, &victim)? {
            released.push(ip);
        }
    }
    store.set_owned(&victim, &[])?;
    Ok(released)
}

/// CHECK: the attachment holds one address in every range set, and prevResult (when given)
/// lists exactly those among its addresses that lie in this network's ranges.
pub fn check(
    store: &mut Store,
    conf: &Config,
    owner: &Owner,
    prev: Option<&CniResult>,
) -> Result<()> {
    let (_, had) = held(store, owner)?;
    let ours: Vec<Allocation> = conf
        .range_sets
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            had.iter()
                .filter(|ip| s.contains(**ip))
                .map(move |ip| (i, *ip))
        })
        .collect();
    if ours.is_empty() {
        return Err(CniError::new(
            UNKNOWN_CONTAINER,
            format!(
                "{owner} holds no address in network {:?}: it was never added, or was deleted",
                conf.network
            ),
        ));
    }
    for (i, set) in conf.range_sets.iter().enumerate() {
        if !ours.iter().any(|(s, _)| *s == i) {
            return Err(CniError::new(
                CHECK_MISMATCH,
                format!(
                    "{owner} holds no address in {} of network {:?}",
                    set.describe(i),
                    conf.network
                ),
            ));
        }
    }
    let Some(prev) = prev else {
        return Ok(());
    };
    let mut listed: Vec<_> = prev
        .ips
        .iter()
        .filter(|c| conf.range_sets.iter().any(|s| s.contains(c.address.addr())))
        .map(|c| c.address)
        .collect();
    let mut holds: Vec<_> = ours
        .iter()
        .map(|(i, ip)| {
            conf.range_sets[*i]
                .range_for(*ip)
                .expect("found in this set")
                .with_prefix(*ip)
        })
        .collect();
    listed.sort();
    holds.sort();
    if listed != holds {
        let show = |v: &[ipnet::IpNet]| {
            let s: Vec<String> = v.iter().map(ToString::to_string).collect();
            format!("[{}]", s.join(", "))
        };
        return Err(CniError::new(
            CHECK_MISMATCH,
            format!(
                "prevResult lists {} in the ranges of network {:?}, but {owner} holds {}",
                show(&listed),
                conf.network,
                show(&holds)
            ),
        ));
    }
    Ok(())
}

/// GC: releases every reservation whose attachment is not valid. Old-format reservations
/// (no ifname) stay while any valid attachment has their container ID. Leftovers of killed
/// writers go too. An owner with a reservation made at or after `keep_after` (an ADD that
/// started after the runtime drew up its list) keeps all of its reservations; the store is
/// locked, so no reservation appears between that look and the rebuild.
pub fn gc(
    store: &mut Store,
    valid: &[Attachment],
    keep_after: Option<SystemTime>,
) -> Result<Rebuilt> {
    let pairs: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let ids: HashSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
    let recent = match keep_after {
        Some(t) => recent_owners(store.dir(), t)?,
        None => HashSet::new(),
    };
    store.rebuild(|o| {
        recent.contains(o)
            || match &o.ifname {
                Some(ifname) => pairs.contains(&(o.id.as_str(), ifname.as_str())),
                None => ids.contains(o.id.as_str()),
            }
    })
}

/// Owners of reservations whose file was written at or after `since`.
fn recent_owners(dir: &NetworkDir, since: SystemTime) -> Result<HashSet<Owner>> {
    let entries = std::fs::read_dir(&dir.dir)
        .map_err(|e| CniError::io(format!("listing {}: {e}", dir.dir.display())))?;
    let mut out = HashSet::new();
    for e in entries.flatten() {
        let Ok(ip) = e.file_name().to_string_lossy().parse::<IpAddr>() else {
            continue;
        };
        let recent = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        if recent {
            if let Slot::Held(o) = dir.slot(ip)? {
                out.insert(o);
            }
        }
    }
    Ok(out)
}

/// STATUS: every range set has a free address. Without the lock and without reading more than
/// a file name per address, starting where the next ADD would: usually one lookup per set.
pub fn status(conf: &Config) -> Result<()> {
    let dir = NetworkDir::new(&conf.data_dir, &conf.network);
    if !dir.exists() {
        return Ok(());
    }
    for (i, set) in conf.range_sets.iter().enumerate() {
        let last = dir.last_reserved(i);
        if set.candidates(last).any(|(_, ip)| !dir.is_taken(ip)) {
            continue;
        }
        // All taken: leftovers of killed writers will be reclaimed, so they count as free.
        if set
            .candidates(last)
            .any(|(_, ip)| matches!(dir.slot(ip), Ok(Slot::Leftover)))
        {
            continue;
        }
        return Err(CniError::new(
            PLUGIN_NOT_AVAILABLE,
            format!(
                "network {:?}: {} is exhausted: every one of its {} allocatable addresses is in use",
                conf.network,
                set.describe(i),
                set.capacity()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
