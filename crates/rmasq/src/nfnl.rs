//! Just enough nfnetlink (the nf_tables netlink protocol) for rmasq's hot path, hand-built on a
//! `netlink-sys` socket: set element batches, and dumps of rules, set elements and tables to
//! verify that a class's rules are in place. Layouts follow the kernel UAPI headers
//! `linux/netlink.h`, `linux/netfilter/nfnetlink.h` and `linux/netfilter/nf_tables.h`:
//!
//! ```text
//! nlmsghdr  { u32 len; u16 type; u16 flags; u32 seq; u32 pid }          host byte order
//! nfgenmsg  { u8 family; u8 version (NFNETLINK_V0); be16 res_id }
//! nlattr    { u16 len; u16 type (| NLA_F_NESTED) } payload, padded to 4 bytes
//! ```
//!
//! Changes go in a batch: `NFNL_MSG_BATCH_BEGIN` (res_id = `NFNL_SUBSYS_NFTABLES`), the
//! messages, `NFNL_MSG_BATCH_END`; the kernel applies it as one transaction, synchronously
//! within `send`, and queues an ack for every message sent with `NLM_F_ACK`.

use std::io;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;

const NFNETLINK_V0: u8 = 0;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10; // NLMSG_MIN_TYPE
const NFNL_MSG_BATCH_END: u16 = 0x11;

pub const NFT_MSG_GETTABLE: u8 = 1;
pub const NFT_MSG_GETRULE: u8 = 7;
pub const NFT_MSG_NEWSETELEM: u8 = 12;
pub const NFT_MSG_GETSETELEM: u8 = 13;
pub const NFT_MSG_DELSETELEM: u8 = 14;
pub const NFT_MSG_NEWGEN: u8 = 15;
pub const NFT_MSG_GETGEN: u8 = 16;
/// NFTA_GEN_ID: the ruleset generation (be32) in NFT_MSG_NEWGEN.
pub const NFTA_GEN_ID: u16 = 1;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

// enum nft_set_elem_list_attributes
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
// enum nft_list_attributes
pub const NFTA_LIST_ELEM: u16 = 1;
// enum nft_set_elem_attributes
pub const NFTA_SET_ELEM_KEY: u16 = 1;
pub const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub const NFTA_SET_ELEM_KEY_END: u16 = 10;
pub const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
// enum nft_data_attributes
pub const NFTA_DATA_VALUE: u16 = 1;
pub const NFTA_DATA_VERDICT: u16 = 2;
// enum nft_verdict_attributes
pub const NFTA_VERDICT_CODE: u16 = 1;
pub const NFTA_VERDICT_CHAIN: u16 = 2;
// enum nft_rule_attributes
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_RULE_HANDLE: u16 = 3;
pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
// enum nft_expr_attributes
pub const NFTA_EXPR_NAME: u16 = 1;
pub const NFTA_EXPR_DATA: u16 = 2;
// enum nft_table_attributes
pub const NFTA_TABLE_NAME: u16 = 1;
pub const NFTA_TABLE_HANDLE: u16 = 4;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds netlink messages into one buffer (a batch is several messages back to back).
#[derive(Default)]
pub struct Builder {
    buf: Vec<u8>,
    msg: usize,
    nests: Vec<usize>,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Starts a message: nlmsghdr (length filled by [`Builder::end`]) and nfgenmsg.
    pub fn begin(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) {
        self.msg = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(NFNETLINK_V0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
    }

    pub fn end(&mut self) {
        let len = (self.buf.len() - self.msg) as u32;
        self.buf[self.msg..self.msg + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        self.buf
            .extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// A NUL-terminated string attribute (NLA_STRING / NLA_NUL_STRING).
    pub fn attr_str(&mut self, ty: u16, s: &str) {
        let mut data = Vec::with_capacity(s.len() + 1);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
        self.attr(ty, &data);
    }

    pub fn nest(&mut self, ty: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    pub fn nest_end(&mut self) {
        let start = self.nests.pop().expect("nest_end without nest");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// A set element operation, one element per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemOp {
    /// `add element`: NFT_MSG_NEWSETELEM with NLM_F_CREATE (no NLM_F_EXCL: a present element is
    /// not an error).
    Add,
    /// `delete element`: NFT_MSG_DELSETELEM (ENOENT if the element is absent).
    Delete,
}

/// One batch (one transaction) applying `ops` (operation, set, key bytes in network order) to
/// sets of table `table` of `family`. Sequence numbers run from `seq` (batch begin) on; every
/// operation asks for an ack. Returns the bytes and the sequence numbers that must be acked.
pub fn setelem_batch(
    seq: u32,
    family: u8,
    table: &str,
    ops: &[(ElemOp, &str, &[u8])],
) -> (Vec<u8>, Vec<u32>) {
    let mut b = Builder::new();
    b.begin(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    b.end();
    let mut acks = Vec::with_capacity(ops.len());
    for (i, (op, set, key)) in ops.iter().enumerate() {
        let s = seq + 1 + i as u32;
        let (msg, flags) = match op {
            ElemOp::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK),
            ElemOp::Delete => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
        };
        b.begin(nft_type(msg), flags, s, family, 0);
        b.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
        b.attr_str(NFTA_SET_ELEM_LIST_SET, set);
        b.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
        b.nest(NFTA_LIST_ELEM);
        b.nest(NFTA_SET_ELEM_KEY);
        b.attr(NFTA_DATA_VALUE, key);
        b.nest_end();
        b.nest_end();
        b.nest_end();
        b.end();
        acks.push(s);
    }
    b.begin(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq + 1 + ops.len() as u32,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    b.end();
    (b.into_bytes(), acks)
}

/// A dump request (`NLM_F_DUMP`) of nf_tables message type `msg` with string attributes.
pub fn dump_request(seq: u32, msg: u8, family: u8, attrs: &[(u16, &str)]) -> Vec<u8> {
    let mut b = Builder::new();
    b.begin(nft_type(msg), NLM_F_REQUEST | NLM_F_DUMP, seq, family, 0);
    for (ty, s) in attrs {
        b.attr_str(*ty, s);
    }
    b.end();
    b.into_bytes()
}

fn nft_type(msg: u8) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | u16::from(msg)
}

/// One received netlink message.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// What follows nlmsghdr (for nf_tables messages: nfgenmsg, then attributes).
    pub payload: &'a [u8],
}

impl<'a> Msg<'a> {
    /// The attributes of an nf_tables message (after nfgenmsg).
    pub fn attrs(&self) -> Attrs<'a> {
        Attrs(self.payload.get(NFGENMSG_LEN..).unwrap_or(&[]))
    }

    /// For NLMSG_ERROR: the (positive) errno, 0 for an ack.
    pub fn error(&self) -> Option<i32> {
        (self.ty == NLMSG_ERROR).then(|| {
            self.payload
                .get(..4)
                .map_or(libc::EPROTO, |b| -i32::from_ne_bytes(b.try_into().unwrap()))
        })
    }
}

/// The messages in a received buffer.
pub fn messages(mut buf: &[u8]) -> impl Iterator<Item = io::Result<Msg<'_>>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            buf = &[];
            return Some(Err(bad("truncated netlink message")));
        }
        let msg = Msg {
            ty: u16::from_ne_bytes(buf[4..6].try_into().unwrap()),
            flags: u16::from_ne_bytes(buf[6..8].try_into().unwrap()),
            seq: u32::from_ne_bytes(buf[8..12].try_into().unwrap()),
            payload: &buf[NLMSG_HDRLEN..len],
        };
        buf = &buf[align4(len).min(buf.len())..];
        Some(Ok(msg))
    })
}

/// Netlink attributes: (type without flag bits, payload).
#[derive(Debug, Clone, Copy)]
pub struct Attrs<'a>(pub &'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        if self.0.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes(self.0[0..2].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(self.0[2..4].try_into().unwrap()) & NLA_TYPE_MASK;
        if len < 4 || len > self.0.len() {
            self.0 = &[];
            return None;
        }
        let data = &self.0[4..len];
        self.0 = &self.0[align4(len).min(self.0.len())..];
        Some((ty, data))
    }
}

impl<'a> Attrs<'a> {
    pub fn get(self, ty: u16) -> Option<&'a [u8]> {
        self.into_iter().find(|(t, _)| *t == ty).map(|(_, d)| d)
    }

    pub fn nested(self, ty: u16) -> Attrs<'a> {
        Attrs(self.get(ty).unwrap_or(&[]))
    }

    pub fn str(self, ty: u16) -> Option<&'a str> {
        let d = self.get(ty)?;
        let d = d.split(|b| *b == 0).next().unwrap_or(d);
        std::str::from_utf8(d).ok()
    }

    pub fn be32(self, ty: u16) -> Option<u32> {
        Some(u32::from_be_bytes(self.get(ty)?.get(..4)?.try_into().ok()?))
    }

    pub fn be64(self, ty: u16) -> Option<u64> {
        Some(u64::from_be_bytes(self.get(ty)?.get(..8)?.try_into().ok()?))
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A netfilter netlink socket of the current network namespace.
pub struct Nfnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

const RECV_BUF: usize = 64 * 1024;

impl Nfnl {
    pub fn open() -> io::Result<Nfnl> {
        let sock = Socket::new(NETLINK_NETFILTER)?;
        // Error acks need not echo our request.
        let _ = sock.set_cap_ack(true);
        Ok(Nfnl {
            sock,
            seq: 1,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    fn next_seq(&mut self, n: u32) -> u32 {
        let s = self.seq;
        self.seq += n;
        s
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let sent = self.sock.send_to(bytes, &SocketAddr::new(0, 0), 0)?;
        if sent != bytes.len() {
            return Err(bad("short netlink send"));
        }
        Ok(())
    }

    /// Receives one datagram without waiting: the kernel answers nf_tables requests (and the
    /// next part of a dump) synchronously, so an empty queue means no more answer is coming.
    fn recv(&mut self) -> io::Result<Option<&[u8]>> {
        self.buf.clear();
        // MSG_TRUNC: the kernel returns a datagram's full length, so truncation shows.
        match self
            .sock
            .recv(&mut self.buf, libc::MSG_DONTWAIT | libc::MSG_TRUNC)
        {
            Ok(n) if n > self.buf.len() => Err(bad("netlink answer larger than the buffer")),
            Ok(_) => Ok(Some(&self.buf)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Applies set element operations as one transaction. Fails with the kernel's errno (e.g.
    /// ENOENT when the table or set does not exist) if any operation fails; then nothing
    /// changed.
    pub fn setelems(
        &mut self,
        family: u8,
        table: &str,
        ops: &[(ElemOp, &str, &[u8])],
    ) -> io::Result<()> {
        let seq = self.next_seq(ops.len() as u32 + 2);
        let (bytes, mut pending) = setelem_batch(seq, family, table, ops);
        self.send(&bytes)?;
        let mut failure: Option<io::Error> = None;
        while !pending.is_empty() {
            let Some(buf) = self.recv()? else {
                break;
            };
            for m in messages(buf) {
                let m = m?;
                match m.error() {
                    Some(0) => pending.retain(|s| *s != m.seq),
                    Some(errno) => {
                        pending.retain(|s| *s != m.seq);
                        failure.get_or_insert(io::Error::from_raw_os_error(errno));
                        // An error on the batch itself means no message was processed.
                        if m.seq == seq || m.seq > seq + ops.len() as u32 {
                            pending.clear();
                        }
                    }
                    None => {}
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None if pending.is_empty() => Ok(()),
            None => Err(bad(
                "nf_tables did not acknowledge every set element operation",
            )),
        }
    }

    /// The ruleset generation of the socket's netns: every nf_tables transaction (by nft,
    /// iptables-nft or us) bumps it.
    pub fn generation(&mut self) -> io::Result<u32> {
        let seq = self.next_seq(1);
        let mut b = Builder::new();
        b.begin(nft_type(NFT_MSG_GETGEN), NLM_F_REQUEST, seq, 0, 0);
        b.end();
        self.exchange(&b.into_bytes(), seq, "NFT_MSG_GETGEN", |m| {
            (m.ty == nft_type(NFT_MSG_NEWGEN)).then(|| {
                m.attrs()
                    .be32(NFTA_GEN_ID)
                    .ok_or_else(|| bad("NFT_MSG_NEWGEN without NFTA_GEN_ID"))
            })
        })
    }

    /// Runs a dump request and returns every answer message's payload (nfgenmsg + attributes).
    pub fn dump(&mut self, msg: u8, family: u8, attrs: &[(u16, &str)]) -> io::Result<Vec<Vec<u8>>> {
        let seq = self.next_seq(1);
        let mut out = Vec::new();
        self.exchange(&dump_request(seq, msg, family, attrs), seq, "dump", |m| {
            if m.ty == NLMSG_DONE {
                return Some(Ok(std::mem::take(&mut out)));
            }
            out.push(m.payload.to_vec());
            None
        })
    }

    /// Sends `request` and hands each answer to it (sequence `seq`) to `answer` until that
    /// returns the outcome; an error answer ends it with the kernel's errno.
    fn exchange<T>(
        &mut self,
        request: &[u8],
        seq: u32,
        what: &str,
        mut answer: impl FnMut(Msg<'_>) -> Option<io::Result<T>>,
    ) -> io::Result<T> {
        self.send(request)?;
        loop {
            let Some(buf) = self.recv()? else {
                return Err(bad(&format!("nf_tables did not finish answering {what}")));
            };
            for m in messages(buf) {
                let m = m?;
                if m.seq != seq {
                    continue;
                }
                if let Some(errno) = m.error() {
                    return Err(io::Error::from_raw_os_error(errno));
                }
                if let Some(outcome) = answer(m) {
                    return outcome;
                }
            }
        }
    }
}

/// Attributes of a dumped message payload (after nfgenmsg).
pub fn payload_attrs(payload: &[u8]) -> Attrs<'_> {
    Attrs(payload.get(NFGENMSG_LEN..).unwrap_or(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What nftables 1.0.6 sends for `nft delete element inet rmasq c_x_pods { 10.1.0.5 }`
    /// (captured with `strace -xx -e sendmsg`): batch begin, DELSETELEM, batch end, sequence
    /// numbers 0, 1, 2. Ours is byte for byte the same except that we ask for an ack.
    #[test]
    fn delete_element_batch_matches_nft() {
        #[rustfmt::skip]
        let mut nft: Vec<u8> = [
            // batch begin: len 20, type 0x10, flags REQUEST, seq 0, pid 0, AF_UNSPEC, v0, res_id be16 10
            &[20, 0, 0, 0, 0x10, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10][..],
            // DELSETELEM: len 68, type 0x0a0e, flags REQUEST, seq 1, pid 0, NFPROTO_INET, v0, res_id 0
            &[68, 0, 0, 0, 0x0e, 0x0a, 0x01, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            // NFTA_SET_ELEM_LIST_TABLE "rmasq"
            &[10, 0, 1, 0, 0x72, 0x6d, 0x61, 0x73, 0x71, 0, 0, 0],
            // NFTA_SET_ELEM_LIST_SET "c_x_pods"
            &[13, 0, 2, 0, 0x63, 0x5f, 0x78, 0x5f, 0x70, 0x6f, 0x64, 0x73, 0, 0, 0, 0],
            // ELEMENTS (nested) > LIST_ELEM (nested) > KEY (nested) > DATA_VALUE 10.1.0.5
            &[20, 0, 3, 0x80, 0x10, 0, 1, 0x80, 0x0c, 0, 1, 0x80, 8, 0, 1, 0, 0x0a, 1, 0, 5],
            // batch end: type 0x11, seq 2
            &[20, 0, 0, 0, 0x11, 0, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10],
        ]
        .concat();
        let (ours, acks) = setelem_batch(
            0,
            NFPROTO_INET,
            "rmasq",
            &[(ElemOp::Delete, "c_x_pods", &[10, 1, 0, 5])],
        );
        nft[20 + 6] |= NLM_F_ACK as u8;
        assert_eq!(ours, nft);
        assert_eq!(acks, vec![1]);
    }

    /// nft's NEWSETELEM for `add element` (same capture) differs from the delete above only in
    /// type, NLM_F_CREATE and an optional NFTA_SET_ELEM_LIST_SET_ID, which we leave out.
    #[test]
    fn add_element_batch_layout() {
        let (bytes, acks) = setelem_batch(
            7,
            NFPROTO_INET,
            "rmasq",
            &[(ElemOp::Add, "c_x_pods", &[10, 1, 0, 5])],
        );
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[20, 0, 0, 0, 0x10, 0, 1, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10][..],
            // NEWSETELEM: type 0x0a0c, flags REQUEST|ACK|CREATE (0x0405), seq 8
            &[68, 0, 0, 0, 0x0c, 0x0a, 0x05, 0x04, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            &[10, 0, 1, 0, b'r', b'm', b'a', b's', b'q', 0, 0, 0],
            &[13, 0, 2, 0, b'c', b'_', b'x', b'_', b'p', b'o', b'd', b's', 0, 0, 0, 0],
            &[20, 0, 3, 0x80, 16, 0, 1, 0x80, 12, 0, 1, 0x80, 8, 0, 1, 0, 10, 1, 0, 5],
            &[20, 0, 0, 0, 0x11, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10],
        ]
        .concat();
        assert_eq!(bytes, want);
        assert_eq!(acks, vec![8]);
    }

    #[test]
    fn delete_element_batch_decodes_back() {
        let key: [u8; 16] = "fd00::5".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let (bytes, acks) = setelem_batch(
            1,
            NFPROTO_INET,
            "rmasq",
            &[
                (ElemOp::Add, "c_y_pods", &key),
                (ElemOp::Delete, "c_y_pods", &key),
            ],
        );
        assert_eq!(acks, vec![2, 3]);
        let msgs: Vec<Msg> = messages(&bytes).map(Result::unwrap).collect();
        assert_eq!(
            msgs.iter().map(|m| (m.ty, m.seq)).collect::<Vec<_>>(),
            vec![(0x10, 1), (0x0a0c, 2), (0x0a0e, 3), (0x11, 4)]
        );
        let del = msgs[2];
        assert_eq!(&del.payload[..4], &[NFPROTO_INET, 0, 0, 0]);
        let a = del.attrs();
        assert_eq!(a.str(NFTA_SET_ELEM_LIST_TABLE), Some("rmasq"));
        assert_eq!(a.str(NFTA_SET_ELEM_LIST_SET), Some("c_y_pods"));
        let value = a
            .nested(NFTA_SET_ELEM_LIST_ELEMENTS)
            .nested(NFTA_LIST_ELEM)
            .nested(NFTA_SET_ELEM_KEY)
            .get(NFTA_DATA_VALUE);
        assert_eq!(value, Some(&key[..]));
        assert_eq!(msgs[1].flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(msgs[2].flags, NLM_F_REQUEST | NLM_F_ACK);
    }

    #[test]
    fn dump_request_layout() {
        let bytes = dump_request(
            3,
            NFT_MSG_GETRULE,
            NFPROTO_INET,
            &[(NFTA_RULE_TABLE, "rmasq")],
        );
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[32, 0, 0, 0, 0x07, 0x0a, 0x01, 0x03, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0][..],
            &[10, 0, 1, 0, b'r', b'm', b'a', b's', b'q', 0, 0, 0],
        ]
        .concat();
        assert_eq!(bytes, want);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let (bytes, _) = setelem_batch(1, NFPROTO_INET, "t", &[(ElemOp::Add, "s", &[1, 2, 3, 4])]);
        for cut in 0..bytes.len() {
            let _ = messages(&bytes[..cut]).count();
            let _ = Attrs(&bytes[..cut]).count();
        }
        assert!(messages(&bytes[..40]).any(|m| m.is_err()));
    }
}
