//! Entry points of the fuzz targets (fuzz/): what the runtime and libcni hand GC, read as GC
//! reads it. Not an API.

use std::path::Path;

use prost::Message;

/// A CRI `ListPodSandbox` answer's bytes as GC reads them: the sandbox IDs it keeps.
pub fn cri_answer(data: &[u8]) -> Vec<String> {
    crate::cri::ListPodSandboxResponse::decode(data)
        .map(|r| r.items.into_iter().map(|s| s.id).collect())
        .unwrap_or_default()
}

/// libcni's cache at `dir` as GC reads it for network `net`: each entry's CNI_ARGS and host
/// interfaces, which a reclaiming DEL is given.
pub fn cache(dir: &Path, net: &str) {
    for e in crate::cache::entries(dir, net).unwrap_or_default() {
        // One `K=V` per pair, `;`-joined: never empty for a non-empty list.
        assert_eq!(e.cni_args_env().is_empty(), e.cni_args.is_empty());
        let _ = e.host_interfaces();
    }
}
