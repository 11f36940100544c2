//! What the backends implement, and the changes of one call they are handed.

use std::net::IpAddr;

use cni_netlink::netfilter::Netfilter;
use cni_types::error::Result;

use crate::class::Class;

/// One call's changes, applied as one unit where the backend can (one nft transaction).
#[derive(Debug, Default, Clone)]
pub(crate) struct Plan {
    /// Every class of this backend alive after the change (nftables rewrites its small,
    /// per-class rules from these on every call, which also repairs hand-made damage).
    pub(crate) live: Vec<Class>,
    /// Classes the attachment being added uses, with `true` if no attachment used it before.
    pub(crate) ensure: Vec<(Class, bool)>,
    /// Addresses to add to their class.
    pub(crate) add: Vec<(Class, IpAddr)>,
    /// Addresses no attachment owns any more.
    pub(crate) remove: Vec<(Class, IpAddr)>,
    /// Classes no attachment uses any more: their rules go.
    pub(crate) drop: Vec<Class>,
}

/// Where masquerade rules live: nftables or iptables.
pub(crate) trait Backend {
    /// Writes what `plan` needs: the rules of `plan.live` and `plan.ensure`, the addresses of
    /// `plan.add` and `plan.remove`, and the removal of `plan.drop`'s rules. `nl` is the call's
    /// netfilter socket, opened here if needed and left to the caller to close after its lock.
    fn apply(&self, plan: &Plan, nl: &mut Option<Netfilter>) -> Result<()>;
    /// Errors with code 102 (CHECK_MISMATCH) naming what is missing.
    fn check(&self, class: &Class, addr: IpAddr) -> Result<()>;
    /// Code 50 if the backend cannot be used on this node.
    fn status(&self) -> Result<()>;
}
