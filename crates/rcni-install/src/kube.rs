//! Reading nodes from the Kubernetes API with the pod's service account, as client-go's in-cluster
//! config does: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, bearer token and CA
//! from the mounted service-account secret.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::nodes::{parse_node_list, Node};

pub const SA_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
pub const SA_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// Nodes per page: bounds one response (a Node with its image list is several KB).
const PAGE: u32 = 500;
/// Cap on one page's body, far above 500 nodes' worth.
const MAX_BODY: u64 = 256 << 20;

#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// `https://host:port` or, for tests, `http://127.0.0.1:port`; no trailing slash.
    pub base: String,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
}

impl KubeConfig {
    /// `api_server` overrides the address from the service environment (tests, or a node agent
    /// run outside a pod).
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

    /// Every node, following pagination. Token and CA are read on each call: kubelet rotates the
    /// projected token, and the CA bundle can change with a CA rotation.
    pub fn list_nodes(&self) -> Result<Vec<Node>> {
        let agent = self.agent()?;
        let token = std::fs::read_to_string(&self.token_file).with_context(|| {
            format!(
                "reading the service-account token {}",
                self.token_file.display()
            )
        })?;
        let auth = format!("Bearer {}", token.trim());
        let url = format!("{}/api/v1/nodes", self.base);
        let mut nodes = Vec::new();
        let mut cont: Option<String> = None;
        loop {
            let mut req = agent
                .get(&url)
                .header("Authorization", &auth)
                .header("Accept", "application/json")
                .query("limit", PAGE.to_string());
            if let Some(c) = &cont {
                req = req.query("continue", c);
            }
            let mut resp = req.call().with_context(|| format!("GET {url}"))?;
            let status = resp.status();
            let body = resp
                .body_mut()
                .with_config()
                .limit(MAX_BODY)
                .read_to_vec()
                .with_context(|| format!("GET {url}: reading the response"))?;
            if !status.is_success() {
                let msg = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
                let hint = match status.as_u16() {
                    401 => " (token rejected: is the service-account token mounted?)",
                    403 => " (the ClusterRole must allow list on nodes: see deploy/rcni.yaml)",
                    _ => "",
                };
                bail!("GET {url}: {status}: {msg}{hint}");
            }
            let page = parse_node_list(&body).with_context(|| format!("GET {url}"))?;
            nodes.extend(page.items);
            match page.metadata.continue_token.filter(|c| !c.is_empty()) {
                Some(c) => cont = Some(c),
                None => return Ok(nodes),
            }
        }
    }

    fn agent(&self) -> Result<ureq::Agent> {
        let mut cfg = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            // The API server is reached over the service network; a proxy from the environment
            // is not meant for it.
            .proxy(None);
        if self.base.starts_with("https://") {
            let pem = std::fs::read(&self.ca_file)
                .with_context(|| format!("reading the API server CA {}", self.ca_file.display()))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                if let ureq::tls::PemItem::Certificate(c) =
                    item.with_context(|| format!("{}: bad PEM", self.ca_file.display()))?
                {
                    certs.push(c);
                }
            }
            if certs.is_empty() {
                bail!("{}: no certificate in it", self.ca_file.display());
            }
            cfg = cfg.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        Ok(cfg.build().into())
    }
}
