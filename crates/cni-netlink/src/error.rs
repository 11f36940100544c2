//! Netlink failures: the kernel's errno, told apart where callers act on it (a link that exists,
//! one that is gone), and the CNI error an operator reads.

use std::fmt;

use cni_types::error::{CniError, NETLINK_FAILURE};

/// A netlink request that failed, with the kernel's errno when it answered with one. Returned
/// where the caller decides what an errno means (e.g. EEXIST when creating a veth pair).
#[derive(Debug)]
pub struct NetlinkError {
    errno: Option<i32>,
    message: String,
}

impl NetlinkError {
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// EEXIST: the object is there already.
    pub fn is_exists(&self) -> bool {
        self.errno == Some(libc::EEXIST)
    }

    /// The CNI error naming what failed (`what`) and why.
    pub fn context(self, what: impl fmt::Display) -> CniError {
        CniError::new(NETLINK_FAILURE, format!("{what}: {}", self.message))
    }
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NetlinkError {}

impl From<rtnetlink::Error> for NetlinkError {
    fn from(e: rtnetlink::Error) -> NetlinkError {
        let message = match &e {
            rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
            other => other.to_string(),
        };
        NetlinkError {
            errno: errno(&e),
            message,
        }
    }
}

/// The errno of a netlink failure, if the kernel answered with one.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

pub(crate) fn is_exists(e: &rtnetlink::Error) -> bool {
    errno(e) == Some(libc::EEXIST)
}

pub(crate) fn is_not_found(e: &rtnetlink::Error) -> bool {
    matches!(
        errno(e),
        Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
    )
}

/// Wraps a netlink failure into the CNI error an operator reads: what failed, on what, and why.
pub(crate) fn nl_err(what: impl fmt::Display, e: rtnetlink::Error) -> CniError {
    NetlinkError::from(e).context(what)
}
