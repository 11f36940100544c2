//! `rcni lint` as an operator runs it, against the real plugins: ours as built, upstream's from
//! containernetworking-plugins.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::json;

fn bin_dirs() -> String {
    // Fail loudly when the plugins are not there rather than lint against nothing.
    cni_testkit::plugin_bin("rbridge");
    cni_testkit::upstream_bin("portmap");
    cni_testkit::cni_path_with_upstream()
}

fn lint(files: &[&Path], stdin: Option<&str>) -> (Output, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rcni"));
    cmd.arg("lint").arg("--bin-dir").arg(bin_dirs()).args(files);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, text)
}

fn shipped() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conflists");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    files
}

#[test]
fn the_shipped_conflists_are_accepted() {
    for file in shipped() {
        let (out, text) = lint(&[&file], None);
        assert!(out.status.success(), "{}:\n{text}", file.display());
        assert!(!text.contains(": error: "), "{text}");
        assert!(text.contains(": ok: network"), "{text}");
    }
    // All at once: they are alternatives for one node, whose ranges overlap (warnings).
    let files = shipped();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (out, text) = lint(&refs, None);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("0 errors"), "{text}");
}

#[test]
fn a_plugin_type_not_in_the_bin_dirs_is_rejected_by_name() {
    let dir = cni_testkit::temp_dir("rcni-lint");
    let file = dir.join("10-pods.conflist");
    let text = std::fs::read_to_string(shipped()[0].clone()).unwrap();
    std::fs::write(&file, text.replace("\"portmap\"", "\"portmapper\"")).unwrap();
    let (out, text) = lint(&[&file], None);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains(": error: "))
        .unwrap_or_else(|| panic!("no error in:\n{text}"));
    assert!(
        line.contains("plugins[2].type: plugin \"portmapper\" not found in the bin dirs"),
        "{line}"
    );
    assert!(
        line.contains(&cni_testkit::upstream_dir().display().to_string()),
        "{line}"
    );
    assert!(line.contains("did you mean \"portmap\"?"), "{line}");
}

#[test]
fn what_the_installer_renders_is_accepted() {
    let installer = cni_testkit::plugin_bin("rcni-install");
    let out = Command::new(installer)
        .args(["render", "--pod-cidr", "10.244.1.0/24,fd00:10:244:1::/64"])
        .args([
            "--cluster-cidr",
            "10.244.0.0/16,fd00:10:244::/56",
            "--mtu",
            "1450",
        ])
        .args(["--host-route", "10.244.2.0/24=192.168.1.12"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let (out, text) = lint(&[Path::new("-")], Some(&rendered));
    assert!(out.status.success(), "{text}\n{rendered}");
    // `render` offers every version of ours; Debian's portmap stops at 1.0.0, which runtimes
    // that read cniVersions would trip on (`up` and the agent offer only what portmap has).
    for line in text.lines().filter(|l| l.contains(": warning: ")) {
        assert!(
            line.contains("\"portmap\"") && line.contains("1.1.0"),
            "{line}"
        );
    }
    assert!(text.contains("-: ok: network \"rcni\""), "{text}");
}

#[test]
fn a_broken_conflist_exits_one_with_line_and_column() {
    let dir = cni_testkit::temp_dir("rcni-lint");
    let file = dir.join("10-pods.conflist");
    std::fs::write(&file, json!({"name": "pods"}).to_string().replace('}', "")).unwrap();
    let (out, text) = lint(&[&file], None);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{}:1:14: error: not valid JSON", file.display())),
        "{text}"
    );
}
