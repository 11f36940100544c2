//! rmasq's ADD input: the config, prevResult's addresses and the masquerade classes they fall
//! in (checked in `rmasq::fuzzing::add_input`).
#![no_main]

use cni_types::Verb;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(call) = rcni_fuzz::call(Verb::Add, data) else {
        return;
    };
    let add = rmasq::fuzzing::add_input(&call);
    // `rcni lint` accepts every config ADD gets past the config with.
    if add.is_ok() {
        rmasq::parse_config(&call.stdin).expect("lint accepts what ADD accepts");
    }
});
