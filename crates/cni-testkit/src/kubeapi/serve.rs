//! One connection: requests in a keep-alive loop, routed to list, get or watch.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::http::{self, Conn, ReadError, Request};
use super::query::{is_watch, Failure, ListQuery, WatchQuery};
use super::store::Page;
use super::{watch, ApiRequest, Shared};

/// What a request is answered with.
enum Answer {
    Body {
        code: u16,
        headers: &'static str,
        body: Vec<u8>,
    },
    Watch(WatchQuery),
}

impl Answer {
    fn failure((code, message): Failure) -> Answer {
        Answer::status(http::status(code, &message))
    }

    fn status(status: Value) -> Answer {
        let code = status["code"].as_u64().map_or(500, |c| c as u16);
        let headers = if matches!(code, 429 | 503) {
            "Retry-After: 1\r\n"
        } else {
            ""
        };
        Answer::Body {
            code,
            headers,
            body: status.to_string().into_bytes(),
        }
    }

    fn ok(body: Vec<u8>) -> Answer {
        Answer::Body {
            code: 200,
            headers: "",
            body,
        }
    }

    fn code(&self) -> u16 {
        match self {
            Answer::Body { code, .. } => *code,
            Answer::Watch(_) => 200,
        }
    }
}

/// Serves the connection until the client closes it, asks to, or the server restarts (a
/// change of `epoch`).
pub(super) fn connection(shared: Arc<Shared>, stream: TcpStream, id: u64, epoch: u64) {
    let mut conn = Conn::new(stream);
    loop {
        let req = match conn.read_request() {
            Ok(Some(req)) => req,
            Ok(None) | Err(ReadError::Io) => break,
            Err(ReadError::Bad(code, message)) => {
                shared.record(ApiRequest {
                    method: String::new(),
                    path: String::new(),
                    query: Vec::new(),
                    watch: false,
                    status: code,
                });
                let body = http::status(code, &message).to_string();
                let _ = http::write_response(&conn.stream, code, "", body.as_bytes(), false);
                break;
            }
        };
        if shared.lock().epoch != epoch {
            break;
        }
        match handle(&shared, &mut conn, &req, id, epoch) {
            Ok(true) if req.keep_alive => {}
            _ => break,
        }
    }
    let _ = conn.stream.shutdown(Shutdown::Both);
    shared.unregister(id);
}

/// Answers one request; whether the connection may carry another.
fn handle(
    shared: &Shared,
    conn: &mut Conn,
    req: &Request,
    id: u64,
    epoch: u64,
) -> io::Result<bool> {
    let answer = decide(shared, req);
    shared.record(ApiRequest {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        watch: route(&req.path).is_some_and(|(_, w)| w) || is_watch(req).unwrap_or(false),
        status: answer.code(),
    });
    let delay = shared.lock().delay;
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    match answer {
        Answer::Body {
            code,
            headers,
            body,
        } => {
            http::write_response(&conn.stream, code, headers, &body, req.keep_alive)?;
            Ok(true)
        }
        Answer::Watch(q) => watch::run(shared, &conn.stream, &q, req.keep_alive, id, epoch),
    }
}

/// `/api/v1/nodes[/NAME]` or the legacy `/api/v1/watch/nodes[/NAME]`: the name if any and
/// whether the path itself asks for a watch.
fn route(path: &str) -> Option<(Option<&str>, bool)> {
    let (rest, watch) = match path.strip_prefix("/api/v1/watch/nodes") {
        Some(rest) => (rest, true),
        None => (path.strip_prefix("/api/v1/nodes")?, false),
    };
    match rest {
        "" | "/" => Some((None, watch)),
        _ => {
            let name = rest.strip_prefix('/')?.trim_end_matches('/');
            (!name.is_empty() && !name.contains('/')).then_some((Some(name), watch))
        }
    }
}

fn decide(shared: &Shared, req: &Request) -> Answer {
    {
        let mut st = shared.lock();
        if st.fail.0 > 0 {
            st.fail.0 -= 1;
            let code = st.fail.1;
            let message = format!("injected failure {code} (FakeApi::fail_next)");
            return Answer::failure((code, message));
        }
    }
    if !authorized(req, &shared.token) {
        return Answer::failure((401, "Unauthorized".into()));
    }
    let Some((name, watch_path)) = route(&req.path) else {
        let message = "the server could not find the requested resource";
        return Answer::failure((404, message.into()));
    };
    if req.method != "GET" {
        let message = format!("{} is not supported by the fake API server", req.method);
        return Answer::failure((405, message));
    }
    let watch = match is_watch(req) {
        Ok(watch) => watch || watch_path,
        Err(failure) => return Answer::failure(failure),
    };
    let answer = if watch {
        WatchQuery::parse(req, name).map(Answer::Watch)
    } else if let Some(name) = name {
        Ok(get(shared, name))
    } else {
        ListQuery::parse(req, None).and_then(|q| shared.lock().store.list(&q).map(list_body))
    };
    answer.unwrap_or_else(Answer::failure)
}

fn authorized(req: &Request, token: &str) -> bool {
    let Some(value) = req.authorization.as_deref() else {
        return false;
    };
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    scheme.eq_ignore_ascii_case("bearer") && credentials.trim() == token
}

fn get(shared: &Shared, name: &str) -> Answer {
    match shared.lock().store.json(name) {
        Some(json) => {
            let mut body = Vec::with_capacity(json.len() + 32);
            body.extend_from_slice(br#"{"kind":"Node","apiVersion":"v1","#);
            body.extend_from_slice(&json[1..]);
            Answer::ok(body)
        }
        None => {
            let mut status = http::status(404, &format!("nodes {name:?} not found"));
            status["details"] = json!({ "name": name, "kind": "nodes" });
            Answer::status(status)
        }
    }
}

fn list_body(page: Page) -> Answer {
    let mut metadata = Map::new();
    metadata.insert(
        "resourceVersion".into(),
        json!(page.resource_version.to_string()),
    );
    if let Some(token) = page.continue_token {
        metadata.insert("continue".into(), json!(token));
    }
    if let Some(remaining) = page.remaining {
        metadata.insert("remainingItemCount".into(), json!(remaining));
    }
    let head = format!(
        r#"{{"kind":"NodeList","apiVersion":"v1","metadata":{},"items":["#,
        Value::Object(metadata)
    );
    let len = page.items.iter().map(|i| i.len() + 1).sum::<usize>();
    let mut body = Vec::with_capacity(head.len() + len + 2);
    body.extend_from_slice(head.as_bytes());
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    Answer::ok(body)
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn kubeapi_routes() {
        assert_eq!(route("/api/v1/nodes"), Some((None, false)));
        assert_eq!(route("/api/v1/nodes/"), Some((None, false)));
        assert_eq!(route("/api/v1/nodes/n1"), Some((Some("n1"), false)));
        assert_eq!(route("/api/v1/watch/nodes/n1"), Some((Some("n1"), true)));
        assert_eq!(route("/api/v1/nodes/n1/status"), None);
        assert_eq!(route("/api/v1/nodesx"), None);
        assert_eq!(route("/api/v1/pods"), None);
    }
}
