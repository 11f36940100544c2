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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
