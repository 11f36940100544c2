//! The real libcni (built offline from Debian's source) driving a conflist inside a node
//! namespace, as containerd or CRI-O would, and the shipped conflists.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use cni_testkit::Netns;
use serde_json::Value;

/// The workspace root (integration/..).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds `integration/libcni-driver` once per test process (GOPATH mode, offline, on Debian's
/// golang-github-appc-cni-dev source) and returns the binary. Panics saying why if it cannot:
/// an end-to-end test never skips.
pub fn libcni_driver() -> &'static Path {
    static DRIVER: OnceLock<PathBuf> = OnceLock::new();
    DRIVER.get_or_init(|| {
        let libcni = Path::new("/usr/share/gocode/src/github.com/containernetworking/cni/libcni");
        assert!(
            libcni.is_dir(),
            "libcni source missing at {}: apt-get install golang-github-appc-cni-dev (scripts/test does)",
            libcni.display()
        );
        let out_dir = cni_testkit::bin_dir().join("libcni-driver-build");
        let gopath = out_dir.join("gopath");
        let src = gopath.join("src/libcni-driver");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::copy(workspace_root().join("integration/libcni-driver/main.go"), src.join("main.go")).unwrap();
        // A per-process output name: test binaries run in parallel and must not race on one file.
        let bin = out_dir.join(format!("libcni-driver-{}", std::process::id()));
        let output = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(&src)
            .env("GO111MODULE", "off")
            .env("GOPATH", format!("{}:/usr/share/gocode", gopath.display()))
            .env("GOCACHE", out_dir.join("gocache"))
            .env("GOFLAGS", "-mod=mod")
            .output()
            .unwrap_or_else(|e| panic!("cannot run `go` to build the libcni driver: {e}; apt-get install golang-go (scripts/test does)"));
        assert!(
            output.status.success(),
            "building the libcni driver failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        bin
    })
}

/// A conflist from `conflists/`, parsed.
pub fn shipped_conflist(name: &str) -> Value {
    let path = workspace_root().join("conflists").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The outcome of one libcni call.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub json: Value,
    pub stderr: String,
}

impl Outcome {
    pub fn expect_ok(self, what: &str) -> Value {
        assert!(
            self.ok,
            "{what} failed: {}\nstderr: {}",
            self.json, self.stderr
        );
        self.json
    }
}

/// One attachment driven through libcni: a conflist file, a pod, a cache directory.
pub struct Libcni<'a> {
    pub node: &'a Netns,
    pub conflist: PathBuf,
    pub cache: PathBuf,
    pub path: String,
}

impl Libcni<'_> {
    pub fn call(
        &self,
        action: &str,
        id: &str,
        pod: Option<&Netns>,
        ifname: &str,
        extra: &[&str],
    ) -> Outcome {
        let netns = pod
            .map(|p| p.path().display().to_string())
            .unwrap_or_default();
        let out = self
            .node
            .command(libcni_driver())
            .arg(action)
            .arg("-conflist")
            .arg(&self.conflist)
            .arg("-netns")
            .arg(&netns)
            .arg("-id")
            .arg(id)
            .arg("-ifname")
            .arg(ifname)
            .arg("-path")
            .arg(&self.path)
            .arg("-cache")
            .arg(&self.cache)
            .args(extra)
            .output()
            .expect("running the libcni driver");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|_| Value::String(stdout.to_string()));
        Outcome {
            ok: out.status.success(),
            json,
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }
}
