//! CNI_ARGS: what parses is KEY=VALUE pairs that write back to what parses the same; the
//! lookups plugins make never fail on what parsed.
#![no_main]

use cni_types::CniArgs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(args) = CniArgs::parse(raw) else {
        return;
    };
    let mut text = String::new();
    for (k, v) in args.pairs() {
        assert!(!k.is_empty() && !k.contains(['=', ';']), "{k:?}");
        assert!(!v.contains(['=', ';']), "{v:?}");
        assert!(args.get(k).is_some());
        text.push_str(&format!("{k}={v};"));
    }
    assert_eq!(CniArgs::parse(&text).unwrap(), args);
    assert_eq!(args.is_empty(), args.pairs().next().is_none());
    let _ = args.ignore_unknown();
    let _ = args.check_known(&["IP", "MAC"]);
    if args.ignore_unknown() {
        assert!(args.check_known(&[]).is_ok());
    }
});
