//! rmasq's state files: the input as one record or class file, then as a state dir (sections
//! `--- <path>`; text before the first is the record of `net`/`c1`/`eth0`) read as DEL, CHECK
//! and GC read it. Checks are in `rmasq::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rmasq::fuzzing::state_file(data);
    let dir = rcni_fuzz::scratch("rmasq-state");
    rcni_fuzz::write_files(&dir, &rcni_fuzz::files(data, "attachments/net/c1:eth0"));
    let _ = rmasq::fuzzing::read_state(&dir, "net", "c1", "eth0");
});
