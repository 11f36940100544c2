//! The Kubernetes API with the pod's service account, as client-go's in-cluster config does:
//! `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, bearer token and CA from the
//! mounted service-account secret, each overridable (tests, or an agent run outside a pod).
//! The client is kube-rs's; the token file is re-read as kubelet rotates it ([`BearerFile`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper::header::HeaderValue;
use kube::api::{Api, ListParams};
use kube::config::{
    AuthInfo, Cluster, Context as KubeContext, KubeConfigOptions, Kubeconfig, NamedAuthInfo,
    NamedCluster, NamedContext,
};

use crate::nodes::Node;

pub const SA_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
pub const SA_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// Nodes per page of a list: bounds one response (a Node with its image list is several KB).
pub const PAGE: u32 = 500;

#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// `https://host:port` or, for tests, `http://127.0.0.1:port`; no trailing slash.
    pub base: String,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
}

impl KubeConfig {
    /// `api_server` overrides the address from the service environment.
    pub fn in_cluster(api_server: Option<&str>, token_file: &Path, ca_file: &Path) -> Result<Self> {
        let base = match api_server {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").context(
                    "KUBERNETES_SERVICE_HOST is not set: not in a pod? (--api-server sets the address)",
                )?;
                let port = std::env::var("KUBERNETES_SERVICE_PORT")
                    .context("KUBERNETES_SERVICE_PORT is not set")?;
                // An IPv6 service address needs brackets in a URL.
                if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        };
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            bail!("API server {base:?}: expected an http:// or https:// URL");
        }
        Ok(KubeConfig {
            base,
            token_file: token_file.to_path_buf(),
            ca_file: ca_file.to_path_buf(),
        })
    }

    /// A kube-rs client. Token and CA are checked here, so a missing mount is reported at start
    /// rather than as a failing request.
    pub async fn client(&self) -> Result<kube::Client> {
        let token = BearerFile::new(&self.token_file)?;
        let https = self.base.starts_with("https://");
        if https {
            let pem = std::fs::read_to_string(&self.ca_file)
                .with_context(|| format!("reading the API server CA {}", self.ca_file.display()))?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                bail!("{}: no certificate in it", self.ca_file.display());
            }
        }
        let cluster = Cluster {
            server: Some(self.base.clone()),
            certificate_authority: https.then(|| self.ca_file.display().to_string()),
            ..Cluster::default()
        };
        // No credentials in the config: the token is added by [`BearerFile`].
        let user = AuthInfo::default();
        let kc = Kubeconfig {
            clusters: vec![NamedCluster {
                name: "in-cluster".into(),
                cluster: Some(cluster),
                other: Default::default(),
            }],
            auth_infos: vec![NamedAuthInfo {
                name: "rcni".into(),
                auth_info: Some(user),
                other: Default::default(),
            }],
            contexts: vec![NamedContext {
                name: "rcni".into(),
                context: Some(KubeContext {
                    cluster: "in-cluster".into(),
                    user: Some("rcni".into()),
                    ..KubeContext::default()
                }),
                other: Default::default(),
            }],
            current_context: Some("rcni".into()),
            ..Kubeconfig::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .context("API client configuration")?;
        config.connect_timeout = Some(Duration::from_secs(10));
        if !https {
            // No TLS is spoken, but kube builds its TLS config anyway and, with no CA given,
            // loads the system's roots: an image without any (FROM scratch) would fail.
            config.root_cert = Some(Vec::new());
        }
        // The API server is reached over the service network; a proxy from the environment is
        // not meant for it.
        config.proxy_url = None;
        let builder = kube::client::ClientBuilder::try_from(config).context("API client")?;
        Ok(builder
            .with_layer(&tower::util::MapRequestLayer::new(move |req| {
                token.add(req)
            }))
            .build())
    }

    /// Every node, page by page: `up --kube` and `render --kube`, which look once.
    pub async fn list_nodes(&self) -> Result<Vec<Node>> {
        let api: Api<Node> = Api::all(self.client().await?);
        let mut nodes = Vec::new();
        let mut params = ListParams::default().limit(PAGE);
        loop {
            let page = api.list(&params).await.map_err(explain)?;
            nodes.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => params = params.continue_token(&c),
                None => return Ok(nodes),
            }
        }
    }
}

/// The bearer token from a file, re-read every minute as kubelet rotates it, and trimmed as
/// client-go trims it (kube-rs's own token file keeps a trailing newline, which no header may
/// carry).
#[derive(Clone)]
struct BearerFile {
    path: PathBuf,
    cached: Arc<Mutex<(HeaderValue, Instant)>>,
}

impl BearerFile {
    const RELOAD: Duration = Duration::from_secs(60);

    fn new(path: &Path) -> Result<BearerFile> {
        let header = Self::read(path)?;
        Ok(BearerFile {
            path: path.to_path_buf(),
            cached: Arc::new(Mutex::new((header, Instant::now()))),
        })
    }

    fn read(path: &Path) -> Result<HeaderValue> {
        let token = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading the service-account token {} (is it mounted?)",
                path.display()
            )
        })?;
        let mut value = HeaderValue::try_from(format!("Bearer {}", token.trim()))
            .with_context(|| format!("{}: not a token", path.display()))?;
        value.set_sensitive(true);
        Ok(value)
    }

    fn add<B>(&self, mut req: hyper::Request<B>) -> hyper::Request<B> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.1.elapsed() > Self::RELOAD {
            // A failed re-read keeps the last token (client-go does the same).
            if let Ok(v) = Self::read(&self.path) {
                cached.0 = v;
            }
            cached.1 = Instant::now();
        }
        req.headers_mut()
            .insert(hyper::header::AUTHORIZATION, cached.0.clone());
        req
    }
}

/// The API's error with what to check for the usual ones.
pub fn explain(e: kube::Error) -> anyhow::Error {
    let code = match &e {
        kube::Error::Api(s) => s.code,
        _ => 0,
    };
    anyhow::anyhow!("{}{}", with_causes(&e), hint(code))
}

/// [`explain`] for the node watch's errors, as one line for the log.
pub fn explain_watch(e: &kube::runtime::watcher::Error) -> String {
    use kube::runtime::watcher::Error as W;
    let code = match e {
        W::InitialListFailed(kube::Error::Api(s))
        | W::WatchStartFailed(kube::Error::Api(s))
        | W::WatchFailed(kube::Error::Api(s)) => s.code,
        W::WatchError(s) => s.code,
        _ => 0,
    };
    format!("{}{}", with_causes(e), hint(code))
}

fn hint(code: u16) -> &'static str {
    match code {
        401 => " (token rejected: is the service-account token mounted, and of this cluster?)",
        403 => " (the ClusterRole must allow list and watch on nodes: see deploy/rcni.yaml)",
        410 => " (410 Gone: that version is compacted; the nodes are listed again)",
        _ => "",
    }
}

/// An error and its causes: for a connection error the cause is deep in the chain (a refused
/// connection, an unknown certificate issuer).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}
