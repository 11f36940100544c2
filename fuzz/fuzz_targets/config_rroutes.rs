//! rroutes' input: the config merged with `args.cni` as every verb reads it, then the routes it
//! would install and how its DEL entries match prevResult's routes.
#![no_main]

use cni_types::Verb;
use libfuzzer_sys::fuzz_target;
use rroutes::Conf;

fuzz_target!(|data: &[u8]| {
    let Some(call) = rcni_fuzz::call(Verb::Add, data) else {
        return;
    };
    let conf = call.config::<Conf>();
    // `rcni lint` reads it as every verb does.
    let lint = rroutes::parse_config(&call.stdin);
    assert_eq!(
        lint.as_ref().ok(),
        conf.as_ref().ok(),
        "lint {lint:?}, plugin {conf:?}"
    );
    let Ok(conf) = conf else {
        return;
    };
    assert!(conf.protocol > 4);
    for (i, r) in conf.add_routes.iter().enumerate() {
        assert_eq!(r.dst, r.dst.trunc());
        assert!(r.gw.is_none_or(|g| g.is_ipv4() == r.dst.addr().is_ipv4()));
        let spec = r.spec(Some(7), Some(conf.protocol));
        for other in &conf.add_routes[i + 1..] {
            assert!(
                !other.spec(Some(7), Some(conf.protocol)).same_key(&spec),
                "{r:?} twice"
            );
        }
        let route = r.result_route();
        assert_eq!((route.dst, route.gw), (r.dst, r.gw));
        let _ = r.describe(&call.ifname);
    }
    for r in &conf.host_routes {
        assert_eq!(r.dst, r.dst.trunc());
        assert_eq!(r.gw.is_ipv4(), r.dst.addr().is_ipv4());
        let _ = r.spec(Some(conf.protocol));
    }
    // The same config read from a conflist entry, as `rroutes sync` does.
    let again = Conf::from_value(&call.raw).expect("the config parses again");
    assert_eq!(again, conf);
    if let Ok(Some(prev)) = call.prev_result() {
        for d in &conf.del_routes {
            assert_eq!(d.dst, d.dst.trunc());
            for r in &prev.routes {
                let _ = d.matches_result(r);
            }
        }
    }
});
