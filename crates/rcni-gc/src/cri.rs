//! The container runtime's truth: CRI `ListPodSandbox` (runtime.v1) over its unix socket, as
//! kubelet calls it. containerd and CRI-O both serve it; the sandbox ID is the CNI container ID
//! they give the plugins.
//!
//! Only the messages this call needs are declared, with the CRI's field numbers (prost ignores
//! the fields left out), so the agent needs neither protoc nor the generated CRI at build time.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hyper_util::rt::TokioIo;
use tonic::transport::{Endpoint, Uri};

/// containerd's socket; CRI-O's is `unix:///var/run/crio/crio.sock`.
pub const DEFAULT_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

/// The endpoint that stands for whichever runtime the node has (see [`resolve`]).
pub const AUTO: &str = "auto";

/// The runtimes' sockets `auto` looks for, in crictl's order.
const KNOWN: [&str; 2] = [DEFAULT_ENDPOINT, "unix:///var/run/crio/crio.sock"];

/// `endpoint`, or for `auto` the first of containerd's and CRI-O's sockets that exists
/// (containerd's if neither does, so the error names it).
pub fn resolve(endpoint: &str) -> String {
    resolve_among(endpoint, &KNOWN)
}

fn resolve_among(endpoint: &str, known: &[&str]) -> String {
    if endpoint != AUTO {
        return endpoint.to_string();
    }
    let present = |e: &&&str| socket_path(e).is_ok_and(|p| p.exists());
    known.iter().find(present).unwrap_or(&known[0]).to_string()
}

const LIST_POD_SANDBOX: &str = "/runtime.v1.RuntimeService/ListPodSandbox";

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodSandboxRequest {
    /// Absent: every sandbox, in any state.
    #[prost(message, optional, tag = "1")]
    pub filter: Option<PodSandboxFilter>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxFilter {
    #[prost(string, tag = "1")]
    pub id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodSandboxResponse {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<PodSandbox>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandbox {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    /// 0 SANDBOX_READY, 1 SANDBOX_NOTREADY.
    #[prost(int32, tag = "3")]
    pub state: i32,
    /// Nanoseconds since the epoch.
    #[prost(int64, tag = "4")]
    pub created_at: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

/// The socket of a CRI endpoint: `unix:///path` or a plain absolute path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if !path.starts_with('/') {
        bail!(
            "CRI endpoint {endpoint:?}: expected unix:///path/to/socket (containerd: {DEFAULT_ENDPOINT}, CRI-O: unix:///var/run/crio/crio.sock)"
        );
    }
    Ok(PathBuf::from(path))
}

/// Every pod sandbox the runtime at `endpoint` (or `auto`) knows, ready or not.
pub fn list_sandboxes(endpoint: &str, timeout: Duration) -> Result<Vec<PodSandbox>> {
    let endpoint = &resolve(endpoint);
    let socket = socket_path(endpoint)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let call = async {
        // tonic wants a URI; the connector ignores it and dials the socket.
        let channel = Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| anyhow::anyhow!("{}", source_chain(&e)))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await?;
        let reply: tonic::Response<ListPodSandboxResponse> = grpc
            .unary(
                tonic::Request::new(ListPodSandboxRequest { filter: None }),
                http::uri::PathAndQuery::from_static(LIST_POD_SANDBOX),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
        Ok::<_, anyhow::Error>(reply.into_inner().items)
    };
    let items = rt
        .block_on(async { tokio::time::timeout(timeout, call).await })
        .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))
        .and_then(|r| r)
        .with_context(|| {
            format!(
                "CRI ListPodSandbox at {endpoint} (is the runtime running there? --cri-endpoint names its socket: containerd {DEFAULT_ENDPOINT}, CRI-O unix:///var/run/crio/crio.sock)"
            )
        })?;
    Ok(items)
}

/// An error with its causes, which tonic's transport errors hide behind "transport error".
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path(DEFAULT_ENDPOINT).unwrap(),
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert_eq!(
            socket_path("/var/run/crio/crio.sock").unwrap(),
            PathBuf::from("/var/run/crio/crio.sock")
        );
        let e = socket_path("tcp://10.0.0.1:1234").unwrap_err().to_string();
        assert!(e.contains("unix:///"), "{e}");
    }

    /// `auto` is the first runtime socket that exists, containerd's when none does; any other
    /// endpoint is itself.
    #[test]
    fn auto_finds_the_runtime_the_node_has() {
        let dir = cni_testkit::temp_dir("cri-auto");
        let containerd = format!("unix://{}/containerd.sock", dir.display());
        let crio = format!("unix://{}/crio.sock", dir.display());
        let known = [containerd.as_str(), crio.as_str()];
        assert_eq!(resolve_among(AUTO, &known), containerd);
        std::fs::write(dir.join("crio.sock"), "").unwrap();
        assert_eq!(resolve_among(AUTO, &known), crio);
        std::fs::write(dir.join("containerd.sock"), "").unwrap();
        assert_eq!(resolve_among(AUTO, &known), containerd);
        assert_eq!(resolve_among("/x.sock", &known), "/x.sock");
    }

    /// The wire bytes of a CRI answer (field numbers of runtime.v1) decode into ours, unknown
    /// fields (labels, annotations, runtime handler) skipped.
    #[test]
    fn decodes_the_cri_wire_format() {
        // PodSandbox{id="abc", metadata{name="p", uid="u", namespace="default", attempt=1},
        // state=NOTREADY, created_at=5, labels{"k"="v"}, runtime_handler="runc"}
        let mut sandbox = vec![0x0a, 3, b'a', b'b', b'c'];
        let meta = [
            0x0a, 1, b'p', 0x12, 1, b'u', 0x1a, 7, b'd', b'e', b'f', b'a', b'u', b'l', b't', 0x20,
            1,
        ];
        sandbox.extend([0x12, meta.len() as u8]);
        sandbox.extend(meta);
        sandbox.extend([0x18, 1, 0x20, 5]);
        sandbox.extend([0x2a, 6, 0x0a, 1, b'k', 0x12, 1, b'v']);
        sandbox.extend([0x3a, 4, b'r', b'u', b'n', b'c']);
        let mut reply = vec![0x0a, sandbox.len() as u8];
        reply.extend(&sandbox);
        let r = ListPodSandboxResponse::decode(reply.as_slice()).unwrap();
        assert_eq!(r.items.len(), 1);
        let s = &r.items[0];
        assert_eq!((s.id.as_str(), s.state, s.created_at), ("abc", 1, 5));
        let m = s.metadata.as_ref().unwrap();
        assert_eq!(
            (m.name.as_str(), m.namespace.as_str(), m.attempt),
            ("p", "default", 1)
        );
        // An unfiltered request is empty on the wire.
        assert!(ListPodSandboxRequest { filter: None }
            .encode_to_vec()
            .is_empty());
    }
}
