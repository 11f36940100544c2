//! A masquerade class: the pods of one network, backend and subnet that share one policy, and so
//! one fixed set of rules. Rules exist per class, never per pod: a pod only adds an element to its
//! class's address set (nftables) or a reference to its class (iptables).

use std::fmt::Write;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Where masquerade rules live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Nftables,
    Iptables,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Nftables => "nftables",
            BackendKind::Iptables => "iptables",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The names configs use (`backend`, rbridge's `ipMasqBackend`); Err(()) for any other.
impl std::str::FromStr for BackendKind {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<BackendKind, ()> {
        [BackendKind::Nftables, BackendKind::Iptables]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(())
    }
}

/// What a caller (the plugin, or rbridge's `ipMasq`) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// None: decided once per state dir from what the node uses (see `backend::detect`).
    pub backend: Option<BackendKind>,
    /// Destinations never masqueraded. None: the subnets of the pod's addresses.
    pub non_masquerade_cidrs: Option<Vec<IpNet>>,
    /// Masquerade traffic to link-local destinations (169.254.0.0/16, fe80::/10) too.
    pub masq_link_local: bool,
    /// Accept forwarded traffic from and to the pods' subnets in the FORWARD chain.
    pub allow_forward: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            backend: None,
            non_masquerade_cidrs: None,
            masq_link_local: false,
            allow_forward: true,
        }
    }
}

/// One class. Serialised into the state dir so DEL can remove its rules without any config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Class {
    #[serde(deserialize_with = "class_id")]
    pub(crate) id: String,
    pub(crate) backend: BackendKind,
    #[serde(deserialize_with = "network_name")]
    pub(crate) network: String,
    /// The pods' subnet: iptables matches sources on it; forward accepts are keyed on it.
    pub(crate) source: IpNet,
    /// Destinations never masqueraded, aggregated so no two overlap (nft interval sets refuse
    /// overlaps), in the source's family.
    pub(crate) skip: Vec<IpNet>,
    #[serde(rename = "allowForward")]
    pub(crate) allow_forward: bool,
}

/// A class id as read from the state dir: 16 hex digits, as [`Class::new`] makes them. Ids
/// name files and iptables chains, so one from a planted or damaged file must not reach a path
/// outside the state dir or a line of an `iptables-restore`.
pub(crate) fn class_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let id = String::deserialize(d)?;
    if id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(id)
    } else {
        Err(serde::de::Error::custom(format!("{id:?} is no class id")))
    }
}

/// A network name as read from the state dir: one that ADD accepts (it goes into the rules'
/// comments).
fn network_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    cni_types::validate::network_name(&name).map_err(|e| serde::de::Error::custom(e.msg))?;
    Ok(name)
}

fn net(s: &str) -> IpNet {
    s.parse().expect("constant CIDR")
}

impl Class {
    /// The class of pod address `addr` (with its prefix) given all the pod's addresses.
    pub(crate) fn new(
        backend: BackendKind,
        network: &str,
        addr: IpNet,
        pod_addrs: &[IpNet],
        opts: &Options,
    ) -> Class {
        let v4 = addr.addr().is_ipv4();
        let mut skip: Vec<IpNet> = match &opts.non_masquerade_cidrs {
            Some(list) => list.clone(),
            None => pod_addrs.iter().map(IpNet::trunc).collect(),
        };
        // Multicast cannot be masqueraded meaningfully (upstream ipMasq exempts it too).
        skip.push(net(if v4 { "224.0.0.0/4" } else { "ff00::/8" }));
        if !opts.masq_link_local {
            skip.push(net(if v4 { "169.254.0.0/16" } else { "fe80::/10" }));
        }
        skip.retain(|n| n.addr().is_ipv4() == v4);
        let skip = IpNet::aggregate(&skip);
        let source = addr.trunc();
        let mut key = format!(
            "v1|{backend}|{network}|{source}|{}|",
            u8::from(opts.allow_forward)
        );
        for n in &skip {
            let _ = write!(key, "{n},");
        }
        Class {
            id: format!("{:016x}", fnv1a64(key.as_bytes())),
            backend,
            network: network.to_string(),
            source,
            skip,
            allow_forward: opts.allow_forward,
        }
    }

    pub(crate) fn is_v4(&self) -> bool {
        self.source.addr().is_ipv4()
    }
}

/// A stable hash (std's hasher may change between releases; ids live on disk and in rules).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
