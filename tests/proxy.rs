//! Unit tests of the partition proxy (`tests/common/proxy.rs`) against a loopback echo
//! server.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::Proxy;

/// An echo server on a free loopback port counting the connections it accepted;
/// stops when dropped.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (Arc::clone(&accepted), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            s.set_nonblocking(false).unwrap();
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 4096];
                                while let Ok(n) = s.read(&mut buf) {
                                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Echo {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends `msg` and reads the echo.
#[track_caller]
fn echo_roundtrip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

/// Whether the connection ends (EOF or reset) within 5 s.
fn ends(s: &mut TcpStream) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => return false,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Polls `ok` every 5 ms for up to 5 s.
fn eventually(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn forwards_both_ways() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    assert_ne!(proxy.addr(), echo.addr);
    assert_eq!(proxy.target(), echo.addr);
    let mut a = connect(proxy.addr());
    let mut b = connect(proxy.addr());
    echo_roundtrip(&mut a, b"hello");
    echo_roundtrip(&mut b, &vec![7u8; 200_000]);
    echo_roundtrip(&mut a, b"again");
    assert_eq!(echo.accepted(), 2);
    assert_eq!(proxy.connections_forwarded(), 2);
    // The proxy counts a chunk after writing it: the echo may arrive first.
    let want = 2 * (5 + 200_000 + 5);
    eventually("every byte counted", || proxy.bytes_forwarded() >= want);
    assert_eq!(proxy.bytes_forwarded(), want);
    assert_eq!(proxy.open_connections(), 2);
    // A client closing its side ends the forwarded connection.
    drop(a);
    eventually("the closed connection is forgotten", || {
        proxy.open_connections() == 1
    });
}

#[test]
fn cut_drops_existing_connections_and_blackholes_new_ones() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut before = connect(proxy.addr());
    echo_roundtrip(&mut before, b"ping");
    proxy.cut();
    assert!(proxy.is_cut());
    assert!(
        ends(&mut before),
        "a connection open at the cut survived it"
    );

    // A new connection is accepted by the proxy but reaches nothing and hears nothing.
    let mut during = connect(proxy.addr());
    during.write_all(b"anyone?").unwrap();
    eventually("the proxy holds the new connection", || {
        proxy.connections_blackholed() == 1
    });
    during
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    match during.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a connection made while cut got an answer: {other:?}"),
    }
    assert_eq!(
        echo.accepted(),
        1,
        "a connection made while cut reached the target"
    );

    proxy.heal();
    assert!(!proxy.is_cut());
    during
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(
        ends(&mut during),
        "the held connection was not closed at heal"
    );
    let mut after = connect(proxy.addr());
    echo_roundtrip(&mut after, b"pong");
    assert_eq!(echo.accepted(), 2);
    assert_eq!(proxy.connections_forwarded(), 2);
}

#[test]
fn target_down_closes_the_client_connection() {
    // A port nothing listens on.
    let target = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(target);
    let mut s = connect(proxy.addr());
    assert!(ends(&mut s));
    assert_eq!(proxy.connections_forwarded(), 0);
}

#[test]
fn dropping_the_proxy_closes_everything() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let addr = proxy.addr();
    let mut open = connect(addr);
    echo_roundtrip(&mut open, b"x");
    proxy.cut();
    let mut held = connect(addr);
    eventually("the proxy holds the new connection", || {
        proxy.connections_blackholed() == 1
    });
    proxy.heal();
    let mut open2 = connect(addr);
    echo_roundtrip(&mut open2, b"y");
    drop(proxy);
    assert!(ends(&mut open), "cut connection");
    assert!(ends(&mut held), "held connection");
    assert!(ends(&mut open2), "forwarded connection open at drop");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "the proxy still accepts after being dropped"
    );
}
