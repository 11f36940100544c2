//! nf_tables over nfnetlink, for the one plugin path that must not run `nft`: rmasq's pods of an
//! existing masquerade class, whose ADD and DEL add or remove one set element after checking
//! that the class's rules are in place, in a few hundred microseconds instead of an `nft` run's
//! 10 ms or more. rtnetlink does not speak nfnetlink; the messages come from
//! `netlink-packet-netfilter` on the same `netlink-packet-core` as rtnetlink, sent over one
//! synchronous `netlink-sys` socket (a request, then its answers read until done: no runtime).
//!
//! What it covers, and no more:
//!
//! - the ruleset generation (`NFT_MSG_GETGEN`), which every nf_tables transaction bumps;
//! - dumps of the tables of a family, of the rules of a table (or one chain of it) with their
//!   expressions decoded as far as telling rules apart needs ([`Expr`]), and of the elements of
//!   a set;
//! - set element additions and removals, as one batch (`NFNL_MSG_BATCH_BEGIN`, the messages,
//!   `NFNL_MSG_BATCH_END`) that the kernel applies as one transaction, synchronously within the
//!   send, with an ack for every operation and the kernel's errno when one fails;
//! - tables, chains and rules made of what iptables-nft writes for address matches, verdicts
//!   and `xtables` extensions ([`Change`], [`RuleExpr`]), as one such batch, optionally tied to
//!   the generation a caller read: rmasq's iptables backend writes a class's rules with it where
//!   the node's iptables is iptables-nft.
//!
//! nftables rules and sets are written by `nft`: compiling them here would tie us to its
//! bytecode. The types callers see are ours ([`Table`], [`Rule`], [`Expr`], [`SetElement`],
//! [`Change`]), so the crate underneath stays a detail of this module.

mod decode;
mod request;
mod write;

use std::io;

use netlink_packet_core::{NetlinkBuffer, NLMSG_DONE, NLMSG_ERROR};
use netlink_packet_netfilter::nftables::NfTablesMessage;
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

pub use decode::{Expr, Rule, SetElement, Table};
pub use request::{ElemOp, Family};
pub use write::{BaseChain, Change, RuleExpr, Verdict};

/// A netfilter netlink socket of the network namespace of the thread that opened it.
///
/// Closing it waits until nf_tables has freed what recent transactions on it removed (an RCU
/// grace period after a set element's removal, as `nft` waits at exit): callers that hold a
/// lock drop it after releasing the lock, so the wait does not hold up others.
pub struct Netfilter {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

const RECV_BUF: usize = 64 * 1024;

/// nlmsghdr: len, type, flags, seq, port.
const NLMSG_HDRLEN: usize = 16;

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// One received netlink message, framed but not decoded.
#[derive(Clone, Copy)]
struct Frame<'a> {
    ty: u16,
    seq: u32,
    bytes: &'a [u8],
}

/// The messages of a received datagram (bytes past the last whole header are ignored).
fn frames(mut buf: &[u8]) -> impl Iterator<Item = io::Result<Frame<'_>>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let Ok(nl) = NetlinkBuffer::new_checked(buf) else {
            buf = &[];
            return Some(Err(bad("truncated netlink message")));
        };
        let len = nl.length() as usize;
        let frame = Frame {
            ty: nl.message_type(),
            seq: nl.sequence_number(),
            bytes: &buf[..len],
        };
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        Some(Ok(frame))
    })
}

impl Netfilter {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netfilter> {
        let sock = Socket::new(NETLINK_NETFILTER)?;
        // Error acks need not echo our request.
        let _ = sock.set_cap_ack(true);
        Ok(Netfilter {
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

    /// The ruleset generation of the socket's netns: every nf_tables transaction (by nft,
    /// iptables-nft or us) bumps it.
    pub fn generation(&mut self) -> io::Result<u32> {
        let seq = self.next_seq(1);
        let request = request::get_generation(seq);
        self.exchange(&request, seq, "NFT_MSG_GETGEN", |m| {
            m.and_then(|m| decode::generation(&m))
        })
    }

    /// The tables of `family`.
    pub fn tables(&mut self, family: Family) -> io::Result<Vec<Table>> {
        let seq = self.next_seq(1);
        let dumped = self.dump(&request::dump_tables(seq, family), seq)?;
        Ok(dumped.iter().filter_map(decode::table).collect())
    }

    /// The rules of `table` of `family`, of every chain or of `chain` only, in chain order.
    pub fn rules(
        &mut self,
        family: Family,
        table: &str,
        chain: Option<&str>,
    ) -> io::Result<Vec<Rule>> {
        let seq = self.next_seq(1);
        let request = request::dump_rules(seq, family, table, chain);
        let dumped = self.dump(&request, seq)?;
        Ok(dumped.iter().filter_map(decode::rule).collect())
    }

    /// Whether `chain` of `table` exists (false if the table does not).
    pub fn has_chain(&mut self, family: Family, table: &str, chain: &str) -> io::Result<bool> {
        let seq = self.next_seq(1);
        let request = request::get_chain(seq, family, table, chain);
        let found = self.exchange(&request, seq, "NFT_MSG_GETCHAIN", |m| match m {
            Some(NfTablesMessage::NewChain(_)) => Some(Ok(true)),
            _ => None,
        });
        match found {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            other => other,
        }
    }

    /// The elements of set `set` of `table`.
    pub fn set_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
    ) -> io::Result<Vec<SetElement>> {
        let seq = self.next_seq(1);
        let request = request::dump_set_elements(seq, family, table, set);
        let dumped = self.dump(&request, seq)?;
        Ok(dumped.iter().flat_map(decode::set_elements).collect())
    }

    /// Applies set element operations (operation, set, key bytes in network order) to sets of
    /// `table` as one transaction. Fails with the kernel's errno (e.g. ENOENT when the table,
    /// the set or, for a removal, the element does not exist) if any operation fails; then
    /// nothing changed.
    pub fn change_elements(
        &mut self,
        family: Family,
        table: &str,
        ops: &[(ElemOp, &str, &[u8])],
    ) -> io::Result<()> {
        let seq = self.next_seq(ops.len() as u32 + 2);
        let (bytes, pending) = request::element_batch(seq, family, table, ops);
        self.transact(&bytes, seq, pending, "set element operation")
    }

    /// Applies `changes` (in tables of `family`) as one transaction, refused with ERESTART if
    /// `generation` is given and the ruleset has changed since. Fails with the kernel's errno
    /// if any change fails (EEXIST, ENOENT, EBUSY for a chain still jumped to...); then nothing
    /// changed.
    pub fn commit(
        &mut self,
        family: Family,
        generation: Option<u32>,
        changes: &[Change],
    ) -> io::Result<()> {
        let seq = self.next_seq(changes.len() as u32 + 2);
        let (bytes, pending) = request::batch(seq, generation, changes.len(), |s, i| {
            write::message(s, family, &changes[i])
        });
        self.transact(&bytes, seq, pending, "ruleset change")
    }

    /// Sends a batch that begins at `seq` and reads the acks of the messages in `pending`; the
    /// first error wins.
    fn transact(
        &mut self,
        bytes: &[u8],
        seq: u32,
        mut pending: Vec<u32>,
        what: &str,
    ) -> io::Result<()> {
        self.send(bytes)?;
        let last = pending.last().copied().unwrap_or(seq);
        let mut failure: Option<io::Error> = None;
        while !pending.is_empty() {
            let Some(buf) = self.recv()? else {
                break;
            };
            for f in frames(buf) {
                let f = f?;
                let Some(errno) = errno(f)? else {
                    continue;
                };
                pending.retain(|s| *s != f.seq);
                if errno != 0 {
                    failure.get_or_insert(io::Error::from_raw_os_error(errno));
                    // An error on the batch itself means no message was processed.
                    if f.seq == seq || f.seq > last {
                        pending.clear();
                    }
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None if pending.is_empty() => Ok(()),
            None => Err(bad(&format!("nf_tables did not acknowledge every {what}"))),
        }
    }

    /// Runs a dump request and returns its answers.
    fn dump(&mut self, request: &[u8], seq: u32) -> io::Result<Vec<NfTablesMessage>> {
        let mut out = Vec::new();
        self.exchange(request, seq, "dump", |m| match m {
            None => Some(Ok(std::mem::take(&mut out))),
            Some(m) => {
                out.push(m);
                None
            }
        })
    }

    /// Sends `request` and hands each answer to it (sequence `seq`) to `answer`, None for the
    /// end of a dump, until that returns the outcome; an error answer ends it with the kernel's
    /// errno.
    fn exchange<T>(
        &mut self,
        request: &[u8],
        seq: u32,
        what: &str,
        mut answer: impl FnMut(Option<NfTablesMessage>) -> Option<io::Result<T>>,
    ) -> io::Result<T> {
        self.send(request)?;
        loop {
            let Some(buf) = self.recv()? else {
                return Err(bad(&format!("nf_tables did not finish answering {what}")));
            };
            for f in frames(buf) {
                let f = f?;
                if f.seq != seq {
                    continue;
                }
                if let Some(errno) = errno(f)? {
                    return Err(io::Error::from_raw_os_error(errno));
                }
                let outcome = match f.ty {
                    NLMSG_DONE => answer(None),
                    _ => match decode::nftables(f.bytes)? {
                        Some(m) => answer(Some(m)),
                        None => None,
                    },
                };
                if let Some(outcome) = outcome {
                    return outcome;
                }
            }
        }
    }
}

/// For an NLMSG_ERROR: the (positive) errno, 0 for an ack.
fn errno(f: Frame<'_>) -> io::Result<Option<i32>> {
    if f.ty != NLMSG_ERROR {
        return Ok(None);
    }
    decode::error(f.bytes).map(Some)
}

#[cfg(test)]
mod tests;
