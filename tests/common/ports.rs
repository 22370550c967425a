//! Ports for the servers a test starts, reserved so that no one else takes them
//! between the moment a test picks one and the moment its child process binds it —
//! nor later, while a stopped server waits to be restarted on the same port.
//!
//! Two things used to take them. The kernel hands out ports of its ephemeral range
//! (32768–60999 here) to every `bind(0)` and every outgoing connection; and a test
//! process running beside this one (another test binary, another session's tests)
//! picks ports too. A server whose port was taken fails to bind and exits — and the
//! test then talks to whatever holds the port: another test's volume or index, which
//! answers. (Seen: an index restarted after a long rebalance answered 404 for every key,
//! and a test counted a third of its replica files missing.)
//!
//! So ports come from below the ephemeral range, and each is held by an exclusive
//! `flock` on a file in [`LOCK_DIR`] for the life of the test process (the kernel
//! drops the lock when the process dies, however it dies): no two processes, and no
//! two callers in one process, are ever given the same port.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::sync::Mutex;

/// Where the per-port lock files live (shared by every test process on the machine).
const LOCK_DIR: &str = "/tmp/hoard-test-ports";
/// The ports handed out: below the kernel's ephemeral range.
const RANGE: std::ops::Range<u16> = 20_000..32_000;

/// The locks this process holds, kept until it exits.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// Locks `port` for this process; `None` if another process (or an earlier caller
/// here) holds it.
fn lock(port: u16) -> Option<File> {
    std::fs::create_dir_all(LOCK_DIR).expect("create the port lock directory");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{LOCK_DIR}/{port}"))
        .expect("open a port lock file");
    // SAFETY: flock(2) on a descriptor we own.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    locked.then_some(file)
}

/// The first of `n` consecutive ports, reserved for this process until it exits and
/// free right now (nothing listens on them).
pub fn reserve(n: u16) -> u16 {
    for _ in 0..1000 {
        let base = RANGE.start + fastrand::u16(..RANGE.len() as u16 - n);
        let locks: Vec<File> = (0..n).map_while(|i| lock(base + i)).collect();
        if locks.len() < n as usize {
            continue;
        }
        let free = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            HELD.lock().unwrap_or_else(|p| p.into_inner()).extend(locks);
            return base;
        }
    }
    panic!("no run of {n} free ports in {RANGE:?}");
}
