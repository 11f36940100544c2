//! The one kernel layer of rcni: every netlink request the plugins make goes through this crate,
//! and no other crate of the workspace speaks netlink. Plugins never run `ip`.
//!
//! - [`Netlink`]: an rtnetlink session on one network namespace (its socket is opened inside
//!   that namespace, so no thread of ours stays there): links, veth pairs created straight into
//!   a pod, bridges and their ports (options, VLANs, static FDB entries), addresses, routes.
//! - [`netfilter`]: nf_tables over nfnetlink: the ruleset generation, tables, rules and set
//!   elements read back, set element changes in one transaction.
//! - [`netconf`]: the namespace-wide forwarding switch (RTM_GETNETCONF, which rtnetlink lacks).
//! - [`nexthop`]: nexthop objects and the kernel's route lookup for a gateway (rtnetlink lacks
//!   both), for routes to thousands of gateways.
//! - [`sysctl`]: the few settings only /proc/sys has.
//!
//! The public API holds types of our own; rtnetlink's stay inside.

mod addr;
mod error;
mod link;
pub mod netconf;
pub mod netfilter;
pub mod nexthop;
mod port;
mod route;
mod session;
pub mod sysctl;

pub use addr::Address;
pub use error::NetlinkError;
pub use link::{format_mac, parse_mac, DevConf, Link, LinkId, VethSpec};
pub use port::{BridgeSpec, PortOptions, PortVlan};
pub use route::{
    describe as describe_route, RouteFilter, RouteSpec, IP6_RT_PRIO_USER, RTN_UNICAST,
    RT_TABLE_MAIN,
};
pub use session::{runtime, Netlink};
