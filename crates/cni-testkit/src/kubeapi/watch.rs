//! Watch streams: history replayed from a version, then live events, chunked, one per line.

use std::io::{self, BufWriter, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http;
use super::query::{Filter, WatchQuery};
use super::store::{Event, Kind};
use super::Shared;

/// How often an idle watch checks that its client is still there.
const PEEK_EVERY: Duration = Duration::from_millis(250);

/// An open watch, counted in [`super::FakeApi::watchers`] until dropped.
struct Watch<'a> {
    shared: &'a Shared,
    conn: u64,
    id: u64,
    epoch: u64,
    /// Everything up to this version has been sent.
    cursor: u64,
    bookmarks_seen: u64,
    filter: Filter,
    /// `sendInitialEvents`: the first events end with a bookmark saying so.
    initial_end: bool,
}

/// What the stream does next.
enum Next {
    /// Send these (possibly none) and, if true, a bookmark.
    Send(Vec<Event>, bool),
    /// Nothing happened for a while: check the client.
    Idle,
    /// `timeoutSeconds` elapsed: end the stream, keep the connection.
    Timeout,
    /// The server restarts or goes down: end the stream and the connection.
    Restart,
}

/// Serves a watch on `stream`; whether the connection may carry another request.
pub(super) fn run(
    shared: &Shared,
    stream: &TcpStream,
    q: &WatchQuery,
    keep_alive: bool,
    conn: u64,
    epoch: u64,
) -> io::Result<bool> {
    let mut w = BufWriter::with_capacity(64 * 1024, stream);
    http::write_head(&mut w, 200, "", None, keep_alive)?;
    w.flush()?;
    let deadline = Instant::now() + q.timeout;
    shared.set_watching(conn, true);
    let (mut watch, first) = match Watch::open(shared, q, conn, epoch) {
        Ok(opened) => opened,
        Err(status) => {
            let event = serde_json::json!({ "type": "ERROR", "object": status }).to_string();
            http::write_chunk(&mut w, &[event.as_bytes(), b"\n"])?;
            http::write_last_chunk(&mut w)?;
            shared.set_watching(conn, false);
            return Ok(keep_alive);
        }
    };
    stream.set_read_timeout(Some(Duration::from_millis(1)))?;
    let ended = stream_events(&mut watch, &mut w, first, q.bookmarks, deadline);
    stream.set_read_timeout(None)?;
    ended.map(|restart| keep_alive && !restart)
}

/// Writes events until the watch ends: `Ok(true)` on a restart, `Ok(false)` on its timeout,
/// an error when the client is gone.
fn stream_events(
    watch: &mut Watch<'_>,
    w: &mut BufWriter<&TcpStream>,
    first: Vec<Event>,
    bookmarks: bool,
    deadline: Instant,
) -> io::Result<bool> {
    let mut next = first;
    if std::mem::take(&mut watch.initial_end) {
        for event in &next {
            write_event(w, event.kind, &event.json)?;
        }
        next.clear();
        write_bookmark(w, watch.cursor, true)?;
        w.flush()?;
    }
    let mut bookmark = false;
    loop {
        for event in &next {
            write_event(w, event.kind, &event.json)?;
        }
        if bookmark && bookmarks {
            write_bookmark(w, watch.cursor, false)?;
        }
        w.flush()?;
        match watch.next(deadline) {
            Next::Send(events, b) => (next, bookmark) = (events, b),
            Next::Idle => {
                client_still_there(w.get_ref())?;
                (next, bookmark) = (Vec::new(), false);
            }
            Next::Timeout => return http::write_last_chunk(w).map(|()| false),
            Next::Restart => return http::write_last_chunk(w).map(|()| true),
        }
    }
}

/// An error if the client closed its side (a watch has nothing to read from it).
fn client_still_there(stream: &TcpStream) -> io::Result<()> {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

impl<'a> Watch<'a> {
    /// Registers the watch and returns what it starts with, or the 410 Status for a version
    /// older than the compaction point.
    fn open(
        shared: &'a Shared,
        q: &WatchQuery,
        conn: u64,
        epoch: u64,
    ) -> Result<(Watch<'a>, Vec<Event>), Value> {
        let mut st = shared.lock();
        let replay_from = q.resource_version.filter(|_| !q.initial_events);
        if let Some(rv) = q.resource_version {
            if let Some((code, message)) = st.store.too_old(rv) {
                return Err(http::status(code, &message));
            }
        }
        let (first, cursor) = match replay_from {
            // A version in the future waits for the store to get there.
            Some(rv) => (
                st.store.events_after(rv, &q.filter),
                rv.max(st.store.resource_version),
            ),
            None => (
                st.store.current_as_added(&q.filter),
                st.store.resource_version,
            ),
        };
        st.watchers += 1;
        st.next_watch += 1;
        let id = st.next_watch;
        st.store.set_cursor(id, Some(cursor));
        let watch = Watch {
            shared,
            conn,
            id,
            epoch,
            cursor,
            bookmarks_seen: st.bookmarks,
            filter: q.filter.clone(),
            initial_end: q.initial_events && q.bookmarks,
        };
        Ok((watch, first))
    }

    /// Waits for something to send, the deadline, a restart or [`PEEK_EVERY`].
    fn next(&mut self, deadline: Instant) -> Next {
        let mut st = self.shared.lock();
        loop {
            if st.epoch != self.epoch {
                return Next::Restart;
            }
            let bookmark = st.bookmarks != self.bookmarks_seen;
            if st.store.resource_version > self.cursor || bookmark {
                let events = st.store.events_after(self.cursor, &self.filter);
                self.cursor = self.cursor.max(st.store.resource_version);
                self.bookmarks_seen = st.bookmarks;
                st.store.set_cursor(self.id, Some(self.cursor));
                return Next::Send(events, bookmark);
            }
            let now = Instant::now();
            if now >= deadline {
                return Next::Timeout;
            }
            let wait = (deadline - now).min(PEEK_EVERY);
            let (guard, timeout) = self
                .shared
                .changed
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            if timeout.timed_out() && wait == PEEK_EVERY {
                return Next::Idle;
            }
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.watchers -= 1;
            st.store.set_cursor(self.id, None);
        }
        self.shared.set_watching(self.conn, false);
    }
}

/// `{"type":"ADDED","object":{"kind":"Node","apiVersion":"v1",...}}` and a newline, in one chunk.
fn write_event(w: &mut impl Write, kind: Kind, json: &[u8]) -> io::Result<()> {
    let head = format!(
        r#"{{"type":"{}","object":{{"kind":"Node","apiVersion":"v1","#,
        kind.as_str()
    );
    http::write_chunk(w, &[head.as_bytes(), &json[1..], b"}\n"])
}

/// A BOOKMARK at `resource_version`; `initial_end` marks the end of `sendInitialEvents`.
fn write_bookmark(w: &mut impl Write, resource_version: u64, initial_end: bool) -> io::Result<()> {
    let annotations = if initial_end {
        r#","annotations":{"k8s.io/initial-events-end":"true"}"#
    } else {
        ""
    };
    let event = format!(
        r#"{{"type":"BOOKMARK","object":{{"kind":"Node","apiVersion":"v1","metadata":{{"resourceVersion":"{resource_version}"{annotations}}}}}}}"#
    );
    http::write_chunk(w, &[event.as_bytes(), b"\n"])
}
