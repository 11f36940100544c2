//! A CRI server for tests (feature `fake-cri`): `ListPodSandbox` answers with the sandboxes the
//! test sets, every other call is UNIMPLEMENTED, as a runtime's socket would answer a client
//! that asks what it does not serve.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::cri::{ListPodSandboxRequest, ListPodSandboxResponse, PodSandbox};

#[derive(Default)]
struct Shared {
    sandboxes: Mutex<Vec<PodSandbox>>,
    calls: AtomicUsize,
    failing: AtomicBool,
}

/// A CRI server on a unix socket, served by a thread of its own until dropped.
pub struct FakeCri {
    socket: PathBuf,
    shared: Arc<Shared>,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeCri {
    /// Listens on `socket` (which must not exist).
    pub fn start(socket: &Path) -> FakeCri {
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(tokio::sync::Notify::new());
        let std_listener = std::os::unix::net::UnixListener::bind(socket)
            .unwrap_or_else(|e| panic!("fake CRI: bind {}: {e}", socket.display()));
        std_listener.set_nonblocking(true).unwrap();
        let (s, n) = (shared.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(std_listener, s, n));
        });
        FakeCri {
            socket: socket.to_path_buf(),
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// `unix://<socket>`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The sandboxes ListPodSandbox returns from now on (alternately ready and not ready).
    pub fn set_sandboxes(&self, ids: &[&str]) {
        let items = ids
            .iter()
            .enumerate()
            .map(|(i, id)| PodSandbox {
                id: id.to_string(),
                state: (i % 2) as i32,
                created_at: 1,
                ..PodSandbox::default()
            })
            .collect();
        *self.shared.sandboxes.lock().unwrap() = items;
    }

    /// While set, ListPodSandbox fails with UNAVAILABLE.
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// ListPodSandbox calls answered so far.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }
}

impl Drop for FakeCri {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

async fn serve(
    listener: std::os::unix::net::UnixListener,
    shared: Arc<Shared>,
    stop: Arc<tokio::sync::Notify>,
) {
    let listener = tokio::net::UnixListener::from_std(listener).unwrap();
    loop {
        let stream = tokio::select! {
            _ = stop.notified() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| answer(req, shared.clone()));
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(
    req: http::Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
) -> Result<http::Response<tonic::body::Body>, std::convert::Infallible> {
    if req.uri().path() != "/runtime.v1.RuntimeService/ListPodSandbox" {
        return Ok(tonic::Status::unimplemented("fake CRI: ListPodSandbox only").into_http());
    }
    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
    Ok(grpc.unary(List(shared), req).await)
}

struct List(Arc<Shared>);

impl tonic::server::UnaryService<ListPodSandboxRequest> for List {
    type Response = ListPodSandboxResponse;
    type Future =
        std::future::Ready<Result<tonic::Response<ListPodSandboxResponse>, tonic::Status>>;

    fn call(&mut self, _: tonic::Request<ListPodSandboxRequest>) -> Self::Future {
        if self.0.failing.load(Ordering::SeqCst) {
            return std::future::ready(Err(tonic::Status::unavailable("fake CRI: down")));
        }
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let items = self.0.sandboxes.lock().unwrap().clone();
        std::future::ready(Ok(tonic::Response::new(ListPodSandboxResponse { items })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lists_what_the_test_set_and_fails_when_told() {
        let dir = cni_testkit::temp_dir("gc-fake-cri");
        let cri = FakeCri::start(&dir.join("cri.sock"));
        cri.set_sandboxes(&["s1", "s2"]);
        let got = crate::cri::list_sandboxes(&cri.endpoint(), Duration::from_secs(5)).unwrap();
        let ids: Vec<&str> = got.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["s1", "s2"]);
        assert_eq!((got[0].state, got[1].state), (0, 1));
        cri.set_failing(true);
        let e = crate::cri::list_sandboxes(&cri.endpoint(), Duration::from_secs(5)).unwrap_err();
        assert!(format!("{e:#}").contains("Unavailable"), "{e:#}");
        assert_eq!(cri.calls(), 1);
        drop(cri);
        let e = crate::cri::list_sandboxes(
            &format!("unix://{}", dir.join("cri.sock").display()),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("is the runtime running"), "{e:#}");
    }
}
