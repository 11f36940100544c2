use std::fs;

use super::*;

#[test]
fn find_entry_stops_at_the_first_match_among_many() {
    let dir = std::env::temp_dir().join(format!("rmasq-dirent-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    for i in 0..500 {
        fs::write(dir.join(format!("entry-{i:03}")), b"").unwrap();
    }
    let mut seen = 0;
    let found = find_entry(&dir, |name, t| {
        seen += 1;
        assert_eq!(t, libc::DT_REG);
        name == "entry-250"
    })
    .unwrap();
    assert_eq!(found.as_deref(), Some(OsStr::new("entry-250")));
    assert!(seen <= 501);
    assert_eq!(find_entry(&dir, |_, _| false).unwrap(), None);
    assert_eq!(
        find_entry(&dir.join("missing"), |_, _| true)
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    fs::remove_dir_all(dir).unwrap();
}
