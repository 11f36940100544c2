//! A node's garbage collection: which attachments the container runtime still knows (CRI
//! `ListPodSandbox`), GC (spec 1.1.0) through every conflist of the conf dir with those as
//! `cni.dev/valid-attachments`, and libcni's result cache. Used by the node agent's periodic GC
//! and by `rcni gc`.
//!
//! - `cri`: the runtime's sandboxes over its unix socket.
//! - `conf`: the conf dir's networks, as a runtime loads them, and where their plugins keep state.
//! - `state`: what each attachment holds (addresses, masquerade, cache entry, host veths).
//! - `cache`: libcni's result cache.
//! - `exec`: running a plugin as a runtime does.
//! - `collect`: the collection itself ([`collect`]); `report`: what it did ([`Report`]).
//!
//! Runs in the node's network namespace (where the runtime runs the plugins).

mod cache;
mod collect;
mod conf;
pub mod cri;
mod exec;
#[cfg(feature = "fake-cri")]
pub mod fake_cri;
#[doc(hidden)]
pub mod fuzzing;
mod report;
mod state;

pub use cache::DEFAULT_CACHE_DIR;
pub use cni_types::Attachment;
pub use collect::{collect, Listing, Options};
pub use conf::conf_files;
pub use report::{Counts, Held, NetworkReport, Reclaim, Report};

/// The `cni.dev/valid-attachments` array of a file, as `rcni gc --valid-attachments` reads it.
pub fn parse_valid_attachments(bytes: &[u8]) -> anyhow::Result<Vec<Attachment>> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("not JSON: {e}"))?;
    if !v.is_array() {
        anyhow::bail!(
            "expected a JSON array of {{\"containerID\": \"...\", \"ifname\": \"eth0\"}}, as in cni.dev/valid-attachments"
        );
    }
    let list = cni_types::gc::valid_attachments(&serde_json::json!({
        "cni.dev/valid-attachments": v
    }))
    .map_err(|e| anyhow::anyhow!("{}", e.msg))?;
    for a in &list {
        cni_types::validate::container_id(&a.container_id)
            .and_then(|()| cni_types::validate::ifname(&a.ifname))
            .map_err(|e| anyhow::anyhow!("{}", e.msg))?;
    }
    Ok(list)
}

/// A duration as the flags take it: `30s`, `500ms`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected e.g. 30s, 500ms, 2m"))?;
    let secs = |k: u64| std::time::Duration::from_secs(n * k);
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" => Ok(secs(1)),
        "m" => Ok(secs(60)),
        "h" => Ok(secs(3600)),
        _ => Err(format!("{s:?}: the unit must be ms, s, m or h")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err() && parse_duration("3d").is_err());
    }

    #[test]
    fn valid_attachment_files() {
        let l = parse_valid_attachments(br#"[{"containerID": "c1", "ifname": "eth0"}]"#).unwrap();
        assert_eq!(l[0].container_id, "c1");
        assert!(parse_valid_attachments(b"[]").unwrap().is_empty());
        for bad in [
            &br#"{"containerID": "c1"}"#[..],
            br#"[{"containerID": "c1"}]"#,
            br#"[{"containerID": "c/1", "ifname": "eth0"}]"#,
            br#"[{"containerID": "c1", "ifname": "a very long interface"}]"#,
            b"nope",
        ] {
            assert!(
                parse_valid_attachments(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
