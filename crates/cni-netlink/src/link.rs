use futures::TryStreamExt;
use rtnetlink::packet_route::link::{
    AfSpecInet, AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InetDevConf, InfoData, InfoKind,
    InfoVeth, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth};

use cni_plugin::netns::NetNs;
use cni_types::Result;

use crate::error::{errno, is_not_found, nl_err, NetlinkError};
use crate::session::{raw_fd, Netlink};

/// What we need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
    /// Index of the bridge (or other controller) this link is a port of.
    pub master: Option<u32>,
    /// `bridge`, `veth`, ... (None for plain devices such as `lo`).
    pub kind: Option<String>,
    pub up: bool,
    pub promisc: bool,
    /// The link's per-device IP settings as the kernel reports them with the link (None when it
    /// does not, e.g. no IPv6 on it). Read here rather than under /proc/sys: a /proc/sys lookup
    /// walks a cache shared by every netns of the machine, so it costs about 1 ms per path on a
    /// node with 1,000 pods.
    pub conf: DevConf,
}

/// The per-device IP settings we act on (`net.ipv4.conf.<link>.*`, `net.ipv6.conf.<link>.*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DevConf {
    pub ipv4_arp_notify: Option<bool>,
    pub ipv6_accept_ra: Option<i32>,
    pub ipv6_disabled: Option<bool>,
}

/// A link named by index or by name: requests by name save a lookup when only the name is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkId<'a> {
    Index(u32),
    Name(&'a str),
}

impl From<u32> for LinkId<'_> {
    fn from(index: u32) -> Self {
        LinkId::Index(index)
    }
}

impl<'a> From<&'a str> for LinkId<'a> {
    fn from(name: &'a str) -> Self {
        LinkId::Name(name)
    }
}

impl<'a> From<&'a String> for LinkId<'a> {
    fn from(name: &'a String) -> Self {
        LinkId::Name(name)
    }
}

impl std::fmt::Display for LinkId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkId::Index(i) => write!(f, "link #{i}"),
            LinkId::Name(n) => write!(f, "link {n}"),
        }
    }
}

impl LinkId<'_> {
    /// An empty request message addressed to this link.
    pub(crate) fn message(self) -> LinkMessageBuilder<LinkUnspec> {
        match self {
            LinkId::Index(i) => LinkUnspec::new_with_index(i),
            LinkId::Name(n) => LinkUnspec::new_with_name(n),
        }
    }
}

impl Link {
    pub(crate) fn from_message(m: &LinkMessage) -> Link {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mac: Vec::new(),
            mtu: 0,
            master: None,
            kind: None,
            up: m.header.flags.contains(LinkFlags::Up),
            promisc: m.header.flags.contains(LinkFlags::Promisc),
            conf: DevConf::default(),
        };
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) => link.mac = a.clone(),
                LinkAttribute::Mtu(v) => link.mtu = *v,
                LinkAttribute::Controller(c) => link.master = Some(*c),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            link.kind = Some(k.to_string());
                        }
                    }
                }
                LinkAttribute::AfSpecUnspec(specs) => {
                    for spec in specs {
                        match spec {
                            AfSpecUnspec::Inet(v) => {
                                for a in v {
                                    if let AfSpecInet::DevConf(c) = a {
                                        link.conf.ipv4_arp_notify = Some(c.arp_notify != 0);
                                    }
                                }
                            }
                            AfSpecUnspec::Inet6(v) => {
                                for a in v {
                                    if let AfSpecInet6::DevConf(c) = a {
                                        link.conf.ipv6_accept_ra = Some(c.accept_ra);
                                        link.conf.ipv6_disabled = Some(c.disable_ipv6 != 0);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }

    /// The MAC as the CNI result writes it: lower-case, colon separated.
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses "aa:bb:cc:dd:ee:ff" (or with '-').
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        mac[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// A veth pair created in one request: the host end (optionally on a bridge) in the session's
/// namespace and the peer created directly inside the pod's namespace under its final name, so
/// there is no move and no rename, and an existing CNI_IFNAME makes the request fail at once.
/// The peer comes up later, from a session in its namespace: the kernel refuses (ENOTCONN) to
/// bring a peer up in the creating request when it lands in another namespace.
pub struct VethSpec<'a> {
    pub host_name: &'a str,
    pub host_master: Option<u32>,
    pub host_up: bool,
    /// Chosen by the caller, so it knows both MACs without reading them back.
    pub host_mac: Option<[u8; 6]>,
    pub peer_name: &'a str,
    pub peer_ns: &'a NetNs,
    pub peer_mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
}

impl Netlink {
    /// A link request without the statistics (which nothing here reads): a bridge's reply is a
    /// third the size, and less to parse on a call's first netlink round trip.
    fn get_link(&self) -> rtnetlink::LinkGetRequest {
        self.handle
            .link()
            .get()
            .set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::SkipStats])
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let mut s = self.get_link().match_name(name.to_string()).execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(Link::from_message)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(nl_err(format!("looking up link {name}"), e)),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let mut s = self.get_link().match_index(index).execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(Link::from_message)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(nl_err(format!("looking up link #{index}"), e)),
        }
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        let s = self.get_link().execute();
        let msgs: Vec<LinkMessage> = s
            .try_collect()
            .await
            .map_err(|e| nl_err("listing links", e))?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    pub(crate) async fn existing_bridge(&self, l: Link) -> Result<Link> {
        if l.kind.as_deref() != Some("bridge") {
            return Err(cni_types::CniError::invalid_config(format!(
                "link {} exists but is a {} device, not a bridge: choose another \"bridge\" name",
                l.name,
                l.kind.as_deref().unwrap_or("plain")
            )));
        }
        if !l.up {
            self.set_up(l.index).await?;
        }
        Ok(l)
    }

    pub async fn set_up<'a>(&self, link: impl Into<LinkId<'a>>) -> Result<()> {
        let link = link.into();
        let m = link.message().up().build();
        self.handle
            .link()
            .set(m)
            .execute()
            .await
            .map_err(|e| nl_err(format!("bringing {link} up"), e))
    }

    /// Brings a link up (or only configures it, with `up` false) with IPv4 `arp_notify` on, in
    /// one request: the pod's interface as upstream bridge sets it, without a /proc/sys write.
    pub async fn set_up_arp_notify<'a>(&self, link: impl Into<LinkId<'a>>, up: bool) -> Result<()> {
        let link = link.into();
        let mut conf = InetDevConf::default();
        conf.arp_notify = 1;
        let notify = LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
            AfSpecInet::DevConfRequest(conf),
        ])]);
        let m = link.message();
        let m = if up { m.up() } else { m };
        let m = m.append_extra_attribute(notify).build();
        self.handle
            .link()
            .set(m)
            .execute()
            .await
            .map_err(|e| nl_err(format!("bringing {link} up with arp_notify"), e))
    }

    pub async fn set_promisc(&self, index: u32, on: bool) -> Result<()> {
        let m = LinkUnspec::new_with_index(index).promiscuous(on).build();
        self.handle
            .link()
            .set(m)
            .execute()
            .await
            .map_err(|e| nl_err(format!("setting promiscuous mode on link #{index}"), e))
    }

    /// Creates the pair described by `spec` in one netlink request.
    pub async fn create_veth(&self, spec: &VethSpec<'_>) -> std::result::Result<(), NetlinkError> {
        // One TX and one RX queue for each end, given explicitly: that is what a veth uses by
        // default (the kernel allocates one per CPU, then trims the real count to one), but
        // trimming a registered device waits for an expedited RCU grace period, twice per pair
        // and under the rtnl lock. Stated up front, the kernel skips it.
        let queues = [LinkAttribute::NumTxQueues(1), LinkAttribute::NumRxQueues(1)];
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(spec.peer_name.to_string())
            .setns_by_fd(raw_fd(spec.peer_ns));
        for q in &queues {
            peer = peer.append_extra_attribute(q.clone());
        }
        if let Some(mtu) = spec.mtu {
            peer = peer.mtu(mtu);
        }
        if let Some(mac) = spec.peer_mac {
            peer = peer.address(mac.to_vec());
        }
        let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(spec.host_name.to_string())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        for q in queues {
            host = host.append_extra_attribute(q);
        }
        if let Some(mtu) = spec.mtu {
            host = host.mtu(mtu);
        }
        if let Some(master) = spec.host_master {
            host = host.controller(master);
        }
        if let Some(mac) = spec.host_mac {
            host = host.address(mac.to_vec());
        }
        if spec.host_up {
            host = host.up();
        }
        self.handle
            .link()
            .add(host.build())
            .execute()
            .await
            .map_err(NetlinkError::from)
    }

    /// Brings a bridge port up with no IPv6 address of its own, in one request (IPv6 address
    /// generation off, applied before the link comes up). A port needs no address; with one,
    /// each port runs IPv6 autoconfiguration (DAD, router solicitations) under the kernel's
    /// rtnl lock for seconds, and adds a fe80::/64 route to the node. Where the kernel has no
    /// IPv6 for the link (EAFNOSUPPORT), it is just brought up.
    pub async fn set_port_up<'a>(&self, link: impl Into<LinkId<'a>>) -> Result<()> {
        let link = link.into();
        let no_ipv6 =
            LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
                In6AddrGenMode::None,
            )])]);
        let m = link.message().up().append_extra_attribute(no_ipv6).build();
        match self.handle.link().set(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EAFNOSUPPORT) => self.set_up(link).await,
            Err(e) => Err(nl_err(format!("bringing port {link} up"), e)),
        }
    }

    /// Deletes a link in one request; returns false if it was already gone (DEL is idempotent).
    pub async fn delete_link<'a>(&self, link: impl Into<LinkId<'a>>) -> Result<bool> {
        let link = link.into();
        let m = link.message().build();
        match self.handle.link().del_with_message(m).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(nl_err(format!("deleting {link}"), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("0a:58:0A:f4:00:05"),
            Some([0x0a, 0x58, 0x0a, 0xf4, 0, 5])
        );
        assert_eq!(
            parse_mac("0a-58-0a-f4-00-05"),
            Some([0x0a, 0x58, 0x0a, 0xf4, 0, 5])
        );
        for bad in [
            "",
            "0a:58:0a:f4:00",
            "0a:58:0a:f4:00:05:06",
            "0a:58:0a:f4:00:g5",
            "0a:58:0a:f4:00:5",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(
            format_mac(&[0x0a, 0x58, 0, 0xff, 1, 2]),
            "0a:58:00:ff:01:02"
        );
    }
}
