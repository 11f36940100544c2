//! A fake Kubernetes API server serving Nodes, for tests and benchmarks of a node agent.
//!
//! It answers what kube-rs's client and `kube::runtime::watcher` on `Api<Node>` send, as the
//! real kube-apiserver does, over plain HTTP/1.1 with keep-alive: `GET /api/v1/nodes` (pages of
//! a consistent snapshot with `limit`/`continue`), `GET /api/v1/nodes/NAME`, and watches
//! (`watch=true` or `1`, or the legacy `/api/v1/watch/nodes`): chunked, one JSON event per line,
//! replayed from `resourceVersion` then live, BOOKMARKs on [`FakeApi::bookmark`] to watchers that
//! allow them, an ERROR event with a 410 Status for a version older than [`FakeApi::compact`]'s
//! point. Every request needs the bearer token (else 401) and is recorded
//! ([`FakeApi::requests`]). Faults: [`FakeApi::set_down`], [`FakeApi::restart`],
//! [`FakeApi::fail_next`], [`FakeApi::set_delay`].
//!
//! Versions: the store starts at version 1; every put or delete adds one, and each node carries
//! the version of its last change. `labelSelector` is matched for `=`, `==`, `!=`, `key` and
//! `!key` (set-based terms match everything), `fieldSelector` for `metadata.name` only.
//! Requests other than GET get 405.
//!
//! Plain threads: one accepts, one serves each connection. Each node is serialized once per
//! change and its JSON shared by lists, gets and every watcher's events.

mod http;
mod node;
mod query;
mod serve;
mod store;
#[cfg(test)]
mod tests;
mod watch;

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use node::FakeNode;
use store::Store;

/// A request the server answered, as [`FakeApi::requests`] lists them.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// `GET`, ... (empty for a request too malformed to parse).
    pub method: String,
    /// Decoded, without the query: `/api/v1/nodes`.
    pub path: String,
    /// The decoded query pairs in order.
    pub query: Vec<(String, String)>,
    /// Whether it asked for a watch.
    pub watch: bool,
    /// The HTTP status answered. A watch from a compacted version is 200, as on the real
    /// server: its 410 comes as an ERROR event in the stream.
    pub status: u16,
}

/// A fake API server; dropping it stops it and joins its threads.
pub struct FakeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The network namespace to bind in again after [`FakeApi::set_down`] (`None`: the
    /// caller's).
    netns: Option<File>,
    listening: Mutex<Option<Listening>>,
}

/// What the threads share.
pub(super) struct Shared {
    token: String,
    state: Mutex<State>,
    /// Notified on every change, bookmark and restart: watches wait on it.
    changed: Condvar,
    conns: Mutex<Conns>,
    requests: Mutex<Vec<ApiRequest>>,
}

pub(super) struct State {
    store: Store,
    /// Bumped by restarts and downs: connections of an older epoch end.
    epoch: u64,
    /// Bumped by [`FakeApi::bookmark`].
    bookmarks: u64,
    /// Requests left to fail, and with what status.
    fail: (usize, u16),
    delay: Duration,
    watchers: usize,
    next_watch: u64,
}

#[derive(Default)]
struct Conns {
    next: u64,
    open: HashMap<u64, OpenConn>,
}

struct OpenConn {
    /// A clone of the connection's socket, to shut it down from outside.
    stream: TcpStream,
    watching: bool,
    thread: Option<JoinHandle<()>>,
}

/// The listening socket and its accept thread.
struct Listening {
    listener: Arc<TcpListener>,
    closing: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn conns(&self) -> MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, request: ApiRequest) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        requests.push(request);
    }

    fn set_watching(&self, conn: u64, watching: bool) {
        if let Some(open) = self.conns().open.get_mut(&conn) {
            open.watching = watching;
        }
    }

    fn unregister(&self, conn: u64) {
        self.conns().open.remove(&conn);
    }

    /// Registers and serves an accepted connection on its own thread.
    fn spawn_connection(self: &Arc<Self>, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let Ok(clone) = stream.try_clone() else {
            return;
        };
        // Lock order: conns, then state (a restart bumps the epoch, then sweeps the conns).
        let mut conns = self.conns();
        let epoch = self.lock().epoch;
        let id = conns.next;
        conns.next += 1;
        let open = OpenConn {
            stream: clone,
            watching: false,
            thread: None,
        };
        conns.open.insert(id, open);
        let shared = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name(format!("fakeapi-conn-{id}"))
            .spawn(move || serve::connection(shared, stream, id, epoch));
        match thread {
            Ok(thread) => {
                if let Some(open) = conns.open.get_mut(&id) {
                    open.thread = Some(thread);
                }
            }
            Err(_) => {
                conns.open.remove(&id);
            }
        }
    }

    /// Ends every connection: watches end their stream cleanly unless `all`, others are cut.
    fn drop_connections(&self, all: bool) {
        // When all are cut, cut them before waking the watches, so none gets its last chunk
        // out first: a server that goes down ends no stream cleanly.
        if !all {
            self.lock().epoch += 1;
            self.changed.notify_all();
        }
        for open in self.conns().open.values() {
            if all || !open.watching {
                let _ = open.stream.shutdown(Shutdown::Both);
            }
        }
        if all {
            self.lock().epoch += 1;
            self.changed.notify_all();
        }
    }
}

fn accept_loop(shared: Arc<Shared>, listener: Arc<TcpListener>, closing: Arc<AtomicBool>) {
    loop {
        let accepted = listener.accept();
        if closing.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, _)) => shared.spawn_connection(stream),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Out of descriptors and the like: wait for connections to end.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

impl Listening {
    fn start(shared: &Arc<Shared>, listener: TcpListener) -> Listening {
        let listener = Arc::new(listener);
        let closing = Arc::new(AtomicBool::new(false));
        let (l, c, s) = (
            Arc::clone(&listener),
            Arc::clone(&closing),
            Arc::clone(shared),
        );
        let thread = std::thread::Builder::new()
            .name("fakeapi-accept".into())
            .spawn(move || accept_loop(s, l, c))
            .expect("cannot spawn the fake API server's accept thread");
        Listening {
            listener,
            closing,
            thread,
        }
    }

    /// Stops listening: new connections are refused once this returns.
    fn stop(self) {
        self.closing.store(true, Ordering::SeqCst);
        // SAFETY: shutdown(2) on a descriptor that `self.listener` keeps open until the end of
        // this function; on Linux it wakes the accept(2) blocked in the accept thread.
        unsafe {
            nix::libc::shutdown(self.listener.as_raw_fd(), nix::libc::SHUT_RDWR);
        }
        let _ = self.thread.join();
    }
}

/// Binds `addr`, inside the network namespace `netns` if given (from a helper thread that
/// enters it: the socket stays in that namespace whichever thread uses it).
fn bind(netns: Option<&File>, addr: SocketAddr) -> io::Result<TcpListener> {
    let Some(ns) = netns else {
        return TcpListener::bind(addr);
    };
    std::thread::scope(|s| {
        let helper = s.spawn(|| {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            TcpListener::bind(addr)
        });
        helper.join().expect("the bind thread panicked")
    })
}

impl FakeApi {
    /// Listens on 127.0.0.1 (any free port) in the caller's network namespace.
    pub fn start(token: &str) -> FakeApi {
        FakeApi::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), token)
    }

    /// Listens on `addr` (port 0: any free port).
    pub fn start_on(addr: SocketAddr, token: &str) -> FakeApi {
        FakeApi::launch(None, addr, token)
    }

    /// Listens on `addr` inside the network namespace `ns` (its 127.0.0.1, say).
    pub fn start_in(ns: &crate::Netns, addr: SocketAddr, token: &str) -> FakeApi {
        let path = ns.path();
        let file = File::open(&path)
            .unwrap_or_else(|e| panic!("cannot open netns {}: {e}", path.display()));
        FakeApi::launch(Some(file), addr, token)
    }

    fn launch(netns: Option<File>, addr: SocketAddr, token: &str) -> FakeApi {
        let listener = bind(netns.as_ref(), addr)
            .unwrap_or_else(|e| panic!("fake API server cannot listen on {addr}: {e}"));
        let addr = listener
            .local_addr()
            .expect("a bound socket has an address");
        let shared = Arc::new(Shared {
            token: token.to_string(),
            state: Mutex::new(State {
                store: Store::new(),
                epoch: 0,
                bookmarks: 0,
                fail: (0, 500),
                delay: Duration::ZERO,
                watchers: 0,
                next_watch: 0,
            }),
            changed: Condvar::new(),
            conns: Mutex::new(Conns::default()),
            requests: Mutex::new(Vec::new()),
        });
        let listening = Listening::start(&shared, listener);
        FakeApi {
            shared,
            addr,
            netns,
            listening: Mutex::new(Some(listening)),
        }
    }

    /// `http://IP:PORT`, the cluster URL to give a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Creates (ADDED) or replaces (MODIFIED) the node; the new resourceVersion.
    pub fn put_node(&self, node: FakeNode) -> u64 {
        let rv = self.shared.lock().store.put(node);
        self.shared.changed.notify_all();
        rv
    }

    /// Puts many nodes at once, one event each; the last new resourceVersion (the current one
    /// if `nodes` is empty).
    pub fn put_nodes(&self, nodes: Vec<FakeNode>) -> u64 {
        let rv = {
            let mut st = self.shared.lock();
            for node in nodes {
                st.store.put(node);
            }
            st.store.resource_version
        };
        self.shared.changed.notify_all();
        rv
    }

    /// Deletes the node (a DELETED event with its last state at the new version); the new
    /// resourceVersion, `None` if there was no such node.
    pub fn delete_node(&self, name: &str) -> Option<u64> {
        let rv = self.shared.lock().store.delete(name);
        self.shared.changed.notify_all();
        rv
    }

    pub fn node(&self, name: &str) -> Option<FakeNode> {
        self.shared.lock().store.node(name)
    }

    /// Every node's name, sorted.
    pub fn node_names(&self) -> Vec<String> {
        self.shared.lock().store.names()
    }

    /// The version of the last change (1 before any).
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().store.resource_version
    }

    /// Moves the compaction point to the current version: lists and new watches from an
    /// older one get 410 Gone (watches already open go on).
    pub fn compact(&self) {
        self.shared.lock().store.compact();
    }

    /// Sends a BOOKMARK at the current version to every watch that allowed bookmarks.
    pub fn bookmark(&self) {
        self.shared.lock().bookmarks += 1;
        self.shared.changed.notify_all();
    }

    /// Like an API server restart: every open connection is dropped at once (watch streams
    /// end with their last chunk, then their connection closes); state and port stay.
    pub fn restart(&self) {
        self.shared.drop_connections(false);
    }

    /// `true`: stops listening and cuts every connection (clients get connection refused);
    /// `false`: listens again on the same address.
    pub fn set_down(&self, down: bool) {
        let mut listening = self.listening.lock().unwrap_or_else(|e| e.into_inner());
        if down {
            if let Some(l) = listening.take() {
                l.stop();
            }
            self.shared.drop_connections(true);
        } else if listening.is_none() {
            *listening = Some(Listening::start(&self.shared, self.rebind()));
        }
    }

    /// The same address again; connections just closed may hold it for a moment.
    fn rebind(&self) -> TcpListener {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match bind(self.netns.as_ref(), self.addr) {
                Ok(listener) => return listener,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("fake API server cannot listen on {} again: {e}", self.addr),
            }
        }
    }

    /// Answers the next `n` requests (whatever they are, before authentication) with `status`
    /// and a Status body; 429 and 503 come with `Retry-After: 1`.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.shared.lock().fail = (n, status);
    }

    /// Delays the headers of every answer by `delay` (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<ApiRequest> {
        let requests = self.shared.requests.lock();
        requests.unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many watch streams are open now.
    pub fn watchers(&self) -> usize {
        self.shared.lock().watchers
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.set_down(true);
        let threads: Vec<JoinHandle<()>> = {
            let mut conns = self.shared.conns();
            let open = conns.open.drain().map(|(_, open)| open);
            open.filter_map(|open| open.thread).collect()
        };
        for thread in threads {
            let _ = thread.join();
        }
    }
}
