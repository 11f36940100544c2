use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use cni_testkit::{temp_dir, TempDir};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn open(data: &TempDir) -> Store {
    Store::open(data, "net", true, &Logger::default())
        .unwrap()
        .unwrap()
}

fn net(data: &TempDir) -> PathBuf {
    data.join("net")
}

#[test]
fn owner_format_is_upstreams() {
    let o = Owner::new("abc", "eth0");
    assert_eq!(o.to_bytes(), b"abc\r\neth0");
    assert_eq!(Owner::parse(b"abc\r\neth0"), Some(o.clone()));
    // Upstream compares trimmed content.
    assert_eq!(Owner::parse(b"  abc\r\neth0\n"), Some(o.clone()));
    // Before ifname was recorded: the container ID alone.
    assert_eq!(Owner::parse(b"abc\n"), Some(o.old_format()));
    assert_eq!(o.old_format().to_bytes(), b"abc");
    // A writer killed between create and write leaves these.
    for leftover in [&b""[..], b"\n", b" \r\n ", b"\0\0\0", b"\xff\xfe"] {
        assert_eq!(Owner::parse(leftover), None, "{leftover:?}");
    }
}

#[test]
fn key_names_cannot_collide_or_escape() {
    assert_eq!(
        Owner::new("abc", "eth0").key_name().as_deref(),
        Some("abc@eth0")
    );
    assert_eq!(
        Owner::new("abc", "eth0").old_format().key_name().as_deref(),
        Some("abc")
    );
    for bad in [
        Owner::new("a/b", "eth0"),
        Owner::new("a@b", "eth0"),
        Owner::new(".x", "eth0"),
        Owner::new("x", "a/b"),
        Owner::new(&"x".repeat(300), "eth0"),
    ] {
        assert_eq!(bad.key_name(), None, "{bad:?}");
    }
}

#[test]
fn file_names_are_gos_ip_strings() {
    // What Go's net.IP.String() writes (RFC 5952: longest zero run, first on ties, not a
    // single group), so both plugins name one address alike.
    for (addr, go) in [
        ("10.1.0.5", "10.1.0.5"),
        ("2001:db8:0:0:0:0:0:1", "2001:db8::1"),
        ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),
        ("2001:0:0:1:0:0:1:1", "2001::1:0:0:1:1"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ("FD00:0:0:0:0:0:A:B", "fd00::a:b"),
    ] {
        assert_eq!(ip(addr).to_string(), go);
    }
}

#[test]
fn reservation_is_exactly_upstreams_file_and_nothing_is_left_beside_it() {
    let data = temp_dir("rhl-store");
    let mut s = open(&data);
    let o = Owner::new("c1", "eth0");
    assert!(s.reserve(ip("10.1.0.2"), &o).unwrap());
    assert!(!s
        .reserve(ip("10.1.0.2"), &Owner::new("c2", "eth0"))
        .unwrap());
    s.set_last_reserved(0, ip("10.1.0.2")).unwrap();
    s.set_owned(&o, &[ip("10.1.0.2")]).unwrap();
    s.close().unwrap();
    assert_eq!(
        fs::read(net(&data).join("10.1.0.2")).unwrap(),
        b"c1\r\neth0"
    );
    assert_eq!(
        fs::read(net(&data).join("last_reserved_ip.0")).unwrap(),
        b"10.1.0.2"
    );
    let mode = fs::metadata(net(&data).join("10.1.0.2"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    assert!(net(&data).join("lock").is_file());
    // Nothing is left beside them: no temporary file.
    let tmp = net(&data).join(META_DIR).join("tmp");
    assert_eq!(fs::read_dir(tmp).map_or(0, |d| d.count()), 0);
}

#[test]
fn a_released_address_is_free_again_and_a_taken_one_is_refused_without_a_trace() {
    let data = temp_dir("rhl-store");
    let (a, b) = (Owner::new("a", "eth0"), Owner::new("b", "eth0"));
    let mut s = open(&data);
    assert!(s.reserve(ip("10.1.0.2"), &a).unwrap());
    assert!(s.release(ip("10.1.0.2"), &a).unwrap());
    assert!(!net(&data).join("10.1.0.2").exists());
    assert!(s.reserve(ip("10.1.0.3"), &b).unwrap());
    let file = net(&data).join("10.1.0.3");
    assert_eq!(fs::read(&file).unwrap(), b"b\r\neth0");
    // A taken address is refused, the holder's file stays as it was, and no file anywhere in
    // the store holds the refused owner's content.
    let c = Owner::new("refused-c", "eth0");
    assert!(!s.reserve(ip("10.1.0.3"), &c).unwrap());
    assert_eq!(fs::read(&file).unwrap(), b"b\r\neth0");
    s.close().unwrap();
    let mut stack = vec![net(&data)];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let text = String::from_utf8_lossy(&fs::read(e.path()).unwrap()).into_owned();
                assert!(
                    !text.contains("refused-c"),
                    "{} names the refused owner",
                    e.path().display()
                );
            }
        }
    }
    assert_eq!(
        NetworkDir::new(&data, "net").slot(ip("10.1.0.3")).unwrap(),
        Slot::Held(b)
    );
}

#[test]
fn index_is_trusted_after_our_own_changes() {
    let data = temp_dir("rhl-store");
    let o = Owner::new("c1", "eth0");
    let mut s = open(&data);
    s.ensure_index().unwrap();
    assert_eq!(s.rebuilds(), 1, "a new store has no index yet");
    s.reserve(ip("10.1.0.2"), &o).unwrap();
    s.set_owned(&o, &[ip("10.1.0.2")]).unwrap();
    s.close().unwrap();
    for _ in 0..20 {
        let mut s = open(&data);
        assert_eq!(s.owned(&o).unwrap(), [ip("10.1.0.2")]);
        assert_eq!(s.rebuilds(), 0, "nobody else changed the store");
        let other = Owner::new("c2", "eth0");
        s.reserve(ip("10.1.0.3"), &other).unwrap();
        s.set_owned(&other, &[ip("10.1.0.3")]).unwrap();
        s.close().unwrap();
        let mut s = open(&data);
        assert_eq!(s.owned(&other).unwrap(), [ip("10.1.0.3")]);
        s.release(ip("10.1.0.3"), &other).unwrap();
        s.set_owned(&other, &[]).unwrap();
        s.close().unwrap();
    }
}

/// What upstream host-local does to the directory, done right after our call returns, many
/// times in a row: each change must be noticed even within one tick of the timestamp clock.
#[test]
fn changes_behind_our_back_are_noticed_at_once() {
    let data = temp_dir("rhl-store");
    let o = Owner::new("mine", "eth0");
    let mut s = open(&data);
    s.reserve(ip("10.1.0.2"), &o).unwrap();
    s.set_owned(&o, &[ip("10.1.0.2")]).unwrap();
    s.close().unwrap();
    for i in 0..100u32 {
        let addr = format!("10.1.1.{}", i % 200 + 1);
        let theirs = Owner::new(&format!("u{i}"), "eth0");
        // Upstream's Reserve: O_EXCL create, write, then last_reserved_ip in place.
        fs::write(net(&data).join(&addr), theirs.to_bytes()).unwrap();
        fs::write(net(&data).join("last_reserved_ip.0"), &addr).unwrap();
        let mut s = open(&data);
        assert_eq!(s.owned(&theirs).unwrap(), [ip(&addr)], "round {i}");
        assert_eq!(s.rebuilds(), 1);
        s.close().unwrap();
        // Upstream's ReleaseByID.
        fs::remove_file(net(&data).join(&addr)).unwrap();
        let mut s = open(&data);
        assert!(s.owned(&theirs).unwrap().is_empty(), "round {i}");
        assert_eq!(s.rebuilds(), 1);
        s.close().unwrap();
    }
}

/// Makes the marker say what it would if the changes made since it was written had all landed
/// in the clock tick of our last change: the dirs' (dev, inode, ctime) lines are replaced by
/// their current values, the rest (last_reserved_ip and the reservation it names) stays as
/// recorded. Returns the crafted marker.
fn as_if_same_tick(data: &TempDir) -> String {
    let path = net(data).join(META_DIR).join("marker");
    let recorded = fs::read_to_string(&path).unwrap();
    let s = open(data);
    let now = s.marker().unwrap();
    drop(s);
    let mut crafted: Vec<&str> = now.lines().take(3).collect();
    crafted.extend(recorded.lines().skip(3));
    let crafted = crafted.join("\n") + "\n";
    fs::write(&path, &crafted).unwrap();
    crafted
}

/// Our ADD of one address, as `ipam::add` does it.
fn our_add(data: &TempDir, o: &Owner, addr: &str) {
    let mut s = open(data);
    s.ensure_index().unwrap();
    assert!(s.reserve(ip(addr), o).unwrap());
    s.set_last_reserved(0, ip(addr)).unwrap();
    s.set_owned(o, &[ip(addr)]).unwrap();
    s.close().unwrap();
}

/// Upstream's Reserve: O_EXCL create and write the reservation, then rewrite
/// last_reserved_ip.<set> in place (os.WriteFile).
fn upstream_reserve(data: &TempDir, o: &Owner, addr: &str) {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(net(data).join(addr))
        .unwrap()
        .write_all(&o.to_bytes())
        .unwrap();
    fs::write(net(data).join("last_reserved_ip.0"), addr).unwrap();
}

/// The crafted marker's dir lines match, so only the last_reserved_ip part can tell.
#[test]
fn same_tick_marker_crafting_alone_keeps_the_index_trusted() {
    let data = temp_dir("rhl-store");
    let mine = Owner::new("mine", "eth0");
    our_add(&data, &mine, "10.1.0.2");
    // Nothing changed since: a crafted marker is the recorded one and is trusted.
    let recorded = fs::read_to_string(net(&data).join(META_DIR).join("marker")).unwrap();
    assert_eq!(as_if_same_tick(&data), recorded);
    let mut s = open(&data);
    assert_eq!(s.owned(&mine).unwrap(), [ip("10.1.0.2")]);
    assert_eq!(s.rebuilds(), 0);
}

/// Upstream ADDs in the clock tick of our last change: the network dir's ctime stays as
/// recorded, last_reserved_ip.0 does not.
#[test]
fn same_tick_foreign_add_is_noticed() {
    let data = temp_dir("rhl-store");
    let mine = Owner::new("mine", "eth0");
    our_add(&data, &mine, "10.1.0.2");
    let theirs = Owner::new("theirs", "eth0");
    upstream_reserve(&data, &theirs, "10.1.0.3");
    as_if_same_tick(&data);
    let mut s = open(&data);
    assert_eq!(s.owned(&theirs).unwrap(), [ip("10.1.0.3")]);
    assert_eq!(s.rebuilds(), 1, "the foreign reservation was noticed");
    assert_eq!(s.owned(&mine).unwrap(), [ip("10.1.0.2")]);
    s.close().unwrap();
    // Upstream ADD with a requested address, round-robin not involved; several in a row.
    for (i, addr) in ["10.1.0.200", "10.1.0.7", "10.1.0.100"].iter().enumerate() {
        let other = Owner::new(&format!("req{i}"), "eth0");
        upstream_reserve(&data, &other, addr);
        as_if_same_tick(&data);
        let mut s = open(&data);
        assert_eq!(s.owned(&other).unwrap(), [ip(addr)], "{addr}");
        assert_eq!(s.rebuilds(), 1);
        s.close().unwrap();
    }
}

/// In one tick upstream releases the last reserved address and hands it out again (requested
/// address): last_reserved_ip.0 is unchanged, the reservation it names is not.
#[test]
fn same_tick_release_and_retake_of_the_last_address_is_noticed() {
    let data = temp_dir("rhl-store");
    let mine = Owner::new("mine", "eth0");
    our_add(&data, &mine, "10.1.0.2");
    fs::remove_file(net(&data).join("10.1.0.2")).unwrap();
    let theirs = Owner::new("theirs", "eth0");
    upstream_reserve(&data, &theirs, "10.1.0.2");
    as_if_same_tick(&data);
    let mut s = open(&data);
    assert_eq!(s.owned(&theirs).unwrap(), [ip("10.1.0.2")]);
    assert_eq!(s.rebuilds(), 1);
    assert!(s.owned(&mine).unwrap().is_empty());
    s.close().unwrap();
    // The same with an owner whose reservation file has the same length.
    fs::remove_file(net(&data).join("10.1.0.2")).unwrap();
    let twin = Owner::new("thairs", "eth0");
    upstream_reserve(&data, &twin, "10.1.0.2");
    as_if_same_tick(&data);
    let mut s = open(&data);
    assert_eq!(s.owned(&twin).unwrap(), [ip("10.1.0.2")]);
    assert_eq!(s.rebuilds(), 1);
}

/// Upstream DELs in the tick of our last change: nothing tells (upstream's release writes
/// nothing else), so the index is trusted, and its entry is verified away on use.
#[test]
fn same_tick_foreign_release_is_harmless() {
    let data = temp_dir("rhl-store");
    let gone = Owner::new("gone", "eth0");
    let mine = Owner::new("mine", "eth0");
    our_add(&data, &gone, "10.1.0.2");
    our_add(&data, &mine, "10.1.0.3");
    fs::remove_file(net(&data).join("10.1.0.2")).unwrap();
    as_if_same_tick(&data);
    let mut s = open(&data);
    assert!(s.owned(&gone).unwrap().is_empty(), "verified away");
    assert_eq!(s.rebuilds(), 0, "nothing told, and nothing needed to");
    assert_eq!(s.owned(&mine).unwrap(), [ip("10.1.0.3")]);
    // The address can be taken again, and the index follows.
    let next = Owner::new("next", "eth0");
    assert!(s.reserve(ip("10.1.0.2"), &next).unwrap());
    s.set_owned(&next, &[ip("10.1.0.2")]).unwrap();
    s.close().unwrap();
    let mut s = open(&data);
    assert_eq!(s.owned(&next).unwrap(), [ip("10.1.0.2")]);
    assert!(s.owned(&gone).unwrap().is_empty());
    assert_eq!(s.rebuilds(), 0);
}

#[test]
fn an_unreadable_index_under_a_matching_marker_is_rebuilt_not_obeyed() {
    // Found by fuzz/ (target rhost_local_store): a snapshot without its header failed every
    // call on the store with an I/O error, and a key file without its header hid the owner's
    // addresses (a retried ADD would take a second one), for as long as the marker matched.
    let data = temp_dir("rhl-store");
    let (a, b) = (Owner::new("a", "eth0"), Owner::new("b", "eth0"));
    let mut s = open(&data);
    s.reserve(ip("10.1.0.2"), &a).unwrap();
    s.rebuild(|_| true).unwrap();
    s.reserve(ip("10.1.0.3"), &b).unwrap();
    s.set_owned(&b, &[ip("10.1.0.3")]).unwrap();
    s.close().unwrap();
    // Rewritten in place: neither directory changes, so the marker still matches.
    let index = net(&data).join(META_DIR).join("index");
    fs::write(index.join("b@eth0"), b"").unwrap();
    let mut s = open(&data);
    assert_eq!(s.owned(&b).unwrap(), [ip("10.1.0.3")]);
    assert_eq!(s.rebuilds(), 1);
    s.close().unwrap();
    fs::write(index.join(SNAPSHOT), b"\0\0\0\0").unwrap();
    let mut s = open(&data);
    assert_eq!(s.owned(&a).unwrap(), [ip("10.1.0.2")]);
    assert_eq!(s.rebuilds(), 1);
}

#[test]
fn only_canonically_named_files_are_reservations() {
    // Found by fuzz/ (target rhost_local_store): `FD00:0::2` beside `fd00::2` made the
    // address count twice, and the owner was given it twice.
    let data = temp_dir("rhl-store");
    let o = Owner::new("a", "eth0");
    fs::create_dir_all(net(&data)).unwrap();
    for name in ["fd00::2", "FD00:0::2", "10.1.0.2", "010.1.0.2"] {
        fs::write(net(&data).join(name), o.to_bytes()).unwrap();
    }
    let mut s = open(&data);
    let all: Vec<IpAddr> = s.scan().unwrap().into_iter().map(|e| e.ip).collect();
    assert_eq!(all, [ip("10.1.0.2"), ip("fd00::2")]);
    let mut owned = s.owned(&o).unwrap();
    owned.sort();
    assert_eq!(owned, all);
}

#[test]
fn stale_index_entries_are_verified_away() {
    let data = temp_dir("rhl-store");
    let o = Owner::new("c1", "eth0");
    let mut s = open(&data);
    s.reserve(ip("10.1.0.2"), &o).unwrap();
    // The index claims an address whose file holds someone else.
    fs::write(net(&data).join("10.1.0.9"), b"other\r\neth0").unwrap();
    s.set_owned(&o, &[ip("10.1.0.2"), ip("10.1.0.9")]).unwrap();
    assert_eq!(s.owned(&o).unwrap(), [ip("10.1.0.2")]);
    s.close().unwrap();
}

#[test]
fn leftovers_and_temp_files_of_killed_writers_are_reclaimed() {
    let data = temp_dir("rhl-store");
    open(&data).close().unwrap();
    // Upstream killed between create and write; our temp file of a killed call.
    fs::write(net(&data).join("10.1.0.7"), b"").unwrap();
    fs::write(net(&data).join("fd00::7"), b"\n").unwrap();
    let tmp = net(&data).join(META_DIR).join("tmp").join("123.1");
    fs::create_dir(tmp.parent().unwrap()).unwrap();
    fs::write(&tmp, b"c9\r\neth0").unwrap();
    // Not reservations: left alone.
    fs::create_dir(net(&data).join("10.1.0.8")).unwrap();
    fs::write(net(&data).join("notes.txt"), b"").unwrap();
    let mut s = open(&data);
    assert!(!tmp.exists(), "temp file cleaned when the lock is taken");
    s.ensure_index().unwrap();
    s.close().unwrap();
    assert!(!net(&data).join("10.1.0.7").exists());
    assert!(!net(&data).join("fd00::7").exists());
    assert!(net(&data).join("10.1.0.8").is_dir());
    assert!(net(&data).join("notes.txt").exists());
    assert_eq!(
        NetworkDir::new(&data, "net").slot(ip("10.1.0.8")).unwrap(),
        Slot::NotAFile
    );
}

#[test]
fn old_format_and_unindexable_owners_are_found() {
    let data = temp_dir("rhl-store");
    fs::create_dir(net(&data)).unwrap();
    fs::write(net(&data).join("10.1.0.4"), b"oldid").unwrap();
    let long = Owner::new(&"x".repeat(300), "eth0");
    fs::write(net(&data).join("10.1.0.5"), long.to_bytes()).unwrap();
    let mut s = open(&data);
    let old = Owner::new("oldid", "eth0").old_format();
    assert_eq!(s.owned(&old).unwrap(), [ip("10.1.0.4")]);
    assert!(s.owned(&Owner::new("oldid", "eth0")).unwrap().is_empty());
    assert_eq!(s.owned(&long).unwrap(), [ip("10.1.0.5")]);
    s.close().unwrap();
}

#[test]
fn release_only_touches_the_owners_file() {
    let data = temp_dir("rhl-store");
    let mut s = open(&data);
    let o = Owner::new("c1", "eth0");
    s.reserve(ip("10.1.0.2"), &o).unwrap();
    assert!(!s
        .release(ip("10.1.0.2"), &Owner::new("c1", "eth1"))
        .unwrap());
    assert!(!s.release(ip("10.1.0.3"), &o).unwrap());
    assert!(s.release(ip("10.1.0.2"), &o).unwrap());
    s.close().unwrap();
    assert!(!net(&data).join("10.1.0.2").exists());
}

/// Upstream's DEL reads every file below the network dir, recursively, and deletes those whose
/// trimmed content is `<id>\r\n<ifname>` or `<id>`. Nothing of ours may look like that.
#[test]
fn index_files_can_never_match_upstreams_release() {
    let data = temp_dir("rhl-store");
    let mut s = open(&data);
    for (i, id) in ["a", "b", "10.1.0.9"].iter().enumerate() {
        let o = Owner::new(id, "eth0");
        let addr = ip(&format!("10.1.0.{}", i + 2));
        s.reserve(addr, &o).unwrap();
        s.set_owned(&o, &[addr]).unwrap();
        // An old-format reservation too: its key file is named by the ID alone.
        let old = o.old_format();
        let addr = ip(&format!("10.1.0.{}", i + 20));
        s.reserve(addr, &old).unwrap();
        s.set_owned(&old, &[addr]).unwrap();
    }
    s.close().unwrap();
    let mut stack = vec![net(&data).join(META_DIR)];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
                continue;
            }
            seen += 1;
            let text = fs::read_to_string(e.path()).unwrap();
            let t = text.trim();
            assert!(
                t.is_empty() || t.contains(' '),
                "{} could match upstream's DEL: {t:?}",
                e.path().display()
            );
        }
    }
    assert!(seen >= 7, "marker, clock and key files were checked");
}

#[test]
fn overlay_over_snapshot() {
    let data = temp_dir("rhl-store");
    fs::create_dir(net(&data)).unwrap();
    // Made by upstream: the first call snapshots them.
    fs::write(net(&data).join("10.1.0.2"), b"a\r\neth0").unwrap();
    fs::write(net(&data).join("10.1.0.3"), b"b\r\neth0").unwrap();
    let (a, b, c) = (
        Owner::new("a", "eth0"),
        Owner::new("b", "eth0"),
        Owner::new("c", "eth0"),
    );
    let index = net(&data).join(META_DIR).join("index");
    let names = || {
        let mut v: Vec<String> = fs::read_dir(&index)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let mut s = open(&data);
    assert_eq!(s.owned(&a).unwrap(), [ip("10.1.0.2")]);
    assert_eq!(names(), [".snapshot"]);
    // Released: a file saying "nothing" overrides the snapshot's line.
    s.release(ip("10.1.0.2"), &a).unwrap();
    s.set_owned(&a, &[]).unwrap();
    assert!(s.owned(&a).unwrap().is_empty());
    // Not in the snapshot: no file at all once it holds nothing, so the index does not grow
    // with every attachment that ever came and went.
    s.reserve(ip("10.1.0.4"), &c).unwrap();
    s.set_owned(&c, &[ip("10.1.0.4")]).unwrap();
    assert_eq!(names(), [".snapshot", "a@eth0", "c@eth0"]);
    s.release(ip("10.1.0.4"), &c).unwrap();
    s.set_owned(&c, &[]).unwrap();
    assert_eq!(names(), [".snapshot", "a@eth0"]);
    s.close().unwrap();
    let mut s = open(&data);
    assert_eq!(s.owned(&b).unwrap(), [ip("10.1.0.3")]);
    assert!(s.owned(&a).unwrap().is_empty());
    assert_eq!(s.rebuilds(), 0);
    s.close().unwrap();
    // The next rebuild folds the overlay into a new snapshot.
    fs::write(net(&data).join("10.1.0.9"), b"d\r\neth0").unwrap();
    let mut s = open(&data);
    assert!(s.owned(&a).unwrap().is_empty());
    assert_eq!(s.rebuilds(), 1);
    assert_eq!(names(), [".snapshot"]);
    s.close().unwrap();
}

/// The files rewritten on every call are rewritten in place (same inode, nothing freed, no
/// discard waited for), shorter content included, and a symlink planted there is replaced,
/// never written through.
#[test]
fn per_call_files_are_rewritten_in_place() {
    let data = temp_dir("rhl-store");
    let last = net(&data).join("last_reserved_ip.0");
    let marker = net(&data).join(META_DIR).join("marker");
    let mut s = open(&data);
    s.set_last_reserved(0, ip("10.1.0.200")).unwrap();
    assert!(s
        .reserve(ip("10.1.0.200"), &Owner::new("c1", "eth0"))
        .unwrap());
    s.close().unwrap();
    let inodes = (
        fs::metadata(&last).unwrap().ino(),
        fs::metadata(&marker).unwrap().ino(),
    );
    let mut s = open(&data);
    s.set_last_reserved(0, ip("10.1.0.3")).unwrap();
    assert!(s
        .reserve(ip("10.1.0.3"), &Owner::new("c2", "eth0"))
        .unwrap());
    s.close().unwrap();
    assert_eq!(fs::read_to_string(&last).unwrap(), "10.1.0.3");
    assert_eq!(
        (
            fs::metadata(&last).unwrap().ino(),
            fs::metadata(&marker).unwrap().ino()
        ),
        inodes
    );
    // The marker written in place is trusted by the next call: no rebuild.
    let s = open(&data);
    assert_eq!(s.rebuilds(), 0);
    drop(s);

    let elsewhere = data.join("elsewhere");
    fs::write(&elsewhere, "keep").unwrap();
    fs::remove_file(&last).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &last).unwrap();
    let mut s = open(&data);
    s.set_last_reserved(0, ip("10.1.0.4")).unwrap();
    drop(s);
    assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "keep");
    assert!(fs::symlink_metadata(&last).unwrap().is_file());
    assert_eq!(fs::read_to_string(&last).unwrap(), "10.1.0.4");
}
