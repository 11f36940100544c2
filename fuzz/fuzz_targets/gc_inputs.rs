//! What GC reads from outside: a `--valid-attachments` file, a CRI `ListPodSandbox` answer, and
//! libcni's result cache (sections `--- <path>` under the cache dir; text before the first is
//! `results/net-c1-eth0`), each read from the same input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rcni_gc::parse_valid_attachments(data);
    let _ = rcni_gc::fuzzing::cri_answer(data);
    let dir = rcni_fuzz::scratch("gc-cache");
    let files = rcni_fuzz::files(data, "results/net-c1-eth0");
    rcni_fuzz::write_files(&dir, &files);
    rcni_gc::fuzzing::cache(&dir, "net");
});
