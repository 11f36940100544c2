//! Bridges with fixed attributes, bridge ports (options, VLANs, static FDB entries) and link
//! operations by name, so a plugin can act on a link it just created without looking it up.

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{
    AfSpecBridge, BridgeVlanInfoFlags, InfoBridgePort, InfoPortData, InfoPortKind, LinkAttribute,
    LinkExtentMask, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{LinkBridge, LinkBridgeVlan, LinkMessageBuilder, LinkUnspec};

use cni_types::{CniError, Result};

use crate::error::{is_exists, is_not_found, nl_err};
use crate::link::{format_mac, Link, LinkId};
use crate::session::Netlink;

/// A bridge as [`Netlink::ensure_bridge_with`] creates it.
#[derive(Debug, Clone, Default)]
pub struct BridgeSpec<'a> {
    pub name: &'a str,
    pub mtu: Option<u32>,
    pub vlan_filtering: bool,
    /// A MAC given at creation is "set" for the kernel: the bridge then keeps it instead of
    /// taking the lowest MAC of its ports, so it never changes as ports come and go.
    pub mac: Option<[u8; 6]>,
    pub promisc: bool,
    /// Create the bridge with IPv6 DAD off (`accept_dad=0`), so its link-local address is
    /// usable at once. Until DAD ends (1-2 s) the node cannot send neighbour solicitations on
    /// the bridge for traffic it forwards, so IPv6 from other nodes cannot reach the first pods.
    /// The sysctl is written in the calling thread's namespace: set this only on a session
    /// opened on the current namespace.
    pub no_dad: bool,
}

/// Options of a bridge port (`bridge link set dev .. hairpin on isolated on ...`): None leaves
/// one as it is when set, and means "not reported" when read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortOptions {
    pub hairpin: Option<bool>,
    pub isolated: Option<bool>,
    pub learning: Option<bool>,
    /// A locked port forwards only frames from MACs with a static FDB entry on it.
    pub locked: Option<bool>,
}

impl PortOptions {
    pub fn is_empty(&self) -> bool {
        *self == PortOptions::default()
    }

    fn attributes(&self) -> Vec<InfoBridgePort> {
        let mut out = Vec::new();
        out.extend(self.hairpin.map(InfoBridgePort::HairpinMode));
        out.extend(self.isolated.map(InfoBridgePort::Isolated));
        out.extend(self.learning.map(InfoBridgePort::Learning));
        out.extend(self.locked.map(InfoBridgePort::Locked));
        out
    }

    fn from_attributes(attrs: &[InfoBridgePort]) -> PortOptions {
        let mut o = PortOptions::default();
        for a in attrs {
            match a {
                InfoBridgePort::HairpinMode(v) => o.hairpin = Some(*v),
                InfoBridgePort::Isolated(v) => o.isolated = Some(*v),
                InfoBridgePort::Learning(v) => o.learning = Some(*v),
                InfoBridgePort::Locked(v) => o.locked = Some(*v),
                _ => {}
            }
        }
        o
    }
}

/// One VLAN of a bridge port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortVlan {
    pub vid: u16,
    pub pvid: bool,
    pub untagged: bool,
}

impl Netlink {
    /// Creates bridge `spec.name` up (with its MAC, MTU, VLAN filtering and promiscuous mode in
    /// the one creation request) unless it exists, and returns it with whether this call created
    /// it. Race safe: whoever loses a creation race gets EEXIST and uses the winner's bridge.
    /// An existing bridge is brought up and made promiscuous if asked; its other attributes are
    /// left as they are.
    pub async fn ensure_bridge_with(&self, spec: &BridgeSpec<'_>) -> Result<(Link, bool)> {
        let mut created = false;
        let link = match self.link_by_name(spec.name).await? {
            Some(l) => l,
            None => {
                // Created down when DAD must be off: the link-local address (and its DAD) comes
                // with the first up, after the sysctl is set.
                let mut b = if spec.no_dad {
                    LinkMessageBuilder::<LinkBridge>::new(spec.name)
                } else {
                    LinkBridge::new(spec.name)
                };
                if let Some(mtu) = spec.mtu {
                    b = b.mtu(mtu);
                }
                if spec.vlan_filtering {
                    b = b.vlan_filtering(true);
                }
                if let Some(mac) = spec.mac {
                    b = b.address(mac.to_vec());
                }
                if spec.promisc {
                    b = b.promiscuous(true);
                }
                match self.handle.link().add(b.build()).execute().await {
                    Ok(()) => created = true,
                    Err(e) if is_exists(&e) => {}
                    Err(e) => return Err(nl_err(format!("creating bridge {}", spec.name), e)),
                }

                self.link_by_name(spec.name).await?.ok_or_else(|| {
                    CniError::new(
                        cni_types::error::NETLINK_FAILURE,
                        format!("bridge {} vanished right after it was created", spec.name),
                    )
                })?
            }
        };
        // Whoever finds it down (the creator, or the loser of a creation race) turns DAD off
        // before bringing it up; no error when IPv6 is disabled on the node.
        if spec.no_dad && !link.up {
            let _ = crate::sysctl::set(
                &crate::sysctl::iface_key("ipv6", spec.name, "accept_dad"),
                "0",
            );
        }
        let mut link = self.existing_bridge(link).await?;
        link.up = true;
        if spec.promisc && !link.promisc {
            self.set_promisc(link.index, true).await?;
            link.promisc = true;
        }
        Ok((link, created))
    }

    /// Sets the MAC of link `index`. Setting a bridge's own MAC again marks it as set, so it
    /// stops following the lowest MAC among its ports.
    pub async fn set_mac(&self, index: u32, mac: &[u8]) -> Result<()> {
        let m = LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .build();
        self.handle
            .link()
            .set(m)
            .execute()
            .await
            .map_err(|e| nl_err(format!("setting the MAC of link #{index}"), e))
    }

    /// IFLA_LINK of link `index`: for a veth, its peer's index in the peer's namespace.
    pub async fn link_peer(&self, index: u32) -> Result<Option<u32>> {
        let mut s = self.handle.link().get().match_index(index).execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(m.attributes.iter().find_map(|a| match a {
                LinkAttribute::Link(i) => Some(*i),
                _ => None,
            })),
            Ok(None) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(nl_err(format!("looking up link #{index}"), e)),
        }
    }

    /// The bridge-port options of link `index` as the kernel reports them; all None if it is
    /// no bridge port.
    pub async fn bridge_port_options(&self, index: u32) -> Result<PortOptions> {
        let mut s = self.handle.link().get().match_index(index).execute();
        let m = match s.try_next().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(PortOptions::default()),
            Err(e) if is_not_found(&e) => return Ok(PortOptions::default()),
            Err(e) => return Err(nl_err(format!("looking up link #{index}"), e)),
        };
        Ok(PortOptions::from_attributes(&port_options(&m)))
    }

    /// Sets the options given (hairpin, isolation, learning, locked) on a port of a bridge.
    pub async fn set_bridge_port<'a>(
        &self,
        link: impl Into<LinkId<'a>>,
        options: &PortOptions,
    ) -> Result<()> {
        let link = link.into();
        let m = link
            .message()
            .set_port_kind(InfoPortKind::Bridge)
            .set_port_data(InfoPortData::BridgePort(options.attributes()))
            .build();
        self.handle
            .link()
            .set_port(m)
            .execute()
            .await
            .map_err(|e| nl_err(format!("setting bridge port options on {link}"), e))
    }

    /// Adds VLAN `vid` to bridge port `index` (`bridge vlan add dev .. vid .. [pvid] [untagged]`).
    pub async fn add_port_vlan(&self, index: u32, vlan: PortVlan) -> Result<()> {
        let mut flags = BridgeVlanInfoFlags::empty();
        if vlan.pvid {
            flags |= BridgeVlanInfoFlags::Pvid;
        }
        if vlan.untagged {
            flags |= BridgeVlanInfoFlags::Untagged;
        }
        let m = LinkBridgeVlan::new(index).vlan(vlan.vid, flags).build();
        self.handle.link().set(m).execute().await.map_err(|e| {
            nl_err(
                format!("adding VLAN {} to bridge port #{index}", vlan.vid),
                e,
            )
        })
    }

    /// Removes VLAN `vid` from bridge port `index`; absent is success.
    pub async fn del_port_vlan(&self, index: u32, vid: u16) -> Result<()> {
        let m = LinkBridgeVlan::new(index)
            .vlan(vid, BridgeVlanInfoFlags::empty())
            .build();
        match self.handle.link().del_with_message(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(nl_err(
                format!("removing VLAN {vid} from bridge port #{index}"),
                e,
            )),
        }
    }

    /// The VLANs of bridge port `index` (`bridge vlan show dev ..`). The kernel dumps every
    /// port at once; ranges are expanded.
    pub async fn port_vlans(&self, index: u32) -> Result<Vec<PortVlan>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .set_filter_mask(AddressFamily::Bridge, vec![LinkExtentMask::Brvlan])
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("listing bridge port VLANs", e))?;
        let mut out = Vec::new();
        for m in msgs.iter().filter(|m| m.header.index == index) {
            let mut range_start = None;
            for a in &m.attributes {
                let LinkAttribute::AfSpecBridge(specs) = a else {
                    continue;
                };
                for s in specs {
                    let AfSpecBridge::VlanInfo(v) = s else {
                        continue;
                    };
                    let pvid = v.flags.contains(BridgeVlanInfoFlags::Pvid);
                    let untagged = v.flags.contains(BridgeVlanInfoFlags::Untagged);
                    if v.flags.contains(BridgeVlanInfoFlags::RangeBegin) {
                        range_start = Some(v.vid);
                    } else if v.flags.contains(BridgeVlanInfoFlags::RangeEnd) {
                        let start = range_start.take().unwrap_or(v.vid);
                        out.extend((start..=v.vid).map(|vid| PortVlan {
                            vid,
                            pvid,
                            untagged,
                        }));
                    } else {
                        out.push(PortVlan {
                            vid: v.vid,
                            pvid,
                            untagged,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Adds a static FDB entry for `mac` on bridge port `index` (in VLAN `vid` when given), as
    /// `bridge fdb add <mac> dev .. master static [vlan ..]` does. Present is success.
    pub async fn add_static_fdb(&self, index: u32, mac: [u8; 6], vid: Option<u16>) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = index;
        m.header.state = NeighbourState::Noarp;
        m.header.flags = NeighbourFlags::Controller;
        m.header.kind = RouteType::Unspec;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        if let Some(vid) = vid {
            m.attributes.push(NeighbourAttribute::Vlan(vid));
        }
        let mut req = self.handle.neighbours().add_bridge(index, &mac);
        *req.message_mut() = m;
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_exists(&e) => Ok(()),
            Err(e) => Err(nl_err(
                format!(
                    "adding FDB entry {} to bridge port #{index}",
                    format_mac(&mac)
                ),
                e,
            )),
        }
    }

    /// Static FDB entries (MAC, VLAN) pointing at bridge port `index`.
    pub async fn static_fdb(&self, index: u32) -> Result<Vec<([u8; 6], Option<u16>)>> {
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("listing FDB entries", e))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.ifindex == index && m.header.state == NeighbourState::Noarp)
            .filter_map(|m| {
                let mut mac = None;
                let mut vid = None;
                for a in &m.attributes {
                    match a {
                        NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                            mac = <[u8; 6]>::try_from(l.as_slice()).ok()
                        }
                        NeighbourAttribute::Vlan(v) => vid = Some(*v),
                        _ => {}
                    }
                }
                Some((mac?, vid))
            })
            .collect())
    }
}

fn port_options(m: &LinkMessage) -> Vec<InfoBridgePort> {
    use rtnetlink::packet_route::link::LinkInfo;
    m.attributes
        .iter()
        .filter_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => Some(infos),
            _ => None,
        })
        .flatten()
        .filter_map(|i| match i {
            LinkInfo::PortData(InfoPortData::BridgePort(opts)) => Some(opts.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}
