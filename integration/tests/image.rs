//! The node agent from its image, through containerd's CRI, as the DaemonSet runs it: the
//! archive scripts/image builds (`RCNI_IMAGE`) is imported with `ctr`, a host-network pod runs
//! `rcni-install daemon` from it against a fake API server, with the DaemonSet's host paths
//! mounted from the node's (the very CNI bin and conf dirs the test containerd uses, empty at its
//! start). The agent must install the image's binaries and the conflist and turn ready; then a
//! normal pod on that containerd gets its network through the installed chain; then the
//! DaemonSet's uninstall (`RCNI_UNINSTALL=true`) must remove what the agent installed.
//!
//! Everything happens in a node network namespace of the test's own (containerd, the API server,
//! the agent's metrics); nothing listens or changes in the machine's own.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cni_testkit::{allocations, FakeApi, FakeNode, Netns};
use k8s_cri::v1::{ContainerState, PodSandboxConfig, PodSandboxState};
use rcni_integration::cri::{pod_config, sandbox_netns, Containerd};
use rcni_integration::image::{
    self, agent_container, container_log, host_network_pod, sha256_dir, Bind, IMAGE, IMAGE_BIN,
};
use serde_json::Value;

const TOKEN: &str = "rcni-image-test-token";
/// The node's address (a veth to node-b's namespace): API server, metrics, node-a's InternalIP.
const NODE_IP: &str = "10.99.0.1";
const POD_CIDR: &str = "10.244.1.0/24";
const GATEWAY: &str = "10.244.1.1";
/// The other node, whose podCIDR the agent routes to.
const OTHER_CIDR: &str = "10.244.2.0/24";
const OTHER_IP: &str = "10.99.0.2";
const CONFLIST: &str = "10-rcni.conflist";

/// A node: the test containerd, the API server, the host-network pod the agent runs in.
struct Node {
    // Dropped first: the API server, then containerd (stopping every sandbox and container).
    api: FakeApi,
    h: Containerd,
    pod: String,
    pod_config: PodSandboxConfig,
    logs: PathBuf,
    _other: Netns,
}

impl Node {
    /// containerd with empty CNI dirs, the image imported, the API server serving node-a (this
    /// node) and node-b, and the agent's host-network pod running.
    fn start(archive: &Path) -> Node {
        let mut h = Containerd::prepare();
        // node-b's side of the node network, so that node-a has an address, a default route
        // (its MTU) and a gateway for the route to node-b's pods.
        let other = Netns::new("nodeb");
        let (mine, theirs) = (format!("{NODE_IP}/24"), format!("{OTHER_IP}/24"));
        h.node().veth_to(&other, "eth0", "eth0", &mine, &theirs);
        h.node().ip(&["route", "add", "default", "via", OTHER_IP]);
        h.start_without_network();
        let start = Instant::now();
        h.import_image(archive, IMAGE);
        eprintln!("image: imported {IMAGE} in {:?}", start.elapsed());

        let api = FakeApi::start_in(h.node(), format!("{NODE_IP}:6443").parse().unwrap(), TOKEN);
        api.put_node(FakeNode::new("node-a", &[POD_CIDR], &[NODE_IP]).lean());
        api.put_node(FakeNode::new("node-b", &[OTHER_CIDR], &[OTHER_IP]).lean());
        for dir in ["rcni-state", "cni", "logs"] {
            std::fs::create_dir_all(h.dir().join(dir)).unwrap();
        }
        std::fs::write(h.dir().join("token"), format!("{TOKEN}\n")).unwrap();

        let logs = h.dir().join("logs");
        let pod_config = host_network_pod("rcni-node-a", "uid-rcni-node-a", &logs);
        let (ran, _) = h
            .cri()
            .run_pod_sandboxes(std::slice::from_ref(&pod_config))
            .remove(0);
        let pod = ran.unwrap_or_else(|e| panic!("RunPodSandbox of the agent's pod: {e}"));
        Node {
            api,
            h,
            pod,
            pod_config,
            logs,
            _other: other,
        }
    }

    fn metrics_addr(&self) -> SocketAddr {
        format!("{NODE_IP}:9465").parse().unwrap()
    }

    /// Starts `rcni-install daemon` from the image, with the DaemonSet's environment (and
    /// `RCNI_UNINSTALL`) and its host paths mounted from the node's directories.
    fn run_agent(&self, name: &str, uninstall: bool) -> String {
        let dir = self.h.dir();
        let api = self.api.url();
        let metrics = self.metrics_addr().to_string();
        let plugin_state = dir.join("cni").display().to_string();
        let env = [
            ("NODE_NAME", "node-a"),
            ("RCNI_API_SERVER", api.as_str()),
            ("RCNI_TOKEN_FILE", "/var/run/secrets/rcni/token"),
            ("RCNI_CLUSTER_CIDRS", "10.244.0.0/16"),
            ("RCNI_METRICS_ADDR", metrics.as_str()),
            // The plugins, run by containerd on the node, keep their state in the test's dir.
            ("RCNI_PLUGIN_STATE_DIR", plugin_state.as_str()),
            ("RCNI_UNINSTALL", if uninstall { "true" } else { "false" }),
            ("RCNI_GC_MOUNT_NS", "/proc/1/ns/mnt"),
        ];
        let (bin, conf, state) = (
            self.h.cni_bin_dir(),
            self.h.cni_conf_dir(),
            dir.join("rcni-state"),
        );
        let token = dir.join("token");
        let cni_state = dir.join("cni");
        std::fs::create_dir_all(&cni_state).unwrap();
        let binds = [
            bind(&bin, "/opt/cni/bin", false),
            bind(&conf, "/etc/cni/net.d", false),
            bind(&state, "/var/lib/rcni", false),
            bind(&token, "/var/run/secrets/rcni/token", true),
            // The DaemonSet's read-only /var/lib/cni: the IPAM store the metrics read.
            bind(&cni_state, &plugin_state, true),
        ];
        let config = agent_container(name, &env, &binds);
        self.h
            .cri()
            .run_container(&self.pod, &self.pod_config, config)
            .unwrap_or_else(|e| panic!("running {name} from {IMAGE}: {e}\n{}", self.log(name)))
    }

    fn log(&self, name: &str) -> String {
        let log = container_log(&self.logs.join(format!("{name}.log")));
        format!("--- {name}'s log ---\n{log}")
    }

    /// Polls the container's /readyz on the node's address until 200 (up to `secs`); panics
    /// with its log if it exits or time runs out.
    fn wait_ready(&self, id: &str, name: &str, secs: u64) -> Duration {
        let start = Instant::now();
        let mut last = String::from("no answer yet");
        while start.elapsed() < Duration::from_secs(secs) {
            match self.h.node().http_get(self.metrics_addr(), "/readyz") {
                Ok((200, _)) => return start.elapsed(),
                Ok((status, body)) => last = format!("{status} {}", body.trim()),
                Err(e) => last = e.to_string(),
            }
            let st = self.h.cri().container_status(id);
            if let Ok(st) = &st {
                if st.state == ContainerState::ContainerExited as i32 {
                    panic!(
                        "{name} exited ({}, {}: {})\n{}",
                        st.exit_code,
                        st.reason,
                        st.message,
                        self.log(name)
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{name} not ready within {secs} s: /readyz {last}\n{}",
            self.log(name)
        );
    }

    fn stop_container(&self, id: &str, name: &str) {
        let cri = self.h.cri();
        cri.stop_container(id, 10)
            .unwrap_or_else(|e| panic!("StopContainer {name}: {e}"));
        let st = cri.container_status(id).unwrap();
        eprintln!(
            "image: {name} stopped, exit code {} ({})",
            st.exit_code, st.reason
        );
        cri.remove_container(id)
            .unwrap_or_else(|e| panic!("RemoveContainer {name}: {e}"));
    }

    /// The kernel's route to node-b's podCIDR in the node namespace, if any, as "DST via GW".
    fn route_to_other(&self) -> Option<String> {
        self.h
            .node()
            .routes(4)
            .iter()
            .find(|r| r["dst"] == OTHER_CIDR)
            .map(|r| format!("{} via {}", r["dst"], r["gateway"]))
    }
}

fn bind<'a>(host: &'a Path, container: &'a str, readonly: bool) -> Bind<'a> {
    Bind {
        host,
        container,
        readonly,
    }
}

fn in_pod_cidr(ip: &str) -> bool {
    let ip: Ipv4Addr = ip.parse().unwrap_or_else(|_| panic!("{ip:?} is not IPv4"));
    u32::from(ip) & 0xffff_ff00 == u32::from(Ipv4Addr::new(10, 244, 1, 0))
}

/// What the agent installed: every binary of the image, byte for byte, and the conflist for
/// node-a, chaining portmap; and the route to node-b.
fn check_installed(node: &Node, image_bin: &std::collections::BTreeMap<String, String>) {
    let installed = sha256_dir(&node.h.cni_bin_dir());
    assert_eq!(
        installed.keys().collect::<Vec<_>>(),
        image_bin.keys().collect::<Vec<_>>(),
        "the CNI bin dir after the agent"
    );
    for (name, sum) in image_bin {
        assert_eq!(
            installed.get(name),
            Some(sum),
            "{name} in the CNI bin dir is not the image's /{IMAGE_BIN}/{name}"
        );
    }
    let path = node.h.cni_conf_dir().join(CONFLIST);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("conflist {}: {e}", path.display()));
    let list: Value = serde_json::from_str(&text).unwrap();
    let types: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert_eq!(types, ["rbridge", "rmasq", "portmap"], "chain in {text}");
    // Debian's portmap (1.1.1) stops at 1.0.0; the agent cannot run it in its image (no libc)
    // and must not offer a version it may refuse.
    assert_eq!(
        list["cniVersions"],
        serde_json::json!(["0.3.1", "0.4.0", "1.0.0"]),
        "{text}"
    );
    let ipam = &list["plugins"][0]["ipam"];
    assert_eq!(ipam["ranges"][0][0]["subnet"], POD_CIDR, "{text}");
    let data_dir = node.h.dir().join("cni/networks");
    assert_eq!(ipam["dataDir"], data_dir.display().to_string(), "{text}");
    eprintln!("image: conflist the agent wrote:\n{text}");
    assert_eq!(
        node.route_to_other().as_deref(),
        Some(format!("\"{OTHER_CIDR}\" via \"{OTHER_IP}\"").as_str()),
        "route to node-b's podCIDR"
    );
}

/// A normal pod on the same containerd: its network comes from the chain the agent installed.
fn check_pod_network(node: &mut Node) {
    node.h.wait_network_ready(30);
    let cri = node.h.cri();
    let (ran, took) = cri
        .run_pod_sandboxes(&[pod_config("web", "uid-web")])
        .remove(0);
    let id = ran.unwrap_or_else(|e| panic!("RunPodSandbox of a pod on the installed chain: {e}"));
    let st = cri.pod_sandbox_status(&id).unwrap();
    let status = st.status.clone().unwrap();
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    let ip = status.network.unwrap().ip;
    assert!(in_pod_cidr(&ip), "pod IP {ip:?} not in {POD_CIDR}");
    let netns = sandbox_netns(&st).expect("the pod's netns path");
    let inside = |args: &[&str]| {
        std::process::Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(args)
            .output()
            .unwrap()
    };
    let eth0 = String::from_utf8_lossy(&inside(&["ip", "-o", "-4", "addr", "show", "eth0"]).stdout)
        .into_owned();
    assert!(
        eth0.contains(&format!(" {ip}/24 ")),
        "{ip}/24 not on the pod's eth0: {eth0}"
    );
    let ping = inside(&["ping", "-c1", "-W2", GATEWAY]);
    assert!(
        ping.status.success(),
        "the pod cannot reach its gateway {GATEWAY}: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    eprintln!("image: pod {id} got {ip} on the installed chain (RunPodSandbox {took:?})");
    // The agent in its container sees the pod in the store, as the DaemonSet mounts it.
    let (_, metrics) = node
        .h
        .node()
        .http_get(node.metrics_addr(), "/metrics")
        .expect("/metrics");
    let used = format!("rcni_ipam_addresses_used{{network=\"rcni\",range=\"{POD_CIDR}\"}} 1");
    assert!(metrics.contains(&used), "no `{used}` in\n{metrics}");
    for (r, _) in cri.stop_pod_sandboxes(std::slice::from_ref(&id)) {
        r.unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e}"));
    }
    for (r, _) in cri.remove_pod_sandboxes(std::slice::from_ref(&id)) {
        r.unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e}"));
    }
    let veths: Vec<String> = node
        .h
        .node()
        .veths()
        .into_iter()
        .filter(|v| v != "eth0")
        .collect();
    assert_eq!(veths, Vec::<String>::new(), "pod veths left");
    let store = node.h.dir().join("cni/networks/rcni");
    assert_eq!(allocations(&store), Vec::<String>::new(), "addresses left");
}

/// After the uninstall: none of the image's binaries, no conflist, no manifest, no route.
fn check_uninstalled(node: &Node, image_bin: &std::collections::BTreeMap<String, String>) {
    let left: Vec<&String> = image_bin
        .keys()
        .filter(|name| node.h.cni_bin_dir().join(name).exists())
        .collect();
    assert!(left.is_empty(), "binaries left after uninstall: {left:?}");
    let conflist = node.h.cni_conf_dir().join(CONFLIST);
    assert!(!conflist.exists(), "{} left", conflist.display());
    let state: Vec<_> = std::fs::read_dir(node.h.dir().join("rcni-state"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(state.is_empty(), "agent state left: {state:?}");
    assert_eq!(node.route_to_other(), None, "route to node-b left");
}

#[test]
fn agent_from_the_image_through_containerd() {
    let archive = image::archive();
    let start = Instant::now();
    let mut node = Node::start(&archive);
    let (config, rootfs) = image::unpack(&archive, &node.h.dir().join("image"));
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/opt/rcni/bin/rcni-install"]),
        "image config: {config}"
    );
    let mut image_bin = sha256_dir(&rootfs.join(IMAGE_BIN));
    let names: Vec<&String> = image_bin.keys().collect();
    eprintln!("image: /{IMAGE_BIN} holds {names:?}");
    assert!(
        image_bin.contains_key("rcni-install"),
        "no agent in the image"
    );
    // What the agent installs: the plugins beside it, not itself.
    image_bin.remove("rcni-install");
    let plugins: Vec<&str> = image_bin.keys().map(String::as_str).collect();
    assert_eq!(
        plugins,
        [
            "loopback",
            "portmap",
            "rbridge",
            "rhost-local",
            "rmasq",
            "rroutes"
        ],
        "the plugins in the image"
    );

    let agent = node.run_agent("install", false);
    let ready = node.wait_ready(&agent, "install", 60);
    eprintln!("image: agent ready {ready:?} after its container started");
    check_installed(&node, &image_bin);
    check_pod_network(&mut node);

    // A stopped agent leaves everything in place (a rolling update must not take the
    // network away); the DaemonSet's uninstall removes it.
    node.stop_container(&agent, "install");
    eprintln!("{}", node.log("install"));
    assert!(node.h.cni_conf_dir().join(CONFLIST).exists());
    let uninstall = node.run_agent("uninstall", true);
    node.wait_ready(&uninstall, "uninstall", 60);
    check_uninstalled(&node, &image_bin);
    eprintln!("{}", node.log("uninstall"));
    node.stop_container(&uninstall, "uninstall");
    eprintln!("image: done in {:?}", start.elapsed());
}
