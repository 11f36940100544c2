use super::*;
use crate::class::{BackendKind, Options};
use ipnet::IpNet;

fn class(addr: &str) -> Class {
    let a: IpNet = addr.parse().unwrap();
    Class::new(BackendKind::Nftables, "pods", a, &[a], &Options::default())
}

#[test]
fn add_script_has_fixed_rules_per_class_and_one_element_per_pod() {
    let c = class("10.1.0.5/24");
    let plan = Plan {
        live: vec![c.clone()],
        ensure: vec![(c.clone(), true)],
        add: vec![(c.clone(), "10.1.0.5".parse().unwrap())],
        ..Plan::default()
    };
    let s = script(&plan);
    let ch = format!("c_{}", c.id);
    assert!(s.contains(&format!(
        "add element inet rmasq {ch}_skip {{ 10.1.0.0/24, 169.254.0.0/16, 224.0.0.0/4 }}"
    )));
    assert!(s.contains(&format!(
        "add rule inet rmasq {ch} ip daddr @{ch}_skip return"
    )));
    assert!(s.contains(&format!("add rule inet rmasq {ch} masquerade")));
    assert!(s.contains(&format!(
        "add rule inet rmasq postrouting ip saddr @{ch}_pods jump {ch} comment \"pods\""
    )));
    assert!(s.contains(&format!("add element inet rmasq {ch}_pods {{ 10.1.0.5 }}")));
    assert_eq!(s.matches("add rule").count(), 3);
}

#[test]
fn remove_is_idempotent_and_drop_removes_class() {
    let c4 = class("10.1.0.5/24");
    let c6 = class("fd00::5/64");
    let plan = Plan {
        live: vec![c4.clone()],
        remove: vec![
            (c4.clone(), "10.1.0.5".parse().unwrap()),
            (c6.clone(), "fd00::5".parse().unwrap()),
        ],
        drop: vec![c6.clone()],
        ..Plan::default()
    };
    let s = script(&plan);
    let ch4 = format!("c_{}", c4.id);
    let ch6 = format!("c_{}", c6.id);
    assert!(s.contains(&format!(
        "add element inet rmasq {ch4}_pods {{ 10.1.0.5 }}\ndelete element inet rmasq {ch4}_pods {{ 10.1.0.5 }}"
    )));
    // A dropped class's set goes whole; no element-level delete for it.
    assert!(!s.contains(&format!("delete element inet rmasq {ch6}_pods")));
    assert!(s.contains(&format!(
        "add chain inet rmasq {ch6}\ndelete chain inet rmasq {ch6}"
    )));
    assert!(s.contains(&format!("delete set inet rmasq {ch6}_skip")));
    assert!(!s.contains(&format!("jump {ch6}")));
}

#[test]
fn no_live_class_removes_the_table() {
    let c = class("10.1.0.5/24");
    let s = script(&Plan {
        drop: vec![c],
        ..Plan::default()
    });
    assert_eq!(s, "add table inet rmasq\ndelete table inet rmasq\n");
}

#[test]
fn check_finds_missing_pieces() {
    let c = class("10.1.0.5/24");
    let ch = format!("c_{}", c.id);
    let good = format!(
        "table inet rmasq {{\n\tset {ch}_pods {{\n\t\ttype ipv4_addr\n\t\telements = {{ 10.1.0.50, 10.1.0.5 }}\n\t}}\n\n\
         \tset {ch}_skip {{\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = {{ 10.1.0.0/24, 169.254.0.0/16,\n\t\t\t     224.0.0.0/4 }}\n\t}}\n\n\
         \tchain {ch} {{\n\t\tip daddr @{ch}_skip return\n\t\tmasquerade\n\t}}\n\n\
         \tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip saddr @{ch}_pods jump {ch} comment \"pods\"\n\t}}\n}}\n"
    );
    check_listing(&good, &c, "10.1.0.5".parse().unwrap()).unwrap();
    let e = check_listing(&good, &c, "10.1.0.6".parse().unwrap()).unwrap_err();
    assert_eq!(e.code, CHECK_MISMATCH);
    assert!(e.msg.contains("element 10.1.0.6"), "{}", e.msg);
    let no_masq = good.replace("\t\tmasquerade\n", "");
    let e = check_listing(&no_masq, &c, "10.1.0.5".parse().unwrap()).unwrap_err();
    assert!(e.msg.contains("masquerade"), "{}", e.msg);
    let no_jump = good.replace(
        &format!("\t\tip saddr @{ch}_pods jump {ch} comment \"pods\"\n"),
        "",
    );
    let e = check_listing(&no_jump, &c, "10.1.0.5".parse().unwrap()).unwrap_err();
    assert!(e.msg.contains("postrouting"), "{}", e.msg);
}
