//! A node for the GC tests through containerd: a containerd of the test's own with the shipped
//! chain (and, if asked, a plugin that stalls ADDs), pods run through its CRI, what each
//! sandbox's attachment holds read back, `rcni gc` run against it.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcni_integration::cri::{pod_config, sandbox_netns, Containerd};
use rcni_integration::shipped_conflist;
use serde_json::json;

/// Passes prevResult on; for each `<dir>/stall-N` there is, one ADD removes it, writes
/// "pid containerID netns" to `<dir>/stalled-N` and hangs there instead, as a plugin still
/// running when containerd is killed.
const STALL: &str = r#"#!/bin/sh
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}' ;;
ADD)
    conf=$(cat)
    for f in "$STALL_DIR"/stall-*; do
        if rm "$f" 2>/dev/null; then
            n=${f##*-}
            echo "$$ $CNI_CONTAINERID $CNI_NETNS" > "$STALL_DIR/stalled.$n.tmp"
            mv "$STALL_DIR/stalled.$n.tmp" "$STALL_DIR/stalled-$n"
            exec sleep 120
        fi
    done
    printf '%s' "$conf" | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["prevResult"]))' ;;
*) cat >/dev/null ;;
esac
"#;

pub struct Node {
    pub h: Containerd,
    pub state: PathBuf,
    /// `rcnigc<n>`: libcni's cache is the machine's, shared with other tests' containerds.
    pub network: String,
}

/// A pod: sandbox ID, its netns, its addresses.
#[derive(Debug, Clone)]
pub struct Pod {
    pub id: String,
    pub netns: PathBuf,
    pub ips: Vec<IpAddr>,
}

impl Node {
    /// containerd with the shipped chain (state in the test's dir, its own subnets), with
    /// `stall` after it if asked.
    pub fn start(n: u8, stall: bool) -> Node {
        let mut h = Containerd::prepare();
        let state = h.dir().join("cni");
        let mut list = shipped_conflist("10-rcni.conflist");
        let network = format!("rcnigc{n}");
        list["name"] = json!(network);
        let plugins = list["plugins"].as_array_mut().unwrap();
        plugins[0]["ipam"]["dataDir"] = json!(state.join("networks"));
        plugins[0]["ipam"]["ranges"] = json!([
            [{"subnet": format!("10.248.{n}.0/24")}],
            [{"subnet": format!("fd00:10:248:{n}::/64")}]
        ]);
        plugins[1]["stateDir"] = json!(state.join("rmasq"));
        plugins[1]["nonMasqueradeCIDRs"] = json!(["10.248.0.0/16", "fd00:10:248::/48"]);
        if stall {
            plugins.push(json!({"type": "stall"}));
            let bin = h.cni_bin_dir();
            std::fs::create_dir_all(&bin).unwrap();
            let script = STALL.replace("$STALL_DIR", &h.dir().display().to_string());
            std::fs::write(bin.join("stall"), script).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(bin.join("stall"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        h.start(&list);
        Node { h, state, network }
    }

    pub fn run(&self, name: &str) -> Pod {
        let config = pod_config(name, &format!("uid-{name}"));
        let (r, _) = self.h.cri().run_pod_sandboxes(&[config]).remove(0);
        let id = r.unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}"));
        let st = self.h.cri().pod_sandbox_status(&id).unwrap();
        let net = st.status.as_ref().unwrap().network.clone().unwrap();
        let ips = std::iter::once(net.ip)
            .chain(net.additional_ips.into_iter().map(|p| p.ip))
            .map(|s| s.parse().unwrap())
            .collect();
        Pod {
            netns: sandbox_netns(&st).expect("netns path"),
            id,
            ips,
        }
    }

    pub fn cache_entry(&self, id: &str) -> PathBuf {
        PathBuf::from(format!("/var/lib/cni/results/{}-{id}-eth0", self.network))
    }

    /// (addresses reserved, host veth, masquerade record, cache entry) of sandbox `id`.
    pub fn holds(&self, id: &str) -> (Vec<IpAddr>, bool, bool, bool) {
        let store = self.state.join("networks").join(&self.network);
        let mut ips: Vec<IpAddr> = cni_testkit::reservations(&store)
            .into_iter()
            .filter(|(_, owner)| owner.split("\r\n").next() == Some(id))
            .map(|(ip, _)| ip)
            .collect();
        ips.sort();
        let veth = self
            .h
            .node()
            .link(&rbridge::host_veth(id, "eth0"))
            .is_some();
        let record = self
            .state
            .join(format!("rmasq/attachments/{}/{id}:eth0", self.network));
        (ips, veth, record.exists(), self.cache_entry(id).exists())
    }

    /// Masquerade owner entries (rmasq members) naming sandbox `id`.
    pub fn masquerade_members(&self, id: &str) -> usize {
        let owner = format!("{}:{id}:eth0", self.network);
        let members = self.state.join("rmasq/members");
        let mut n = 0;
        for class in std::fs::read_dir(members).into_iter().flatten().flatten() {
            for addr in std::fs::read_dir(class.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                n += usize::from(addr.path().join(&owner).exists());
            }
        }
        n
    }

    pub fn rcni_gc(&self, grace: &str) -> String {
        let bin = cni_testkit::bin_dir().join("rcni");
        assert!(bin.is_file(), "{} not built", bin.display());
        let out = self
            .h
            .node()
            .command(bin)
            .args(["gc", "--cri-endpoint"])
            .arg(format!("unix://{}", self.h.socket().display()))
            .arg("--conf-dir")
            .arg(self.h.cni_conf_dir())
            .arg("--bin-dir")
            .arg(self.h.cni_bin_dir())
            .args(["--cache-dir", "/var/lib/cni", "--grace", grace])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "rcni gc failed:\n{text}");
        text
    }
}

/// What a sandbox holds once all of it is reclaimed.
pub const NOTHING: (Vec<IpAddr>, bool, bool, bool) = (Vec::new(), false, false, false);

impl Node {
    /// Whether `pod` still holds all it got: its addresses, veth, masquerade, cache entry.
    pub fn intact(&self, pod: &Pod) -> bool {
        let (mut ips, veth, masq, cache) = self.holds(&pod.id);
        let mut want = pod.ips.clone();
        ips.sort();
        want.sort();
        ips == want && veth && masq && cache
    }

    /// StopPodSandbox then RemovePodSandbox, as kubelet deletes a pod.
    pub fn kubelet_delete(&self, id: &str) {
        let ids = [id.to_string()];
        for (r, _) in self.h.cri().stop_pod_sandboxes(&ids) {
            r.unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e}"));
        }
        for (r, _) in self.h.cri().remove_pod_sandboxes(&ids) {
            r.unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e}"));
        }
    }
}

/// Removes sandbox `id` from containerd's records without a teardown (its task killed first
/// if it has one), as if it never knew it; containerd forgets it at its next restart.
pub fn forget(node: &Node, id: &str, has_task: bool) {
    if has_task {
        let _ = node.h.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        wait_for("the sandbox's task to go", 20, || {
            let _ = node.h.ctr(&["task", "delete", id]);
            !String::from_utf8_lossy(&node.h.ctr(&["task", "ls", "-q"]).stdout).contains(id)
        });
    }
    let out = node.h.ctr(&["containers", "delete", id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ctr containers delete {id}: {err}");
}

pub fn in_netns(netns: &Path, cmd: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(cmd)
        .output()
        .unwrap()
}

pub fn ping(from: &Pod, to: IpAddr) {
    for _ in 0..3 {
        if in_netns(&from.netns, &["ping", "-c1", "-W2", &to.to_string()])
            .status
            .success()
        {
            return;
        }
    }
    panic!("{} cannot reach {to}", from.id);
}

pub fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two RunPodSandbox at once, their ADDs stalled in the last plugin, containerd killed -9; the
/// stalled plugins are killed too. Returns the two sandboxes (ID and netns from the plugin).
pub fn kill_during_run_pod_sandbox(node: &mut Node) -> [Pod; 2] {
    let dir = node.h.dir().to_path_buf();
    for n in 1..=2 {
        // Those of an earlier call would be taken for these.
        let _ = std::fs::remove_file(dir.join(format!("stalled-{n}")));
        std::fs::write(dir.join(format!("stall-{n}")), "").unwrap();
    }
    let cri = node.h.connect();
    let call = std::thread::spawn(move || {
        let configs = [
            pod_config("killed-1", "uid-killed-1"),
            pod_config("killed-2", "uid-killed-2"),
        ];
        cri.run_pod_sandboxes(&configs)
    });
    let stalled = |n: u8| dir.join(format!("stalled-{n}"));
    wait_for("the stalled ADDs", 60, || {
        stalled(1).exists() && stalled(2).exists()
    });
    node.h.kill();
    for (r, _) in call.join().unwrap() {
        assert!(r.is_err(), "RunPodSandbox survived its containerd");
    }
    [1, 2].map(|n| {
        let text = std::fs::read_to_string(stalled(n)).unwrap();
        let f: Vec<&str> = text.split_whitespace().collect();
        let pid = nix::unistd::Pid::from_raw(f[0].parse().unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        Pod {
            id: f[1].to_string(),
            netns: PathBuf::from(f[2]),
            ips: Vec::new(),
        }
    })
}
