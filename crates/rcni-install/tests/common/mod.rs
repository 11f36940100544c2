//! Shared by the integration tests: fake plugins, directory snapshots, running the installer
//! against temporary directories only, and a local stand-in for the Kubernetes API.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;

use cni_testkit::{snapshot, temp_dir, Snapshot, TempDir};

pub const PLUGINS: [&str; 4] = ["rbridge", "rhost-local", "rmasq", "rroutes"];

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn fixture_text(name: &str) -> String {
    fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A node's directories, all inside one temporary directory: the real /opt/cni/bin,
/// /etc/cni/net.d and /var/lib/rcni are never used by a test.
pub struct Node {
    pub root: TempDir,
    /// The test's own files (source dir, sync log, token), outside what is compared.
    pub aux: PathBuf,
    pub src: PathBuf,
    pub bin: PathBuf,
    pub conf: PathBuf,
    pub state: PathBuf,
    /// Each `rroutes sync` call of the fake rroutes, appended.
    pub sync_log: PathBuf,
}

impl Node {
    /// Source dir with fake plugins; bin and conf dirs created empty (as a node's usually are),
    /// the state dir left for the installer to create.
    pub fn new() -> Node {
        let root = temp_dir("rcni-install-t");
        let n = Node {
            aux: root.join("t"),
            src: root.join("t/src"),
            bin: root.join("opt/cni/bin"),
            conf: root.join("etc/cni/net.d"),
            state: root.join("var/lib/rcni"),
            sync_log: root.join("t/sync.log"),
            root,
        };
        fs::create_dir_all(&n.src).unwrap();
        fs::create_dir_all(&n.bin).unwrap();
        fs::create_dir_all(&n.conf).unwrap();
        fs::create_dir_all(n.root.join("var/lib")).unwrap();
        for p in PLUGINS {
            let body = if p == "rroutes" {
                fake_rroutes(&n.sync_log)
            } else {
                format!("#!/bin/sh\necho fake {p}\n")
            };
            write_exec(&n.src.join(p), &body);
        }
        n
    }

    /// The layout flags: every command a test runs names the temporary directories.
    pub fn layout_args(&self) -> Vec<String> {
        vec![
            "--bin-dir".into(),
            self.bin.display().to_string(),
            "--conf-dir".into(),
            self.conf.display().to_string(),
            "--state-dir".into(),
            self.state.display().to_string(),
        ]
    }

    pub fn conflist(&self) -> PathBuf {
        self.conf.join("10-rcni.conflist")
    }

    /// `rcni-install CMD <layout> ARGS...` (`--src-dir` added for up and daemon).
    pub fn run(&self, cmd: &str, args: &[&str]) -> Output {
        let mut all: Vec<String> = vec![cmd.into()];
        all.extend(self.layout_args());
        if cmd == "up" || cmd == "daemon" {
            all.push("--src-dir".into());
            all.push(self.src.display().to_string());
        }
        all.extend(args.iter().map(|s| s.to_string()));
        installer().args(&all).output().unwrap()
    }

    /// The calls the fake rroutes got: (conflist path, its content then).
    pub fn syncs(&self) -> Vec<(String, String)> {
        let log = fs::read_to_string(&self.sync_log).unwrap_or_default();
        log.split("=== ")
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (path, content) = s.split_once('\n').unwrap();
                (path.to_string(), content.to_string())
            })
            .collect()
    }

    /// The whole tree under the temporary root, minus the test's own files.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = snapshot(&self.root);
        s.retain(|k, _| !k.starts_with("t"));
        s
    }
}

/// The installer, with no RCNI_* or API variables inherited from whoever runs the tests.
pub fn installer() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rcni-install"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("RCNI_") || k.starts_with("KUBERNETES_") || k == "NODE_NAME" {
            c.env_remove(k);
        }
    }
    c
}

/// A fake rroutes that records `sync --conflist FILE` calls with the file's content, and fails
/// while `<log>.fail` exists.
fn fake_rroutes(log: &Path) -> String {
    format!(
        r#"#!/bin/sh
[ "$1" = sync ] && [ "$2" = --conflist ] && [ $# -eq 3 ] || {{ echo "fake rroutes: unexpected arguments: $*" >&2; exit 2; }}
[ -e "{log}.fail" ] && {{ echo "fake rroutes: told to fail" >&2; exit 1; }}
{{ echo "=== $3"; cat "$3"; }} >> "{log}"
"#,
        log = log.display()
    )
}

pub fn write_exec(path: &Path, body: &str) {
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A stand-in for the API server on 127.0.0.1: serves recorded NodeList responses, one per list
/// (a request without `continue`), the last one again once they run out. Each list is served in
/// pages of `page` items so that the client's pagination is exercised too.
pub struct ApiServer {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Request>>>,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub target: String,
    pub authorization: Option<String>,
}

/// One answer to a list: a NodeList, or an error status with a Status body.
#[derive(Clone)]
pub enum Reply {
    Nodes(String),
    Status(u16, String),
}

impl ApiServer {
    pub fn start(replies: Vec<Reply>, token: &str, page: usize) -> ApiServer {
        Self::start_with(replies, token, page, None)
    }

    /// Over TLS with the certificate and key of tests/fixtures/tls (signed by its ca.pem).
    pub fn start_tls(replies: Vec<Reply>, token: &str) -> ApiServer {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let cert = CertificateDer::from_pem_file(fixture("tls/server.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_file(fixture("tls/server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        Self::start_with(replies, token, 500, Some(Arc::new(config)))
    }

    fn start_with(
        replies: Vec<Reply>,
        token: &str,
        page: usize,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let token = token.to_string();
        // Ends with the test process; it only ever answers this test's installer.
        thread::spawn(move || {
            let lists = Arc::new(Mutex::new(0usize));
            let replies = Arc::new(replies);
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (replies, token, lists, log) =
                    (replies.clone(), token.clone(), lists.clone(), log.clone());
                let tls = tls.clone();
                // A thread per connection: a client keeping one open must not block the next.
                thread::spawn(move || match tls {
                    None => serve(conn, &replies, &token, page, &lists, &log),
                    Some(config) => {
                        let session = rustls::ServerConnection::new(config).unwrap();
                        let stream = rustls::StreamOwned::new(session, conn);
                        serve(stream, &replies, &token, page, &lists, &log)
                    }
                });
            }
        });
        ApiServer { addr, requests }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve<S: Read + Write>(
    conn: S,
    replies: &[Reply],
    token: &str,
    page: usize,
    lists: &Mutex<usize>,
    log: &Mutex<Vec<Request>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut authorization = None;
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.to_ascii_lowercase().as_str() {
                    "authorization" => authorization = Some(v.trim().to_string()),
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        log.lock().unwrap().push(Request {
            target: target.clone(),
            authorization: authorization.clone(),
        });

        let (status, body) = answer(
            &target,
            authorization.as_deref(),
            replies,
            token,
            page,
            lists,
        );
        let reason = match status {
            200 => "OK",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            _ => "Error",
        };
        let conn = reader.get_mut();
        write!(
            conn,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        conn.write_all(body.as_bytes())?;
        conn.flush()?;
    }
}

fn status_body(code: u16, msg: &str) -> String {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": msg, "code": code})
    .to_string()
}

fn answer(
    target: &str,
    authorization: Option<&str>,
    replies: &[Reply],
    token: &str,
    page: usize,
    lists: &Mutex<usize>,
) -> (u16, String) {
    if authorization != Some(&format!("Bearer {token}")) {
        return (401, status_body(401, "Unauthorized"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/api/v1/nodes" {
        return (404, status_body(404, &format!("no route {path}")));
    }
    let params: BTreeMap<&str, &str> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    // Continue tokens are "<list>-<offset>", percent-encoding-free on purpose to stay simple.
    let (list, offset) = match params.get("continue") {
        Some(c) => {
            let (l, o) = c.split_once('-').expect("continue token");
            (l.parse::<usize>().unwrap(), o.parse::<usize>().unwrap())
        }
        None => {
            let mut n = lists.lock().unwrap();
            *n += 1;
            (*n, 0)
        }
    };
    let reply = &replies[(list - 1).min(replies.len() - 1)];
    let text = match reply {
        Reply::Status(code, msg) => return (*code, status_body(*code, msg)),
        Reply::Nodes(text) => text,
    };
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    let items = v["items"].as_array().unwrap().clone();
    let end = (offset + page).min(items.len());
    v["items"] = serde_json::Value::Array(items[offset..end].to_vec());
    if end < items.len() {
        v["metadata"]["continue"] = format!("{list}-{end}").into();
    }
    (200, v.to_string())
}
