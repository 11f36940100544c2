use super::*;

/// A fresh store dir with its spare dir inside, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("cni-spare-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    fn spares(&self) -> Spares {
        Spares::new(self.0.join("spare"))
    }

    fn count_spares(&self) -> usize {
        fs::read_dir(self.0.join("spare")).map_or(0, |d| d.count())
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

#[test]
fn write_replaces_whole_and_a_removed_file_is_written_again_without_a_new_inode() {
    let d = Dir::new("reuse");
    let s = d.spares();
    let a = d.0.join("a");
    s.write(&a, b"a longer first content").unwrap();
    s.write(&a, b"second").unwrap();
    assert_eq!(fs::read(&a).unwrap(), b"second");
    let first = ino(&a);
    assert!(s.remove_file(&a).unwrap());
    assert!(!a.exists());
    assert_eq!(d.count_spares(), 1);
    let spare = fs::read_dir(s.dir())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(fs::read(spare).unwrap(), b"      ", "blanked, same length");
    // The next write takes the removed file's inode, cut to its new length.
    let b = d.0.join("b");
    s.write(&b, b"x").unwrap();
    assert_eq!(ino(&b), first);
    assert_eq!(fs::read(&b).unwrap(), b"x");
    assert_eq!(d.count_spares(), 0);
    assert!(!s.remove_file(&a).unwrap(), "nothing to remove");
}

#[test]
fn write_new_never_replaces() {
    let d = Dir::new("new");
    let s = d.spares();
    let a = d.0.join("a");
    assert!(s.write_new(&a, b"mine").unwrap());
    assert!(!s.write_new(&a, b"theirs").unwrap());
    assert_eq!(fs::read(&a).unwrap(), b"mine");
    // The refused content stays behind as a spare, used by the next write.
    assert_eq!(d.count_spares(), 1);
    assert!(s.write_new(&d.0.join("b"), b"next").unwrap());
    assert_eq!(d.count_spares(), 0);
}

#[test]
fn a_spare_linked_elsewhere_is_never_written_into() {
    let d = Dir::new("linked");
    let s = d.spares();
    let live = d.0.join("live");
    fs::write(&live, b"live reservation").unwrap();
    // As a writer killed between link(2) and the unlink of the spare's name leaves it.
    fs::create_dir_all(s.dir()).unwrap();
    fs::hard_link(&live, s.dir().join("leftover")).unwrap();
    s.write(&d.0.join("other"), b"other").unwrap();
    assert_eq!(fs::read(&live).unwrap(), b"live reservation");
    assert_eq!(fs::read(d.0.join("other")).unwrap(), b"other");
    assert_eq!(d.count_spares(), 0, "the shared name is dropped");
}

#[test]
fn directories_are_kept_and_reused_only_when_empty() {
    let d = Dir::new("dirs");
    let s = d.spares();
    let m = d.0.join("m");
    assert!(s.create_dir(&m).unwrap());
    assert!(!s.create_dir(&m).unwrap(), "exists");
    s.write(&m.join("owner"), b"").unwrap();
    assert!(!s.remove_dir(&m).unwrap(), "not empty");
    assert!(m.join("owner").exists());
    let first = ino(&m);
    assert!(s.remove_file(&m.join("owner")).unwrap());
    assert!(s.remove_dir(&m).unwrap());
    assert!(!m.exists());
    assert!(!s.remove_dir(&m).unwrap(), "missing");
    // A file write does not take the spare directory, a directory creation does.
    s.write(&d.0.join("f"), b"f").unwrap();
    assert!(d.0.join("f").is_file());
    let n = d.0.join("n");
    assert!(s.create_dir(&n).unwrap());
    assert_eq!(ino(&n), first);
    assert!(n.read_dir().unwrap().next().is_none());
}

#[test]
fn spares_are_reused_and_never_more_than_the_slots() {
    let d = Dir::new("peak");
    let s = d.spares();
    for round in 0..3 {
        let names: Vec<PathBuf> = (0..20).map(|i| d.0.join(format!("f{i}"))).collect();
        for p in &names {
            assert!(s.write_new(p, format!("{round}").as_bytes()).unwrap());
        }
        for p in &names {
            assert!(s.remove_file(p).unwrap());
            assert!(!p.exists());
        }
        assert_eq!(
            d.count_spares(),
            20,
            "round {round}: each write took a spare back"
        );
    }
    // Far more than the slots: the rest is deleted, and nothing else is left.
    let names: Vec<PathBuf> = (0..300).map(|i| d.0.join(format!("g{i}"))).collect();
    for p in &names {
        assert!(s.write_new(p, b"g").unwrap());
    }
    for p in &names {
        assert!(s.remove_file(p).unwrap());
    }
    let kept = d.count_spares();
    assert!(
        kept <= SLOTS as usize && kept >= SLOTS as usize / 2,
        "{kept} spares"
    );
    assert_eq!(
        fs::read_dir(&d.0).unwrap().count(),
        1,
        "only the spare dir is left"
    );
}

#[test]
fn only_regular_files_become_spares() {
    let d = Dir::new("kinds");
    let s = d.spares();
    let sub = d.0.join("sub");
    fs::create_dir(&sub).unwrap();
    fs::write(sub.join("inside"), b"x").unwrap();
    assert!(s.remove_file(&sub).is_err(), "a directory is not a file");
    assert!(sub.join("inside").exists());
    std::os::unix::fs::symlink(&sub, d.0.join("link")).unwrap();
    assert!(s.remove_file(&d.0.join("link")).unwrap());
    assert!(fs::symlink_metadata(d.0.join("link")).is_err());
    assert!(
        sub.join("inside").exists(),
        "the link's target is left alone"
    );
    assert_eq!(d.count_spares(), 0);
}

#[test]
fn other_entries_in_the_spare_dir_are_dropped_not_used() {
    let d = Dir::new("junk");
    let s = d.spares();
    fs::create_dir_all(s.dir()).unwrap();
    std::os::unix::fs::symlink(d.0.join("target"), s.dir().join("link")).unwrap();
    s.write(&d.0.join("a"), b"a").unwrap();
    assert!(!d.0.join("target").exists(), "written through a symlink");
    assert!(fs::symlink_metadata(s.dir().join("link")).is_err());
    assert_eq!(fs::read(d.0.join("a")).unwrap(), b"a");
}

#[test]
fn find_entry_stops_at_the_first_match_among_many() {
    let d = Dir::new("find");
    for i in 0..500 {
        fs::write(d.0.join(format!("entry-{i:03}")), b"").unwrap();
    }
    let mut seen = 0;
    let found = find_entry(&d.0, |name, t| {
        seen += 1;
        assert_eq!(t, libc::DT_REG);
        name == "entry-250"
    })
    .unwrap();
    assert_eq!(found.as_deref(), Some(OsStr::new("entry-250")));
    assert!(seen <= 501);
    assert_eq!(find_entry(&d.0, |_, _| false).unwrap(), None);
    assert_eq!(
        find_entry(&d.0.join("missing"), |_, _| true)
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}
