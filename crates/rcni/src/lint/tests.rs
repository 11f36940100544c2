//! lint over conflists of every kind of mistake, against fake plugins that answer VERSION.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::OnceLock;

use serde_json::{json, Value};

use super::*;

const ALL: &str = r#"["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]"#;
const UP_TO_1_0: &str = r#"["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0"]"#;

/// A bin dir of scripts answering VERSION like our plugins (all versions) and Debian's upstream
/// ones (up to 1.0.0). Made once, before any test runs one: a script still open for writing
/// in one thread while another forks cannot be executed (ETXTBSY).
fn bins() -> &'static Path {
    static DIR: OnceLock<cni_testkit::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = cni_testkit::temp_dir("rcni-lint-bins");
        let plugins = [
            ("rbridge", ALL),
            ("rhost-local", ALL),
            ("rmasq", ALL),
            ("rroutes", ALL),
            ("bridge", UP_TO_1_0),
            ("host-local", UP_TO_1_0),
            ("portmap", UP_TO_1_0),
            ("tuning", UP_TO_1_0),
            ("bandwidth", UP_TO_1_0),
        ];
        for (name, versions) in plugins {
            let path = dir.join(name);
            let script = format!(
                "#!/bin/sh\ncat >/dev/null\necho '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":{versions}}}'\n"
            );
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    })
}

fn lint(file: &str, text: &str) -> FileReport {
    let b = BinDirs::parse(&bins().display().to_string());
    let mut report = FileReport::new(file);
    lint_bytes(file, text.as_bytes(), &b, &mut report);
    report
}

fn lint_json(v: Value) -> FileReport {
    lint("x.conflist", &v.to_string())
}

/// The network of most tests: rbridge with rhost-local, rmasq, rroutes, portmap.
fn good() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "pods",
        "plugins": [
            {"type": "rbridge", "bridge": "cni0", "isGateway": true,
             "ipam": {"type": "rhost-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]}},
            {"type": "rmasq", "nonMasqueradeCIDRs": ["10.244.0.0/16"]},
            {"type": "rroutes", "hostRoutes": [{"dst": "10.244.2.0/24", "gw": "192.168.1.2"}]},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

/// The one finding of `r`, which must be of `severity` at `path`.
fn only(r: &FileReport, severity: Severity, path: &str) -> String {
    assert_eq!(r.findings.len(), 1, "{}", r.render());
    let f = &r.findings[0];
    assert_eq!(
        (f.severity, f.path.as_str()),
        (severity, path),
        "{}",
        r.render()
    );
    f.message.clone()
}

#[test]
fn a_good_conflist_has_no_findings() {
    let r = lint_json(good());
    assert!(r.findings.is_empty(), "{}", r.render());
    assert!(
        r.render()
            .contains("ok: network \"pods\", cniVersion 1.0.0, 4 plugins"),
        "{}",
        r.render()
    );
}

#[test]
fn bad_json_names_line_and_column() {
    let r = lint(
        "x.conflist",
        "{\n  \"name\": \"pods\"\n  \"plugins\": []\n}\n",
    );
    only(&r, Severity::Error, "");
    assert_eq!(r.findings[0].line_col, Some((3, 3)));
    assert!(
        r.render()
            .starts_with("x.conflist:3:3: error: not valid JSON"),
        "{}",
        r.render()
    );
}

#[test]
fn bad_name() {
    let mut c = good();
    c["name"] = json!("pods/1");
    let m = only(&lint_json(c), Severity::Error, "name");
    assert!(m.contains("invalid characters"), "{m}");
}

#[test]
fn unknown_versions() {
    let mut c = good();
    c["cniVersion"] = json!("1.2.0");
    let m = only(&lint_json(c), Severity::Error, "cniVersion");
    assert!(
        m.contains("\"1.2.0\" is not a CNI spec version: use one of 0.1.0"),
        "{m}"
    );
    let mut c = good();
    c["cniVersions"] = json!(["1.0.0", "latest"]);
    only(&lint_json(c), Severity::Error, "cniVersions[1]");
}

#[test]
fn a_plugin_missing_from_the_bin_dirs_is_named() {
    let mut c = good();
    c["plugins"][3]["type"] = json!("portmapp");
    let r = lint_json(c);
    let m = only(&r, Severity::Error, "plugins[3].type");
    assert!(
        m.contains("plugin \"portmapp\" not found in the bin dirs"),
        "{m}"
    );
    assert!(m.contains(&bins().display().to_string()), "{m}");
    assert!(m.contains("did you mean \"portmap\"?"), "{m}");
    let mut c = good();
    c["plugins"][0]["ipam"]["type"] = json!("whereabouts");
    let m = only(&lint_json(c), Severity::Error, "plugins[0].ipam.type");
    assert!(m.contains("\"whereabouts\" not found"), "{m}");
}

#[test]
fn a_plugin_that_does_not_support_the_version() {
    let mut c = good();
    c["cniVersion"] = json!("1.1.0");
    let m = only(&lint_json(c), Severity::Error, "plugins[3].type");
    assert!(m.contains("\"portmap\""), "{m}");
    assert!(m.contains("does not support cniVersion 1.1.0 (it supports 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0)"), "{m}");
    // Only runtimes that read cniVersions would pick 1.1.0: a warning.
    let mut c = good();
    c["cniVersions"] = json!(["0.4.0", "1.0.0", "1.1.0"]);
    let m = only(&lint_json(c), Severity::Warning, "plugins[3].type");
    assert!(m.contains("libcni 1.2 or later"), "{m}");
}

#[test]
fn our_plugins_configs_through_their_parsers() {
    let cases = [
        (
            0,
            "mtu",
            json!(20),
            "plugins[0].mtu",
            "rbridge refuses this config: mtu 20 is out of range",
        ),
        (
            0,
            "vlan",
            json!("x"),
            "plugins[0].vlan",
            "rbridge refuses this config: vlan: invalid type",
        ),
        (
            1,
            "backend",
            json!("pf"),
            "plugins[1].backend",
            "rmasq refuses this config: backend: unknown variant",
        ),
        (
            2,
            "addRoutes",
            json!([{"dst": "10.0.0.0/33"}]),
            "plugins[2].addRoutes[0].dst",
            "rroutes refuses this config",
        ),
    ];
    for (i, key, value, path, want) in cases {
        let mut c = good();
        c["plugins"][i][key] = value;
        let m = only(&lint_json(c), Severity::Error, path);
        assert!(m.starts_with(want), "{m}");
    }
    let mut c = good();
    c["plugins"][0]["ipam"]["ranges"] =
        json!([[{"subnet": "10.244.1.0/24", "gateway": "10.9.0.1"}]]);
    let m = only(
        &lint_json(c),
        Severity::Error,
        "plugins[0].ipam.ranges[0][0].gateway",
    );
    assert!(
        m.contains("rhost-local refuses this config: ipam.ranges[0][0].gateway 10.9.0.1 is not in"),
        "{m}"
    );
    let mut c = good();
    c["plugins"][0]["ipam"]["ranges"] = json!([[{"subnet": "10.244.1.1/24"}]]);
    let m = only(
        &lint_json(c),
        Severity::Error,
        "plugins[0].ipam.ranges[0][0].subnet",
    );
    assert!(m.contains("host bits set"), "{m}");
}

#[test]
fn unknown_keys_are_warnings_with_the_nearest_key() {
    let mut c = good();
    c["plugins"][0]["hairpinmod"] = json!(true);
    c["plugins"][1]["nonMasqueradeCIDR"] = json!(["10.0.0.0/8"]);
    c["plugins"][0]["ipam"]["range"] = json!([]);
    c["plugins"][0]["ipam"]["ranges"][0][0]["rangestrt"] = json!("10.244.1.10");
    // Our plugins read keys as Go does, ignoring case: these are read, not unknown.
    c["plugins"][2]["HOSTROUTES"] = c["plugins"][2]["hostRoutes"].take();
    c["plugins"][0]["hairpinmode"] = json!(true);
    c["plugins"][0]["ipam"]["ranges"][0][0]["RangeEnd"] = json!("10.244.1.20");
    let r = lint_json(c);
    let got: Vec<(Severity, &str, &str)> = r
        .findings
        .iter()
        .map(|f| (f.severity, f.path.as_str(), f.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (Severity::Warning, "plugins[0].hairpinmod", "rbridge does not read \"hairpinmod\", so it has no effect; did you mean \"hairpinMode\"?"),
            (Severity::Warning, "plugins[0].ipam.range", "rhost-local does not read \"range\", so it has no effect; did you mean \"ranges\"?"),
            (Severity::Warning, "plugins[0].ipam.ranges[0][0].rangestrt", "rhost-local does not read \"rangestrt\", so it has no effect; did you mean \"rangeStart\"?"),
            (Severity::Warning, "plugins[1].nonMasqueradeCIDR", "rmasq does not read \"nonMasqueradeCIDR\", so it has no effect; did you mean \"nonMasqueradeCIDRs\"?"),
        ],
        "{}",
        r.render()
    );
}

#[test]
fn rmasq_first_in_the_chain() {
    let mut c = good();
    let plugins = c["plugins"].as_array_mut().unwrap();
    let rmasq = plugins.remove(1);
    plugins.insert(0, rmasq);
    let m = only(&lint_json(c), Severity::Error, "plugins[0].type");
    assert!(m.contains("rmasq is a chained plugin"), "{m}");
    assert!(m.contains("move it after plugins[1] (rbridge)"), "{m}");
}

#[test]
fn single_plugin_configs() {
    let r = lint(
        "10-pods.conf",
        &json!({"cniVersion": "1.0.0", "name": "pods", "type": "rbridge", "mtu": 70000})
            .to_string(),
    );
    let m = only(&r, Severity::Error, "mtu");
    assert!(m.contains("mtu 70000 is out of range"), "{m}");
    let r = lint(
        "10-pods.conf",
        &json!({"cniVersion": "1.0.0", "name": "pods"}).to_string(),
    );
    only(&r, Severity::Error, "type");
}

#[test]
fn overlapping_ranges_between_networks() {
    let dir = cni_testkit::temp_dir("rcni-lint-overlap");
    let a = dir.join("10-a.conflist");
    let b = dir.join("20-b.conflist");
    let c = dir.join("30-c.conflist");
    std::fs::write(&a, good().to_string()).unwrap();
    let mut other = good();
    other["name"] = json!("other");
    other["plugins"][0]["ipam"]["ranges"] = json!([[{"subnet": "10.244.0.0/16"}]]);
    std::fs::write(&b, other.to_string()).unwrap();
    let mut apart = good();
    apart["name"] = json!("apart");
    apart["plugins"][0]["ipam"]["ranges"] = json!([[{"subnet": "10.245.0.0/16"}]]);
    std::fs::write(&c, apart.to_string()).unwrap();
    let b_dirs = BinDirs::parse(&bins().display().to_string());
    let reports = lint_files(&[a, b, c], &b_dirs);
    assert!(reports[0].findings.is_empty(), "{}", reports[0].render());
    let m = only(
        &reports[1],
        Severity::Warning,
        "plugins[0].ipam.ranges[0][0]",
    );
    assert!(
        m.contains("10.244.0.0/16 (10.244.0.1-10.244.255.254) overlaps network \"pods\""),
        "{m}"
    );
    assert!(
        m.contains("10-a.conflist (plugins[0].ipam.ranges[0][0]: 10.244.1.0/24"),
        "{m}"
    );
    assert!(reports[2].findings.is_empty(), "{}", reports[2].render());
}

#[test]
fn the_shipped_conflists_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conflists");
    let mut n = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let r = lint(
            &path.display().to_string(),
            &std::fs::read_to_string(&path).unwrap(),
        );
        assert_eq!(r.count(Severity::Error), 0, "{}", r.render());
        n += 1;
    }
    assert!(n >= 4, "only {n} conflists in {}", root.display());
}

#[test]
fn a_refusal_at_both_versions_is_reported_once() {
    let mut c = good();
    c["cniVersions"] = json!(["1.0.0", "1.1.0"]);
    c["plugins"].as_array_mut().unwrap().truncate(3);
    c["plugins"][0]["mtu"] = json!(20);
    let m = only(&lint_json(c), Severity::Error, "plugins[0].mtu");
    assert!(m.starts_with("rbridge refuses this config: mtu 20"), "{m}");
    // Only the version of cniVersion refuses: said without "from cniVersions".
    let mut c = good();
    c["cniVersion"] = json!("0.2.0");
    c["cniVersions"] = json!(["0.2.0", "1.0.0"]);
    c["plugins"] = json!([{"type": "rbridge", "ipam": {"type": "rhost-local",
        "ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]}}]);
    let m = only(&lint_json(c), Severity::Error, "plugins[0]");
    assert!(
        m.starts_with(
            "rhost-local refuses this config: cniVersion 0.2.0 results hold one address per family"
        ),
        "{m}"
    );
}
