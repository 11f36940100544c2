use super::*;

#[test]
fn in_path_finds_sh() {
    assert!(in_path("sh"));
    assert!(in_path("/bin/sh"));
    assert!(!in_path("rmasq-no-such-program"));
}
