//! A TCP proxy on a free loopback port forwarding to a target, which a test can
//! [`Proxy::cut`] (a partition: existing connections are dropped, new ones are accepted
//! and then hear nothing — a blackhole) and [`Proxy::heal`].
//!
//! Plain threads, independent of any async runtime: one accept thread (polling a
//! non-blocking listener every 5 ms so it notices the proxy being dropped) and two
//! copy threads per forwarded connection, which end when either side closes or the
//! proxy shuts the sockets. Dropping the proxy stops the accept thread and closes every
//! connection.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long connecting to the target may take before the client's connection is
/// closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A running proxy; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    state: Mutex<State>,
    /// Bytes forwarded, both directions.
    bytes: AtomicU64,
    /// Connections accepted and forwarded.
    forwarded: AtomicU64,
    /// Connections accepted while cut (held silent).
    blackholed: AtomicU64,
}

#[derive(Default)]
struct State {
    cut: bool,
    next_id: u64,
    /// Forwarded connections: (client side, target side).
    live: HashMap<u64, (TcpStream, TcpStream)>,
    /// Connections accepted while cut: never answered, closed at heal.
    held: Vec<TcpStream>,
}

impl Proxy {
    /// A proxy on `127.0.0.1:<free port>` forwarding to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("proxy-{}", addr.port()))
                .spawn(move || accept_loop(listener, target, shared))
                .expect("spawn the proxy thread")
        };
        Proxy {
            addr,
            target,
            shared,
            accept: Some(accept),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Partition: closes every forwarded connection; from now on new connections are
    /// accepted but never forwarded nor answered (they hang until healed).
    pub fn cut(&self) {
        let mut st = self.shared.lock();
        st.cut = true;
        for (_, (a, b)) in st.live.drain() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    /// Ends the partition: the connections held while cut are closed (their clients
    /// see the connection end and retry), and new connections are forwarded again.
    pub fn heal(&self) {
        let mut st = self.shared.lock();
        st.cut = false;
        for s in st.held.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Whether it is cut.
    pub fn is_cut(&self) -> bool {
        self.shared.lock().cut
    }

    /// Bytes forwarded so far, both directions together.
    pub fn bytes_forwarded(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Connections forwarded so far.
    pub fn connections_forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }

    /// Connections accepted while cut (blackholed) so far.
    pub fn connections_blackholed(&self) -> u64 {
        self.shared.blackholed.load(Ordering::Relaxed)
    }

    /// Forwarded connections open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.lock().live.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let mut st = self.shared.lock();
        for (_, (a, b)) in st.live.drain() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
        for s in st.held.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                let _ = client.set_nodelay(true);
                handle(client, target, &shared);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn handle(client: TcpStream, target: SocketAddr, shared: &Arc<Shared>) {
    if shared.lock().cut {
        shared.blackholed.fetch_add(1, Ordering::Relaxed);
        shared.lock().held.push(client);
        return;
    }
    // Connect outside the lock; a cut meanwhile is checked again below.
    let Ok(server) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
        return; // dropping `client` closes it: the target is down
    };
    let _ = server.set_nodelay(true);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let id = {
        let mut st = shared.lock();
        if st.cut {
            drop(server);
            shared.blackholed.fetch_add(1, Ordering::Relaxed);
            st.held.push(client);
            return;
        }
        st.next_id += 1;
        let id = st.next_id;
        match (client.try_clone(), server.try_clone()) {
            (Ok(a), Ok(b)) => {
                st.live.insert(id, (a, b));
            }
            _ => return,
        }
        id
    };
    shared.forwarded.fetch_add(1, Ordering::Relaxed);
    // Each direction on its own thread; the connection is forgotten when both end.
    let remaining = Arc::new(AtomicU64::new(2));
    for (from, to) in [(client, s2), (server, c2)] {
        let mine = Arc::clone(shared);
        let remaining = Arc::clone(&remaining);
        let spawned = std::thread::Builder::new()
            .name("proxy-copy".into())
            .spawn(move || {
                copy(from, to, &mine);
                if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    if let Some((a, b)) = mine.lock().live.remove(&id) {
                        let _ = a.shutdown(Shutdown::Both);
                        let _ = b.shutdown(Shutdown::Both);
                    }
                }
            });
        if spawned.is_err() {
            if let Some((a, b)) = shared.lock().live.remove(&id) {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Copies `from` → `to` until end of stream or an error; then half-closes `to` (an
/// error closes both directions of both sockets).
fn copy(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
