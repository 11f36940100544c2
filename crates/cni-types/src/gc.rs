//! GC (spec 1.1.0): the runtime lists the attachments to keep in `cni.dev/valid-attachments`.

use serde::Deserialize;
use serde_json::Value;

use crate::config::decode_config;
use crate::error::{CniError, Result};

/// One `{containerID, ifname}` of GC's valid attachments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Deserialize)]
struct AttachmentList {
    #[serde(rename = "cni.dev/valid-attachments")]
    list: Vec<Attachment>,
}

/// The valid attachments of a GC config (`cni.dev/valid-attachments`, or libcni's older
/// `cni.dev/attachments`). A GC without the list is refused: collecting everything on a
/// malformed call would cut every pod off.
pub fn valid_attachments(config: &Value) -> Result<Vec<Attachment>> {
    let list = config
        .get("cni.dev/valid-attachments")
        .or_else(|| config.get("cni.dev/attachments"))
        .ok_or_else(|| {
            CniError::invalid_config(
                "GC needs \"cni.dev/valid-attachments\": the runtime must list the attachments to keep",
            )
        })?;
    decode_config(serde_json::json!({ "cni.dev/valid-attachments": list }))
        .map(|w: AttachmentList| w.list)
}

/// rcni's own key in a GC config: a Unix time in seconds. State an attachment created at or
/// after it is kept whatever the valid list says: the list is drawn up before GC runs, and an
/// ADD that started since cannot be in it. Plugins that do not know the key ignore it.
pub const KEEP_CREATED_AFTER: &str = "rcni.dev/keep-created-after";

/// The instant of [`KEEP_CREATED_AFTER`], if the GC config has one.
pub fn keep_created_after(config: &Value) -> Result<Option<std::time::SystemTime>> {
    let Some(v) = config.get(KEEP_CREATED_AFTER) else {
        return Ok(None);
    };
    // Checked all the way: a time past what the clock can hold is refused, not a panic.
    v.as_f64()
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
        .and_then(|d| std::time::UNIX_EPOCH.checked_add(d))
        .map(Some)
        .ok_or_else(|| {
            CniError::invalid_config(format!(
                "{KEEP_CREATED_AFTER}: {v} is not a Unix time in seconds"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keep_created_after_refuses_what_the_clock_cannot_hold() {
        // Found when fuzz/'s netconf target took this key on (its seed keep-created-after-huge):
        // 1e19 overflowed SystemTime and 1e300 Duration, a panic of the plugin, not an error.
        for bad in [json!(1e19), json!(1e300), json!(-1), json!("1")] {
            let e = keep_created_after(&json!({ KEEP_CREATED_AFTER: bad })).unwrap_err();
            assert_eq!(e.code, 7, "{bad}: {e}");
        }
        let t = keep_created_after(&json!({ KEEP_CREATED_AFTER: 1767225600.5 }))
            .unwrap()
            .unwrap();
        let since = t.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(since.as_millis(), 1_767_225_600_500);
        assert_eq!(keep_created_after(&json!({})).unwrap(), None);
    }

    #[test]
    fn reads_either_key_and_refuses_a_missing_list() {
        let a = valid_attachments(
            &json!({"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}),
        )
        .unwrap();
        assert_eq!(a[0].container_id, "c1");
        let b = valid_attachments(&json!({"cni.dev/attachments": []})).unwrap();
        assert!(b.is_empty());
        assert_eq!(valid_attachments(&json!({})).unwrap_err().code, 7);
        let e =
            valid_attachments(&json!({"cni.dev/valid-attachments": [{"ifname": 1}]})).unwrap_err();
        assert_eq!(e.code, 7, "{e}");
    }

    #[test]
    fn keep_created_after_is_optional_and_checked() {
        assert_eq!(keep_created_after(&json!({})).unwrap(), None);
        let t = keep_created_after(&json!({KEEP_CREATED_AFTER: 1700000000.5}))
            .unwrap()
            .unwrap();
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(d.as_millis(), 1_700_000_000_500);
        let e = keep_created_after(&json!({KEEP_CREATED_AFTER: "soon"})).unwrap_err();
        assert_eq!(e.code, 7);
    }
}
