//! rhost-local's store as the plugin finds it on disk: the input is the network dir (sections
//! `--- <path>` relative to it; text before the first is the file `10.1.0.2`), holding any
//! reservation files, `last_reserved_ip.<n>`, index and marker. Then the verbs run on it with a
//! small fixed config, and what they answer must agree with the reservation files, the truth:
//! the index never names an address its owner does not hold, ADD takes only free addresses and
//! fails only when none is left, DEL and GC release exactly what they should. Sections under
//! `after/` are written over the store once its index is trusted (a corrupt index under a
//! matching marker), which may hide addresses but never invent them. Only files are made, where
//! the store has files: a directory in their place is not what a torn write leaves.
#![no_main]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cni_plugin::log::Logger;
use cni_types::error::ADDRESS_POOL_EXHAUSTED;
use cni_types::{Attachment, NetConf};
use libfuzzer_sys::fuzz_target;
use rhost_local::fuzzing::{add, check, del, gc, Config, Owner, Store};
use serde_json::json;

const NETWORK: &str = "net";

fn config(data_dir: &Path) -> Config {
    let raw = json!({
        "cniVersion": "1.0.0", "name": NETWORK, "type": "rhost-local",
        "ipam": {
            "type": "rhost-local", "dataDir": data_dir,
            "ranges": [[{"subnet": "10.1.0.0/29"}], [{"subnet": "fd00::/125"}]]
        }
    });
    let conf = NetConf::from_slice(raw.to_string().as_bytes()).unwrap();
    Config::load(&raw, &conf).unwrap()
}

/// Every reservation (address, holder), read from the files.
fn truth(store: &Store) -> BTreeSet<(IpAddr, Owner)> {
    store
        .scan()
        .unwrap()
        .into_iter()
        .map(|e| (e.ip, e.owner))
        .collect()
}

fn held(truth: &BTreeSet<(IpAddr, Owner)>, owner: &Owner) -> Vec<IpAddr> {
    truth
        .iter()
        .filter(|(_, o)| o == owner)
        .map(|(ip, _)| *ip)
        .collect()
}

/// A path of a file the store has: in the network dir, or in our index and tmp dirs.
fn is_store_file(p: &Path) -> bool {
    let parts: Vec<_> = p.iter().collect();
    match parts.as_slice() {
        [_] => true,
        [meta, _] => *meta == ".rhost-local",
        [meta, dir, _] => *meta == ".rhost-local" && (*dir == "index" || *dir == "tmp"),
        _ => false,
    }
}

/// What the index says `owner` holds, in address order.
fn owned(store: &mut Store, owner: &Owner) -> Vec<IpAddr> {
    let mut ips = store.owned(owner).unwrap();
    ips.sort();
    ips
}

fn open(data_dir: &Path) -> Store {
    Store::open(data_dir, NETWORK, false, &Logger::default())
        .unwrap()
        .expect("the store exists")
}

fuzz_target!(|data: &[u8]| {
    let data_dir = rcni_fuzz::scratch("rhost-local-store");
    let net = data_dir.join(NETWORK);
    // Files only where the store has files (a directory in their place is not a torn write).
    let files: Vec<_> = rcni_fuzz::files(data, "10.1.0.2")
        .into_iter()
        .filter(|(p, _)| is_store_file(p.strip_prefix("after").unwrap_or(p)))
        .collect();
    let (after, before): (Vec<(PathBuf, &[u8])>, Vec<_>) =
        files.into_iter().partition(|(p, _)| p.starts_with("after"));
    std::fs::create_dir_all(&net).unwrap();
    rcni_fuzz::write_files(&net, &before);
    let conf = config(&data_dir);

    let Ok(Some(mut store)) = Store::open(&data_dir, NETWORK, false, &Logger::default()) else {
        // Only a store whose lock or index dirs cannot be made (files in their place).
        return;
    };
    let before = truth(&store);
    let owners: BTreeSet<Owner> = before.iter().map(|(_, o)| o.clone()).collect();
    for o in &owners {
        assert_eq!(owned(&mut store, o), held(&before, o), "{o}");
    }
    assert_eq!(truth(&store), before, "reading changed the reservations");

    // ADD of a new attachment: its addresses were free (or already its own).
    let me = Owner::new("fuzz", "eth0");
    match add(&mut store, &conf, &me, &[None, None]) {
        Ok(got) => {
            assert_eq!(got.len(), 2);
            for (set, ip) in &got {
                assert!(conf.range_sets[*set].contains(*ip));
                for (_, o) in before.iter().filter(|(x, _)| x == ip) {
                    assert!(o == &me || o == &me.old_format(), "{ip} of {o} taken again");
                }
            }
            let now = truth(&store);
            for (_, ip) in &got {
                assert!(now.contains(&(*ip, me.clone())) || now.contains(&(*ip, me.old_format())));
            }
            check(&mut store, &conf, &me, None).expect("CHECK after ADD");
        }
        Err(e) => {
            assert_eq!(e.code, ADDRESS_POOL_EXHAUSTED, "{e}");
            // Nothing written for a refused ADD.
            assert!(held(&truth(&store), &me).len() <= held(&before, &me).len());
        }
    }
    // DEL releases the attachment's addresses, nobody else's.
    let mut released = del(&mut store, &me).unwrap();
    released.sort();
    let now = truth(&store);
    assert!(held(&now, &me).is_empty());
    for (ip, o) in &before {
        if o != &me && o != &me.old_format() {
            assert!(now.contains(&(*ip, o.clone())), "DEL took {ip} of {o}");
        }
    }

    // GC keeps the first attachment (and old-format reservations of its container).
    let keep = owners
        .iter()
        .find_map(|o| o.ifname.as_ref().map(|i| (o.id.clone(), i.clone())));
    let valid: Vec<Attachment> = keep
        .iter()
        .map(|(id, ifname)| Attachment {
            container_id: id.clone(),
            ifname: ifname.clone(),
        })
        .collect();
    gc(&mut store, &valid, None).unwrap();
    let kept = truth(&store);
    for (ip, o) in &kept {
        let ok = keep
            .as_ref()
            .is_some_and(|(id, i)| &o.id == id && o.ifname.as_ref().is_none_or(|x| x == i));
        assert!(ok, "GC kept {ip} of {o}");
        assert!(now.contains(&(*ip, o.clone())));
    }
    store.close().unwrap();

    // The index is trusted now; answers must still match the files.
    let mut store = open(&data_dir);
    for o in kept.iter().map(|(_, o)| o) {
        assert_eq!(owned(&mut store, o), held(&kept, o), "{o} after reopening");
    }
    store.close().unwrap();

    if after.is_empty() {
        return;
    }
    let after: Vec<(PathBuf, &[u8])> = after
        .into_iter()
        .filter_map(|(p, b)| Some((p.strip_prefix("after").ok()?.to_path_buf(), b)))
        .collect();
    rcni_fuzz::write_files(&net, &after);
    let mut store = open(&data_dir);
    let now = truth(&store);
    for o in now.iter().map(|(_, o)| o.clone()).collect::<BTreeSet<_>>() {
        for ip in store.owned(&o).unwrap() {
            assert!(now.contains(&(ip, o.clone())), "the index gave {ip} to {o}");
        }
    }
    let _ = store.close();
});
