use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::AddressFamily;

use cni_types::Result;

use crate::error::{is_exists, is_not_found, nl_err};
use crate::session::Netlink;

/// An address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub net: IpNet,
    pub link_scope: bool,
}

impl Netlink {
    /// Addresses of link `index` (every link when None), both families.
    pub async fn addresses(&self, index: Option<u32>) -> Result<Vec<Address>> {
        let mut req = self.handle.address().get();
        if let Some(i) = index {
            // In the request too, so that the kernel (strict checking is on) dumps this link's
            // addresses only, not every address of a node with 1,000 pod ports.
            req.message_mut().header.index = i;
            req = req.set_link_index_filter(i);
        }
        let msgs: Vec<AddressMessage> = req
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("listing addresses", e))?;
        Ok(msgs
            .iter()
            .filter(|m| index.is_none_or(|i| m.header.index == i))
            .filter_map(|m| {
                // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS
                // otherwise.
                let ip = m
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    })
                    .or_else(|| {
                        m.attributes.iter().find_map(|a| match a {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })
                    })?;
                Some(Address {
                    index: m.header.index,
                    net: IpNet::new(ip, m.header.prefix_len).ok()?,
                    link_scope: m.header.scope == AddressScope::Link,
                })
            })
            .collect())
    }

    /// Adds `net` to link `index`. IPv6 addresses skip duplicate address detection unless
    /// `dad` is set: DAD delays usability of the address by a second or more, and pod addresses
    /// come from IPAM, which already guarantees uniqueness. Returns false if it was present.
    pub async fn add_address(&self, index: u32, net: IpNet, dad: bool) -> Result<bool> {
        let mut req = self
            .handle
            .address()
            .add(index, net.addr(), net.prefix_len());
        if net.addr().is_ipv6() && !dad {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_exists(&e) => Ok(false),
            Err(e) => Err(nl_err(format!("adding address {net} to link #{index}"), e)),
        }
    }

    /// Removes `net` from link `index`; absent is success.
    pub async fn del_address(&self, index: u32, net: IpNet) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = match net.addr() {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        m.header.prefix_len = net.prefix_len();
        m.header.index = index;
        m.attributes.push(AddressAttribute::Address(net.addr()));
        if net.addr().is_ipv4() {
            m.attributes.push(AddressAttribute::Local(net.addr()));
        }
        match self.handle.address().del(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(nl_err(
                format!("removing address {net} from link #{index}"),
                e,
            )),
        }
    }
}
