//! rbridge's ADD input: the config as the plugin validates it, then the gateways and default
//! routes it plans from IPAM's result (prevResult stands in for that result here).
#![no_main]

use cni_types::Verb;
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use rbridge::fuzzing::{calc_gateways, BridgeConf, CONTAINER_INDEX};
use rbridge::{host_veth, vlan_gateway_veth};

fuzz_target!(|data: &[u8]| {
    let Some(call) = rcni_fuzz::call(Verb::Add, data) else {
        return;
    };
    let conf = call.config::<BridgeConf>();
    // `rcni lint` says what ADD would say (it has no CNI_ARGS).
    if call.raw_args.is_empty() {
        let add = conf
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|c| c.validate_for_add());
        let lint = rbridge::parse_config(&call.stdin);
        assert_eq!(lint.is_ok(), add.is_ok(), "lint {lint:?}, ADD {add:?}");
    }
    let Ok(conf) = conf else {
        return;
    };
    // What the later steps take for granted.
    assert!(
        !conf.bridge.is_empty() && conf.bridge.len() <= 15,
        "{conf:?}"
    );
    assert!(conf.vlan <= 4094);
    assert!(conf.vlan_trunk.windows(2).all(|w| w[0] < w[1]), "{conf:?}");
    assert!(conf.vlan_trunk.iter().all(|v| (1..=4094).contains(v)));
    assert!(conf.vlan == 0 || conf.vlan_trunk.is_empty());
    if conf.vlan != 0 {
        assert!(format!("{}.{}", conf.bridge, conf.vlan).len() <= 15);
    }
    assert!(conf.mtu.is_none_or(|m| (68..=65535).contains(&m)));
    if let Some(mac) = conf.mac {
        assert!(mac[0] & 1 == 0 && mac != [0; 6], "{mac:?}");
    }
    assert!(conf.is_gateway || !conf.is_default_gateway);
    assert_ne!(conf.ipam.as_deref(), Some(""));
    assert!(host_veth(&call.container_id, &call.ifname).len() <= 15);
    assert!(vlan_gateway_veth(&conf.bridge, conf.vlan).len() <= 15);
    let _ = conf.validate_for_add();

    let Ok(Some(mut result)) = call.prev_result() else {
        return;
    };
    let before = result.clone();
    let gateways = calc_gateways(&mut result, &conf);
    assert_eq!(result.ips.len(), before.ips.len());
    for (ip, old) in result.ips.iter().zip(&before.ips) {
        assert_eq!(ip.address, old.address);
        assert_eq!(ip.interface, Some(CONTAINER_INDEX));
        assert!(old.gateway.is_none() || ip.gateway == old.gateway);
    }
    assert!(result.routes.starts_with(&before.routes));
    if conf.is_default_gateway {
        for v4 in [true, false] {
            if result.ips.iter().any(|ip| ip.is_v4() == v4) {
                let any: IpNet = if v4 { "0.0.0.0/0" } else { "::/0" }.parse().unwrap();
                assert!(result.routes.iter().any(|r| r.dst == any), "{result:?}");
            }
        }
    }
    if !conf.is_gateway {
        assert!(gateways.is_empty());
    }
    for gw in &gateways {
        assert!(result
            .ips
            .iter()
            .any(|ip| ip.gateway == Some(gw.addr()) && ip.address.prefix_len() == gw.prefix_len()));
    }
    // The result ADD answers with: what a runtime reads back.
    if let Ok(v) = result.to_value(call.version) {
        cni_types::CniResult::from_value(&v, call.version).expect("ADD's result reads back");
    }
});
