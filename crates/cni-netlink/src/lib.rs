//! Kernel helpers over rtnetlink shared by the plugins: links, veth pairs, bridges, addresses,
//! routes and sysctls. Plugins never run `ip`; they speak netlink through [`Netlink`], whose
//! socket may live in another network namespace (see `cni_plugin::netns::netlink_handle`).
//! [`netfilter`] reads nf_tables back and changes set elements over nfnetlink.

mod addr;
mod link;
pub mod netconf;
pub mod netfilter;
mod port;
mod route;
pub mod sysctl;

use std::os::fd::AsRawFd;

use cni_plugin::netns::NetNs;
use cni_types::error::{CniError, NETLINK_FAILURE};

pub use addr::Address;
pub use link::{format_mac, parse_mac, DevConf, Link, LinkId, VethSpec};
pub use port::{BridgeSpec, PortVlan};
pub use route::{
    describe as describe_route, RouteSpec, IP6_RT_PRIO_USER, RTN_UNICAST, RT_TABLE_MAIN,
};

pub use rtnetlink::packet_route as packet;

/// A netlink session bound to one network namespace.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a session on `ns`, or on the current namespace. Must run inside a tokio runtime.
    /// The socket stays in the namespace it was opened in, so requests act there while our
    /// threads stay where they are. Strict checking makes the kernel filter dumps by the
    /// request's header (e.g. the addresses of one link) instead of sending every object of the
    /// namespace: per-call cost stays flat with a thousand veths.
    pub fn open(ns: Option<&NetNs>) -> cni_types::Result<Netlink> {
        let _inside = ns.map(NetNs::enter).transpose()?;
        let (connection, handle, _) = rtnetlink::new_connection_with_strict_check()
            .map_err(|e| CniError::io(format!("cannot open a netlink socket: {e}")))?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }
}

/// The async runtime of one plugin call, which drives its netlink sessions: one thread, as a
/// plugin is one short-lived process.
pub fn runtime() -> cni_types::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::io(format!("cannot start the netlink runtime: {e}")))
}

/// The errno of a netlink failure, if the kernel answered with one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

pub fn is_exists(e: &rtnetlink::Error) -> bool {
    errno(e) == Some(libc::EEXIST)
}

pub fn is_not_found(e: &rtnetlink::Error) -> bool {
    matches!(
        errno(e),
        Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
    )
}

/// Wraps a netlink failure into the CNI error an operator reads: what failed, on what, and why.
pub fn nl_err(what: impl std::fmt::Display, e: rtnetlink::Error) -> CniError {
    let why = match &e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    };
    CniError::new(NETLINK_FAILURE, format!("{what}: {why}"))
}

fn raw_fd(ns: &NetNs) -> i32 {
    ns.fd().as_raw_fd()
}
