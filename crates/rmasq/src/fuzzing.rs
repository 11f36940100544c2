//! Not an API: what the fuzz targets in `fuzz/` drive. Each function runs the crate's own code
//! on an input, as the plugin would, and panics where an invariant the plugin relies on breaks.

use std::fmt::Debug;
use std::path::Path;

use cni_plugin::{Call, PluginConfig};
use cni_types::Result;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::class::{BackendKind, Class};
use crate::plugin::{pod_addrs, Conf};
use crate::state::{Record, Store};

/// What ADD reads before it touches anything: the config, prevResult's addresses and the
/// classes they fall in. A class is what its rules and state file are named by, so it must be
/// the same for the same input, hold its address, and skip only its own family, without
/// overlaps (nft interval sets refuse them).
pub fn add_input(call: &Call) -> Result<()> {
    let conf = Conf::from_call(call)?;
    let prev = call.require_prev_result("rmasq")?;
    let addrs = pod_addrs(&prev)?;
    let name = &call.conf.name;
    for kind in [BackendKind::Nftables, BackendKind::Iptables] {
        let pairs = conf.masq.classes_for(kind, name, &addrs, &conf.opts);
        assert!(!pairs.is_empty(), "no class for {addrs:?}");
        assert_eq!(pairs, conf.masq.classes_for(kind, name, &addrs, &conf.opts));
        for (c, addr) in &pairs {
            assert!(
                c.id.len() == 16 && c.id.bytes().all(|b| b.is_ascii_hexdigit()),
                "class id {:?} is not 16 hex digits",
                c.id
            );
            assert!(c.source.contains(addr), "{c:?} does not hold {addr}");
            assert_eq!(c.backend, kind);
            for (i, a) in c.skip.iter().enumerate() {
                assert_eq!(a.addr().is_ipv4(), c.is_v4(), "{c:?} skips another family");
                for b in &c.skip[i + 1..] {
                    assert!(!a.contains(b) && !b.contains(a), "{c:?}: {a} overlaps {b}");
                }
            }
            roundtrip(c);
        }
    }
    Ok(())
}

/// `bytes` as a record file and as a class file, read as the store reads them.
pub fn state_file(bytes: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<Record>(bytes) {
        roundtrip(&r);
    }
    if let Ok(c) = serde_json::from_slice::<Class>(bytes) {
        roundtrip(&c);
    }
}

/// Reads the state dir `dir` as DEL, CHECK and GC of `network` (and DEL of one attachment)
/// read it. What one file holds never fails the reads that serve every attachment (GC's
/// listings, the classes); whatever is read writes back to what reads the same.
pub fn read_state(dir: &Path, network: &str, container_id: &str, ifname: &str) -> Result<()> {
    let store = Store::new(dir);
    let l = store.lock()?;
    let ok = |what: &str, e: cni_types::CniError| -> ! { panic!("{what}: {e}") };
    let mut records = l.records(network).unwrap_or_else(|e| ok("records", e));
    if let Ok(Some(r)) = l.record(network, container_id, ifname) {
        records.push(r);
    }
    for r in &records {
        roundtrip(r);
        for e in &r.entries {
            if let Some(c) = l.class(&e.class).unwrap_or_else(|e| ok("class", e)) {
                roundtrip(&c);
            }
        }
    }
    for kind in [BackendKind::Nftables, BackendKind::Iptables] {
        let classes = l.classes(kind).unwrap_or_else(|e| ok("classes", e));
        assert!(classes.windows(2).all(|w| w[0].id <= w[1].id));
        for c in &classes {
            assert_eq!(c.backend, kind);
            roundtrip(c);
        }
    }
    for (class, addr, cid, ifname) in l
        .orphan_owners(network)
        .unwrap_or_else(|e| ok("orphans", e))
    {
        assert!(
            !matches!(l.record(network, &cid, &ifname), Ok(Some(_))),
            "owner {cid}:{ifname} of {class} {addr} has a record"
        );
    }
    Ok(())
}

/// What is read writes to JSON that reads back the same.
fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + Debug>(v: &T) {
    let bytes = serde_json::to_vec(v).expect("state encodes");
    let back: T = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{v:?} wrote {:?}: {e}", String::from_utf8_lossy(&bytes)));
    assert_eq!(&back, v);
}
