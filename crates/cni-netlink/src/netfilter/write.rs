//! Ruleset changes as one nf_tables transaction: tables, chains and rules made of the few
//! expressions iptables-nft writes for address matches and verdicts (`xtables` compat matches
//! and targets included), so that a caller can write iptables rules without `iptables-restore`.
//! What rules mean is the caller's business; this module only encodes them (`nf_tables.h`,
//! `nft_compat.h`).

use netlink_packet_core::{DefaultNla, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, Expressions, Hook, HookNumber,
    Immediate, ListAttribute, NfTablesMessage, Operator, Payload, Register, RuleAttribute,
    RuleMessage, TableAttribute, TableMessage, Verdict as NlVerdict, VerdictAttribute,
};

use super::request::{nftables, Family};

/// A base chain's hook, as iptables-nft makes its built-in chains: policy accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// `nat`, `filter`...
    pub kind: &'static str,
    /// NF_INET_* hook number.
    pub hook: u32,
    pub priority: i32,
}

/// The verdict a rule ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Return,
    Jump(String),
}

/// One expression of a rule written here. Loads go to register 1, as iptables-nft's do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleExpr {
    /// `len` bytes at `offset` of the network header.
    LoadNetwork {
        offset: u32,
        len: u32,
    },
    /// The register, masked (xor 0).
    Mask(Vec<u8>),
    /// Ends the rule unless the register equals the value.
    Equals(Vec<u8>),
    /// Packet and byte counters from zero.
    Counter,
    /// An `xtables` match by name and revision, with its info struct.
    XtMatch {
        name: &'static str,
        rev: u32,
        info: Vec<u8>,
    },
    /// An `xtables` target by name and revision, with its info struct.
    XtTarget {
        name: &'static str,
        rev: u32,
        info: Vec<u8>,
    },
    Verdict(Verdict),
}

/// One change of a transaction, in a table of the transaction's family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Creates the table if it is not there.
    AddTable {
        table: String,
    },
    /// Creates the chain (a base chain with `base`) if it is not there.
    AddChain {
        table: String,
        chain: String,
        base: Option<BaseChain>,
    },
    /// Removes every rule of the chain.
    FlushChain {
        table: String,
        chain: String,
    },
    DeleteChain {
        table: String,
        chain: String,
    },
    DeleteRule {
        table: String,
        chain: String,
        handle: u64,
    },
    /// Appends the rule to the chain, or puts it first with `first`.
    AddRule {
        table: String,
        chain: String,
        exprs: Vec<RuleExpr>,
        first: bool,
    },
}

/// NF_ACCEPT.
const ACCEPT: u32 = 1;
/// NFT_PAYLOAD_NETWORK_HEADER.
const NETWORK_HEADER: u32 = 1;
/// NFTA_COUNTER_BYTES, NFTA_COUNTER_PACKETS.
const COUNTER_BYTES: u16 = 1;
const COUNTER_PACKETS: u16 = 2;
/// NFTA_MATCH_NAME, _REV, _INFO (the same numbers for NFTA_TARGET_*).
const XT_NAME: u16 = 1;
const XT_REV: u16 = 2;
const XT_INFO: u16 = 3;
/// NFTA_RULE_COMPAT_PROTO, NFTA_RULE_COMPAT_FLAGS.
const COMPAT_PROTO: u16 = 1;
const COMPAT_FLAGS: u16 = 2;

fn be32(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn xt(kind: &str, name: &str, rev: u32, info: &[u8]) -> Expressions {
    let mut name = name.as_bytes().to_vec();
    name.push(0);
    Expressions::Other {
        expression_type: kind.to_string(),
        attributes: vec![
            DefaultNla::new(XT_NAME, name),
            DefaultNla::new(XT_REV, be32(rev)),
            DefaultNla::new(XT_INFO, info.to_vec()),
        ],
    }
}

fn verdict(v: &Verdict) -> Expressions {
    let attrs = match v {
        Verdict::Accept => vec![VerdictAttribute::Code(NlVerdict::Other(ACCEPT))],
        Verdict::Return => vec![VerdictAttribute::Code(NlVerdict::Return)],
        Verdict::Jump(chain) => vec![
            VerdictAttribute::Code(NlVerdict::Jump),
            VerdictAttribute::Chain(chain.clone()),
        ],
    };
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(attrs)),
    ])
}

fn expression(e: &RuleExpr) -> Expressions {
    match e {
        RuleExpr::LoadNetwork { offset, len } => Expressions::Payload(vec![
            Payload::DestinationRegister(Register::Reg1),
            Payload::Base(NETWORK_HEADER),
            Payload::Offset(*offset),
            Payload::Len(*len),
        ]),
        RuleExpr::Mask(mask) => Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(mask.len() as u32),
            Bitwise::Mask(DataAttribute::Value(mask.clone())),
            Bitwise::Xor(DataAttribute::Value(vec![0; mask.len()])),
        ]),
        RuleExpr::Equals(value) => Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::Equal),
            Cmp::Data(DataAttribute::Value(value.clone())),
        ]),
        RuleExpr::Counter => Expressions::Other {
            expression_type: "counter".to_string(),
            attributes: vec![
                DefaultNla::new(COUNTER_BYTES, 0u64.to_be_bytes().to_vec()),
                DefaultNla::new(COUNTER_PACKETS, 0u64.to_be_bytes().to_vec()),
            ],
        },
        RuleExpr::XtMatch { name, rev, info } => xt("match", name, *rev, info),
        RuleExpr::XtTarget { name, rev, info } => xt("target", name, *rev, info),
        RuleExpr::Verdict(v) => verdict(v),
    }
}

fn rule(table: &str, chain: &str, exprs: &[RuleExpr]) -> RuleMessage {
    let list: Vec<ListAttribute<_>> = exprs.iter().map(|e| expression(e).into()).collect();
    let mut attributes = vec![
        RuleAttribute::Table(table.to_string()),
        RuleAttribute::Chain(chain.to_string()),
        RuleAttribute::Expressions(list),
    ];
    // As iptables-nft sends it: nft_compat checks xtables extensions against it (no protocol).
    let xtables = exprs
        .iter()
        .any(|e| matches!(e, RuleExpr::XtMatch { .. } | RuleExpr::XtTarget { .. }));
    if xtables {
        attributes.push(RuleAttribute::Compat(vec![
            DefaultNla::new(COMPAT_PROTO, be32(0)),
            DefaultNla::new(COMPAT_FLAGS, be32(0)),
        ]));
    }
    RuleMessage { attributes }
}

fn chain_message(table: &str, chain: &str, base: Option<&BaseChain>) -> ChainMessage {
    let mut attributes = vec![
        ChainAttribute::Table(table.to_string()),
        ChainAttribute::Name(chain.to_string()),
    ];
    if let Some(b) = base {
        attributes.push(ChainAttribute::Hook(vec![
            Hook::Number(HookNumber::Other(b.hook)),
            Hook::Priority(b.priority as u32),
        ]));
        attributes.push(ChainAttribute::Policy(ACCEPT));
        attributes.push(ChainAttribute::Type(b.kind.to_string()));
    }
    ChainMessage { attributes }
}

/// The message of `change`, with sequence number `seq`, asking for an ack.
pub(super) fn message(seq: u32, family: Family, change: &Change) -> Vec<u8> {
    let ack = NLM_F_REQUEST | NLM_F_ACK;
    let (msg, flags) = match change {
        Change::AddTable { table } => (
            NfTablesMessage::NewTable(TableMessage {
                attributes: vec![TableAttribute::Name(table.clone())],
            }),
            ack | NLM_F_CREATE,
        ),
        Change::AddChain { table, chain, base } => (
            NfTablesMessage::NewChain(chain_message(table, chain, base.as_ref())),
            ack | NLM_F_CREATE,
        ),
        Change::FlushChain { table, chain } => (
            NfTablesMessage::DeleteRule(RuleMessage {
                attributes: vec![
                    RuleAttribute::Table(table.clone()),
                    RuleAttribute::Chain(chain.clone()),
                ],
            }),
            ack,
        ),
        Change::DeleteChain { table, chain } => (
            NfTablesMessage::DeleteChain(chain_message(table, chain, None)),
            ack,
        ),
        Change::DeleteRule {
            table,
            chain,
            handle,
        } => (
            NfTablesMessage::DeleteRule(RuleMessage {
                attributes: vec![
                    RuleAttribute::Table(table.clone()),
                    RuleAttribute::Chain(chain.clone()),
                    RuleAttribute::Handle(*handle),
                ],
            }),
            ack,
        ),
        Change::AddRule {
            table,
            chain,
            exprs,
            first,
        } => {
            let append = if *first { 0 } else { NLM_F_APPEND };
            (
                NfTablesMessage::NewRule(rule(table, chain, exprs)),
                ack | NLM_F_CREATE | append,
            )
        }
    };
    nftables(seq, flags, family, msg)
}
