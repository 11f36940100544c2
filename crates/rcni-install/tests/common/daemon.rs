//! The node agent (`rcni-install daemon`) as a child process inside the test node's network
//! namespace, watching a fake API server in the same namespace, with its HTTP endpoints read
//! from inside the namespace too.

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cni_testkit::{FakeApi, FakeNode, Netns};
use serde_json::Value;

use super::{installer_in, Node};

pub const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.test-token";
/// Where the agent serves /metrics, /healthz and /readyz: inside the node's namespace, so any
/// fixed port is free.
pub const METRICS: &str = "127.0.0.1:9465";

/// The node's LAN: a veth to a peer namespace, so that the other nodes' addresses
/// (192.168.56.0/24, fd00:56::/64) are on-link and their routes can be added.
pub fn lan(node: &Node) -> Netns {
    let peer = Netns::new("lan");
    node.ns
        .veth_to(&peer, "eth0", "p0", "192.168.56.12/24", "192.168.56.1/24");
    node.ns
        .ip(&["addr", "add", "fd00:56::12/64", "dev", "eth0", "nodad"]);
    peer
}

/// A fake API server on the node namespace's loopback.
pub fn api(node: &Node) -> FakeApi {
    FakeApi::start_in(&node.ns, "127.0.0.1:0".parse().unwrap(), TOKEN)
}

/// `worker-N`: podCIDR 10.244.N.0/24, address 192.168.56.(10+N).
pub fn worker(n: u32) -> FakeNode {
    FakeNode::new(
        &format!("worker-{n}"),
        &[&format!("10.244.{n}.0/24")],
        &[&format!("192.168.56.{}", 10 + n)],
    )
}

pub struct Daemon<'a> {
    node: &'a Node,
    child: Option<Child>,
    log: PathBuf,
    pub metrics: SocketAddr,
}

impl<'a> Daemon<'a> {
    /// Starts the agent as worker-2 of `api`'s cluster 10.244.0.0/16, with the node's layout
    /// and source dir, MTU 1450 and `extra` flags.
    pub fn start(node: &'a Node, api: &FakeApi, extra: &[&str]) -> Daemon<'a> {
        let token = node.aux.join("token");
        // As kubelet mounts it: a stray trailing newline must not matter.
        fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let log = node
            .aux
            .join(format!("daemon-{}.log", cni_testkit::container_id()));
        let mut cmd = installer_in(&node.ns);
        cmd.arg("daemon")
            .args(node.layout_args())
            .args(["--src-dir", node.src.to_str().unwrap()])
            .args(["--api-server", &api.url()])
            .args(["--token-file", token.to_str().unwrap()])
            .args(["--node-name", "worker-2", "--cluster-cidr", "10.244.0.0/16"])
            .args(["--mtu", "1450", "--metrics-addr", METRICS])
            .args(extra)
            .env("RCNI_LOG", "info,kube=warn")
            // No collection of the machine's runtime and libcni cache; GC tests turn it on.
            .env("RCNI_GC_INTERVAL", "off")
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        let child = cmd.spawn().expect("starting rcni-install daemon");
        Daemon {
            node,
            child: Some(child),
            log,
            metrics: METRICS.parse().unwrap(),
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on the agent's address: status and body (status 0: nothing listening).
    pub fn get(&self, path: &str) -> (u16, String) {
        self.node
            .ns
            .http_get(self.metrics, path)
            .unwrap_or_else(|e| (0, e.to_string()))
    }

    /// Waits until /readyz says 200; panics with the log after `secs`.
    pub fn wait_ready(&self, secs: u64) {
        let start = Instant::now();
        loop {
            if self.get("/readyz").0 == 200 {
                return;
            }
            self.assert_running();
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "not ready after {secs} s: {:?}\n{}",
                self.get("/readyz"),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// /metrics, parsed (and checked) as OpenMetrics text.
    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    pub fn assert_running(&self) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: kill(2) with signal 0 on our own child: no effect but the check.
        let alive = unsafe { libc::kill(pid, 0) } == 0 && !is_zombie(pid);
        assert!(alive, "the agent exited\n{}", self.log());
    }

    /// SIGTERM, then the exit status; panics if it is still running 5 s later.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                panic!("still running 5 s after SIGTERM\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

/// Samples of an OpenMetrics exposition, checked line by line as it is parsed: every sample
/// belongs to a declared family, labels are well quoted, values are numbers, `# EOF` ends it.
pub struct Metrics {
    samples: Vec<Sample>,
}

/// Name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut families: Vec<String> = Vec::new();
        let mut samples = Vec::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if line == "# EOF" {
                assert!(lines.peek().is_none(), "text after # EOF");
                return Metrics { samples };
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                assert!(
                    ["counter", "gauge", "histogram", "info", "unknown"].contains(&kind),
                    "{line}"
                );
                families.push(name.to_string());
                continue;
            }
            if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
                continue;
            }
            let sample = parse_sample(line);
            assert!(
                families.iter().any(|f| sample.0.starts_with(f.as_str())),
                "sample of no declared family: {line}"
            );
            samples.push(sample);
        }
        panic!("no # EOF at the end:\n{text}");
    }

    /// The value of the sample `name` whose labels include all of `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.2)
    }

    /// [`Metrics::get`], 0 when absent (a counter family with no sample yet).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

fn parse_sample(line: &str) -> Sample {
    let (head, value) = match line.rfind('}') {
        Some(i) => (&line[..=i], line[i + 1..].trim()),
        None => line
            .split_once(' ')
            .unwrap_or_else(|| panic!("bad sample {line:?}")),
    };
    let value = value.split(' ').next().unwrap();
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    let (name, labels) = match head.split_once('{') {
        Some((n, l)) => (n, l.strip_suffix('}').unwrap()),
        None => (head, ""),
    };
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name in {line:?}"
    );
    let mut out = Vec::new();
    for pair in labels.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("bad label in {line:?}"));
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
        out.push((k.to_string(), v.to_string()));
    }
    (name.to_string(), out, value)
}

/// Routes the agent installed (protocol 114) in `ns`, as "dst via gw", sorted.
pub fn agent_routes(ns: &Netns) -> Vec<String> {
    let mut all: Vec<Value> = ns.routes(4);
    all.extend(ns.routes(6));
    let mut v: Vec<String> = all
        .into_iter()
        .filter(|r| r["protocol"] == "114")
        .map(|r| {
            format!(
                "{} via {}",
                r["dst"].as_str().unwrap(),
                r["gateway"].as_str().unwrap_or("-")
            )
        })
        .collect();
    v.sort();
    v
}

/// The gateways of the agent's nexthop objects (protocol 114) in `ns`, sorted.
pub fn agent_nexthops(ns: &Netns) -> Vec<String> {
    let mut v: Vec<String> = ns
        .ip(&["nexthop", "show", "proto", "114"])
        .lines()
        .filter_map(|l| Some(l.split(" via ").nth(1)?.split(' ').next()?.to_string()))
        .collect();
    v.sort();
    v
}

/// Waits until the agent's routes are `want`.
pub fn wait_routes(ns: &Netns, want: &[&str], daemon: &Daemon) {
    let ok = wait_for(20, || agent_routes(ns) == want);
    assert!(
        ok,
        "routes {:?}, want {want:?}\n{}",
        agent_routes(ns),
        daemon.log()
    );
}

/// Whether `cond` holds within `secs` seconds, polled every 10 ms.
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
