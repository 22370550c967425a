//! Helpers shared by the integration tests: running the real `hoard` binary on a free
//! port, waiting for it to answer, and raw HTTP for requests a client would normalize.
//!
//! Each test file includes this with `mod common;` and uses only some of it.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a freshly started process gets to answer its first request.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A port for a server this test starts: free now, and reserved for this process
/// until it exits (see [`ports`]), so nothing else takes it before or after the server
/// binds it — a server restarted later gets it back.
pub fn free_port() -> u16 {
    ports::reserve(1)
}

/// Polls `url` (`http://host:port/path`) with `HEAD` until it answers, and returns the
/// status of the first answer; `None` if nothing answered within `timeout`.
pub fn wait_for_url(url: &str, timeout: Duration) -> Option<u16> {
    let rest = url
        .strip_prefix("http://")
        .expect("url must start with http://");
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let req = format!("HEAD {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        if let Ok(res) = raw_request(addr, req.as_bytes()) {
            return Some(res.status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A response read off a raw connection. The body is as sent (not de-chunked).
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// Everything after the head.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` verbatim to `addr` (`host:port`) and reads the response until the
/// server closes the connection: include `Connection: close`.
pub fn raw_request(addr: &str, request: &[u8]) -> std::io::Result<RawResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request)?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    parse_response(&bytes)
}

fn parse_response(bytes: &[u8]) -> std::io::Result<RawResponse> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of response head"))?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(RawResponse {
        status,
        headers,
        body: bytes[end + 4..].to_vec(),
    })
}

/// Makes the child `cmd` starts die (SIGKILL) when the thread that starts it ends —
/// with the test process, even one killed with SIGKILL, which runs no destructor.
/// The servers the tests start would otherwise outlive it. (`ip netns exec` and `env`
/// exec without forking, so the signal still reaches the server they run.) Start
/// children only from threads that live as long as them: the test's own thread or a
/// runtime's workers, not `spawn_blocking`.
pub fn die_with_test(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: getpid before the fork; in the child only async-signal-safe calls.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then nobody will signal.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        })
    }
}

/// A running `hoard` process, killed when dropped.
#[derive(Debug)]
pub struct HoardProc {
    child: Child,
    port: u16,
}

impl HoardProc {
    /// Starts `hoard <args(port)>` on a free port and waits until `HEAD /` answers
    /// (any status). If the process exits first (say, the port was taken meanwhile),
    /// tries again with another port. `HOARD_LOG` defaults to warnings only.
    pub fn start(args: impl Fn(u16) -> Vec<String>) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let child = die_with_test(&mut Command::new(env!("CARGO_BIN_EXE_hoard")))
                .args(args(port))
                .env(
                    "HOARD_LOG",
                    std::env::var("HOARD_LOG").unwrap_or_else(|_| "hoard=warn".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("cannot run the hoard binary");
            let mut proc = Self { child, port };
            if proc.wait_ready() {
                return proc;
            }
        }
        panic!("hoard did not start after 5 tries");
    }

    /// Waits for the process to answer; false if it exited or never answered.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if wait_for_url(&self.url("/"), Duration::from_millis(200)).is_some() {
                return true;
            }
        }
        false
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port><path>`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HoardProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `hoard volume` serving a directory.
#[derive(Debug)]
pub struct VolumeProc {
    proc: HoardProc,
    dir: PathBuf,
    extra: Vec<String>,
}

impl VolumeProc {
    /// Starts a volume serving `dir` on 127.0.0.1.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// Starts a volume serving `dir` with extra arguments (e.g. `--fsync=false`, `-v`).
    pub fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let proc = spawn_volume(dir, &extra);
        Self {
            proc,
            dir: dir.to_path_buf(),
            extra,
        }
    }

    /// Kills the process and starts a new one on the same directory (on a new port).
    pub fn restart(&mut self) {
        self.proc.kill();
        self.proc = spawn_volume(&self.dir, &self.extra);
    }

    /// The directory served.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        self.proc.addr()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        self.proc.url(path)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.proc.port()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

fn spawn_volume(dir: &Path, extra: &[String]) -> HoardProc {
    let dir = dir.to_str().expect("test dir is not UTF-8").to_owned();
    HoardProc::start(|port| {
        let mut args: Vec<String> = ["volume", "--dir", &dir, "--bind", "127.0.0.1", "--port"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(port.to_string());
        args.extend(extra.iter().cloned());
        args
    })
}

pub mod browser;
pub mod cluster;
pub mod dev;
pub mod frontends;
pub mod ha;
pub mod history;
pub mod netns;
pub mod ports;
pub mod proxy;
pub mod workload;

/// Open file descriptors of process `pid`. Panics when `/proc` cannot tell: a check
/// against a limit must not pass because nothing was measured.
pub fn proc_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/fd: {e}"))
        .count()
}

/// The number in the `field:` line of `/proc/<pid>/status` (e.g. `Threads`, `VmRSS`
/// in KiB). Panics when the file or the field cannot be read.
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
}

/// Threads of process `pid` (panics when `/proc` cannot tell).
pub fn proc_threads(pid: u32) -> u64 {
    proc_status(pid, "Threads")
}

/// Resident memory of process `pid` in KiB (panics when `/proc` cannot tell).
pub fn proc_rss_kb(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
}

/// Runs each named `async fn(Kind)` test body twice: against native volumes and against
/// stock nginx volumes. Use with `#[macro_use] mod common;`.
#[allow(unused_macros)]
macro_rules! both_kinds {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn native() {
                super::$name(Kind::Native).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nginx() {
                super::$name(Kind::Nginx).await
            }
        }
    )*};
}

/// Uploads a native volume (process `pid`, data directory `dir`) has in progress: named
/// temp files in `<dir>/.hoard-tmp` plus [`unnamed_uploads`]. Panics if either cannot be
/// read (a test that cannot see uploads must not pass).
pub fn uploads_in_progress(dir: &Path, pid: u32) -> usize {
    let temp = dir.join(".hoard-tmp");
    let named = std::fs::read_dir(&temp)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", temp.display()))
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("put-"))
        .count();
    named + unnamed_uploads(dir, pid)
}

/// The unnamed (`O_TMPFILE`) upload files process `pid` holds open under `dir`:
/// `/proc/<pid>/fd` shows them as `<dir>/…/#<inode> (deleted)`.
pub fn unnamed_uploads(dir: &Path, pid: u32) -> usize {
    let root = std::fs::canonicalize(dir).expect("volume directory");
    let fds = format!("/proc/{pid}/fd");
    std::fs::read_dir(&fds)
        .unwrap_or_else(|e| panic!("cannot read {fds}: {e}"))
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| {
            let name = target.file_name().unwrap_or_default().to_string_lossy();
            target.starts_with(&root) && name.starts_with('#') && name.ends_with(" (deleted)")
        })
        .count()
}
