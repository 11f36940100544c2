use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST};
use netlink_packet_netfilter::nftables::{
    Cmp, DataAttribute, Expressions, Immediate, ListAttribute, Lookup, Meta, MetaKey,
    NfTablesMessage, Operator, Payload, Register, RuleAttribute, RuleMessage, SetElementAttribute,
    SetElementFlags, SetElementList, SetElementMessage, TableAttribute, TableMessage, Verdict,
    VerdictAttribute,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};

use super::request::{dump_rules, element_batch, get_generation, nftables};
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
    let (ours, acks) = element_batch(
        0,
        Family::Inet,
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
    let (bytes, acks) = element_batch(
        7,
        Family::Inet,
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

fn decoded(bytes: &[u8]) -> Vec<(u16, u16, u32, NetfilterMessage)> {
    frames(bytes)
        .map(|f| {
            let f = f.unwrap();
            let m = NetlinkMessage::<NetfilterMessage>::deserialize(f.bytes).unwrap();
            let NetlinkPayload::InnerMessage(inner) = m.payload else {
                panic!("not a netfilter message: {m:?}");
            };
            (f.ty, m.header.flags, f.seq, inner)
        })
        .collect()
}

#[test]
fn delete_element_batch_decodes_back() {
    let key: [u8; 16] = "fd00::5".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let (bytes, acks) = element_batch(
        1,
        Family::Inet,
        "rmasq",
        &[
            (ElemOp::Add, "c_y_pods", &key),
            (ElemOp::Delete, "c_y_pods", &key),
        ],
    );
    assert_eq!(acks, vec![2, 3]);
    let msgs = decoded(&bytes);
    assert_eq!(
        msgs.iter().map(|m| (m.0, m.2)).collect::<Vec<_>>(),
        vec![(0x10, 1), (0x0a0c, 2), (0x0a0e, 3), (0x11, 4)]
    );
    let del = &msgs[2].3;
    assert_eq!(u8::from(del.header.family), u8::from(Family::Inet));
    assert_eq!((del.header.version, del.header.res_id), (0, 0));
    let NetfilterMessageInner::NfTables(NfTablesMessage::DeleteSetElement(del)) = &del.inner else {
        panic!("not DELSETELEM: {del:?}");
    };
    let element = SetElementAttribute::Key(DataAttribute::Value(key.to_vec()));
    assert_eq!(
        del.attributes,
        vec![
            SetElementList::Table("rmasq".into()),
            SetElementList::Set("c_y_pods".into()),
            SetElementList::Elements(vec![ListAttribute::Element(vec![element])]),
        ]
    );
    assert_eq!(msgs[1].1, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
    assert_eq!(msgs[2].1, NLM_F_REQUEST | NLM_F_ACK);
}

#[test]
fn dump_request_layout() {
    #[rustfmt::skip]
    let want: Vec<u8> = [
        &[32, 0, 0, 0, 0x07, 0x0a, 0x01, 0x03, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0][..],
        &[10, 0, 1, 0, b'r', b'm', b'a', b's', b'q', 0, 0, 0],
    ]
    .concat();
    assert_eq!(dump_rules(3, Family::Inet, "rmasq", None), want);
    // With a chain: NFTA_RULE_CHAIN after the table.
    let with_chain = dump_rules(3, Family::Ipv4, "nat", Some("POSTROUTING"));
    assert_eq!(with_chain[16], 2);
    assert_eq!(&with_chain[20..28], &[8, 0, 1, 0, b'n', b'a', b't', 0]);
    assert_eq!(&with_chain[28..32], &[16, 0, 2, 0]);
    assert_eq!(&with_chain[32..44], b"POSTROUTING\0");
}

#[test]
fn generation_request_layout() {
    // NFT_MSG_GETGEN (0x0a10), REQUEST, seq 5, AF_UNSPEC, no attributes.
    let want = [
        20, 0, 0, 0, 0x10, 0x0a, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(get_generation(5), want);
}

#[test]
fn truncated_input_is_an_error_not_a_panic() {
    let (bytes, _) = element_batch(1, Family::Inet, "t", &[(ElemOp::Add, "s", &[1, 2, 3, 4])]);
    for cut in 0..bytes.len() {
        for f in frames(&bytes[..cut]).flatten() {
            let _ = decode::nftables(f.bytes);
        }
    }
    assert!(frames(&bytes[..40]).any(|m| m.is_err()));
}

/// A rule of chain `postrouting` with handle 7 and `exprs`, dumped and decoded back.
fn dumped_rule(exprs: Vec<Expressions>) -> Rule {
    let msg = NfTablesMessage::NewRule(RuleMessage {
        attributes: vec![
            RuleAttribute::Table("rmasq".into()),
            RuleAttribute::Chain("postrouting".into()),
            RuleAttribute::Handle(7),
            RuleAttribute::Expressions(exprs.into_iter().map(Into::into).collect()),
        ],
    });
    let bytes = nftables(9, NLM_F_REQUEST, Family::Inet, msg);
    let back = decode::nftables(&bytes).unwrap().unwrap();
    assert!(decode::table(&back).is_none());
    decode::rule(&back).unwrap()
}

/// What the kernel dumps for rmasq's rules decodes to our expressions; expressions the crate
/// has no type for come by name.
#[test]
fn rule_dump_decodes_to_expressions() {
    let rule = dumped_rule(vec![
        Expressions::Meta(vec![
            Meta::Key(MetaKey::Nfproto),
            Meta::DestinationRegister(Register::Reg1),
        ]),
        Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::Equal),
            Cmp::Data(DataAttribute::Value(vec![2])),
        ]),
        Expressions::Payload(vec![
            Payload::DestinationRegister(Register::Reg1),
            Payload::Base(1),
            Payload::Offset(12),
            Payload::Len(4),
        ]),
        Expressions::Lookup(vec![
            Lookup::Set("c_x_pods".into()),
            Lookup::SourceRegister(Register::Reg1),
            Lookup::Flags(1),
        ]),
        Expressions::Immediate(vec![
            Immediate::DestinationRegister(Register::Verdict),
            Immediate::Data(DataAttribute::Verdict(vec![
                VerdictAttribute::Code(Verdict::Jump),
                VerdictAttribute::Chain("c_x".into()),
            ])),
        ]),
        Expressions::Other {
            expression_type: "masq".into(),
            attributes: vec![],
        },
        Expressions::Other {
            expression_type: "counter".into(),
            attributes: vec![],
        },
        Expressions::Payload(vec![Payload::SourceRegister(Register::Reg1)]),
    ]);
    assert_eq!(
        rule,
        Rule {
            chain: "postrouting".into(),
            handle: 7,
            exprs: vec![
                Expr::Meta { key: 15 },
                Expr::Cmp {
                    op: 0,
                    data: vec![2]
                },
                Expr::Payload {
                    base: 1,
                    offset: 12,
                    len: 4
                },
                Expr::Lookup {
                    set: "c_x_pods".into(),
                    inverted: true,
                    map: false
                },
                Expr::Verdict {
                    code: -3,
                    chain: Some("c_x".into())
                },
                Expr::Masq,
                Expr::Other("counter".into()),
                Expr::Other("payload".into()),
            ],
        }
    );
}

#[test]
fn table_and_element_dumps_decode() {
    let table = NfTablesMessage::NewTable(TableMessage {
        attributes: vec![
            TableAttribute::Name("nat".into()),
            TableAttribute::Use(3),
            TableAttribute::Handle(42),
        ],
    });
    let back = decode::nftables(&nftables(1, 0, Family::Ipv4, table)).unwrap();
    assert_eq!(
        decode::table(&back.unwrap()),
        Some(Table {
            name: "nat".into(),
            handle: 42
        })
    );

    let key = |k: &[u8]| SetElementAttribute::Key(DataAttribute::Value(k.to_vec()));
    let end_flag = SetElementAttribute::Flags(SetElementFlags::IntervalEnd);
    let key_end = SetElementAttribute::KeyEnd(vec![netlink_packet_core::DefaultNla::new(
        1,
        vec![10, 1, 0, 255],
    )]);
    let elems = NfTablesMessage::NewSetElement(SetElementMessage {
        attributes: vec![
            SetElementList::Table("rmasq".into()),
            SetElementList::Set("c_x_skip".into()),
            SetElementList::Elements(vec![
                ListAttribute::Element(vec![key(&[10, 1, 1, 0]), end_flag]),
                ListAttribute::Element(vec![key(&[10, 1, 0, 0]), key_end]),
                // No key: not an element we can use.
                ListAttribute::Element(vec![SetElementAttribute::Flags(SetElementFlags::empty())]),
            ]),
        ],
    });
    let back = decode::nftables(&nftables(1, 0, Family::Inet, elems)).unwrap();
    assert_eq!(
        decode::set_elements(&back.unwrap()),
        vec![
            SetElement {
                key: vec![10, 1, 1, 0],
                interval_end: true,
                key_end: None
            },
            SetElement {
                key: vec![10, 1, 0, 0],
                interval_end: false,
                key_end: Some(vec![10, 1, 0, 255])
            },
        ]
    );
}

#[test]
fn errors_and_acks_decode_to_errnos() {
    let mut ack = vec![36, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0];
    ack.extend_from_slice(&0i32.to_ne_bytes());
    ack.extend_from_slice(&[0; 16]);
    assert_eq!(decode::error(&ack).unwrap(), 0);
    let mut enoent = ack.clone();
    enoent[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
    assert_eq!(decode::error(&enoent).unwrap(), libc::ENOENT);
    let f = frames(&enoent).next().unwrap().unwrap();
    assert_eq!((f.ty, f.seq), (2, 4));
    assert_eq!(errno(f).unwrap(), Some(libc::ENOENT));
    // Too short to hold an errno.
    let mut short = vec![18, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(decode::error(&short).unwrap(), libc::EPROTO);
    short[0] = 16;
    assert_eq!(decode::error(&short[..16]).unwrap(), libc::EPROTO);
}
