//! Throwaway network namespaces and kernel read-back inside them.

use std::fs::File;
use std::net::Ipv6Addr;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use serde_json::Value;

const PREFIX: &str = "rcni-t-";
const NETNS_DIR: &str = "/run/netns";
/// Names end up in interface alt names, rule comments and error messages: keep them short.
const MAX_NAME: usize = 30;

static NETNS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`/run/netns/rcni-t-<role>-<pid>-<n>`), deleted on drop.
///
/// Named (rather than anonymous) so plugins can be handed a `CNI_NETNS` path and so a human can
/// inspect a hung test with `ip netns`. The pid in the name lets [`sweep_stale`] find namespaces
/// left behind by killed test runs; the counter keeps parallel tests of one process apart.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// Opened once at creation: commands enter the namespace through a duplicate of this fd.
    file: File,
}

impl Netns {
    /// Creates the namespace with `ip netns add` and brings `lo` up (as runtimes do before CNI).
    ///
    /// `role` ("node", "pod", "out", ...) only makes names readable; it must be short ASCII
    /// alphanumerics. Panics if the namespace cannot be created.
    pub fn new(role: &str) -> Netns {
        assert!(
            !role.is_empty() && role.bytes().all(|b| b.is_ascii_alphanumeric()),
            "netns role {role:?} must be non-empty ASCII alphanumerics"
        );
        let euid = nix::unistd::geteuid();
        if !euid.is_root() {
            panic!("network-namespace tests need root and netns support: euid is {euid}, not 0");
        }
        let n = NETNS_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{role}-{}-{n}", std::process::id());
        assert!(
            name.len() <= MAX_NAME,
            "netns name {name} is longer than {MAX_NAME} characters: use a shorter role"
        );
        Netns::create(name)
    }

    /// A namespace with exactly this name (for the demo, whose namespaces a person inspects
    /// and a later `down` removes). Deleted on drop unless [`Netns::keep`] is called.
    pub fn named(name: &str) -> Netns {
        assert!(
            name.len() <= MAX_NAME,
            "netns name {name} is longer than {MAX_NAME} characters"
        );
        let euid = nix::unistd::geteuid();
        if !euid.is_root() {
            panic!("network namespaces need root: euid is {euid}, not 0");
        }
        Netns::create(name.to_string())
    }

    /// Leaves the namespace in place when this value goes away.
    pub fn keep(self) {
        std::mem::forget(self);
    }

    fn create(name: String) -> Netns {
        match Command::new("ip").args(["netns", "add", &name]).output() {
            Err(e) => {
                panic!("network-namespace tests need root and netns support: cannot run ip: {e}")
            }
            Ok(out) if !out.status.success() => panic!(
                "network-namespace tests need root and netns support: ip netns add {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Ok(_) => {}
        }
        let path = Path::new(NETNS_DIR).join(&name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                delete_netns(&name);
                panic!(
                    "network-namespace tests need root and netns support: open {}: {e}",
                    path.display()
                );
            }
        };
        // From here on Drop cleans up, also if bringing lo up panics.
        let ns = Netns { name, file };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`: what a runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Runs `f` on a thread that has entered this namespace: a socket made there stays in it
    /// (e.g. a client connection to a server listening only inside the namespace).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&self.file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("cannot enter netns {}: {e}", self.name));
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// `GET path` from inside this namespace over HTTP/1.1: the status and the body, or the
    /// connection error (nothing listening yet, say).
    pub fn http_get(
        &self,
        addr: std::net::SocketAddr,
        path: &str,
    ) -> std::io::Result<(u16, String)> {
        use std::io::{Read, Write};
        let mut conn =
            self.within(|| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head:?}")))?;
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        Ok((
            status,
            if chunked {
                dechunk(body)
            } else {
                body.to_string()
            },
        ))
    }

    /// A [`Command`] for `program` that runs inside this namespace.
    ///
    /// The child joins the namespace with `setns` between fork and exec, rather than through
    /// `ip netns exec`, so what runs is exactly `program` (no extra process, no remounted `/sys`,
    /// the caller's environment). The command owns its own duplicate of the namespace fd, so it
    /// stays valid even if spawned after this `Netns` is gone. Note that `/sys/class/net` still
    /// shows the caller's namespace: read kernel state through `ip` or `/proc/sys` instead.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        enter_in_child(&mut cmd, &self.file);
        cmd
    }

    /// Runs `cmd args...` inside the namespace and returns its output whatever the exit status.
    /// Panics only if the program cannot be started.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Output {
        self.command(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd} in netns {}: {e}", self.name))
    }

    /// Runs `sh -c script` inside the namespace; stdout on success, otherwise a message with the
    /// exit status, stderr and stdout.
    pub fn try_sh(&self, script: &str) -> Result<String, String> {
        let out = self.exec("sh", &["-c", script]);
        check(&format!("sh -c {script:?}"), &self.name, out)
    }

    /// Like [`Netns::try_sh`], but panics (with stderr) on a non-zero exit: for setup steps.
    pub fn sh(&self, script: &str) -> String {
        self.try_sh(script).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `ip args...` inside the namespace and returns stdout; panics on failure. For setup and
    /// for state not covered by the read-back helpers.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = self.exec("ip", args);
        check(&format!("ip {}", args.join(" ")), &self.name, out).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `ip -j args...` inside the namespace and parses the JSON array it prints.
    pub fn ip_json(&self, args: &[&str]) -> Vec<Value> {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let out = self.ip(&full);
        if out.trim().is_empty() {
            return Vec::new();
        }
        match serde_json::from_str(&out) {
            Ok(Value::Array(items)) => items,
            Ok(other) => panic!("ip {} printed a non-array: {other}", full.join(" ")),
            Err(e) => panic!("ip {} printed invalid JSON ({e}): {out}", full.join(" ")),
        }
    }

    /// All links with details (`ip -j -d link show`): `linkinfo.info_kind`, `master`, `mtu`, ...
    pub fn links(&self) -> Vec<Value> {
        self.ip_json(&["-d", "link", "show"])
    }

    /// The link named `name`, or `None` if it does not exist (so tests can assert removal).
    pub fn link(&self, name: &str) -> Option<Value> {
        self.links().into_iter().find(|l| l["ifname"] == name)
    }

    /// Names of the veth links here (in a node: the host ends of pods).
    pub fn veths(&self) -> Vec<String> {
        self.links()
            .iter()
            .filter(|l| l["linkinfo"]["info_kind"] == "veth")
            .filter_map(|l| l["ifname"].as_str().map(String::from))
            .collect()
    }

    /// The whole firewall as text: `nft list ruleset`, `iptables-save` and `ip6tables-save`
    /// (whichever exist), for asserting on masquerade and port-mapping rules.
    pub fn firewall(&self) -> String {
        self.sh("nft list ruleset; iptables-save 2>/dev/null; ip6tables-save 2>/dev/null; true")
    }

    /// Addresses of `ifname` as `"addr/prefixlen"`, both families, in kernel order, without IPv6
    /// link-local ones (the kernel adds those by itself; plugins never configure them). Empty if
    /// the interface does not exist.
    pub fn addrs(&self, ifname: &str) -> Vec<String> {
        self.addrs_all(ifname)
            .into_iter()
            .filter(|a| !is_ipv6_link_local(a))
            .collect()
    }

    /// Like [`Netns::addrs`], including IPv6 link-local addresses.
    pub fn addrs_all(&self, ifname: &str) -> Vec<String> {
        let links = self.ip_json(&["addr", "show"]);
        let Some(link) = links.iter().find(|l| l["ifname"] == ifname) else {
            return Vec::new();
        };
        link["addr_info"]
            .as_array()
            .map(|infos| {
                infos
                    .iter()
                    .filter_map(|i| {
                        Some(format!(
                            "{}/{}",
                            i["local"].as_str()?,
                            i["prefixlen"].as_u64()?
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Routes of the main table for `family` 4 or 6 (`ip -j -N -4|-6 route show`).
    ///
    /// `-N` prints protocol, scope, type and table numerically (`"scope": "253"` for link), which
    /// does not depend on the iproute2 version or `/etc/iproute2`. The main table only, because
    /// `table all` drags in the local table and multicast noise.
    pub fn routes(&self, family: u8) -> Vec<Value> {
        self.ip_json(&["-N", family_flag(family), "route", "show"])
    }

    /// Routes of another `table` (a number, or a name like "local") for `family` 4 or 6.
    pub fn routes_table(&self, family: u8, table: &str) -> Vec<Value> {
        self.ip_json(&["-N", family_flag(family), "route", "show", "table", table])
    }

    /// A sysctl as seen inside the namespace, trimmed. `key` is either dotted
    /// (`net.ipv4.ip_forward`) or a path below `/proc/sys` (`net/ipv4/conf/eth0.100/forwarding`,
    /// needed when an interface name contains dots). Read by a process inside the namespace since
    /// `/proc/sys/net` shows the reader's namespace.
    pub fn sysctl(&self, key: &str) -> String {
        let rel = if key.contains('/') {
            key.to_string()
        } else {
            key.replace('.', "/")
        };
        let path = format!("/proc/sys/{}", rel.trim_start_matches('/'));
        let out = self.exec("cat", &[&path]);
        check(&format!("cat {path}"), &self.name, out)
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .to_string()
    }

    /// The master (bridge, bond, vrf) of `ifname`, or `None` if it has none or does not exist.
    pub fn master_of(&self, ifname: &str) -> Option<String> {
        self.link(ifname)?.get("master")?.as_str().map(String::from)
    }

    /// Connects this namespace to `other` with a veth pair `my_if` <-> `other_if`, assigns the
    /// addresses (`"10.9.0.1/24"`, `"fd00::1/64"`, or `""` for none) and brings both ends up.
    ///
    /// For building an "outside world" or a second node next to the namespace under test. IPv6
    /// addresses are added with `nodad`, and it returns only once both ends are operationally up
    /// (see [`Netns::wait_link_up`]), so the link is usable at once.
    pub fn veth_to(
        &self,
        other: &Netns,
        my_if: &str,
        other_if: &str,
        my_addr: &str,
        other_addr: &str,
    ) {
        self.ip(&[
            "link",
            "add",
            my_if,
            "type",
            "veth",
            "peer",
            "name",
            other_if,
            "netns",
            other.name(),
        ]);
        for (ns, ifname, addr) in [(self, my_if, my_addr), (other, other_if, other_addr)] {
            if !addr.is_empty() {
                let mut args = vec!["addr", "add", addr, "dev", ifname];
                if addr.contains(':') {
                    args.push("nodad");
                }
                ns.ip(&args);
            }
            ns.ip(&["link", "set", ifname, "up"]);
        }
        self.wait_link_up(my_if);
        other.wait_link_up(other_if);
    }

    /// Waits (up to 5 s, then panics) until `ifname` has operstate UP.
    ///
    /// The kernel attaches a link's real qdisc only in the deferred link-watch work that also sets
    /// the operstate, up to a second after `ip link set up`; until then every packet is silently
    /// dropped, which makes a first ping (or neighbour discovery) after setup fail at random.
    pub fn wait_link_up(&self, ifname: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let link = self.link(ifname);
            if link.as_ref().is_some_and(|l| l["operstate"] == "UP") {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "link {ifname} in netns {} did not come up within 5 s: {link:?}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Netns {
    /// Deletes the namespace; runs during unwinding too, so failing tests leave nothing behind.
    /// Only warns on failure: panicking while unwinding would abort the whole test binary.
    fn drop(&mut self) {
        delete_netns(&self.name);
    }
}

/// Deletes the namespaces `rcni-t-*` whose creating process no longer exists, and returns their
/// names. For scripts to call after a test run was killed (SIGKILL skips `Drop`). Namespaces of
/// live processes, including running tests, are left alone.
pub fn sweep_stale() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut deleted = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        // rest = <role>-<pid>-<counter>
        let mut parts = rest.rsplitn(3, '-');
        let (Some(_counter), Some(pid), Some(_role)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if delete_netns(&name) {
            deleted.push(name);
        }
    }
    deleted
}

/// Makes `cmd`'s child join the network namespace of `ns_file` before exec.
pub(crate) fn enter_in_child(cmd: &mut Command, ns_file: &File) {
    // The fd is duplicated before fork (close-on-exec, so the program does not inherit it) and
    // owned by the closure, so the command does not depend on the Netns staying alive.
    let fd: OwnedFd = ns_file
        .try_clone()
        .expect("cannot duplicate the netns fd")
        .into();
    // SAFETY: the closure runs in the forked child before exec; it only performs the setns system
    // call (async-signal-safe) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || setns(&fd, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from));
    }
}

fn delete_netns(name: &str) -> bool {
    match Command::new("ip").args(["netns", "del", name]).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "warning: ip netns del {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("warning: cannot run ip netns del {name}: {e}");
            false
        }
    }
}

fn check(what: &str, netns: &str, out: Output) -> Result<String, String> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{what} in netns {netns} failed ({}):\nstderr: {}\nstdout: {stdout}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}

fn family_flag(family: u8) -> &'static str {
    match family {
        4 => "-4",
        6 => "-6",
        _ => panic!("address family must be 4 or 6, not {family}"),
    }
}

fn is_ipv6_link_local(cidr: &str) -> bool {
    let addr = cidr.split('/').next().unwrap_or_default();
    addr.parse::<Ipv6Addr>()
        .map(|a| a.segments()[0] & 0xffc0 == 0xfe80)
        .unwrap_or(false)
}

/// The body of a chunked HTTP answer, joined.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
