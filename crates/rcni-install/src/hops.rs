//! One nexthop object per gateway for the node agent's routes, so that a route's cost does not
//! grow with the number of nodes (see [`cni_netlink::nexthop`]: 83 µs per route at 5,000 routes
//! via gateways, 15 µs via nexthop objects). Each object is counted by the routes through it
//! and deleted with the last one. Marked with the routes' protocol, so `down` and a restarted
//! agent find them again. Kernels without nexthop objects (before 5.3) get plain `via` routes.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

use anyhow::{anyhow, Result};
use cni_netlink::nexthop::{Nexthop, Nexthops};

use crate::routes::PROTOCOL;

/// Ids of ours start here ("rc"), clear of the small ids `ip nexthop` users pick by hand.
const FIRST_ID: u32 = 0x7263_0000;

pub struct Hops {
    sock: Nexthops,
    /// Our nexthop of each gateway, with the number of routes through it.
    by_gw: HashMap<IpAddr, (Nexthop, usize)>,
    next_id: u32,
}

impl Hops {
    /// Ours as the kernel has them, none used yet; `None` where the kernel has no nexthop
    /// objects.
    pub fn open() -> Result<Option<Hops>> {
        let mut sock = Nexthops::open()?;
        let all = match sock.dump() {
            Ok(all) => all,
            Err(e) if unsupported(&e) => return Ok(None),
            Err(e) => return Err(anyhow!("listing nexthop objects: {e}")),
        };
        let next_id = all
            .iter()
            .map(|n| n.id + 1)
            .max()
            .unwrap_or(0)
            .max(FIRST_ID);
        let by_gw = all
            .into_iter()
            .filter(|n| n.protocol == PROTOCOL)
            .map(|n| (n.gw, (n, 0)))
            .collect();
        Ok(Some(Hops {
            sock,
            by_gw,
            next_id,
        }))
    }

    /// The gateway of each of our nexthops, by id.
    pub fn gateways(&self) -> HashMap<u32, IpAddr> {
        self.by_gw.values().map(|(n, _)| (n.id, n.gw)).collect()
    }

    /// Forgets every use, before a reconcile counts them again with [`Hops::used`].
    pub fn clear_uses(&mut self) {
        for (_, uses) in self.by_gw.values_mut() {
            *uses = 0;
        }
    }

    /// One more route through `gw`'s nexthop (which exists).
    pub fn used(&mut self, gw: IpAddr) {
        if let Some((_, uses)) = self.by_gw.get_mut(&gw) {
            *uses += 1;
        }
    }

    /// The id of `gw`'s nexthop, created if needed, counting one more route through it. Fails
    /// when `gw` is not on a link of this node (a route through it could not work either).
    pub fn acquire(&mut self, gw: IpAddr) -> Result<u32> {
        if let Some((n, uses)) = self.by_gw.get_mut(&gw) {
            *uses += 1;
            return Ok(n.id);
        }
        let oif = self
            .sock
            .onlink_oif(gw)?
            .ok_or_else(|| anyhow!("gateway {gw} is not on a network of this node"))?;
        loop {
            let nh = Nexthop {
                id: self.next_id,
                gw,
                oif,
                protocol: PROTOCOL,
            };
            self.next_id = self.next_id.wrapping_add(1).max(FIRST_ID);
            match self.sock.add(&nh) {
                Ok(()) => {
                    let id = nh.id;
                    self.by_gw.insert(gw, (nh, 1));
                    return Ok(id);
                }
                // Someone else's id: take the next one.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                Err(e) => return Err(anyhow!("creating the nexthop via {gw}: {e}")),
            }
        }
    }

    /// One route less through `gw`'s nexthop; the last one deletes it.
    pub fn release(&mut self, gw: IpAddr) -> Result<()> {
        let Some((_, uses)) = self.by_gw.get_mut(&gw) else {
            return Ok(());
        };
        *uses = uses.saturating_sub(1);
        if *uses == 0 {
            let (n, _) = self.by_gw.remove(&gw).expect("just found");
            self.delete(n.id)?;
        }
        Ok(())
    }

    /// Deletes our nexthops no route uses (after a reconcile).
    pub fn prune(&mut self) -> Vec<anyhow::Error> {
        let unused: Vec<IpAddr> = self
            .by_gw
            .iter()
            .filter(|(_, (_, uses))| *uses == 0)
            .map(|(gw, _)| *gw)
            .collect();
        let mut errors = Vec::new();
        for gw in unused {
            let (n, _) = self.by_gw.remove(&gw).expect("just listed");
            if let Err(e) = self.delete(n.id) {
                errors.push(e);
            }
        }
        errors
    }

    fn delete(&mut self, id: u32) -> Result<()> {
        match self.sock.del(id) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(anyhow!("deleting nexthop {id}: {e}")),
        }
    }
}

/// Deletes every nexthop of our protocol of the current network namespace (and any route
/// still through one): what `down` does after removing the routes.
pub fn remove_all() -> Result<usize> {
    let mut sock = Nexthops::open()?;
    let ours: Vec<u32> = match sock.dump() {
        Ok(all) => all
            .into_iter()
            .filter(|n| n.protocol == PROTOCOL)
            .map(|n| n.id)
            .collect(),
        Err(e) if unsupported(&e) => return Ok(0),
        Err(e) => return Err(anyhow!("listing nexthop objects: {e}")),
    };
    for id in &ours {
        match sock.del(*id) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(anyhow!("deleting nexthop {id}: {e}")),
        }
    }
    Ok(ours.len())
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::EPROTONOSUPPORT)
    )
}
