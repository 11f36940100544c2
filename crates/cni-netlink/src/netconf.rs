//! The namespace-wide forwarding switch (`net.ipv4.ip_forward`, `net.ipv6.conf.all.forwarding`)
//! read over netlink (RTM_GETNETCONF), which rtnetlink does not wrap. Reading it under /proc/sys
//! instead walks a dentry cache shared by every netns of the machine: about 1 ms per read on a
//! node with 1,000 pods, paid by every ADD that only needs to see it is already on.

use std::io;

use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

const RTM_NEWNETCONF: u16 = 80;
const RTM_GETNETCONF: u16 = 82;
const NETCONFA_IFINDEX: u16 = 1;
const NETCONFA_FORWARDING: u16 = 2;
const NETCONFA_IFINDEX_ALL: i32 = -1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;

/// Whether forwarding is on for the whole current netns ("all"), for IPv6 if `v6`. None when
/// the kernel cannot say (no such family): the caller falls back to the sysctl.
pub fn forwarding_all(v6: bool) -> Option<bool> {
    query(if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8).ok()
}

fn query(family: u8) -> io::Result<bool> {
    let socket = Socket::new(NETLINK_ROUTE)?;
    socket.send_to(&request(family), &SocketAddr::new(0, 0), 0)?;
    let (reply, _) = socket.recv_from_full()?;
    parse(&reply)
}

/// nlmsghdr, netconfmsg (one family byte, padded to 4), NETCONFA_IFINDEX = all.
fn request(family: u8) -> Vec<u8> {
    let len = NLMSG_HDRLEN + 4 + 8;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&RTM_GETNETCONF.to_ne_bytes());
    m.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel assigns ours
    m.extend_from_slice(&[family, 0, 0, 0]);
    m.extend_from_slice(&8u16.to_ne_bytes());
    m.extend_from_slice(&NETCONFA_IFINDEX.to_ne_bytes());
    m.extend_from_slice(&NETCONFA_IFINDEX_ALL.to_ne_bytes());
    m
}

fn parse(msg: &[u8]) -> io::Result<bool> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    if msg.len() < NLMSG_HDRLEN + 4 {
        return Err(bad("short RTM_GETNETCONF reply"));
    }
    let u16_at = |i: usize| u16::from_ne_bytes([msg[i], msg[i + 1]]);
    match u16_at(4) {
        RTM_NEWNETCONF => {}
        NLMSG_ERROR => {
            let code = i32::from_ne_bytes([msg[16], msg[17], msg[18], msg[19]]);
            return Err(io::Error::from_raw_os_error(-code));
        }
        _ => return Err(bad("unexpected RTM_GETNETCONF reply")),
    }
    let end = (u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize).min(msg.len());
    let mut at = NLMSG_HDRLEN + 4;
    while at + 4 <= end {
        let len = u16_at(at) as usize;
        if len < 4 || at + len > end {
            break;
        }
        if u16_at(at + 2) & 0x3fff == NETCONFA_FORWARDING && len >= 8 {
            let v = i32::from_ne_bytes([msg[at + 4], msg[at + 5], msg[at + 6], msg[at + 7]]);
            return Ok(v != 0);
        }
        at += (len + 3) & !3;
    }
    Err(bad("RTM_GETNETCONF reply without forwarding"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let r = request(libc::AF_INET as u8);
        assert_eq!(r.len(), 28);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 28);
        assert_eq!(
            u16::from_ne_bytes(r[4..6].try_into().unwrap()),
            RTM_GETNETCONF
        );
        assert_eq!(r[16], libc::AF_INET as u8);
        assert_eq!(i32::from_ne_bytes(r[24..28].try_into().unwrap()), -1);
    }

    #[test]
    fn parses_forwarding_and_errors() {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&RTM_NEWNETCONF.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[2, 0, 0, 0]);
        for (kind, v) in [(NETCONFA_IFINDEX, -1i32), (NETCONFA_FORWARDING, 1)] {
            m.extend_from_slice(&8u16.to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(&v.to_ne_bytes());
        }
        assert!(parse(&m).unwrap());
        m[32] = 0;
        assert!(!parse(&m).unwrap());

        let mut e = Vec::new();
        e.extend_from_slice(&36u32.to_ne_bytes());
        e.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        e.extend_from_slice(&[0; 10]);
        e.extend_from_slice(&(-libc::EOPNOTSUPP).to_ne_bytes());
        assert_eq!(
            parse(&e).unwrap_err().raw_os_error(),
            Some(libc::EOPNOTSUPP)
        );
    }
}
