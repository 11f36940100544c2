//! The spec versions tests loop over. Every version from 0.3.1 on is spoken by our plugins and
//! chained through `prevResult`; Debian's upstream plugins (1.1.x) stop at 1.0.0.

/// The versions our plugins are tested in.
pub const VERSIONS: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The versions every upstream plugin on the machine speaks too.
pub const UPSTREAM_VERSIONS: [&str; 3] = ["0.3.1", "0.4.0", "1.0.0"];

/// The newest version upstream speaks that is not newer than `v`: what to give a conflist that
/// mixes our plugins with upstream's when ours are tested in `v`.
pub fn upstream_version(v: &str) -> &str {
    if v == "1.1.0" {
        "1.0.0"
    } else {
        v
    }
}
