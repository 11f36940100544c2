//! rhost-local's store files read alone: the input as a reservation file (`<ip>`), an index key
//! file (`index/<id>@<ifname>`) and a snapshot (`index/.snapshot`). What parses writes back to
//! what parses the same; a snapshot we render finds every key by its binary search and none
//! else, however big; any snapshot bytes are looked up without a panic.
#![no_main]

use std::collections::BTreeMap;
use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use rhost_local::fuzzing::{key_file, parse_key_file, snapshot_lookup, snapshot_render, Owner};

fuzz_target!(|data: &[u8]| {
    if let Some(owner) = Owner::parse(data) {
        assert_eq!(Owner::parse(&owner.to_bytes()).as_ref(), Some(&owner));
        if let Some(name) = owner.key_name() {
            assert!(!name.is_empty() && name.len() <= 255, "{name:?}");
            assert!(
                !name.contains(['/', '\0']) && !name.starts_with('.'),
                "{name:?}"
            );
            assert_eq!(name.contains('@'), owner.ifname.is_some(), "{name:?}");
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Some(ips) = parse_key_file(&text) {
        assert_eq!(parse_key_file(&key_file(&ips)), Some(ips));
    }

    let dir = rcni_fuzz::scratch_once("rhost-local-files");
    let path = dir.join("snapshot");
    std::fs::write(&path, data).unwrap();
    for line in text.lines().take(4) {
        let key = line.split(' ').next().unwrap_or("");
        let _ = snapshot_lookup(&path, key);
    }

    // Entries from the input's lines ("<key> <ip>..."), padded with derived keys so the file
    // passes the size below which lookups scan instead of searching.
    let mut entries: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        let key = words.next().unwrap_or("");
        if key.is_empty() || key.contains(char::is_whitespace) || key.contains(['/', '\0']) {
            continue;
        }
        let ips: Vec<IpAddr> = words.filter_map(|w| w.parse().ok()).collect();
        entries.insert(key.to_string(), ips);
    }
    let seeds: Vec<String> = entries.keys().cloned().collect();
    let (mut n, mut size) = (0u32, text.len());
    while !seeds.is_empty() && size < 6_000 && n < 1000 {
        let key = format!("{}{n}", seeds[n as usize % seeds.len()]);
        size += key.len() + 10;
        entries
            .entry(key)
            .or_insert_with(|| vec![IpAddr::from([10, 0, (n >> 8) as u8, n as u8])]);
        n += 1;
    }
    let rendered = snapshot_render(entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    std::fs::write(&path, &rendered).unwrap();
    for (key, ips) in entries.iter().step_by(17).chain(entries.iter().take(32)) {
        let found = snapshot_lookup(&path, key).unwrap();
        assert_eq!(found.as_ref(), Some(ips), "{key:?}");
    }
    for absent in seeds
        .iter()
        .take(32)
        .map(|k| format!("{k}~"))
        .chain(["".to_string()])
    {
        if !entries.contains_key(&absent) {
            assert_eq!(snapshot_lookup(&path, &absent).unwrap(), None, "{absent:?}");
        }
    }
});
