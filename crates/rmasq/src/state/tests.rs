use super::*;

fn store() -> (PathBuf, Store) {
    let dir = std::env::temp_dir().join(format!(
        "rmasq-state-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    (dir.clone(), Store::new(dir))
}

#[test]
fn owners_count_per_address_and_class() {
    let (dir, s) = store();
    let l = s.lock().unwrap();
    let a: IpAddr = "10.1.0.5".parse().unwrap();
    let b: IpAddr = "10.1.0.6".parse().unwrap();
    l.add_owner("00000000000000c1", a, "n:x:eth0").unwrap();
    assert!(!l.other_owners("00000000000000c1", a, "n:x:eth0").unwrap());
    l.add_owner("00000000000000c1", a, "n:y:eth0").unwrap();
    assert!(l.other_owners("00000000000000c1", a, "n:x:eth0").unwrap());
    assert!(!l.other_members("00000000000000c1", &[a]).unwrap());
    l.add_owner("00000000000000c1", b, "n:z:eth0").unwrap();
    assert!(l.other_members("00000000000000c1", &[a]).unwrap());
    l.remove_owner("00000000000000c1", a, "n:x:eth0").unwrap();
    l.remove_owner("00000000000000c1", a, "n:x:eth0").unwrap();
    assert!(!l.other_owners("00000000000000c1", a, "n:y:eth0").unwrap());
    assert_eq!(
        l.orphan_owners("n").unwrap().len(),
        2,
        "owners without records"
    );
    l.remove_owner("00000000000000c1", a, "n:y:eth0").unwrap();
    l.remove_owner("00000000000000c1", b, "n:z:eth0").unwrap();
    assert!(!dir.join("members/c1").exists());
    drop(l);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn membership_is_found_among_many_and_when_absent() {
    let (dir, s) = store();
    let l = s.lock().unwrap();
    let a: IpAddr = "10.1.0.5".parse().unwrap();
    assert!(!l.other_members("00000000000000c1", &[]).unwrap());
    l.add_owner("00000000000000c1", a, "n:x:eth0").unwrap();
    assert!(!l.other_members("00000000000000c1", &[a]).unwrap());
    assert!(l.other_members("00000000000000c1", &[]).unwrap());
    // Many members with long names: more than one getdents64 buffer.
    let addrs: Vec<IpAddr> = (0..300u32)
        .map(|i| {
            format!("fd00:1234:5678:9abc:def0:{:x}::{:x}", i / 7, i)
                .parse()
                .unwrap()
        })
        .collect();
    for b in &addrs {
        l.add_owner("00000000000000c2", *b, "n:y:eth0").unwrap();
    }
    assert!(l.other_members("00000000000000c2", &addrs[..299]).unwrap());
    assert!(!l.other_members("00000000000000c2", &addrs).unwrap());
    // A temporary file is nobody.
    fs::write(dir.join("members/00000000000000c1/x.tmp123"), b"").unwrap();
    assert!(!l.other_members("00000000000000c1", &[a]).unwrap());
    drop(l);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn writes_take_over_a_killed_writers_temporary_file() {
    let (dir, s) = store();
    let l = s.lock().unwrap();
    let r = Record {
        network: "n".into(),
        container_id: "abc".into(),
        ifname: "eth0".into(),
        backend: BackendKind::Iptables,
        entries: vec![],
    };
    // As a writer killed between its write and its rename leaves it.
    let net = dir.join("attachments/n");
    fs::create_dir_all(&net).unwrap();
    fs::write(net.join(TEMP), b"{ half a record").unwrap();
    assert_eq!(l.records("n").unwrap(), vec![], "readers skip it");
    l.put_record(&r).unwrap();
    assert_eq!(l.records("n").unwrap(), vec![r.clone()]);
    assert!(!net.join(TEMP).exists(), "renamed into place");
    let names: Vec<_> = fs::read_dir(&net).unwrap().flatten().collect();
    assert_eq!(names.len(), 1);
    // A symlink in its place is not followed.
    let target = dir.join("elsewhere");
    std::os::unix::fs::symlink(&target, net.join(TEMP)).unwrap();
    let e = l.put_record(&r).unwrap_err();
    assert!(e.msg.contains("cannot write"), "{}", e.msg);
    assert!(!target.exists());
    drop(l);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn taking_the_lock_removes_an_earlier_versions_spares() {
    let (dir, s) = store();
    fs::create_dir_all(dir.join("spare/7")).unwrap();
    fs::write(dir.join("spare/3"), b"   ").unwrap();
    let l = s.lock().unwrap();
    assert!(!dir.join("spare").exists());
    drop(l);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn records_round_trip() {
    let (dir, s) = store();
    let l = s.lock().unwrap();
    let r = Record {
        network: "n".into(),
        container_id: "abc".into(),
        ifname: "eth0".into(),
        backend: BackendKind::Nftables,
        entries: vec![Entry {
            class: "00000000000000c1".into(),
            address: "fd00::5".parse().unwrap(),
        }],
    };
    l.put_record(&r).unwrap();
    assert_eq!(l.record("n", "abc", "eth0").unwrap(), Some(r.clone()));
    assert_eq!(l.records("n").unwrap(), vec![r.clone()]);
    l.remove_record(&r).unwrap();
    l.remove_record(&r).unwrap();
    assert_eq!(l.record("n", "abc", "eth0").unwrap(), None);
    drop(l);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_corrupt_file_fails_no_listing_and_no_class_read() {
    // Found by fuzz/ (target rmasq_state): one torn record failed every GC of its network, and
    // one torn class file every ADD and DEL of its backend on the node.
    let (dir, s) = store();
    let l = s.lock().unwrap();
    let good = Record {
        network: "n".into(),
        container_id: "good".into(),
        ifname: "eth0".into(),
        backend: BackendKind::Nftables,
        entries: vec![Entry {
            class: "00000000000000c1".into(),
            address: "10.1.0.5".parse().unwrap(),
        }],
    };
    l.put_record(&good).unwrap();
    l.add_owner(
        "00000000000000c1",
        "10.1.0.5".parse().unwrap(),
        "n:good:eth0",
    )
    .unwrap();
    l.add_owner(
        "00000000000000c1",
        "10.1.0.6".parse().unwrap(),
        "n:torn:eth0",
    )
    .unwrap();
    fs::write(
        dir.join("attachments/n/torn:eth0"),
        b"{\"network\":\"n\",\"cont",
    )
    .unwrap();
    fs::create_dir_all(dir.join("classes")).unwrap();
    fs::write(dir.join("classes/c1.json"), b"").unwrap();

    assert_eq!(l.records("n").unwrap(), [good]);
    let orphans = l.orphan_owners("n").unwrap();
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert_eq!(
        (orphans[0].2.as_str(), orphans[0].3.as_str()),
        ("torn", "eth0")
    );
    assert_eq!(l.class("00000000000000c1").unwrap(), None);
    assert!(l.classes(BackendKind::Nftables).unwrap().is_empty());
    // The attachment's own record is still an error: its DEL drops it.
    assert_eq!(
        l.record("n", "torn", "eth0").unwrap_err().code,
        cni_types::error::DECODING_FAILURE
    );
    drop(l);
    fs::remove_dir_all(dir).unwrap();
}
