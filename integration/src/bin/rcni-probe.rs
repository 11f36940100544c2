//! A connectivity probe for tests and the demo: `serve` answers every TCP connection with the
//! source address it saw, `ask` connects and prints that answer. Telling "reached" apart from
//! "reached, but NATed to another address" is what checks of a Kubernetes network need.
//!
//!   rcni-probe serve [PORT]            (default 7777; IPv4 and IPv6)
//!   rcni-probe ask ADDRESS [PORT] [TIMEOUT_MS]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port_at = |i: usize| -> u16 { args.get(i).and_then(|p| p.parse().ok()).unwrap_or(7777) };
    match args.get(1).map(String::as_str) {
        Some("serve") => serve(port_at(2)),
        Some("ask") => {
            let Some(addr) = args.get(2).and_then(|a| a.parse::<IpAddr>().ok()) else {
                usage()
            };
            let timeout = args.get(4).and_then(|t| t.parse().ok()).unwrap_or(2000);
            let port = port_at(3);
            match ask(SocketAddr::new(addr, port), Duration::from_millis(timeout)) {
                Ok(seen) => println!("{seen}"),
                Err(e) => {
                    eprintln!("rcni-probe: {addr}:{port}: {e}");
                    std::process::exit(1)
                }
            }
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: rcni-probe serve [PORT] | rcni-probe ask ADDRESS [PORT] [TIMEOUT_MS]");
    std::process::exit(2)
}

fn serve(port: u16) {
    // [::] takes IPv4 too (as ::ffff:a.b.c.d) on Linux's default bindv6only=0.
    let listener = TcpListener::bind(("::", port)).unwrap_or_else(|e| {
        eprintln!("rcni-probe: cannot listen on port {port}: {e}");
        std::process::exit(1)
    });
    for mut conn in listener.incoming().flatten() {
        if let Ok(peer) = conn.peer_addr() {
            let ip = match peer.ip() {
                IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(v6)),
                v4 => v4,
            };
            let _ = writeln!(conn, "{ip}");
        }
    }
}

fn ask(to: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&to, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text.trim().to_string())
}
