use std::fs;
use std::path::Path;

use cni_plugin::log::Logger;
use cni_testkit::{temp_dir, Snapshot, TempDir};
use cni_types::{CniArgs, IpConfig, NetConf};
use serde_json::{json, Value};

use super::*;
use crate::config::requested_ips;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn conf_with(data: &Path, ranges: Value, extra: Value) -> (Config, NetConf) {
    let mut v = json!({"cniVersion": "1.1.0", "name": "net",
        "ipam": {"type": "rhost-local", "ranges": ranges, "dataDir": data}});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    let nc = NetConf::from_slice(v.to_string().as_bytes()).unwrap();
    (Config::load(&v, &nc).unwrap(), nc)
}

/// A /29 (5 usable addresses: .2-.6) and a small IPv6 range.
fn small(data: &Path) -> Config {
    conf_with(
        data,
        json!([[{"subnet": "10.1.0.0/29"}], [{"subnet": "fd00::/120", "rangeEnd": "fd00::20"}]]),
        json!({}),
    )
    .0
}

fn lock(data: &TempDir) -> Store {
    Store::open(data, "net", true, &Logger::default())
        .unwrap()
        .unwrap()
}

fn add_with(
    data: &TempDir,
    conf: &Config,
    id: &str,
    req: &[Option<Requested>],
) -> Result<Vec<String>> {
    let mut s = lock(data);
    let r = add(&mut s, conf, &Owner::new(id, "eth0"), req);
    s.close().unwrap();
    r.map(|v| v.into_iter().map(|(_, a)| a.to_string()).collect())
}

fn add_one(data: &TempDir, conf: &Config, id: &str) -> Result<Vec<String>> {
    add_with(data, conf, id, &vec![None; conf.range_sets.len()])
}

fn del_one(data: &TempDir, id: &str, ifname: &str) -> Vec<IpAddr> {
    let mut s = lock(data);
    let r = del(&mut s, &Owner::new(id, ifname)).unwrap();
    s.close().unwrap();
    r
}

/// The upstream-visible store (ours under .rhost-local excluded).
fn snapshot(data: &Path) -> Snapshot {
    let mut s = cni_testkit::snapshot(&data.join("net"));
    s.retain(|path, _| !path.starts_with(".rhost-local"));
    s
}

#[test]
fn add_round_robin_dual_stack_and_last_reserved() {
    let data = temp_dir("rhl-ipam");
    let conf = small(&data);
    assert_eq!(add_one(&data, &conf, "a").unwrap(), ["10.1.0.2", "fd00::2"]);
    assert_eq!(add_one(&data, &conf, "b").unwrap(), ["10.1.0.3", "fd00::3"]);
    let dir = data.join("net");
    assert_eq!(
        fs::read(dir.join("last_reserved_ip.0")).unwrap(),
        b"10.1.0.3"
    );
    assert_eq!(
        fs::read(dir.join("last_reserved_ip.1")).unwrap(),
        b"fd00::3"
    );
    // Round-robin: a released address is not handed out again before the range wraps.
    del_one(&data, "a", "eth0");
    assert_eq!(add_one(&data, &conf, "c").unwrap(), ["10.1.0.4", "fd00::4"]);
    assert_eq!(add_one(&data, &conf, "d").unwrap(), ["10.1.0.5", "fd00::5"]);
    assert_eq!(add_one(&data, &conf, "e").unwrap(), ["10.1.0.6", "fd00::6"]);
    assert_eq!(add_one(&data, &conf, "f").unwrap(), ["10.1.0.2", "fd00::7"]);
}

#[test]
fn add_retried_without_del_returns_the_same_addresses() {
    let data = temp_dir("rhl-ipam");
    let conf = small(&data);
    let first = add_one(&data, &conf, "a").unwrap();
    let before = snapshot(&data);
    assert_eq!(add_one(&data, &conf, "a").unwrap(), first);
    assert_eq!(snapshot(&data), before, "a retry changes nothing");
    // Another ifname of the same container is another attachment.
    let mut s = lock(&data);
    let other = add(&mut s, &conf, &Owner::new("a", "net1"), &[None, None]).unwrap();
    s.close().unwrap();
    assert_ne!(other[0].1.to_string(), first[0]);
}

#[test]
fn add_completes_a_partial_allocation() {
    // A kill between the two range sets leaves one address; the retry adds the other.
    let data = temp_dir("rhl-ipam");
    let conf = small(&data);
    let mut s = lock(&data);
    s.reserve(ip("10.1.0.4"), &Owner::new("a", "eth0")).unwrap();
    drop(s);
    assert_eq!(add_one(&data, &conf, "a").unwrap(), ["10.1.0.4", "fd00::2"]);
}

#[test]
fn old_format_reservation_is_this_containers() {
    let data = temp_dir("rhl-ipam");
    let conf = small(&data);
    fs::create_dir_all(data.join("net")).unwrap();
    fs::write(data.join("net/10.1.0.5"), b"a").unwrap();
    assert_eq!(add_one(&data, &conf, "a").unwrap(), ["10.1.0.5", "fd00::2"]);
    // DEL takes the exact reservations first (upstream's order); the old one goes on the next.
    assert_eq!(del_one(&data, "a", "eth0"), [ip("fd00::2")]);
    assert_eq!(del_one(&data, "a", "eth0"), [ip("10.1.0.5")]);
    assert!(del_one(&data, "a", "eth0").is_empty());
}

fn req(conf: &Config, nc: &NetConf, args: &str) -> Vec<Option<Requested>> {
    conf.assign(requested_ips(nc, &CniArgs::parse(args).unwrap()).unwrap())
        .unwrap()
}

#[test]
fn requested_addresses_all_or_nothing() {
    let data = temp_dir("rhl-ipam");
    let (conf, nc) = conf_with(
        &data,
        json!([[{"subnet": "10.1.0.0/29"}], [{"subnet": "fd00::/120"}]]),
        json!({}),
    );
    let r = req(&conf, &nc, "IP=10.1.0.5,fd00::50");
    assert_eq!(
        add_with(&data, &conf, "a", &r).unwrap(),
        ["10.1.0.5", "fd00::50"]
    );
    // The requested address itself moves last_reserved, as upstream's Reserve does.
    assert_eq!(
        fs::read(data.join("net/last_reserved_ip.1")).unwrap(),
        b"fd00::50"
    );
    // Retry: the same addresses back.
    assert_eq!(
        add_with(&data, &conf, "a", &r).unwrap(),
        ["10.1.0.5", "fd00::50"]
    );
    // Another container asking for a held address fails, and its other address is not kept.
    let before = snapshot(&data);
    let r2 = req(&conf, &nc, "IP=10.1.0.6,fd00::50");
    let e = add_with(&data, &conf, "b", &r2).unwrap_err();
    assert_eq!(e.code, ADDRESS_IN_USE);
    assert!(
        e.msg.contains("fd00::50") && e.msg.contains("container a"),
        "{}",
        e.msg
    );
    assert_eq!(snapshot(&data), before);
    // Asking for another address than the one held: refused, nothing changes.
    let r3 = req(&conf, &nc, "IP=10.1.0.4");
    let e = add_with(&data, &conf, "a", &r3).unwrap_err();
    assert_eq!(e.code, ADDRESS_IN_USE);
    assert!(e.msg.contains("already holds 10.1.0.5"), "{}", e.msg);
    assert_eq!(snapshot(&data), before);
}

#[test]
fn requested_network_address_refused_even_inside_an_explicit_range() {
    let data = temp_dir("rhl-ipam");
    let (conf, nc) = conf_with(
        &data,
        json!([[{"subnet": "10.1.0.0/29", "rangeStart": "10.1.0.0", "rangeEnd": "10.1.0.7"}]]),
        json!({}),
    );
    for (addr, what) in [
        ("10.1.0.0", "network"),
        ("10.1.0.7", "broadcast"),
        ("10.1.0.1", "gateway"),
    ] {
        let e = conf
            .assign(requested_ips(&nc, &CniArgs::parse(&format!("IP={addr}")).unwrap()).unwrap())
            .unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains(what), "{}", e.msg);
    }
    // Iteration skips them too.
    let got: Vec<_> = (0..5)
        .map(|i| add_one(&data, &conf, &format!("c{i}")).unwrap()[0].clone())
        .collect();
    assert_eq!(
        got,
        ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"]
    );
    assert_eq!(
        add_one(&data, &conf, "x").unwrap_err().code,
        ADDRESS_POOL_EXHAUSTED
    );
}

#[test]
fn exhaustion_names_network_and_range_and_reserves_nothing() {
    let data = temp_dir("rhl-ipam");
    let conf = small(&data);
    for i in 0..5 {
        add_one(&data, &conf, &format!("c{i}")).unwrap();
    }
    let before = snapshot(&data);
    let e = add_one(&data, &conf, "late").unwrap_err();
    assert_eq!(e.code, ADDRESS_POOL_EXHAUSTED);
    assert!(
        e.msg.contains("\"net\"")
            && e.msg.contains("range set 0")
            && e.msg.contains("10.1.0.1-10.1.0.6"),
        "{}",
        e.msg
    );
    assert_eq!(snapshot(&data), before, "the IPv6 address was given back");
    assert_eq!(status(&conf).unwrap_err().code, PLUGIN_NOT_AVAILABLE);
    del_one(&data, "c3", "eth0");
    status(&conf).unwrap();
    assert_eq!(
        add_one(&data, &conf, "late").unwrap(),
        ["10.1.0.5", "fd00::7"]
    );
}

#[test]
fn status_counts_leftovers_as_free_and_needs_no_store() {
    let data = temp_dir("rhl-ipam");
    let conf = small(&data);
    status(&conf).unwrap();
    assert!(!data.join("net").exists(), "STATUS creates nothing");
    for i in 0..5 {
        add_one(&data, &conf, &format!("c{i}")).unwrap();
    }
    // A writer killed between create and write left an empty reservation.
    del_one(&data, "c2", "eth0");
    fs::write(data.join("net/10.1.0.4"), b"").unwrap();
    status(&conf).unwrap();
    assert_eq!(add_one(&data, &conf, "n").unwrap()[0], "10.1.0.4");
}

#[test]
fn del_releases_exactly_the_attachment() {
    let data = temp_dir("rhl-ipam");
    let conf = small(&data);
    add_one(&data, &conf, "a").unwrap();
    let mut s = lock(&data);
    add(&mut s, &conf, &Owner::new("a", "net1"), &[None, None]).unwrap();
    s.close().unwrap();
    add_one(&data, &conf, "b").unwrap();
    assert_eq!(del_one(&data, "a", "eth0"), [ip("10.1.0.2"), ip("fd00::2")]);
    assert!(del_one(&data, "a", "eth0").is_empty(), "idempotent");
    assert!(del_one(&data, "zzz", "eth0").is_empty());
    let left: Vec<_> = snapshot(&data)
        .into_keys()
        .map(|n| n.display().to_string())
        .collect();
    assert_eq!(
        left,
        [
            "10.1.0.3",
            "10.1.0.4",
            "fd00::3",
            "fd00::4",
            "last_reserved_ip.0",
            "last_reserved_ip.1",
            "lock"
        ]
    );
}

fn check_one(data: &TempDir, conf: &Config, id: &str, prev: Option<&CniResult>) -> Result<()> {
    let mut s = lock(data);
    let r = check(&mut s, conf, &Owner::new(id, "eth0"), prev);
    s.close().unwrap();
    r
}

#[test]
fn check_confirms_allocation_and_prev_result() {
    let data = temp_dir("rhl-ipam");
    let conf = small(&data);
    add_one(&data, &conf, "a").unwrap();
    let good = CniResult {
        ips: vec![
            IpConfig::new("10.1.0.2/29".parse().unwrap(), None),
            IpConfig::new("fd00::2/120".parse().unwrap(), None),
            // Not in our ranges: another plugin's business.
            IpConfig::new("192.168.9.9/24".parse().unwrap(), None),
        ],
        ..Default::default()
    };
    check_one(&data, &conf, "a", Some(&good)).unwrap();
    check_one(&data, &conf, "a", None).unwrap();
    assert_eq!(
        check_one(&data, &conf, "b", None).unwrap_err().code,
        UNKNOWN_CONTAINER
    );
    let mut missing = good.clone();
    missing.ips.remove(1);
    let e = check_one(&data, &conf, "a", Some(&missing)).unwrap_err();
    assert_eq!(e.code, CHECK_MISMATCH);
    assert!(e.msg.contains("fd00::2"), "{}", e.msg);
    let mut extra = good.clone();
    extra
        .ips
        .push(IpConfig::new("10.1.0.6/29".parse().unwrap(), None));
    let e = check_one(&data, &conf, "a", Some(&extra)).unwrap_err();
    assert_eq!(e.code, CHECK_MISMATCH);
    assert!(e.msg.contains("10.1.0.6"), "{}", e.msg);
    let mut prefix = good.clone();
    prefix.ips[0].address = "10.1.0.2/24".parse().unwrap();
    assert_eq!(
        check_one(&data, &conf, "a", Some(&prefix))
            .unwrap_err()
            .code,
        CHECK_MISMATCH
    );
    // An address gone behind our back.
    fs::remove_file(data.join("net/fd00::2")).unwrap();
    let e = check_one(&data, &conf, "a", Some(&good)).unwrap_err();
    assert_eq!(e.code, CHECK_MISMATCH);
    assert!(e.msg.contains("range set 1"), "{}", e.msg);
}

#[test]
fn gc_keeps_exactly_the_valid_attachments() {
    let data = temp_dir("rhl-ipam");
    let conf = conf_with(&data, json!([[{"subnet": "10.1.0.0/24"}]]), json!({})).0;
    for id in ["keep", "drop", "twoif"] {
        add_one(&data, &conf, id).unwrap();
    }
    let mut s = lock(&data);
    add(&mut s, &conf, &Owner::new("twoif", "net1"), &[None]).unwrap();
    s.close().unwrap();
    let dir = data.join("net");
    fs::write(dir.join("10.1.0.50"), b"legacy").unwrap();
    fs::write(dir.join("10.1.0.51"), b"stale-legacy").unwrap();
    fs::write(dir.join("10.1.0.52"), b"").unwrap();
    let valid = vec![
        Attachment {
            container_id: "keep".into(),
            ifname: "eth0".into(),
        },
        Attachment {
            container_id: "twoif".into(),
            ifname: "eth0".into(),
        },
        Attachment {
            container_id: "legacy".into(),
            ifname: "eth0".into(),
        },
    ];
    let mut s = lock(&data);
    let r = gc(&mut s, &valid, None).unwrap();
    s.close().unwrap();
    assert_eq!(
        r,
        Rebuilt {
            kept: 3,
            released: 3,
            leftovers: 1
        }
    );
    let left: Vec<_> = snapshot(&data)
        .into_keys()
        .map(|n| n.display().to_string())
        .collect();
    assert_eq!(
        left,
        [
            "10.1.0.2",
            "10.1.0.4",
            "10.1.0.50",
            "last_reserved_ip.0",
            "lock"
        ]
    );
    // The index agrees: the collected attachment holds nothing, the kept ones their address.
    assert!(del_one(&data, "drop", "eth0").is_empty());
    assert_eq!(add_one(&data, &conf, "keep").unwrap(), ["10.1.0.2"]);
}

/// An ADD that started after the runtime drew up the valid list keeps its address.
#[test]
fn gc_keeps_what_was_reserved_after_keep_after() {
    let data = temp_dir("rhl-ipam");
    let conf = conf_with(&data, json!([[{"subnet": "10.1.0.0/24"}]]), json!({})).0;
    for id in ["old", "new"] {
        add_one(&data, &conf, id).unwrap();
    }
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(data.join("net/10.1.0.2"))
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    let keep_after = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    let mut s = lock(&data);
    let r = gc(&mut s, &[], Some(keep_after)).unwrap();
    s.close().unwrap();
    assert_eq!((r.kept, r.released), (1, 1));
    assert!(del_one(&data, "old", "eth0").is_empty());
    assert_eq!(del_one(&data, "new", "eth0"), [ip("10.1.0.3")]);
}
