//! Traffic between the test's namespaces: can one reach another, and with which source address
//! does a connection arrive (what masquerading is about).

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use cni_plugin::netns::NetNs;

use crate::Netns;

/// Pings `dst` from `ns` (IPv4 or IPv6), allowing up to 3 s for the first reply.
pub fn ping(ns: &Netns, dst: &str) -> bool {
    ns.exec("ping", &["-c", "1", "-w", "3", "-q", dst])
        .status
        .success()
}

/// The source address `to` sees when `from` opens a TCP connection to `dst` (an address of
/// `to`), or None if the connection cannot be made (no return path without masquerade).
pub fn source_seen(from: &Netns, to: &Netns, dst: &str, port: u16) -> Option<IpAddr> {
    let addr = SocketAddr::new(dst.parse().unwrap(), port);
    source_seen_via(from, to, addr, addr)
}

/// Like [`source_seen`], with the listener on `listen` and the client connecting to `connect`
/// (different when a port mapping translates one into the other).
pub fn source_seen_via(
    from: &Netns,
    to: &Netns,
    listen: SocketAddr,
    connect: SocketAddr,
) -> Option<IpAddr> {
    let listener = NetNs::open(&to.path())
        .unwrap()
        .run(|| TcpListener::bind(listen))
        .unwrap()
        .unwrap_or_else(|e| panic!("bind {listen} in {}: {e}", to.name()));
    listener.set_nonblocking(true).unwrap();
    let conn = NetNs::open(&from.path())
        .unwrap()
        .run(|| TcpStream::connect_timeout(&connect, Duration::from_millis(1500)))
        .unwrap();
    let Ok(_stream) = conn else {
        return None;
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match listener.accept() {
            Ok((_, peer)) => return Some(peer.ip()),
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("accept on {listen}: {e}"),
        }
    }
}
