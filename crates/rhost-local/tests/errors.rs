//! Every bad input gets the spec's error with the right code and a message naming what is
//! wrong, and leaves the store exactly as it was (our index included).

mod common;

use std::path::Path;

use cni_testkit::{run_plugin, snapshot, temp_dir, upstream_version, Invocation};
use common::*;
use serde_json::{json, Value};

struct Case {
    what: &'static str,
    verb: &'static str,
    id: &'static str,
    ifname: &'static str,
    args: &'static str,
    stdin: String,
    code: u64,
    /// Text the message must hold (the key, variable or address at fault).
    names: &'static str,
}

fn case(
    what: &'static str,
    verb: &'static str,
    stdin: Value,
    code: u64,
    names: &'static str,
) -> Case {
    Case {
        what,
        verb,
        id: "bad",
        ifname: "eth0",
        args: "",
        stdin: stdin.to_string(),
        code,
        names,
    }
}

fn with(base: &Value, f: impl FnOnce(&mut Value)) -> Value {
    let mut v = base.clone();
    f(&mut v);
    v
}

#[test]
fn bad_input_is_refused_with_the_right_code_and_changes_nothing() {
    let data = temp_dir("rhl-errors");
    let good = conf(
        &data,
        "1.1.0",
        json!({"ranges": [[{"subnet": "10.40.0.0/28"}], [{"subnet": "fd00:40::/64"}]]}),
    );
    // A store with reservations of both plugins and a fresh index.
    let mut up = good.clone();
    up["cniVersion"] = json!("1.0.0");
    call(&upstream(), "ADD", "u0", "eth0", &up).assert_ok();
    call(&ours(), "ADD", "o0", "eth0", &good).assert_ok();
    call(&ours(), "ADD", "o1", "eth0", &good).assert_ok();

    let ranges = |r: Value| with(&good, |v| v["ipam"]["ranges"] = r);
    let mut cases = vec![
        Case {
            stdin: "{not json".into(),
            ..case("stdin not JSON", "ADD", json!(null), 6, "JSON")
        },
        case(
            "unknown version",
            "ADD",
            with(&good, |v| v["cniVersion"] = json!("0.9.0")),
            1,
            "0.9.0",
        ),
        case(
            "CHECK before 0.4.0",
            "CHECK",
            with(&good, |v| v["cniVersion"] = json!("0.3.1")),
            1,
            "0.4.0",
        ),
        case(
            "GC before 1.1.0",
            "GC",
            with(&good, |v| v["cniVersion"] = json!("1.0.0")),
            1,
            "1.1.0",
        ),
        Case {
            id: "",
            ..case("no container ID", "ADD", good.clone(), 4, "CNI_CONTAINERID")
        },
        Case {
            id: "a/b",
            ..case(
                "bad container ID",
                "DEL",
                good.clone(),
                4,
                "CNI_CONTAINERID",
            )
        },
        Case {
            ifname: "a:b",
            ..case("bad ifname", "ADD", good.clone(), 4, "CNI_IFNAME")
        },
        case(
            "no ipam",
            "ADD",
            with(&good, |v| {
                v.as_object_mut().unwrap().remove("ipam");
            }),
            7,
            "ipam",
        ),
        case(
            "no ranges",
            "ADD",
            with(&good, |v| v["ipam"] = json!({"dataDir": data.path()})),
            7,
            "ipam.ranges",
        ),
        case(
            "subnet not CIDR",
            "ADD",
            ranges(json!([[{"subnet": "10.40.0.0"}]])),
            7,
            "ipam.ranges[0][0].subnet",
        ),
        case(
            "/31",
            "ADD",
            ranges(json!([[{"subnet": "10.40.0.0/31"}]])),
            7,
            "ipam.ranges[0][0].subnet",
        ),
        case(
            "/32",
            "DEL",
            ranges(json!([[{"subnet": "10.40.0.0/32"}]])),
            7,
            "ipam.ranges[0][0].subnet",
        ),
        case(
            "rangeStart outside",
            "ADD",
            ranges(
                json!([[{"subnet": "10.40.0.0/28"}, {"subnet": "10.41.0.0/28", "rangeStart": "10.40.0.5"}]]),
            ),
            7,
            "ipam.ranges[0][1].rangeStart",
        ),
        case(
            "overlapping sets",
            "ADD",
            ranges(json!([[{"subnet": "10.40.0.0/28"}], [{"subnet": "10.40.0.0/24"}]])),
            7,
            "overlap",
        ),
        case(
            "overlap in a set",
            "GC",
            ranges(json!([[{"subnet": "10.40.0.0/28"}, {"subnet": "10.40.0.8/29"}]])),
            7,
            "ipam.ranges[0][1]",
        ),
        case(
            "bad routes",
            "ADD",
            with(&good, |v| {
                v["ipam"]["routes"] = json!([{"gw": "10.40.0.1"}])
            }),
            7,
            "ipam.routes[0]",
        ),
        case(
            "bad name",
            "ADD",
            with(&good, |v| v["name"] = json!("../../etc")),
            7,
            "name",
        ),
        case(
            "missing resolvConf",
            "ADD",
            with(&good, |v| {
                v["ipam"]["resolvConf"] = json!("/nonexistent/resolv.conf")
            }),
            7,
            "ipam.resolvConf",
        ),
        Case {
            args: "IP=10.40.0.x",
            ..case("bad CNI_ARGS IP", "ADD", good.clone(), 4, "CNI_ARGS IP")
        },
        Case {
            args: "IP",
            ..case("malformed CNI_ARGS", "ADD", good.clone(), 4, "CNI_ARGS")
        },
        Case {
            args: "FOO=1",
            ..case("unknown CNI_ARGS key", "ADD", good.clone(), 4, "FOO")
        },
        Case {
            args: "IP=10.99.0.5",
            ..case("CNI_ARGS IP outside", "ADD", good.clone(), 4, "10.99.0.5")
        },
        case(
            "args.cni.ips outside",
            "ADD",
            with(&good, |v| {
                v["args"] = json!({"cni": {"ips": ["10.40.0.3", "fd01::1"]}})
            }),
            7,
            "fd01::1",
        ),
        case(
            "runtimeConfig.ips gateway",
            "ADD",
            with(&good, |v| {
                v["runtimeConfig"] = json!({"ips": ["10.40.0.1/28"]})
            }),
            7,
            "gateway",
        ),
        Case {
            args: "IP=10.40.0.4,10.40.0.5",
            ..case(
                "two requested in one set",
                "ADD",
                good.clone(),
                4,
                "10.40.0.5",
            )
        },
        // Not malformed, but in conflict with the store: refused all the same, nothing kept.
        Case {
            args: "IgnoreUnknown=1;IP=10.40.0.9,fd00:40::2",
            ..case(
                "requested address held by another",
                "ADD",
                good.clone(),
                106,
                "fd00:40::2",
            )
        },
        Case {
            id: "o0",
            args: "IP=10.40.0.9",
            ..case(
                "different address for a held attachment",
                "ADD",
                good.clone(),
                106,
                "already holds",
            )
        },
        case(
            "GC without valid attachments",
            "GC",
            good.clone(),
            7,
            "cni.dev/valid-attachments",
        ),
        case(
            "GC with malformed attachments",
            "GC",
            with(&good, |v| {
                v["cni.dev/valid-attachments"] = json!([{"containerID": 5}])
            }),
            7,
            "cni.dev/valid-attachments[0]",
        ),
        case(
            "CHECK with a bad prevResult",
            "CHECK",
            with(&good, |v| {
                v["prevResult"] = json!({"ips": [{"address": "nope"}]})
            }),
            6,
            "prevResult",
        ),
    ];
    // A CHECK that finds nothing, and one that disagrees with prevResult.
    cases.push(case(
        "CHECK unknown attachment",
        "CHECK",
        good.clone(),
        3,
        "container bad",
    ));
    let r = call(&ours(), "ADD", "o0", "eth0", &good).ok().clone();
    let mut wrong = r.clone();
    wrong["ips"][0]["address"] = json!("10.40.0.14/28");
    cases.push(Case {
        id: "o0",
        ..case(
            "CHECK mismatch",
            "CHECK",
            with(&good, |v| v["prevResult"] = wrong),
            102,
            "10.40.0.14",
        )
    });

    let before = snapshot(&data);
    assert!(
        before.contains_key(Path::new(&format!("{NET}/.rhost-local/marker"))),
        "index in place"
    );
    for c in &cases {
        let netns = (c.verb == "ADD" || c.verb == "CHECK").then_some("/var/run/netns/unused");
        let inv = Invocation::new(c.verb, c.id, netns, c.ifname)
            .with_args(c.args)
            .with_path("/nonexistent");
        let r = run_plugin(None, &ours(), &inv, &c.stdin);
        assert_ne!(r.code, 0, "{}: succeeded", c.what);
        let err = r
            .json
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no JSON: {}", c.what, r.stdout));
        assert_eq!(err["code"], c.code, "{}: {}", c.what, r.stdout);
        let msg = err["msg"].as_str().unwrap();
        assert!(
            msg.contains(c.names),
            "{}: {msg:?} should name {}",
            c.what,
            c.names
        );
        assert!(err["cniVersion"].is_string(), "{}", c.what);
        assert_eq!(snapshot(&data), before, "{}: the store changed", c.what);
    }
}

/// Bad input for a network that has no store yet creates none.
#[test]
fn refused_add_creates_no_store() {
    let data = temp_dir("rhl-errors");
    let c = conf(
        &data,
        "1.0.0",
        json!({"ranges": [[{"subnet": "10.50.0.0/24"}]]}),
    );
    let r = call_args(&ours(), "ADD", "a", "eth0", "IP=10.51.0.1", &c);
    assert_eq!(r.err_code(), Some(4));
    for verb in ["DEL", "CHECK"] {
        let _ = call(&ours(), verb, "a", "eth0", &c);
    }
    let mut gc_conf = c.clone();
    gc_conf["cniVersion"] = json!("1.1.0");
    gc(&data, &gc_conf, &[]).assert_ok();
    call(&ours(), "STATUS", "", "", &gc_conf).assert_ok();
    assert!(snapshot(&data).is_empty(), "{:?}", snapshot(&data));
}

/// An ADD refused because the range is full (code 104) leaves nothing naming the refused pod
/// anywhere in the store: no reservation, no index entry, no temporary file. The range is full
/// of our own and of upstream's reservations, in every version.
#[test]
fn a_full_range_refuses_an_add_without_a_trace_of_the_pod() {
    for version in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let data = temp_dir("rhl-errors");
        // A /29 holds five pods: .2 to .6 (.1 is the gateway, .7 the broadcast address).
        let ipam = json!({"ranges": [[{"subnet": "10.60.0.0/29"}]]});
        let c = conf(&data, version, ipam.clone());
        let uc = conf(&data, upstream_version(version), ipam);
        for n in 0..5 {
            let id = format!("holder-{n}");
            if n % 2 == 0 {
                call(&ours(), "ADD", &id, "eth0", &c).assert_ok();
            } else {
                call(&upstream(), "ADD", &id, "eth0", &uc).assert_ok();
            }
        }
        let held = reservations(&data).len();
        let r = call(&ours(), "ADD", "refused-pod", "eth9", &c);
        assert_eq!(r.err_code(), Some(104), "{version}: {}", r.stdout);
        assert_eq!(reservations(&data).len(), held, "{version}");
        for (path, entry) in snapshot(&data) {
            let text = String::from_utf8_lossy(entry.content());
            let path = path.display().to_string();
            assert!(
                !path.contains("refused-pod") && !text.contains("refused-pod"),
                "{version}: {path} names the refused pod: {text:?}"
            );
        }
        assert_eq!(temp_files(&data), 0, "{version}");
    }
}
