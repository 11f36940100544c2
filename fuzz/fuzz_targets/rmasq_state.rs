//! rmasq's state files: the input as one record or class file, then as a state dir (sections
//! `--- <path>`; text before the first is the record of `net`/`c1`/`eth0`) read as DEL, CHECK
//! and GC read it. Checks are in `rmasq::fuzzing`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

/// `default-backend`, `attachments/<net>/<file>`, `classes/<file>`, `verified/<file>`,
/// `members/<class>/<address>/<file>`.
fn is_state_file(p: &Path) -> bool {
    let parts: Vec<_> = p.iter().map(|c| c.to_string_lossy()).collect();
    let parts: Vec<&str> = parts.iter().map(|c| c.as_ref()).collect();
    matches!(
        parts.as_slice(),
        ["default-backend"]
            | ["attachments", _, _]
            | ["classes", _]
            | ["verified", _]
            | ["members", _, _, _]
    )
}

fuzz_target!(|data: &[u8]| {
    rmasq::fuzzing::state_file(data);
    let dir = rcni_fuzz::scratch("rmasq-state");
    // Files only where the state has files (a directory in their place is not a torn write).
    let files: Vec<_> = rcni_fuzz::files(data, "attachments/net/c1:eth0")
        .into_iter()
        .filter(|(p, _)| is_state_file(p))
        .collect();
    rcni_fuzz::write_files(&dir, &files);
    let _ = rmasq::fuzzing::read_state(&dir, "net", "c1", "eth0");
});
