//! Answers decoded by `netlink-packet-netfilter`, turned into our own types. This is the one
//! place that reaches past the crate's typed attributes, into its generic ones: the `masq`
//! expression (an `Other` expression by name) and a set element's closing key (`KeyEnd`, kept
//! as raw attributes).

use std::io;

use netlink_packet_core::{DefaultNla, NetlinkMessage, NetlinkPayload, Nla, NLA_TYPE_MASK};
use netlink_packet_netfilter::nftables::{
    Cmp, DataAttribute, ExpressionAttribute, Expressions, GenAttribute, Immediate, ListAttribute,
    Lookup, Meta, NfTablesMessage, Payload, RuleAttribute, SetElementAttribute, SetElementFlags,
    SetElementList, TableAttribute, VerdictAttribute,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};

/// A table of a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    /// Unique in the netns for the table's lifetime, never reused (0 if the kernel sent none).
    pub handle: u64,
}

/// A dumped rule: its chain, handle and expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    /// Unique in the table, never reused for a new rule (0 if the kernel sent none).
    pub handle: u64,
    pub exprs: Vec<Expr>,
}

/// One expression of a dumped rule, as far as telling rules apart needs. Numbers are the
/// kernel's (`nf_tables.h`); a missing number reads as `u32::MAX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A load of meta key `key` into a register.
    Meta {
        key: u32,
    },
    Cmp {
        op: u32,
        data: Vec<u8>,
    },
    /// A load from the packet (a write, with a source register, is `Other("payload")`).
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    Lookup {
        set: String,
        inverted: bool,
        map: bool,
    },
    /// An immediate into the verdict register (other immediates are `Other("immediate")`).
    Verdict {
        code: i32,
        chain: Option<String>,
    },
    Masq,
    /// Any other expression, by name.
    Other(String),
}

/// One element of a dumped set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElement {
    /// In network byte order.
    pub key: Vec<u8>,
    /// The element ends the interval of the element before it (rbtree interval sets).
    pub interval_end: bool,
    /// The closing key of an interval (pipapo interval sets).
    pub key_end: Option<Vec<u8>>,
}

fn bad(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// An nf_tables message (None for any other kind).
pub(super) fn nftables(bytes: &[u8]) -> io::Result<Option<NfTablesMessage>> {
    let msg = NetlinkMessage::<NetfilterMessage>::deserialize(bytes).map_err(bad)?;
    Ok(match msg.payload {
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::NfTables(m),
            ..
        }) => Some(m),
        _ => None,
    })
}

/// The (positive) errno of an NLMSG_ERROR, 0 for an ack; EPROTO if it has none.
pub(super) fn error(bytes: &[u8]) -> io::Result<i32> {
    Ok(
        match NetlinkMessage::<NetfilterMessage>::deserialize(bytes) {
            Ok(NetlinkMessage {
                payload: NetlinkPayload::Error(e),
                ..
            }) => -e.raw_code(),
            Ok(_) => return Err(bad("NLMSG_ERROR expected")),
            Err(_) => libc::EPROTO,
        },
    )
}

/// The generation of an NFT_MSG_NEWGEN (None for any other message).
pub(super) fn generation(m: &NfTablesMessage) -> Option<io::Result<u32>> {
    let NfTablesMessage::NewGen(gen) = m else {
        return None;
    };
    Some(
        gen.attributes
            .iter()
            .find_map(|a| match a {
                GenAttribute::Id(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| bad("NFT_MSG_NEWGEN without NFTA_GEN_ID")),
    )
}

pub(super) fn table(m: &NfTablesMessage) -> Option<Table> {
    let NfTablesMessage::NewTable(t) = m else {
        return None;
    };
    let mut table = Table {
        name: String::new(),
        handle: 0,
    };
    for a in &t.attributes {
        match a {
            TableAttribute::Name(n) => table.name.clone_from(n),
            TableAttribute::Handle(h) => table.handle = *h,
            _ => {}
        }
    }
    Some(table)
}

pub(super) fn rule(m: &NfTablesMessage) -> Option<Rule> {
    let NfTablesMessage::NewRule(r) = m else {
        return None;
    };
    let mut rule = Rule {
        chain: String::new(),
        handle: 0,
        exprs: Vec::new(),
    };
    for a in &r.attributes {
        match a {
            RuleAttribute::Chain(c) => rule.chain.clone_from(c),
            RuleAttribute::Handle(h) => rule.handle = *h,
            RuleAttribute::Expressions(list) => {
                rule.exprs = list
                    .iter()
                    .filter_map(|e| match e {
                        ListAttribute::Element(attrs) => Some(expr(attrs)),
                        _ => None,
                    })
                    .collect();
            }
            _ => {}
        }
    }
    Some(rule)
}

fn expr(attrs: &[ExpressionAttribute]) -> Expr {
    let name = attrs.iter().find_map(|a| match a {
        ExpressionAttribute::Name(n) => Some(n.as_str()),
        _ => None,
    });
    let data = attrs.iter().find_map(|a| match a {
        ExpressionAttribute::Data(d) => Some(d),
        _ => None,
    });
    // The crate decodes the data of the kinds it knows by the name before them.
    match data {
        Some(Expressions::Meta(a)) => meta(a),
        Some(Expressions::Cmp(a)) => cmp(a),
        Some(Expressions::Payload(a)) => payload(a),
        Some(Expressions::Lookup(a)) => lookup(a),
        Some(Expressions::Immediate(a)) => immediate(a),
        _ => match name.unwrap_or_default() {
            "meta" => meta(&[]),
            "cmp" => cmp(&[]),
            "payload" => payload(&[]),
            "lookup" => lookup(&[]),
            "immediate" => immediate(&[]),
            "masq" => Expr::Masq,
            other => Expr::Other(other.to_string()),
        },
    }
}

fn meta(a: &[Meta]) -> Expr {
    if !a.iter().any(|m| matches!(m, Meta::DestinationRegister(_))) {
        return Expr::Other("meta".into());
    }
    let key = a.iter().find_map(|m| match m {
        Meta::Key(k) => Some(u32::from(*k)),
        _ => None,
    });
    Expr::Meta {
        key: key.unwrap_or(u32::MAX),
    }
}

fn cmp(a: &[Cmp]) -> Expr {
    let mut op = u32::MAX;
    let mut data = Vec::new();
    for c in a {
        match c {
            Cmp::Op(o) => op = u32::from(*o),
            Cmp::Data(DataAttribute::Value(v)) => data.clone_from(v),
            _ => {}
        }
    }
    Expr::Cmp { op, data }
}

fn payload(a: &[Payload]) -> Expr {
    let (mut base, mut offset, mut len) = (u32::MAX, u32::MAX, u32::MAX);
    for p in a {
        match p {
            Payload::SourceRegister(_) => return Expr::Other("payload".into()),
            Payload::Base(v) => base = *v,
            Payload::Offset(v) => offset = *v,
            Payload::Len(v) => len = *v,
            _ => {}
        }
    }
    Expr::Payload { base, offset, len }
}

/// NFT_LOOKUP_F_INV: the lookup matches what is not in the set.
const NFT_LOOKUP_F_INV: u32 = 1;

fn lookup(a: &[Lookup]) -> Expr {
    let mut set = String::new();
    let (mut inverted, mut map) = (false, false);
    for l in a {
        match l {
            Lookup::Set(s) => set.clone_from(s),
            Lookup::Flags(f) => inverted = f & NFT_LOOKUP_F_INV != 0,
            Lookup::DestinationRegister(_) => map = true,
            _ => {}
        }
    }
    Expr::Lookup { set, inverted, map }
}

fn immediate(a: &[Immediate]) -> Expr {
    let to_verdict = a
        .iter()
        .any(|i| matches!(i, Immediate::DestinationRegister(r) if u32::from(*r) == 0));
    if !to_verdict {
        return Expr::Other("immediate".into());
    }
    let (mut code, mut chain) = (0, None);
    for i in a {
        if let Immediate::Data(DataAttribute::Verdict(v)) = i {
            for v in v {
                match v {
                    VerdictAttribute::Code(c) => code = u32::from(*c) as i32,
                    VerdictAttribute::Chain(c) => chain = Some(c.clone()),
                    _ => {}
                }
            }
        }
    }
    Expr::Verdict { code, chain }
}

/// NFTA_DATA_VALUE, inside a closing key.
const NFTA_DATA_VALUE: u16 = 1;

/// The elements of an NFT_MSG_NEWSETELEM (none for any other message).
pub(super) fn set_elements(m: &NfTablesMessage) -> Vec<SetElement> {
    let NfTablesMessage::NewSetElement(msg) = m else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for list in &msg.attributes {
        let SetElementList::Elements(elements) = list else {
            continue;
        };
        for e in elements {
            if let ListAttribute::Element(attrs) = e {
                out.extend(set_element(attrs));
            }
        }
    }
    out
}

fn set_element(attrs: &[SetElementAttribute]) -> Option<SetElement> {
    let mut key = None;
    let mut interval_end = false;
    let mut key_end = None;
    for a in attrs {
        match a {
            SetElementAttribute::Key(DataAttribute::Value(v)) => key = Some(v.clone()),
            SetElementAttribute::Flags(f) => {
                interval_end = f.contains(SetElementFlags::IntervalEnd);
            }
            SetElementAttribute::KeyEnd(nlas) => key_end = data_value(nlas),
            _ => {}
        }
    }
    Some(SetElement {
        key: key?,
        interval_end,
        key_end,
    })
}

/// The NFTA_DATA_VALUE among raw attributes (the crate keeps a closing key undecoded).
fn data_value(nlas: &[DefaultNla]) -> Option<Vec<u8>> {
    let nla = nlas
        .iter()
        .find(|n| n.kind() & NLA_TYPE_MASK == NFTA_DATA_VALUE)?;
    let mut value = vec![0; nla.value_len()];
    nla.emit_value(&mut value);
    Some(value)
}
