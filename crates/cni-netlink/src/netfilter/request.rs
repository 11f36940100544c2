//! The requests we send, built from `netlink-packet-netfilter`'s messages. Layouts follow the
//! kernel UAPI headers `linux/netlink.h`, `linux/netfilter/nfnetlink.h` and
//! `linux/netfilter/nf_tables.h`: nlmsghdr, then nfgenmsg (family, version 0, be16 res_id), then
//! attributes.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, DataAttribute, GenMessage, ListAttribute, NfTablesMessage,
    RuleAttribute, RuleMessage, SetElementAttribute, SetElementList, SetElementMessage,
    TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

/// The nf_tables families we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `inet`: IPv4 and IPv6 in one table.
    Inet,
    /// `ip`, where iptables-nft keeps IPv4 rules.
    Ipv4,
    /// `ip6`, where iptables-nft keeps IPv6 rules.
    Ipv6,
}

impl Family {
    fn proto(self) -> NetfilterProtoFamily {
        match self {
            Family::Inet => NetfilterProtoFamily::Inet,
            Family::Ipv4 => NetfilterProtoFamily::IPv4,
            Family::Ipv6 => NetfilterProtoFamily::IPv6,
        }
    }
}

/// The family's NFPROTO number, as `meta nfproto` compares it.
impl From<Family> for u8 {
    fn from(f: Family) -> u8 {
        f.proto().into()
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

/// res_id of the batch messages: the subsystem the batch is for.
const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// One message's bytes. The header's length and type are filled in from the payload.
fn emit(
    seq: u32,
    flags: u16,
    family: NetfilterProtoFamily,
    res_id: u16,
    inner: impl Into<NetfilterMessageInner>,
) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let nfgen = NetfilterHeader::new(family, 0, res_id);
    let mut msg = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(NetfilterMessage::new(nfgen, inner)),
    );
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

pub(super) fn nftables(seq: u32, flags: u16, family: Family, msg: NfTablesMessage) -> Vec<u8> {
    emit(seq, flags, family.proto(), 0, msg)
}

/// NFT_MSG_GETGEN (family unspecified): answered with one NFT_MSG_NEWGEN.
pub(super) fn get_generation(seq: u32) -> Vec<u8> {
    let msg = NfTablesMessage::GetGen(GenMessage { attributes: vec![] });
    emit(seq, NLM_F_REQUEST, NetfilterProtoFamily::Unspec, 0, msg)
}

pub(super) fn dump_tables(seq: u32, family: Family) -> Vec<u8> {
    let msg = NfTablesMessage::GetTable(TableMessage { attributes: vec![] });
    nftables(seq, NLM_F_REQUEST | NLM_F_DUMP, family, msg)
}

pub(super) fn dump_rules(seq: u32, family: Family, table: &str, chain: Option<&str>) -> Vec<u8> {
    let mut attributes = vec![RuleAttribute::Table(table.to_string())];
    if let Some(chain) = chain {
        attributes.push(RuleAttribute::Chain(chain.to_string()));
    }
    let msg = NfTablesMessage::GetRule(RuleMessage { attributes });
    nftables(seq, NLM_F_REQUEST | NLM_F_DUMP, family, msg)
}

/// NFT_MSG_GETCHAIN of one chain: answered with its NFT_MSG_NEWCHAIN, or ENOENT.
pub(super) fn get_chain(seq: u32, family: Family, table: &str, chain: &str) -> Vec<u8> {
    let msg = NfTablesMessage::GetChain(ChainMessage {
        attributes: vec![
            ChainAttribute::Table(table.to_string()),
            ChainAttribute::Name(chain.to_string()),
        ],
    });
    nftables(seq, NLM_F_REQUEST, family, msg)
}

pub(super) fn dump_set_elements(seq: u32, family: Family, table: &str, set: &str) -> Vec<u8> {
    let attributes = vec![
        SetElementList::Table(table.to_string()),
        SetElementList::Set(set.to_string()),
    ];
    let msg = NfTablesMessage::GetSetElement(SetElementMessage { attributes });
    nftables(seq, NLM_F_REQUEST | NLM_F_DUMP, family, msg)
}

/// NFNL_BATCH_GENID: the batch begin's attribute that makes the kernel refuse the batch
/// (ERESTART) if the ruleset generation is no longer this one.
const NFNL_BATCH_GENID: u16 = 1;

/// Frames `messages` (each built with its sequence number, from `seq + 1` on) as one batch: one
/// transaction, applied only if the ruleset is still at `generation` when given. Returns the
/// bytes and the sequence numbers that must be acked.
pub(super) fn batch(
    seq: u32,
    generation: Option<u32>,
    count: usize,
    mut message: impl FnMut(u32, usize) -> Vec<u8>,
) -> (Vec<u8>, Vec<u32>) {
    let control = |seq, msg: ControlMessage| {
        let unspec = NetfilterProtoFamily::Unspec;
        emit(seq, NLM_F_REQUEST, unspec, NFNL_SUBSYS_NFTABLES, msg)
    };
    let mut bytes = control(seq, ControlMessage::BatchBegin);
    if let Some(generation) = generation {
        // nla_len, nla_type (host order), then the be32 value; nlmsg_len grows by the same.
        bytes.extend(8u16.to_ne_bytes());
        bytes.extend(NFNL_BATCH_GENID.to_ne_bytes());
        bytes.extend(generation.to_be_bytes());
        let len = bytes.len() as u32;
        bytes[..4].copy_from_slice(&len.to_ne_bytes());
    }
    let mut acks = Vec::with_capacity(count);
    for i in 0..count {
        let s = seq + 1 + i as u32;
        bytes.extend(message(s, i));
        acks.push(s);
    }
    bytes.extend(control(seq + 1 + count as u32, ControlMessage::BatchEnd));
    (bytes, acks)
}

/// One batch (one transaction) applying `ops` (operation, set, key bytes in network order) to
/// sets of `table`. Sequence numbers run from `seq` (batch begin) on; every operation asks for
/// an ack. Returns the bytes and the sequence numbers that must be acked.
pub(super) fn element_batch(
    seq: u32,
    family: Family,
    table: &str,
    ops: &[(ElemOp, &str, &[u8])],
) -> (Vec<u8>, Vec<u32>) {
    batch(seq, None, ops.len(), |s, i| {
        let (op, set, key) = ops[i];
        let element = SetElementAttribute::Key(DataAttribute::Value(key.to_vec()));
        let list = SetElementMessage {
            attributes: vec![
                SetElementList::Table(table.to_string()),
                SetElementList::Set(set.to_string()),
                SetElementList::Elements(vec![ListAttribute::Element(vec![element])]),
            ],
        };
        let (msg, flags) = match op {
            ElemOp::Add => (
                NfTablesMessage::NewSetElement(list),
                NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
            ),
            ElemOp::Delete => (
                NfTablesMessage::DeleteSetElement(list),
                NLM_F_REQUEST | NLM_F_ACK,
            ),
        };
        nftables(s, flags, family, msg)
    })
}
