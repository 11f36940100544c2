//! What happens to a node's runtime that CNI must survive: containerd killed (a crash, an OOM
//! kill), restarted on its state, or a reboot (every process and mount gone, the runtime's
//! state with them; what the plugins keep on disk stays).

use std::path::Path;
use std::process::{Command, Output};

use super::client::{Cri, K8S_NS};
use super::containerd::Containerd;
use super::host::{cgroup_parents, kill_shims, remove_cgroups, stop_process, unmount_under};

impl Containerd {
    /// SIGKILL to containerd alone: shims and their sandboxes live on, what it was doing is
    /// cut off (a RunPodSandbox's CNI ADD finishes in the plugins, nobody caches its result).
    pub fn kill(&mut self) {
        self.cri = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops containerd if it runs (SIGTERM) and starts it again on the same config and state,
    /// as a restart of the service does; waits until the CRI reports ready.
    pub fn restart(&mut self) {
        self.cri = None;
        if let Some(mut child) = self.child.take() {
            stop_process(&mut child);
        }
        self.launch();
        self.wait_network_ready(20);
    }

    /// A reboot as the runtime sees it: containerd, shims and sandboxes killed, every mount
    /// under the test's directory (sandbox netns, rootfs) gone, containerd's root and state
    /// wiped. Call [`Containerd::restart`] to boot it again; the CNI state on disk is not
    /// touched.
    pub fn reboot(&mut self) {
        let ids = self.cri().list_pod_sandboxes().unwrap_or_default();
        self.kill();
        kill_shims(self.node());
        let mut cgroups = Vec::new();
        for id in &ids {
            let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc/k8s.io").join(id));
            cgroups.extend(cgroup_parents().into_iter().map(|p| p.join(id)));
        }
        // Retried while the killed sandboxes' last tasks exit.
        remove_cgroups(&cgroups);
        assert!(
            unmount_under(self.dir()),
            "mounts remain under {} after the reboot",
            self.dir().display()
        );
        for d in ["root", "state"] {
            let path = self.dir().join(d);
            std::fs::remove_dir_all(&path)
                .unwrap_or_else(|e| panic!("wiping {}: {e}", path.display()));
        }
    }

    /// `ctr -n k8s.io ARGS` against this containerd.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["-n", K8S_NS])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ctr: {e}"))
    }

    /// A CRI client of its own, e.g. for a call made from another thread.
    pub fn connect(&self) -> Cri {
        Cri::connect(&self.socket())
    }
}
