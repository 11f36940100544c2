//! The fake API server against a raw HTTP/1.1 client, byte for byte.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{FakeApi, FakeNode};
use crate::{eventually, Netns};

const TOKEN: &str = "s3cret";

/// A raw client on one connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A response's status, headers (lower-case names) and body (empty for a watch).
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        let found = self.headers.iter().find(|(n, _)| n == name);
        found.map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

impl Client {
    fn connect(api: &FakeApi) -> Client {
        Client::on(TcpStream::connect(api.addr()).expect("connect"))
    }

    fn on(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    fn send(&mut self, target: &str, token: Option<&str>) {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let request = format!("GET {target} HTTP/1.1\r\nHost: kube\r\n{auth}\r\n");
        self.send_raw(request.as_bytes());
    }

    /// More bytes, false at end of stream.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read: {e}"),
        }
    }

    fn take_line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf[..i].to_vec()).unwrap();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(self.fill(), "connection closed mid-line");
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill(), "connection closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    /// Status and headers; then the body if it has a length.
    fn response(&mut self) -> Response {
        let status_line = self.take_line();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let line = self.take_line();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(len) = response.header("content-length") {
            response.body = self.take(len.parse().unwrap());
        }
        response
    }

    fn get(&mut self, target: &str) -> Response {
        self.send(target, Some(TOKEN));
        self.response()
    }

    /// Starts a watch: the response head, checked to be a chunked 200.
    fn watch(&mut self, target: &str) {
        let head = self.get(target);
        assert_eq!(head.status, 200);
        assert_eq!(head.header("transfer-encoding"), Some("chunked"));
        assert_eq!(head.header("content-type"), Some("application/json"));
    }

    /// The next event (each must be exactly one chunk of one line); `None` at the last chunk.
    fn event(&mut self) -> Option<Value> {
        let size = usize::from_str_radix(&self.take_line(), 16).expect("a chunk size");
        if size == 0 {
            assert_eq!(self.take_line(), "", "trailer-less last chunk");
            return None;
        }
        let data = self.take(size);
        assert_eq!(self.take(2), b"\r\n");
        assert_eq!(data.last(), Some(&b'\n'), "an event ends its line");
        assert!(!data[..size - 1].contains(&b'\n'), "one event per chunk");
        Some(serde_json::from_slice(&data).expect("an event is JSON"))
    }

    /// Whether the server closed the connection (nothing more to read).
    fn closed(&mut self) -> bool {
        !self.fill()
    }
}

fn node(i: usize) -> FakeNode {
    let name = format!("node-{i:04}");
    let cidr = format!("10.244.{i}.0/24");
    let ip = format!("192.168.{}.{}", i / 250, i % 250 + 1);
    FakeNode::new(&name, &[&cidr], &[&ip])
}

fn names(list: &Value) -> Vec<String> {
    let items = list["items"].as_array().unwrap();
    items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn kind_and_name(event: &Value) -> (String, String) {
    let kind = event["type"].as_str().unwrap().to_string();
    let name = event["object"]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    (kind, name)
}

#[test]
fn kubeapi_list_pages_a_snapshot() {
    let api = FakeApi::start(TOKEN);
    assert_eq!(api.resource_version(), 1);
    let rv = api.put_nodes((0..7).map(node).collect());
    assert_eq!(rv, 8);
    let mut c = Client::connect(&api);
    let first = c.get("/api/v1/nodes?limit=3");
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), Some("application/json"));
    let first = first.json();
    assert_eq!(
        (&first["kind"], &first["apiVersion"]),
        (&"NodeList".into(), &"v1".into())
    );
    assert_eq!(first["metadata"]["resourceVersion"], "8");
    assert_eq!(first["metadata"]["remainingItemCount"], 4);
    assert_eq!(names(&first), ["node-0000", "node-0001", "node-0002"]);
    let item = &first["items"][0];
    assert!(
        item.get("kind").is_none(),
        "list items carry no kind, as on the real server"
    );
    assert_eq!(item["metadata"]["resourceVersion"], "2");
    assert_eq!(item["spec"]["podCIDRs"][0], "10.244.0.0/24");
    // Changes after the first page do not show in the next ones.
    api.put_node(node(100));
    api.delete_node("node-0004").unwrap();
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    let second = c
        .get(&format!("/api/v1/nodes?limit=3&continue={token}"))
        .json();
    assert_eq!(second["metadata"]["resourceVersion"], "8");
    assert_eq!(names(&second), ["node-0003", "node-0004", "node-0005"]);
    let token = second["metadata"]["continue"].as_str().unwrap().to_string();
    let third = c
        .get(&format!("/api/v1/nodes?limit=3&continue={token}"))
        .json();
    assert_eq!(names(&third), ["node-0006"]);
    assert!(third["metadata"].get("continue").is_none());
    // A list without a limit: the current state.
    let all = c.get("/api/v1/nodes?resourceVersion=0").json();
    assert_eq!(all["metadata"]["resourceVersion"], "10");
    assert_eq!(names(&all).len(), 7);
    assert!(names(&all).contains(&"node-0100".to_string()));
    let one = c
        .get("/api/v1/nodes?fieldSelector=metadata.name%3Dnode-0002")
        .json();
    assert_eq!(names(&one), ["node-0002"]);
    let bad = c.get("/api/v1/nodes?limit=3&continue=bm9wZQ");
    assert_eq!(
        (bad.status, &bad.json()["reason"]),
        (400, &"BadRequest".into())
    );
}

#[test]
fn kubeapi_get_one_node() {
    let api = FakeApi::start(TOKEN);
    api.put_node(node(1));
    let mut c = Client::connect(&api);
    let found = c.get("/api/v1/nodes/node-0001");
    assert_eq!(found.status, 200);
    let found = found.json();
    assert_eq!(
        (&found["kind"], &found["apiVersion"]),
        (&"Node".into(), &"v1".into())
    );
    assert_eq!(
        found["metadata"]["labels"]["kubernetes.io/hostname"],
        "node-0001"
    );
    assert_eq!(found["status"]["addresses"][0]["type"], "InternalIP");
    assert_eq!(found["status"]["addresses"][1]["type"], "Hostname");
    assert_eq!(found["metadata"]["uid"].as_str().unwrap().len(), 36);
    let missing = c.get("/api/v1/nodes/nope");
    assert_eq!(missing.status, 404);
    let status = missing.json();
    assert_eq!(
        (&status["kind"], &status["reason"]),
        (&"Status".into(), &"NotFound".into())
    );
    assert_eq!(status["message"], "nodes \"nope\" not found");
    assert_eq!(c.get("/api/v1/pods").status, 404);
    // A deleted and recreated node is a new object.
    let uid = found["metadata"]["uid"].clone();
    api.delete_node("node-0001");
    api.put_node(node(1));
    assert_ne!(
        c.get("/api/v1/nodes/node-0001").json()["metadata"]["uid"],
        uid
    );
}

#[test]
fn kubeapi_watch_replays_then_streams_live() {
    let api = FakeApi::start(TOKEN);
    let from = api.put_node(node(1));
    api.put_node(node(2));
    let mut changed = node(1);
    changed.internal_ips.push("fd00::1".into());
    let modified = api.put_node(changed);
    let mut c = Client::connect(&api);
    c.watch(&format!(
        "/api/v1/nodes?watch=1&resourceVersion={from}&timeoutSeconds=30"
    ));
    let e = c.event().unwrap();
    assert_eq!(kind_and_name(&e), ("ADDED".into(), "node-0002".into()));
    assert_eq!(
        (&e["object"]["kind"], &e["object"]["apiVersion"]),
        (&"Node".into(), &"v1".into())
    );
    let e = c.event().unwrap();
    assert_eq!(kind_and_name(&e), ("MODIFIED".into(), "node-0001".into()));
    assert_eq!(
        e["object"]["metadata"]["resourceVersion"],
        modified.to_string()
    );
    assert_eq!(e["object"]["status"]["addresses"][1]["address"], "fd00::1");
    assert!(eventually(|| api.watchers() == 1));
    api.put_node(node(3));
    assert_eq!(
        kind_and_name(&c.event().unwrap()),
        ("ADDED".into(), "node-0003".into())
    );
    let deleted = api.delete_node("node-0002").unwrap();
    let e = c.event().unwrap();
    assert_eq!(kind_and_name(&e), ("DELETED".into(), "node-0002".into()));
    assert_eq!(
        e["object"]["metadata"]["resourceVersion"],
        deleted.to_string()
    );
    let watches = api.requests().into_iter().filter(|r| r.watch).count();
    assert_eq!(watches, 1);
}

#[test]
fn kubeapi_watch_from_no_version_starts_with_the_state() {
    let api = FakeApi::start(TOKEN);
    api.put_nodes((0..3).map(node).collect());
    let mut c = Client::connect(&api);
    c.watch("/api/v1/nodes?watch=true&resourceVersion=0&fieldSelector=metadata.name!%3Dnode-0001");
    let events: Vec<_> = (0..2).map(|_| kind_and_name(&c.event().unwrap())).collect();
    assert_eq!(
        events,
        [
            ("ADDED".into(), "node-0000".into()),
            ("ADDED".into(), "node-0002".into())
        ]
    );
    // The filter holds for live events too.
    assert!(eventually(|| api.watchers() == 1));
    api.put_node(node(1));
    api.put_node(node(5));
    assert_eq!(
        kind_and_name(&c.event().unwrap()),
        ("ADDED".into(), "node-0005".into())
    );
}

#[test]
fn kubeapi_bookmarks_only_to_who_asked() {
    let api = FakeApi::start(TOKEN);
    let rv = api.resource_version();
    let mut asked = Client::connect(&api);
    asked.watch(&format!(
        "/api/v1/nodes?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"
    ));
    let mut plain = Client::connect(&api);
    plain.watch(&format!("/api/v1/nodes?watch=true&resourceVersion={rv}"));
    assert!(eventually(|| api.watchers() == 2));
    api.bookmark();
    let bookmark = asked.event().unwrap();
    let expected = serde_json::json!({ "type": "BOOKMARK", "object": { "kind": "Node",
        "apiVersion": "v1", "metadata": { "resourceVersion": rv.to_string() } } });
    assert_eq!(bookmark, expected);
    // The plain watch got nothing for it: its next event is the node.
    let added = api.put_node(node(1));
    assert_eq!(kind_and_name(&asked.event().unwrap()).0, "ADDED");
    assert_eq!(kind_and_name(&plain.event().unwrap()).0, "ADDED");
    api.bookmark();
    let bookmark = asked.event().unwrap();
    assert_eq!(
        bookmark["object"]["metadata"]["resourceVersion"],
        added.to_string()
    );
}

#[test]
fn kubeapi_streaming_list_ends_its_initial_events_with_a_bookmark() {
    let api = FakeApi::start(TOKEN);
    let rv = api.put_nodes((0..2).map(node).collect());
    let mut c = Client::connect(&api);
    c.watch("/api/v1/nodes?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&resourceVersion=");
    assert_eq!(kind_and_name(&c.event().unwrap()).0, "ADDED");
    assert_eq!(kind_and_name(&c.event().unwrap()).0, "ADDED");
    let end = c.event().unwrap();
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(end["object"]["metadata"]["resourceVersion"], rv.to_string());
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[test]
fn kubeapi_compacted_versions_are_gone() {
    let api = FakeApi::start(TOKEN);
    let old = api.put_node(node(1));
    let mut c = Client::connect(&api);
    let page = c.get("/api/v1/nodes?limit=1").json();
    let token = page["metadata"]["continue"].as_str().map(String::from);
    assert!(token.is_none(), "a single node fits a page");
    api.put_nodes((2..5).map(node).collect());
    let paged = c.get("/api/v1/nodes?limit=2").json();
    let token = paged["metadata"]["continue"].as_str().unwrap().to_string();
    api.put_node(node(9));
    api.compact();
    let now = api.resource_version();
    c.watch(&format!("/api/v1/nodes?watch=true&resourceVersion={old}"));
    let error = c.event().unwrap();
    let message = format!("too old resource version: {old} ({now})");
    let expected = serde_json::json!({ "type": "ERROR", "object": { "kind": "Status",
        "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
        "reason": "Expired", "code": 410 } });
    assert_eq!(error, expected);
    assert_eq!(c.event(), None, "the stream ends after the error");
    let list = c.get(&format!("/api/v1/nodes?resourceVersion={old}"));
    assert_eq!(list.status, 410);
    assert_eq!(list.json(), expected["object"]);
    let page = c.get(&format!("/api/v1/nodes?limit=2&continue={token}"));
    assert_eq!(
        (page.status, &page.json()["reason"]),
        (410, &"Expired".into())
    );
    // From the compaction point on, all is well.
    assert_eq!(
        c.get(&format!("/api/v1/nodes?resourceVersion={now}"))
            .status,
        200
    );
    c.watch(&format!("/api/v1/nodes?watch=true&resourceVersion={now}"));
    assert!(eventually(|| api.watchers() == 1));
    api.put_node(node(10));
    assert_eq!(kind_and_name(&c.event().unwrap()).1, "node-0010");
}

#[test]
fn kubeapi_needs_the_token() {
    let api = FakeApi::start(TOKEN);
    let mut c = Client::connect(&api);
    for token in [None, Some("wrong")] {
        c.send("/api/v1/nodes", token);
        let r = c.response();
        assert_eq!(r.status, 401);
        let status = r.json();
        assert_eq!(
            (&status["reason"], &status["code"]),
            (&"Unauthorized".into(), &401.into())
        );
    }
    c.send_raw(b"GET /api/v1/nodes HTTP/1.1\r\nauthorization: bearer s3cret\r\n\r\n");
    assert_eq!(c.response().status, 200);
    let statuses: Vec<u16> = api.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 200]);
}

#[test]
fn kubeapi_fail_next_and_delay() {
    let api = FakeApi::start(TOKEN);
    api.fail_next(2, 500);
    let mut c = Client::connect(&api);
    for _ in 0..2 {
        let r = c.get("/api/v1/nodes");
        assert_eq!(r.status, 500);
        assert_eq!(r.json()["reason"], "InternalError");
    }
    assert_eq!(c.get("/api/v1/nodes").status, 200);
    api.fail_next(1, 429);
    let r = c.get("/api/v1/nodes?watch=true");
    assert_eq!((r.status, r.header("retry-after")), (429, Some("1")));
    let last = api.requests().pop().unwrap();
    assert!(last.watch && last.status == 429);
    assert_eq!(last.query[0], ("watch".to_string(), "true".to_string()));
    api.set_delay(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(c.get("/api/v1/nodes").status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn kubeapi_reads_requests_however_they_arrive() {
    let api = FakeApi::start(TOKEN);
    let mut c = Client::connect(&api);
    for piece in [
        "GET /api/v1/no",
        "des?limit=1 HTTP/1.1\r\nAuthoriz",
        "ation: Bearer s3cret\r",
        "\n\r\n",
    ] {
        c.send_raw(piece.as_bytes());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.response().status, 200);
    let two = "GET /api/v1/nodes HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n\
               GET /api/v1/nodes/x HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\
               Connection: close\r\n\r\n";
    c.send_raw(two.as_bytes());
    assert_eq!(c.response().status, 200);
    let last = c.response();
    assert_eq!(
        (last.status, last.header("connection")),
        (404, Some("close"))
    );
    assert!(c.closed());
    let mut c = Client::connect(&api);
    c.send_raw(b"BREW /api/v1/nodes\r\n\r\n");
    assert_eq!(c.response().status, 400);
    assert!(c.closed());
}

#[test]
fn kubeapi_down_and_up_on_the_same_port() {
    let api = FakeApi::start(TOKEN);
    api.put_node(node(1));
    let addr = api.addr();
    let mut idle = Client::connect(&api);
    assert_eq!(idle.get("/api/v1/nodes").status, 200);
    let mut watching = Client::connect(&api);
    watching.watch("/api/v1/nodes?watch=true&resourceVersion=1");
    assert!(watching.event().is_some());
    api.set_down(true);
    let refused = TcpStream::connect(addr).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    assert!(idle.closed());
    assert!(watching.closed());
    assert!(eventually(|| api.watchers() == 0));
    api.set_down(false);
    assert_eq!(api.addr(), addr);
    let mut c = Client::connect(&api);
    assert_eq!(names(&c.get("/api/v1/nodes").json()), ["node-0001"]);
}

#[test]
fn kubeapi_restart_ends_watches_and_connections() {
    let api = FakeApi::start(TOKEN);
    let rv = api.put_node(node(1));
    let mut idle = Client::connect(&api);
    assert_eq!(idle.get("/api/v1/nodes").status, 200);
    let mut watching = Client::connect(&api);
    watching.watch(&format!("/api/v1/nodes?watch=true&resourceVersion={rv}"));
    assert!(eventually(|| api.watchers() == 1));
    api.restart();
    assert_eq!(
        watching.event(),
        None,
        "the stream ends with its last chunk"
    );
    assert!(watching.closed());
    assert!(idle.closed());
    assert!(eventually(|| api.watchers() == 0));
    let mut c = Client::connect(&api);
    assert_eq!(names(&c.get("/api/v1/nodes").json()), ["node-0001"]);
    c.watch(&format!("/api/v1/nodes?watch=true&resourceVersion={rv}"));
    assert!(eventually(|| api.watchers() == 1));
}

#[test]
fn kubeapi_watch_timeout_and_client_gone() {
    let api = FakeApi::start(TOKEN);
    let mut c = Client::connect(&api);
    let started = Instant::now();
    c.watch("/api/v1/nodes?watch=true&timeoutSeconds=1");
    assert_eq!(c.event(), None);
    assert!(started.elapsed() >= Duration::from_secs(1));
    // The connection carries the next request.
    assert_eq!(c.get("/api/v1/nodes").status, 200);
    c.watch("/api/v1/nodes?watch=true");
    assert!(eventually(|| api.watchers() == 1));
    drop(c);
    assert!(
        eventually(|| api.watchers() == 0),
        "a gone client ends its watch"
    );
}

#[test]
fn kubeapi_lists_thousands_of_bulky_nodes() {
    let api = FakeApi::start(TOKEN);
    let started = Instant::now();
    api.put_nodes((0..5000).map(node).collect());
    let put = started.elapsed();
    let mut c = Client::connect(&api);
    let started = Instant::now();
    let whole = c.get("/api/v1/nodes");
    let listed = started.elapsed();
    let per_node = whole.body.len() / 5000;
    assert!(
        (4_000..=6_500).contains(&per_node),
        "{per_node} bytes per node"
    );
    let mut seen = Vec::new();
    let mut target = "/api/v1/nodes?limit=500".to_string();
    loop {
        let page = c.get(&target).json();
        seen.extend(names(&page));
        match page["metadata"]["continue"].as_str() {
            Some(token) => target = format!("/api/v1/nodes?limit=500&continue={token}"),
            None => break,
        }
    }
    seen.dedup();
    assert_eq!(seen.len(), 5000);
    eprintln!(
        "5000 nodes: put in {put:?}, listed in {listed:?} ({} MB)",
        whole.body.len() >> 20
    );
}

#[test]
fn kubeapi_start_in_netns() {
    let ns = Netns::new("api");
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let api = FakeApi::start_in(&ns, addr, TOKEN);
    assert!(api.url().starts_with("http://127.0.0.1:"));
    // The host's 127.0.0.1 has nothing on that port.
    assert!(TcpStream::connect(api.addr()).is_err());
    let target = api.addr();
    let inside = |target: SocketAddr| {
        let file = std::fs::File::open(ns.path()).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            TcpStream::connect(target)
        })
        .join()
        .unwrap()
    };
    let mut c = Client::on(inside(target).expect("reachable inside the namespace"));
    assert_eq!(c.get("/api/v1/nodes").status, 200);
    api.set_down(true);
    assert!(inside(target).is_err());
    api.set_down(false);
    let mut c = Client::on(inside(target).expect("listening again inside the namespace"));
    assert_eq!(c.get("/api/v1/nodes").status, 200);
}
