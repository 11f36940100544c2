//! rhost-local's ADD input: the ipam config and the requested addresses (CNI_ARGS `IP`,
//! `args.cni.ips`, `runtimeConfig.ips`) as the plugin reads them, the round-robin order of each
//! range set, then a real ADD, CHECK and DEL on an empty store in a scratch directory.
#![no_main]

use std::collections::HashSet;

use cni_plugin::log::Logger;
use cni_types::Verb;
use libfuzzer_sys::fuzz_target;
use rhost_local::fuzzing::{
    add, check, del, parse_resolv_conf, requested_ips, Config, Owner, Store,
};

fuzz_target!(|data: &[u8]| {
    let _ = parse_resolv_conf(&String::from_utf8_lossy(data));
    let Some(call) = rcni_fuzz::call(Verb::Add, data) else {
        return;
    };
    let conf = call.config::<Config>();
    // `rcni lint` says what ADD would say before the store (it has no CNI_ARGS).
    if call.raw_args.is_empty() {
        let add = conf.as_ref().map_err(Clone::clone).and_then(|c| {
            c.assign(requested_ips(&call.conf, &call.args)?)?;
            Ok(())
        });
        let lint = rhost_local::parse_config(&call.stdin);
        assert_eq!(lint.is_ok(), add.is_ok(), "lint {lint:?}, ADD {add:?}");
    }
    let Ok(mut conf) = conf else {
        return;
    };
    assert!(!conf.range_sets.is_empty());
    for set in &conf.range_sets {
        assert!(!set.ranges.is_empty());
        for r in &set.ranges {
            assert_eq!(r.is_v4(), set.is_v4(), "{set:?}");
            for ip in [r.start, r.end, r.gateway] {
                assert!(r.subnet.contains(&ip), "{r:?}");
            }
            assert!(r.contains(r.start) && r.contains(r.end), "{r:?}");
        }
        // The first candidates: allocatable, distinct, in the set.
        let last = set.ranges.last().map(|r| r.end);
        let mut seen = HashSet::new();
        for (i, ip) in set.candidates(last).take(64) {
            let r = &set.ranges[i];
            assert!(r.contains(ip) && !r.is_reserved(ip), "{ip} from {r:?}");
            assert!(seen.insert(ip), "{ip} twice from {set:?}");
        }
    }
    let Ok(requested) = requested_ips(&call.conf, &call.args) else {
        return;
    };
    let Ok(assigned) = conf.assign(requested) else {
        return;
    };
    assert_eq!(assigned.len(), conf.range_sets.len());
    for (set, req) in conf.range_sets.iter().zip(&assigned) {
        if let Some(req) = req {
            let r = set.range_for(req.ip).expect("assigned to its set");
            assert!(!r.is_reserved(req.ip));
        }
    }

    conf.data_dir = rcni_fuzz::scratch("rhost-local-add");
    let logger = Logger::default();
    let owner = Owner::new(&call.container_id, &call.ifname);
    let mut store = match Store::open(&conf.data_dir, &conf.network, true, &logger) {
        Ok(Some(s)) => s,
        other => panic!("an empty store opens: {:?}", other.err()),
    };
    let got = match add(&mut store, &conf, &owner, &assigned) {
        Ok(got) => got,
        // Only a range set with no allocatable address fails on an empty store.
        Err(e) => {
            assert!(conf.range_sets.iter().any(|s| s.capacity() == 0), "{e}");
            return;
        }
    };
    assert_eq!(got.len(), conf.range_sets.len());
    for ((set, ip), req) in got.iter().zip(&assigned) {
        assert!(conf.range_sets[*set].contains(*ip));
        if let Some(req) = req {
            assert_eq!(req.ip, *ip, "the requested address is the one taken");
        }
    }
    let mut ips: Vec<_> = got.iter().map(|(_, ip)| *ip).collect();
    ips.sort();
    assert_eq!(store.owned(&owner).unwrap(), ips);
    check(&mut store, &conf, &owner, None).expect("CHECK after ADD");
    // A retried ADD gets the same addresses.
    let again = add(&mut store, &conf, &owner, &assigned).expect("ADD again");
    assert_eq!(again, got);
    store.close().unwrap();
    let mut store = Store::open(&conf.data_dir, &conf.network, false, &logger)
        .unwrap()
        .unwrap();
    let mut released = del(&mut store, &owner).unwrap();
    released.sort();
    assert_eq!(released, ips);
    assert!(store.scan().unwrap().is_empty());
    store.close().unwrap();
});
