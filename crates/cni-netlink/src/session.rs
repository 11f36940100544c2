//! A netlink session (rtnetlink) bound to one network namespace, and the async runtime that
//! drives it.

use std::os::fd::AsRawFd;

use cni_plugin::netns::NetNs;
use cni_types::error::CniError;

/// A netlink session bound to one network namespace.
#[derive(Clone, Debug)]
pub struct Netlink {
    pub(crate) handle: rtnetlink::Handle,
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
}

/// The async runtime of one plugin call, which drives its netlink sessions: one thread, as a
/// plugin is one short-lived process.
pub fn runtime() -> cni_types::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::io(format!("cannot start the netlink runtime: {e}")))
}

/// The descriptor of `ns`, for requests that move a link into it.
pub(crate) fn raw_fd(ns: &NetNs) -> i32 {
    ns.fd().as_raw_fd()
}
