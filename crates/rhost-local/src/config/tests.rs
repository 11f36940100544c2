use serde_json::json;

use super::*;

fn load(v: Value) -> Result<Config> {
    let conf = NetConf::from_slice(v.to_string().as_bytes()).unwrap();
    Config::load(&v, &conf)
}

fn with_ipam(ipam: Value) -> Value {
    json!({"cniVersion": "1.0.0", "name": "net", "type": "rbridge", "ipam": ipam})
}

fn err(v: Value) -> CniError {
    load(v).expect_err("config should be refused")
}

#[test]
fn defaults_follow_upstream() {
    let c = load(with_ipam(json!({"type": "rhost-local", "ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00:1::/64"}]]})))
        .unwrap();
    assert_eq!(c.network, "net");
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/cni/networks"));
    let r4 = &c.range_sets[0].ranges[0];
    assert_eq!(r4.start.to_string(), "10.1.0.1");
    assert_eq!(r4.end.to_string(), "10.1.0.254");
    assert_eq!(r4.gateway.to_string(), "10.1.0.1");
    let r6 = &c.range_sets[1].ranges[0];
    assert_eq!(r6.start.to_string(), "fd00:1::1");
    assert_eq!(r6.end.to_string(), "fd00:1::ffff:ffff:ffff:ffff");
    assert_eq!(r6.gateway.to_string(), "fd00:1::1");
    assert_eq!(c.range_sets[1].source, "ipam.ranges[1]");
}

/// As upstream host-local (Go's JSON decoding): keys name their field ignoring case.
#[test]
fn keys_are_read_ignoring_case_as_upstream_reads_them() {
    let v = json!({"cniVersion": "1.0.0", "Name": "net", "type": "rbridge", "IPAM": {
        "Type": "rhost-local", "DataDir": "/run/x",
        "Ranges": [[{"Subnet": "10.1.0.0/24", "RangeStart": "10.1.0.10", "GATEWAY": "10.1.0.254"}]],
    }});
    let c = load(v).unwrap();
    assert_eq!(c.network, "net");
    assert_eq!(c.data_dir, PathBuf::from("/run/x"));
    let r = &c.range_sets[0].ranges[0];
    assert_eq!(r.start.to_string(), "10.1.0.10");
    assert_eq!(r.gateway.to_string(), "10.1.0.254");
}

#[test]
fn legacy_range_comes_first_and_runtime_ranges_before_it() {
    let v = json!({
        "cniVersion": "0.4.0", "name": "net",
        "runtimeConfig": {"ipRanges": [[{"subnet": "10.9.0.0/24"}]]},
        "ipam": {
            "subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.20", "gateway": "10.1.0.254",
            "ranges": [[{"subnet": "10.2.0.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.0.0.0/8", "gw": "10.1.0.254"}],
            "dataDir": "/tmp/x", "resolvConf": "/etc/none"
        }
    });
    let c = load(v).unwrap();
    let sources: Vec<_> = c.range_sets.iter().map(|s| s.source.as_str()).collect();
    assert_eq!(
        sources,
        ["runtimeConfig.ipRanges[0]", "ipam.subnet", "ipam.ranges[0]"]
    );
    let legacy = &c.range_sets[1].ranges[0];
    assert_eq!(legacy.to_string(), "10.1.0.10-10.1.0.20");
    assert_eq!(legacy.gateway.to_string(), "10.1.0.254");
    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.routes[1].gw.unwrap().to_string(), "10.1.0.254");
    assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(c.resolv_conf, Some(PathBuf::from("/etc/none")));
}

#[test]
fn empty_strings_mean_unset_as_in_go() {
    let c = load(with_ipam(json!({"ranges": [[{"subnet": "10.1.0.0/24", "gateway": "", "rangeStart": ""}]], "dataDir": ""})))
        .unwrap();
    assert_eq!(c.range_sets[0].ranges[0].gateway.to_string(), "10.1.0.1");
    assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
}

#[test]
fn bad_configs_are_code_7_naming_the_key() {
    let cases: Vec<(Value, &str)> = vec![
        (json!({"cniVersion": "1.0.0", "name": "net"}), "\"ipam\""),
        (with_ipam(json!({})), "ipam.ranges"),
        (with_ipam(json!({"ranges": []})), "ipam.ranges"),
        (with_ipam(json!({"ranges": [[]]})), "ipam.ranges[0]"),
        (with_ipam(json!({"ranges": [[{}]]})), "ipam.ranges[0][0]"),
        (
            with_ipam(json!({"ranges": [[{"subnet": "banana"}]]})),
            "ipam.ranges[0][0].subnet",
        ),
        (
            with_ipam(json!({"ranges": [[{"subnet": "10.1.0.0/31"}]]})),
            "ipam.ranges[0][0].subnet",
        ),
        (
            with_ipam(json!({"ranges": [[{"subnet": "10.1.0.0/32"}]]})),
            "ipam.ranges[0][0].subnet",
        ),
        (
            with_ipam(json!({"ranges": [[{"subnet": "fd00::/127"}]]})),
            "ipam.ranges[0][0].subnet",
        ),
        (
            with_ipam(json!({"ranges": [[{"subnet": "10.1.0.5/24"}]]})),
            "ipam.ranges[0][0].subnet",
        ),
        (
            with_ipam(
                json!({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.2.0.0/24", "rangeStart": "10.3.0.1"}]]}),
            ),
            "ipam.ranges[0][1].rangeStart",
        ),
        (
            with_ipam(json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.x"}]]})),
            "ipam.ranges[0][0].rangeStart",
        ),
        (
            with_ipam(json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeEnd": "fd00::1"}]]})),
            "ipam.ranges[0][0].rangeEnd",
        ),
        (
            with_ipam(
                json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.50", "rangeEnd": "10.1.0.40"}]]}),
            ),
            "ipam.ranges[0][0].rangeEnd",
        ),
        (
            with_ipam(json!({"ranges": [[{"subnet": "10.1.0.0/24", "gateway": "10.2.0.1"}]]})),
            "ipam.ranges[0][0].gateway",
        ),
        (
            with_ipam(json!({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "fd00::/64"}]]})),
            "ipam.ranges[0][1].subnet",
        ),
        (
            with_ipam(json!({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.1.0.0/25"}]]})),
            "ipam.ranges[0][0]",
        ),
        (
            with_ipam(
                json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.0/16"}]]}),
            ),
            "ipam.ranges[1]",
        ),
        (
            with_ipam(json!({"subnet": "10.1.0.0/24", "ranges": [[{"subnet": "10.1.0.0/24"}]]})),
            "ipam.subnet",
        ),
        (
            with_ipam(json!({"subnet": "10.1.0.0/24", "rangeStart": "10.7.0.1"})),
            "ipam.rangeStart",
        ),
        (
            with_ipam(json!({"ranges": [[{"subnet": "10.1.0.0/24"}]], "routes": [{"dst": "x"}]})),
            "ipam.routes[0].dst",
        ),
        (
            with_ipam(json!({"ranges": [[{"subnet": "10.1.0.0/24"}]], "dataDir": 5})),
            "ipam.dataDir",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "../etc", "ipam": {"subnet": "10.1.0.0/24"}}),
            "name",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": {"ipRanges": [[{"subnet": "10.1.0.0/33"}]]}, "ipam": {}}),
            "runtimeConfig.ipRanges[0][0].subnet",
        ),
        (
            json!({"cniVersion": "0.2.0", "name": "n", "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]}}),
            "cniVersion 0.2.0",
        ),
    ];
    for (v, key) in cases {
        let e = err(v.clone());
        assert_eq!(e.code, 7, "{v}: {}", e.msg);
        assert!(
            e.msg.contains(key),
            "{v}: message {:?} should name {key}",
            e.msg
        );
    }
}

#[test]
fn legacy_versions_allow_one_range_set_per_family() {
    let v = json!({"cniVersion": "0.2.0", "name": "n", "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]}});
    assert_eq!(load(v).unwrap().range_sets.len(), 2);
}

fn net_with(extra: Value) -> (Value, NetConf) {
    let mut v = with_ipam(json!({"ranges": [
        [{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.20"}, {"subnet": "10.2.0.0/24"}],
        [{"subnet": "fd00::/64"}]
    ]}));
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    let conf = NetConf::from_slice(v.to_string().as_bytes()).unwrap();
    (v, conf)
}

fn requested(extra: Value, cni_args: &str) -> Result<Vec<Option<Requested>>> {
    let (v, conf) = net_with(extra);
    let c = Config::load(&v, &conf).unwrap();
    let args = CniArgs::parse(cni_args)?;
    c.assign(requested_ips(&conf, &args)?)
}

fn ips(r: &[Option<Requested>]) -> Vec<Option<String>> {
    r.iter()
        .map(|x| x.as_ref().map(|x| x.ip.to_string()))
        .collect()
}

#[test]
fn requested_ips_from_all_three_sources_land_in_their_range_sets() {
    let r = requested(json!({}), "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.2.0.7").unwrap();
    assert_eq!(ips(&r), [Some("10.2.0.7".into()), None]);
    assert_eq!(r[0].as_ref().unwrap().source, "CNI_ARGS IP[0]");
    let r = requested(json!({}), "IP=10.1.0.15,fd00::99").unwrap();
    assert_eq!(ips(&r), [Some("10.1.0.15".into()), Some("fd00::99".into())]);
    let r = requested(json!({"args": {"cni": {"ips": ["fd00::5"]}}}), "").unwrap();
    assert_eq!(ips(&r), [None, Some("fd00::5".into())]);
    assert_eq!(r[1].as_ref().unwrap().source, "args.cni.ips[0]");
    let r = requested(
        json!({"runtimeConfig": {"ips": ["10.1.0.11/24", "fd00::6/64"]}}),
        "",
    )
    .unwrap();
    assert_eq!(ips(&r), [Some("10.1.0.11".into()), Some("fd00::6".into())]);
    // The same address from two sources counts once.
    let r = requested(
        json!({"args": {"cni": {"ips": ["10.1.0.12"]}}}),
        "IP=10.1.0.12",
    )
    .unwrap();
    assert_eq!(ips(&r), [Some("10.1.0.12".into()), None]);
}

#[test]
fn bad_requested_ips_name_the_address_and_source() {
    // (extra config, CNI_ARGS, code, text the message must hold)
    let cases: Vec<(Value, &str, u32, &str)> = vec![
        (json!({}), "IP=banana", 4, "CNI_ARGS IP[0]"),
        (json!({}), "IP=10.1.0.12,", 4, "CNI_ARGS IP[1]"),
        (json!({}), "FOO=1", 4, "FOO"),
        (json!({}), "IP=10.1.0.30", 4, "10.1.0.30"),
        (json!({}), "IP=10.1.0.1", 4, "10.1.0.1"),
        (json!({}), "IP=10.2.0.1", 4, "gateway"),
        (json!({}), "IP=10.2.0.255", 4, "outside"),
        (json!({}), "IP=10.1.0.12,10.2.0.9", 4, "both in range set 0"),
        (
            json!({"args": {"cni": {"ips": ["10.9.9.9"]}}}),
            "",
            7,
            "args.cni.ips[0]",
        ),
        (
            json!({"args": {"cni": {"ips": [5]}}}),
            "",
            7,
            "args.cni.ips[0]",
        ),
        (
            json!({"args": {"cni": {"ips": "10.1.0.12"}}}),
            "",
            7,
            "args.cni.ips",
        ),
        (
            json!({"runtimeConfig": {"ips": ["fd01::1"]}}),
            "",
            7,
            "fd01::1",
        ),
        (
            json!({"runtimeConfig": {"ips": ["fd00::/64"]}}),
            "",
            7,
            "outside",
        ),
    ];
    for (extra, args, code, text) in cases {
        let e = requested(extra.clone(), args).expect_err(args);
        assert_eq!(e.code, code, "{extra} {args}: {}", e.msg);
        assert!(
            e.msg.contains(text),
            "{extra} {args}: {:?} should hold {text}",
            e.msg
        );
    }
}

#[test]
fn resolv_conf_as_upstream_reads_it() {
    let dns = parse_resolv_conf(
        "# comment\n; other comment\nnameserver 10.0.0.10\nnameserver fd00::10\ndomain cluster.local\nsearch a.svc b.svc\nsearch c\noptions ndots:5 edns0\nbogus\nsortlist x\n",
    );
    assert_eq!(dns.nameservers, ["10.0.0.10", "fd00::10"]);
    assert_eq!(dns.domain, "cluster.local");
    assert_eq!(dns.search, ["a.svc", "b.svc", "c"]);
    assert_eq!(dns.options, ["ndots:5", "edns0"]);
}

#[test]
fn missing_resolv_conf_is_config_error_naming_it() {
    let c = load(with_ipam(
        json!({"subnet": "10.1.0.0/24", "resolvConf": "/nonexistent/resolv.conf"}),
    ))
    .unwrap();
    let e = c.dns().unwrap_err();
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("ipam.resolvConf") && e.msg.contains("/nonexistent/resolv.conf"));
}
