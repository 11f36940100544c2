//! HTTPS in front of the fake API server, as a cluster's API server serves it: TLS with the
//! certificate and key of tests/fixtures/tls (signed by its ca.pem) terminated here, the
//! plain bytes passed on to the fake server.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::fixture;

pub struct TlsFront {
    pub addr: SocketAddr,
    /// Connections whose handshake succeeded.
    handshakes: Arc<AtomicUsize>,
}

impl TlsFront {
    /// Listens on 127.0.0.1 and forwards every connection to `backend`.
    pub fn start(backend: SocketAddr) -> TlsFront {
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
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let count = handshakes.clone();
        // Ends with the test process; it only ever answers this test's client.
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (config, count) = (config.clone(), count.clone());
                thread::spawn(move || pump(conn, config, backend, &count));
            }
        });
        TlsFront { addr, handshakes }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

/// Both directions on one thread: rustls's stream has a single owner, so each side is read
/// with a short timeout in turn.
fn pump(
    conn: TcpStream,
    config: Arc<rustls::ServerConfig>,
    backend: SocketAddr,
    handshakes: &AtomicUsize,
) -> std::io::Result<()> {
    let mut session = rustls::ServerConnection::new(config).unwrap();
    let mut conn = conn;
    while session.is_handshaking() {
        session.complete_io(&mut conn)?;
    }
    handshakes.fetch_add(1, Ordering::SeqCst);
    let mut plain = TcpStream::connect(backend)?;
    let tick = Some(Duration::from_millis(5));
    conn.set_read_timeout(tick)?;
    plain.set_read_timeout(tick)?;
    let mut tls = rustls::StreamOwned::new(session, conn);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => plain.write_all(&buf[..n])?,
            Err(e) if idle(&e) => {}
            Err(e) => return Err(e),
        }
        match plain.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                tls.write_all(&buf[..n])?;
                tls.flush()?;
            }
            Err(e) if idle(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

fn idle(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}
