//! Results of every spec version: what parses in one version converts to every version, the
//! JSON written re-parses to the same result, and conversion keeps what the target version has
//! room for.
#![no_main]

use cni_types::version::SUPPORTED_VERSIONS;
use cni_types::{CniResult, SpecVersion};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    for from in SUPPORTED_VERSIONS {
        if let Ok(r) = CniResult::from_slice(data, from) {
            for to in SUPPORTED_VERSIONS {
                convert(&r, to);
            }
        }
    }
});

fn convert(r: &CniResult, to: SpecVersion) {
    let w = match r.to_value(to) {
        Ok(w) => w,
        Err(e) => {
            // Only the ip4/ip6 shape has no room for a result without addresses.
            assert!(to.is_legacy() && r.ips.is_empty(), "{to}: {e}: {r:?}");
            return;
        }
    };
    assert_eq!(w["cniVersion"], Value::String(to.as_str().into()));
    assert_eq!(w.as_object().unwrap().keys().next().unwrap(), "cniVersion");
    // Its text re-parses (to the same JSON, floats aside: see `no_floats`).
    let text = serde_json::to_vec(&w).unwrap();
    let json = rcni_fuzz::no_floats(w.clone());
    assert_eq!(
        rcni_fuzz::no_floats(serde_json::from_slice(&text).unwrap()),
        json
    );
    let read = CniResult::from_slice(&text, to)
        .unwrap_or_else(|e| panic!("{to} result we wrote does not parse: {e}: {w}"));
    assert_eq!(rcni_fuzz::no_floats(read.to_value(to).unwrap()), json);
    let back = CniResult::from_value(&w, to).unwrap();
    assert_eq!(r.convert(to).unwrap(), back);
    // Writing what was read gives the same JSON again.
    assert_eq!(back.to_value(to).unwrap(), w, "{to}");
    if to.is_legacy() {
        // The first address of each family, with the routes of that family.
        for ip in &back.ips {
            let first = r.ips.iter().find(|x| x.is_v4() == ip.is_v4()).unwrap();
            assert_eq!((first.address, first.gateway), (ip.address, ip.gateway));
        }
    } else {
        let key = |ips: &CniResult| -> Vec<_> {
            ips.ips
                .iter()
                .map(|i| (i.address, i.gateway, i.interface))
                .collect()
        };
        assert_eq!(key(&back), key(r));
        let routes = |x: &CniResult| -> Vec<_> { x.routes.iter().map(|r| (r.dst, r.gw)).collect() };
        assert_eq!(routes(&back), routes(r));
        let names = |x: &CniResult| -> Vec<_> {
            x.interfaces
                .iter()
                .map(|i| (i.name.clone(), i.mac.clone(), i.sandbox.clone()))
                .collect()
        };
        assert_eq!(names(&back), names(r));
        assert_eq!(back.dns, r.dns);
        if to == SpecVersion::V1_1_0 {
            // All but unknown keys named like the fields (kept from a 0.1.0/0.2.0 result).
            let mut want = r.clone();
            want.extra.retain(|k, _| {
                !["cniVersion", "interfaces", "ips", "routes", "dns"].contains(&k.as_str())
            });
            assert_eq!(back, want, "1.1.0 holds every field");
        }
    }
}
