//! A blocking CRI client (runtime.v1) over containerd's unix socket, as kubelet calls it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerStatus, ContainerStatusRequest, CreateContainerRequest, ImageSpec,
    ImageStatusRequest, LinuxPodSandboxConfig, ListPodSandboxRequest, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, PodSandboxStatusResponse, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StatusRequest,
    StopContainerRequest, StopPodSandboxRequest, VersionRequest,
};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint, Uri};

/// containerd's CRI namespace.
pub(super) const K8S_NS: &str = "k8s.io";
/// What kubelet allows a CRI call; a hang fails the test instead of the suite.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A blocking CRI client (runtime.v1) over containerd's unix socket. Parallel calls go through
/// [`Cri::block_on`] with futures over clones of [`Cri::runtime`], multiplexed on one channel.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Cri {
    /// Connects to the CRI socket at `socket` (lazily: the first call reports a refused connection).
    pub fn connect(socket: &Path) -> Cri {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cannot build a tokio runtime");
        let socket = socket.to_path_buf();
        // The URI is required by tonic but unused: the connector always dials the socket.
        let channel = rt.block_on(async {
            Endpoint::from_static("http://localhost")
                .connect_timeout(Duration::from_secs(5))
                .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(socket).await?,
                        ))
                    }
                }))
        });
        Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        }
    }

    /// A clone of the RuntimeService client, for futures run together with [`Cri::block_on`].
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    /// Runs `f` to completion on this client's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// `Version`: the runtime's name and version.
    pub fn version(&self) -> Result<String, String> {
        let mut c = self.runtime();
        let r = self.call(async move { c.version(VersionRequest::default()).await })?;
        Ok(format!("{} {}", r.runtime_name, r.runtime_version))
    }

    /// `Status`: the conditions (`RuntimeReady`, `NetworkReady`) as (type, ok, message).
    pub fn conditions(&self) -> Result<Vec<(String, bool, String)>, String> {
        let mut c = self.runtime();
        let r = self.call(async move { c.status(StatusRequest::default()).await })?;
        Ok(r.status
            .map(|s| {
                s.conditions
                    .into_iter()
                    .map(|c| (c.r#type, c.status, format!("{}: {}", c.reason, c.message)))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `ImageStatus`: whether the image is known to the CRI.
    pub fn has_image(&self, image: &str) -> Result<bool, String> {
        let mut c = self.images.clone();
        let req = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        Ok(self
            .call(async move { c.image_status(req).await })?
            .image
            .is_some())
    }

    /// `RunPodSandbox` for every config at once, as kubelet does for pods scheduled together.
    /// Returns, in order, the sandbox ID or the error, and how long each call took.
    pub fn run_pod_sandboxes(
        &self,
        configs: &[PodSandboxConfig],
    ) -> Vec<(Result<String, String>, Duration)> {
        self.parallel(configs.iter().cloned(), |mut c, config| async move {
            let req = RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            };
            c.run_pod_sandbox(req)
                .await
                .map(|r| r.into_inner().pod_sandbox_id)
        })
    }

    /// `StopPodSandbox` for every ID at once (containerd's first CNI DEL).
    pub fn stop_pod_sandboxes(&self, ids: &[String]) -> Vec<(Result<(), String>, Duration)> {
        self.parallel(ids.iter().cloned(), |mut c, id| async move {
            let req = StopPodSandboxRequest { pod_sandbox_id: id };
            c.stop_pod_sandbox(req).await.map(|_| ())
        })
    }

    /// `RemovePodSandbox` for every ID at once (containerd's second CNI DEL).
    pub fn remove_pod_sandboxes(&self, ids: &[String]) -> Vec<(Result<(), String>, Duration)> {
        self.parallel(ids.iter().cloned(), |mut c, id| async move {
            let req = RemovePodSandboxRequest { pod_sandbox_id: id };
            c.remove_pod_sandbox(req).await.map(|_| ())
        })
    }

    /// Verbose `PodSandboxStatus`: status plus containerd's `info` (runtime spec, CNI result).
    pub fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatusResponse, String> {
        let mut c = self.runtime();
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        };
        self.call(async move { c.pod_sandbox_status(req).await })
    }

    /// `ListPodSandbox`: the IDs of every sandbox, ready or not.
    pub fn list_pod_sandboxes(&self) -> Result<Vec<String>, String> {
        let mut c = self.runtime();
        let r =
            self.call(async move { c.list_pod_sandbox(ListPodSandboxRequest::default()).await })?;
        Ok(r.items.into_iter().map(|s| s.id).collect())
    }

    /// `CreateContainer` then `StartContainer` in the sandbox `pod` (created from `sandbox`):
    /// the container's ID.
    pub fn run_container(
        &self,
        pod: &str,
        sandbox: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> Result<String, String> {
        let mut c = self.runtime();
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(config),
            sandbox_config: Some(sandbox.clone()),
        };
        let id = self
            .call(async move { c.create_container(req).await })?
            .container_id;
        let mut c = self.runtime();
        let req = StartContainerRequest {
            container_id: id.clone(),
        };
        self.call(async move { c.start_container(req).await })?;
        Ok(id)
    }

    /// `StopContainer`: SIGTERM (the image's stop signal), SIGKILL after `timeout_secs`.
    pub fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), String> {
        let mut c = self.runtime();
        let req = StopContainerRequest {
            container_id: id.to_string(),
            timeout: timeout_secs,
        };
        self.call(async move { c.stop_container(req).await })
            .map(|_| ())
    }

    /// `RemoveContainer`.
    pub fn remove_container(&self, id: &str) -> Result<(), String> {
        let mut c = self.runtime();
        let req = RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.call(async move { c.remove_container(req).await })
            .map(|_| ())
    }

    /// `ContainerStatus`: state, exit code, reason.
    pub fn container_status(&self, id: &str) -> Result<ContainerStatus, String> {
        let mut c = self.runtime();
        let req = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        self.call(async move { c.container_status(req).await })?
            .status
            .ok_or_else(|| format!("ContainerStatus {id}: no status"))
    }

    fn call<T, F>(&self, f: F) -> Result<T, String>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.rt.block_on(async {
            match tokio::time::timeout(CALL_TIMEOUT, f).await {
                Ok(r) => r.map(|r| r.into_inner()).map_err(status_text),
                Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
            }
        })
    }

    fn parallel<I, T, F, Fut>(&self, items: I, f: F) -> Vec<(Result<T, String>, Duration)>
    where
        I: IntoIterator,
        F: Fn(RuntimeServiceClient<Channel>, I::Item) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let calls = items.into_iter().map(|item| {
            let fut = f(self.runtime(), item);
            async move {
                let start = Instant::now();
                let r = match tokio::time::timeout(CALL_TIMEOUT, fut).await {
                    Ok(r) => r.map_err(status_text),
                    Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
                };
                (r, start.elapsed())
            }
        });
        self.rt.block_on(futures::future::join_all(calls))
    }
}

fn status_text(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// A pod as kubelet describes it to RunPodSandbox: metadata, hostname, pod network namespace.
pub fn pod_config(name: &str, uid: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.to_string(),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        labels: [("io.kubernetes.pod.name".to_string(), name.to_string())].into(),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// The path of a sandbox's network namespace, from containerd's verbose status info (the OCI
/// runtime spec it gave runc).
pub fn sandbox_netns(status: &PodSandboxStatusResponse) -> Option<PathBuf> {
    let info: Value = serde_json::from_str(status.info.get("info")?).ok()?;
    info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|n| n["type"] == "network")?["path"]
        .as_str()
        .map(PathBuf::from)
}
