//! Just enough HTTP/1.1 for a test double: requests read from a keep-alive connection, plain
//! and chunked responses, and the Status objects the API server answers errors with.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use serde_json::{json, Value};

/// Header blocks larger than this are refused (the real server's limit is about 1 MB; clients
/// send a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;
/// Request bodies are read and dropped (the fake only serves GETs); bigger ones are refused.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One parsed request.
#[derive(Debug)]
pub(super) struct Request {
    pub method: String,
    /// Percent-decoded, without the query.
    pub path: String,
    /// Decoded pairs in order; empty pairs (`?&watch=true`) are skipped.
    pub query: Vec<(String, String)>,
    pub authorization: Option<String>,
    /// Whether the connection stays open after the answer.
    pub keep_alive: bool,
}

impl Request {
    /// The first value of `key` in the query.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be read.
pub(super) enum ReadError {
    /// The peer closed the connection or the socket failed: nothing to answer.
    Io,
    /// Malformed: answer with this status and message, then close.
    Bad(u16, String),
}

/// A server side connection: the stream and what was read past the last request.
pub(super) struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// The next request; `Ok(None)` when the client closed the connection between requests.
    /// A request may arrive in any number of reads, and several may arrive in one.
    pub fn read_request(&mut self) -> Result<Option<Request>, ReadError> {
        let head_len = loop {
            if let Some(end) = find_head_end(&self.buf) {
                break end;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(ReadError::Bad(431, "request header too large".into()));
            }
            if !self.fill()? {
                return if self.buf.iter().all(u8::is_ascii_whitespace) {
                    Ok(None)
                } else {
                    Err(ReadError::Io)
                };
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_len]).into_owned();
        self.buf.drain(..head_len);
        let (request, body_len) = parse_head(&head).map_err(|m| ReadError::Bad(400, m))?;
        if body_len > MAX_BODY {
            return Err(ReadError::Bad(413, "request entity too large".into()));
        }
        while self.buf.len() < body_len {
            if !self.fill()? {
                return Err(ReadError::Io);
            }
        }
        self.buf.drain(..body_len);
        Ok(Some(request))
    }

    /// One read into the buffer; false on end of stream.
    fn fill(&mut self) -> Result<bool, ReadError> {
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(ReadError::Io),
            }
        }
    }
}

/// The length of the head including its blank line (CRLF CRLF, or bare LF LF from sloppy
/// clients), skipping blank lines before the request line as RFC 9112 allows.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let start = buf.iter().position(|b| !b.is_ascii_whitespace())?;
    let data = &buf[start..];
    let crlf = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = data.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let end = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some(start + end)
}

/// The request and the length of its body.
fn parse_head(head: &str) -> Result<(Request, usize), String> {
    let mut lines = head.trim_start().lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed request line {request_line:?}"));
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        other => return Err(format!("unsupported protocol {other:?}")),
    };
    let mut request = Request {
        method: method.to_string(),
        path: String::new(),
        query: Vec::new(),
        authorization: None,
        keep_alive: !http10,
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    request.path = percent_decode(path, false);
    request.query = parse_query(query);
    let mut body_len = 0;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "authorization" => request.authorization = Some(value.to_string()),
            "content-length" => {
                body_len = value
                    .parse()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?;
            }
            "transfer-encoding" if !value.eq_ignore_ascii_case("identity") => {
                return Err("chunked request bodies are not supported".into());
            }
            "connection" => {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        request.keep_alive = false;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        request.keep_alive = true;
                    }
                }
            }
            _ => {}
        }
    }
    Ok((request, body_len))
}

/// `a=1&b=x%3Dy&&c` as decoded pairs (`c` with an empty value).
pub(super) fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// `%XX` escapes (and `+` as a space in queries); invalid escapes are kept as they are.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The reason phrase of a status line.
fn phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// The `reason` the API server gives with a status code.
fn status_reason(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "",
    }
}

/// A `Status` object as the API server answers failures with.
pub(super) fn status(code: u16, message: &str) -> Value {
    let mut status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": status_reason(code), "code": code
    });
    if status_reason(code).is_empty() {
        status.as_object_mut().map(|s| s.remove("reason"));
    }
    status
}

/// A complete response with a body (`Content-Length`), flushed.
pub(super) fn write_response(
    stream: &TcpStream,
    code: u16,
    extra_headers: &str,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    let mut w = io::BufWriter::with_capacity(64 * 1024, stream);
    write_head(&mut w, code, extra_headers, Some(body.len()), keep_alive)?;
    w.write_all(body)?;
    w.flush()
}

/// The status line and headers: `Content-Length` when the length is known, else chunked.
pub(super) fn write_head(
    w: &mut impl Write,
    code: u16,
    extra_headers: &str,
    content_length: Option<usize>,
    keep_alive: bool,
) -> io::Result<()> {
    let length = match content_length {
        Some(n) => format!("Content-Length: {n}\r\n"),
        None => "Transfer-Encoding: chunked\r\n".to_string(),
    };
    let connection = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    write!(
        w,
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\n\
         Cache-Control: no-cache, private\r\n{extra_headers}{length}{connection}\r\n",
        phrase(code)
    )
}

/// One chunk made of `parts` (a chunk of zero length would end the body: never written here).
pub(super) fn write_chunk(w: &mut impl Write, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    debug_assert!(len > 0);
    write!(w, "{len:x}\r\n")?;
    for part in parts {
        w.write_all(part)?;
    }
    w.write_all(b"\r\n")
}

/// The last chunk: the body ends here and the connection may carry the next request.
pub(super) fn write_last_chunk(w: &mut impl Write) -> io::Result<()> {
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeapi_http_parse() {
        let head = "GET /api/v1/nodes?&watch=1&fieldSelector=metadata.name%3Dn%2B1+x HTTP/1.1\r\n\
                    Host: x\r\nAuthorization: Bearer t\r\nConnection: close\r\n\r\n";
        assert_eq!(find_head_end(head.as_bytes()), Some(head.len()));
        let (r, len) = parse_head(head).unwrap();
        assert_eq!(len, 0);
        assert_eq!(r.path, "/api/v1/nodes");
        assert_eq!(r.param("watch"), Some("1"));
        assert_eq!(r.param("fieldSelector"), Some("metadata.name=n+1 x"));
        assert_eq!(r.authorization.as_deref(), Some("Bearer t"));
        assert!(!r.keep_alive);
        assert_eq!(percent_decode("a%2", false), "a%2");
        assert_eq!(percent_decode("%41%", false), "A%");
        assert!(parse_head("GET / HTTP/2\r\n\r\n").is_err());
        assert_eq!(status(500, "x")["reason"], "InternalError");
        assert!(status(418, "x").get("reason").is_none());
    }
}
