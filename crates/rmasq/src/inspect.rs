//! rmasq's config and state seen from outside a CNI call, touching nothing: for `rcni lint`
//! (the config through the parser ADD uses) and `rcni status` (which attachments are
//! masquerade members, read without the lock: every state file is written whole).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cni_types::error::{CniError, Result, IO_FAILURE};
use ipnet::IpNet;

use crate::class::BackendKind;
use crate::state::Record;

/// What rmasq makes of a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqSummary {
    pub state_dir: PathBuf,
    /// None: the node's default, detected once per state dir.
    pub backend: Option<BackendKind>,
    /// None: the subnets of each pod's addresses.
    pub non_masquerade_cidrs: Option<Vec<IpNet>>,
}

/// A plugin config (the whole stdin an ADD would get) through the parser ADD uses: code 7
/// naming the key at fault.
pub fn parse_config(stdin: &[u8]) -> Result<MasqSummary> {
    let (state_dir, opts) =
        crate::plugin::read_config(&cni_plugin::skel::lint_call(crate::INFO.name, stdin)?)?;
    Ok(MasqSummary {
        state_dir,
        backend: opts.backend,
        non_masquerade_cidrs: opts.non_masquerade_cidrs,
    })
}

/// One attachment's masquerade, as its record in the state dir says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub container_id: String,
    pub ifname: String,
    pub backend: BackendKind,
    /// The pod addresses masqueraded, each in its class.
    pub addresses: Vec<IpAddr>,
}

/// Every attachment of `network` with masquerade state in `state_dir` (rmasq's `stateDir`, or
/// rbridge's `ipMasqStateDir`), sorted; empty when there is none. A corrupt record is an error
/// naming the file.
pub fn members(state_dir: &Path, network: &str) -> Result<Vec<Member>> {
    let dir = state_dir.join("attachments").join(network);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(CniError::new(
                IO_FAILURE,
                format!("cannot list {}: {e}", dir.display()),
            ))
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        // Temporary files of a write in progress.
        if entry.file_name().to_string_lossy().contains(".tmp") {
            continue;
        }
        let path = entry.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            // Removed by a DEL since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(CniError::new(
                    IO_FAILURE,
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        };
        let r: Record = serde_json::from_slice(&bytes)
            .map_err(|e| CniError::decode(format!("corrupt state file {}: {e}", path.display())))?;
        out.push(Member {
            container_id: r.container_id,
            ifname: r.ifname,
            backend: r.backend,
            addresses: r.entries.iter().map(|e| e.address).collect(),
        });
    }
    out.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_members() {
        let s = parse_config(
            br#"{"cniVersion":"1.0.0","name":"n","type":"rmasq","backend":"nftables","nonMasqueradeCIDRs":["10.0.0.0/8"]}"#,
        )
        .unwrap();
        assert_eq!(s.state_dir, Path::new(crate::DEFAULT_STATE_DIR));
        assert_eq!(s.backend, Some(BackendKind::Nftables));
        let e = parse_config(br#"{"cniVersion":"1.0.0","name":"n","backend":"pf"}"#).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("backend"), "{}", e.msg);

        let dir = std::env::temp_dir().join(format!("rmasq-inspect-{}", std::process::id()));
        let net = dir.join("attachments/n");
        std::fs::create_dir_all(&net).unwrap();
        std::fs::write(
            net.join("c1:eth0"),
            r#"{"network":"n","containerID":"c1","ifname":"eth0","backend":"iptables","entries":[{"class":"0123456789abcdef","address":"10.1.0.2"}]}"#,
        )
        .unwrap();
        std::fs::write(net.join(".rmasq.tmp"), "{").unwrap();
        let got = members(&dir, "n").unwrap();
        assert!(members(&dir, "other").unwrap().is_empty());
        std::fs::write(net.join("c2:eth0"), "{").unwrap();
        let corrupt = members(&dir, "n").unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            got,
            [Member {
                container_id: "c1".into(),
                ifname: "eth0".into(),
                backend: BackendKind::Iptables,
                addresses: vec!["10.1.0.2".parse().unwrap()],
            }]
        );
        assert!(corrupt.msg.contains("c2:eth0"), "{}", corrupt.msg);
    }
}
