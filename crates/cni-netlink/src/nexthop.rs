//! Nexthop objects (RTM_NEWNEXTHOP and friends, kernel 5.3+), which rtnetlink does not wrap,
//! and the kernel's own route lookup for a gateway (RTM_GETROUTE), over one synchronous
//! NETLINK_ROUTE socket.
//!
//! Why: a route given as `via GW` gets a `fib_info` that the kernel finds again (to share it)
//! through a hash of its device, metric and protocol, not its gateway; on a node with a route
//! to each of 5,000 other nodes through one interface, every new route compares itself with
//! all the others (measured: one more route costs 12 µs at 500 routes, 83 µs at 5,000). A route
//! naming a nexthop object by id hashes by that id, and stays at about 15 µs.

use std::io;
use std::net::IpAddr;

use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEXTHOP: u16 = 104;
const RTM_DELNEXTHOP: u16 = 105;
const RTM_GETNEXTHOP: u16 = 106;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const NHA_ID: u16 = 1;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

/// A nexthop object: a gateway through a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nexthop {
    pub id: u32,
    pub gw: IpAddr,
    pub oif: u32,
    /// nh_protocol: who made it (rroutes and the node agent use their route protocol).
    pub protocol: u8,
}

/// A NETLINK_ROUTE socket of the calling thread's network namespace.
pub struct Nexthops {
    sock: Socket,
    seq: u32,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn family(ip: &IpAddr) -> u8 {
    (if ip.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }) as u8
}

fn octets(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A netlink message: header, the fixed part, then attributes (type, payload), each padded.
fn message(ty: u16, flags: u16, seq: u32, fixed: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0; NLMSG_HDRLEN];
    m.extend_from_slice(fixed);
    for (kind, payload) in attrs {
        m.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize((m.len() + 3) & !3, 0);
    }
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&ty.to_ne_bytes());
    m[6..8].copy_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m
}

/// The attributes after `at` up to `end`: (type without flags, payload).
fn attrs(msg: &[u8], mut at: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while at + 4 <= msg.len() {
        let len = u16::from_ne_bytes([msg[at], msg[at + 1]]) as usize;
        if len < 4 || at + len > msg.len() {
            break;
        }
        let kind = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]) & 0x3fff;
        out.push((kind, &msg[at + 4..at + len]));
        at += (len + 3) & !3;
    }
    out
}

fn u32_of(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

fn ip_of(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

/// A nexthop from an RTM_NEWNEXTHOP message (whole message, header included); groups and
/// blackholes (no gateway) are not ours and give None.
fn parse_nexthop(msg: &[u8]) -> Option<Nexthop> {
    let protocol = *msg.get(NLMSG_HDRLEN + 2)?;
    let (mut id, mut gw, mut oif) = (None, None, None);
    for (kind, payload) in attrs(msg, NLMSG_HDRLEN + 8) {
        match kind {
            NHA_ID => id = u32_of(payload),
            NHA_OIF => oif = u32_of(payload),
            NHA_GATEWAY => gw = ip_of(payload),
            _ => {}
        }
    }
    Some(Nexthop {
        id: id?,
        gw: gw?,
        oif: oif?,
        protocol,
    })
}

impl Nexthops {
    pub fn open() -> io::Result<Nexthops> {
        Ok(Nexthops {
            sock: Socket::new(NETLINK_ROUTE)?,
            seq: 1,
        })
    }

    /// Sends one request and reads its answers until the dump ends or the ack comes: the
    /// messages of type `want`, or the kernel's errno.
    fn exchange(&mut self, request: &mut [u8], want: u16) -> io::Result<Vec<Vec<u8>>> {
        self.seq += 1;
        let seq = self.seq;
        request[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.sock.send_to(request, &SocketAddr::new(0, 0), 0)?;
        let mut found = Vec::new();
        loop {
            let (buf, _) = self.sock.recv_from_full()?;
            let mut at = 0;
            while at + NLMSG_HDRLEN <= buf.len() {
                let len = u32_of(&buf[at..]).unwrap_or(0) as usize;
                if len < NLMSG_HDRLEN || at + len > buf.len() {
                    return Err(bad("truncated netlink answer"));
                }
                let msg = &buf[at..at + len];
                at += (len + 3) & !3;
                if u32_of(&msg[8..]) != Some(seq) {
                    continue;
                }
                match u16::from_ne_bytes([msg[4], msg[5]]) {
                    NLMSG_DONE => return Ok(found),
                    NLMSG_ERROR => {
                        let code = msg.get(16..20).and_then(u32_of).unwrap_or(0) as i32;
                        return match code {
                            0 => Ok(found),
                            c => Err(io::Error::from_raw_os_error(-c)),
                        };
                    }
                    t if t == want => found.push(msg.to_vec()),
                    _ => {}
                }
            }
        }
    }

    /// Every nexthop object of the namespace that is a gateway through a device. Fails with
    /// EOPNOTSUPP (or EINVAL) on kernels without nexthop objects.
    pub fn dump(&mut self) -> io::Result<Vec<Nexthop>> {
        let flags = libc::NLM_F_DUMP as u16;
        let mut req = message(RTM_GETNEXTHOP, flags, 0, &[0; 8], &[]);
        let msgs = self.exchange(&mut req, RTM_NEWNEXTHOP)?;
        Ok(msgs.iter().filter_map(|m| parse_nexthop(m)).collect())
    }

    /// Creates the nexthop; EEXIST when its id is taken.
    pub fn add(&mut self, nh: &Nexthop) -> io::Result<()> {
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL | libc::NLM_F_ACK) as u16;
        let fixed = [family(&nh.gw), 0, nh.protocol, 0, 0, 0, 0, 0];
        let (id, oif, gw) = (nh.id.to_ne_bytes(), nh.oif.to_ne_bytes(), octets(&nh.gw));
        let attrs = [
            (NHA_ID, &id[..]),
            (NHA_OIF, &oif[..]),
            (NHA_GATEWAY, &gw[..]),
        ];
        let mut req = message(RTM_NEWNEXTHOP, flags, 0, &fixed, &attrs);
        self.exchange(&mut req, 0).map(drop)
    }

    /// Deletes the nexthop, and with it every route that names it.
    pub fn del(&mut self, id: u32) -> io::Result<()> {
        let flags = libc::NLM_F_ACK as u16;
        let id = id.to_ne_bytes();
        let mut req = message(RTM_DELNEXTHOP, flags, 0, &[0; 8], &[(NHA_ID, &id[..])]);
        self.exchange(&mut req, 0).map(drop)
    }

    /// The device the kernel would send to `gw` through, if `gw` is on a link of it (no gateway
    /// on the way); None when it is reached through a router, or not at all.
    pub fn onlink_oif(&mut self, gw: IpAddr) -> io::Result<Option<u32>> {
        let bits = if gw.is_ipv4() { 32 } else { 128 };
        let fixed = [family(&gw), bits, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let dst = octets(&gw);
        let flags = libc::NLM_F_ACK as u16; // the answer, then an ack that ends the exchange
        let mut req = message(RTM_GETROUTE, flags, 0, &fixed, &[(RTA_DST, &dst[..])]);
        let answer = match self.exchange(&mut req, RTM_NEWROUTE) {
            Err(e) if e.raw_os_error() == Some(libc::ENETUNREACH) => return Ok(None),
            r => r?,
        };
        let Some(msg) = answer.first() else {
            return Ok(None);
        };
        let found = attrs(msg, NLMSG_HDRLEN + 12);
        if found.iter().any(|(k, _)| *k == RTA_GATEWAY) {
            return Ok(None);
        }
        Ok(found
            .iter()
            .find(|(k, _)| *k == RTA_OIF)
            .and_then(|(_, p)| u32_of(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_framed_and_padded() {
        let gw: IpAddr = "192.168.56.11".parse().unwrap();
        let m = message(
            RTM_NEWNEXTHOP,
            0,
            7,
            &[2, 0, 114, 0, 0, 0, 0, 0],
            &[(NHA_ID, &5u32.to_ne_bytes()), (NHA_GATEWAY, &octets(&gw))],
        );
        assert_eq!(m.len(), 16 + 8 + 8 + 8);
        assert_eq!(u32_of(&m).unwrap() as usize, m.len());
        assert_eq!(u32_of(&m[8..]), Some(7));
        let nh = {
            let mut with_oif = m.clone();
            with_oif.extend_from_slice(&8u16.to_ne_bytes());
            with_oif.extend_from_slice(&NHA_OIF.to_ne_bytes());
            with_oif.extend_from_slice(&3u32.to_ne_bytes());
            parse_nexthop(&with_oif).unwrap()
        };
        assert_eq!(
            nh,
            Nexthop {
                id: 5,
                gw,
                oif: 3,
                protocol: 114
            }
        );
        // A nexthop without a gateway (a blackhole, a group member list) is not one of ours.
        assert_eq!(parse_nexthop(&m[..32]), None);
    }
}
