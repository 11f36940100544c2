//! `/metrics`, `/healthz` and `/readyz` over plain HTTP/1.1 (hyper), for Prometheus and the
//! kubelet's probes.
//!
//! - `/healthz`: 200 while the agent's loop runs (it beats every few seconds), 503 once it has
//!   not for [`STALL`]: a stuck agent is restarted by the liveness probe.
//! - `/readyz`: 200 once the binaries and the conflist are installed and the first full sync of
//!   nodes and routes is done; 503 with the reason before.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::metrics::Metrics;

/// Default address: the node's loopback (the agent runs with hostNetwork) and a port of its own.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9465";
/// How long the loop may go without a beat before `/healthz` fails.
pub const STALL: Duration = Duration::from_secs(60);

pub struct Shared {
    pub metrics: Metrics,
    pub conflist: PathBuf,
    ready: AtomicBool,
    not_ready: Mutex<String>,
    beat: AtomicU64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Shared {
    pub fn new(conflist: PathBuf) -> Shared {
        Shared {
            metrics: Metrics::new(),
            conflist,
            ready: AtomicBool::new(false),
            not_ready: Mutex::new("starting".into()),
            beat: AtomicU64::new(now_secs()),
        }
    }

    pub fn beat(&self) {
        self.beat.store(now_secs(), Ordering::Relaxed);
    }

    pub fn set_ready(&self, ready: bool, why_not: &str) {
        *self.not_ready.lock().unwrap_or_else(|e| e.into_inner()) = why_not.to_string();
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn answer(&self, path: &str) -> (StatusCode, &'static str, String) {
        let text = "text/plain; charset=utf-8";
        match path {
            "/metrics" => (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.encode(&self.conflist),
            ),
            "/healthz" | "/livez" => {
                let idle = now_secs().saturating_sub(self.beat.load(Ordering::Relaxed));
                if idle > STALL.as_secs() {
                    let msg = format!("stalled: the agent's loop has not run for {idle} s\n");
                    (StatusCode::SERVICE_UNAVAILABLE, text, msg)
                } else {
                    (StatusCode::OK, text, "ok\n".into())
                }
            }
            "/readyz" if self.is_ready() => (StatusCode::OK, text, "ok\n".into()),
            "/readyz" => {
                let why = self
                    .not_ready
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    text,
                    format!("not ready: {why}\n"),
                )
            }
            _ => (
                StatusCode::NOT_FOUND,
                text,
                "not found: /metrics, /healthz, /readyz\n".into(),
            ),
        }
    }
}

/// Binds `addr` now (so a taken port fails the start), then serves in the background.
pub async fn serve(addr: SocketAddr, shared: Arc<Shared>) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} for /metrics and health (--metrics-addr)"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<_>| {
                    let (status, kind, body) = shared.answer(req.uri().path());
                    let resp = Response::builder()
                        .status(status)
                        .header("Content-Type", kind)
                        .body(Full::new(Bytes::from(body)))
                        .expect("a response from valid parts");
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}
