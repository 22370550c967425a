//! A real cluster for tests: `hoard server` plus volume servers (native `hoard volume`
//! or stock nginx with WebDAV), each a separate process on free loopback ports.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which volume server implementation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `hoard volume`.
    Native,
    /// nginx with minikeyvalue's WebDAV configuration.
    Nginx,
}

/// The hoard binary under test: this build's, or `HOARD_TEST_BIN` (to show a test
/// failing against another build, such as one from before a fix).
pub fn hoard_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("HOARD_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_hoard").into())
    })
}

pub use super::free_port;

/// `n` consecutive ports, free now and reserved for this process until it exits
/// (see `ports`).
pub fn free_port_run(n: u16) -> u16 {
    super::ports::reserve(n)
}

/// Blocks until `addr` accepts TCP connections (works for HTTP and HTTPS), or panics
/// after the start timeout.
pub fn wait_listening(addr: &str) {
    let deadline = Instant::now() + super::START_TIMEOUT;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{addr} did not come up");
}

/// Blocks until `url` answers any HTTP status, or panics after the start timeout.
pub fn wait_http(url: &str) {
    if super::wait_for_url(url, super::START_TIMEOUT).is_none() {
        panic!("{url} did not come up");
    }
}

/// A child process killed when dropped.
pub struct Proc {
    child: Option<Child>,
    /// What to run again on restart.
    cmd: Vec<String>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `program args…`, stderr appended to `log`.
    pub fn spawn(cmd: Vec<String>, log: PathBuf) -> Proc {
        let mut p = Proc {
            child: None,
            cmd,
            log,
        };
        p.start();
        p
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = super::die_with_test(&mut Command::new(&self.cmd[0]))
            .args(&self.cmd[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.cmd));
        self.child = Some(child);
    }

    /// kill -9 and wait.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to 20 s for a clean exit; returns its exit status success.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Starts it again with the same command line.
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// Starts it again with `extra` arguments appended, this time only: a later
    /// [`Proc::restart`] runs the original command line.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.kill();
        let original = self.cmd.clone();
        self.cmd.extend(extra.iter().map(|s| s.to_string()));
        self.start();
        self.cmd = original;
    }

    /// Starts it again with environment variables `vars` (`NAME=value`) set, this
    /// time only. The command line must start with `env` (as [`super::dev::DevStore`]'s
    /// does).
    pub fn restart_env(&mut self, vars: &[&str]) {
        assert_eq!(self.cmd[0], "env", "{:?} sets no environment", self.cmd);
        self.kill();
        let original = self.cmd.clone();
        let at = 1..1;
        self.cmd.splice(at, vars.iter().map(|s| s.to_string()));
        self.start();
        self.cmd = original;
    }

    /// Waits up to `within` for the process to exit by itself; its status, or `None`
    /// if it is still running (or was never started).
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let status = self.child.as_mut()?.try_wait().ok().flatten();
            if let Some(status) = status {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One volume server of a test cluster.
pub struct Volume {
    /// `127.0.0.1:port`.
    pub addr: String,
    /// Its data directory.
    pub dir: PathBuf,
    /// The process.
    pub proc: Proc,
}

impl Volume {
    /// Starts a volume server of `kind` storing under `root/name`.
    pub fn start(kind: Kind, root: &Path, name: &str) -> Volume {
        Self::start_with(kind, root, name, &[])
    }

    /// Like [`Volume::start`], with extra `hoard volume` flags (native only; ignored for
    /// nginx).
    pub fn start_with(kind: Kind, root: &Path, name: &str, extra: &[&str]) -> Volume {
        let port = free_port();
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let addr = format!("127.0.0.1:{port}");
        let log = root.join(format!("{name}.log"));
        let cmd = match kind {
            Kind::Native => volume_command(&dir, "127.0.0.1", port)
                .into_iter()
                .chain(extra.iter().map(|s| s.to_string()))
                .collect(),
            Kind::Nginx => nginx_command(root, name, &dir, port),
        };
        let proc = Proc::spawn(cmd, log);
        wait_listening(&addr);
        Volume { addr, dir, proc }
    }

    /// Starts a native volume server on host `host` of `net`, port `port`, storing
    /// under `root/name`; waits until it listens (the caller's thread must reach it).
    pub fn start_netns(
        net: &super::netns::Net,
        host: &str,
        root: &Path,
        name: &str,
        port: u16,
    ) -> Volume {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let ip = net.ip(host).to_owned();
        let addr = format!("{ip}:{port}");
        let cmd = volume_command(&dir, &ip, port);
        let proc = Proc::spawn(
            net.command(host, &[], &cmd),
            root.join(format!("{name}.log")),
        );
        wait_listening(&addr);
        Volume { addr, dir, proc }
    }

    /// Stops the server (kill -9).
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.proc.restart();
        wait_listening(&self.addr);
    }

    /// Starts it again on the same port and directory with extra flags (native only),
    /// this time only.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.proc.restart_with(extra);
        wait_listening(&self.addr);
    }

    /// Every regular file under the volume, relative paths, hidden entries and
    /// nginx's temp directory excluded.
    pub fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.dir, &self.dir, &mut out);
        out.sort();
        out
    }
}

/// `hoard volume` storing in `dir`, serving `bind:port`, without fsync (nginx's parity).
fn volume_command(dir: &Path, bind: &str, port: u16) -> Vec<String> {
    vec![
        hoard_bin().to_string(),
        "volume".into(),
        "--dir".into(),
        dir.display().to_string(),
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        bind.to_string(),
        "--fsync=false".into(),
    ]
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    // Only a directory removed since its parent was read may be skipped: a count that
    // silently left out a directory it could not read would look like lost files.
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => panic!("reading {}: {e}", dir.display()),
    };
    for e in entries {
        let e = e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "nginx-tmp" {
            continue;
        }
        let path = e.path();
        let is_dir = e
            .file_type()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .is_dir();
        if is_dir {
            walk(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

fn nginx_command(root: &Path, name: &str, dir: &Path, port: u16) -> Vec<String> {
    let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is not installed: run ./scripts/test.sh, which installs it");
    let prefix = root.join(format!("{name}-nginx"));
    let tmp = dir.join("nginx-tmp");
    std::fs::create_dir_all(&prefix).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    // The one nginx volume configuration (shared with the scripts), with temp paths
    // kept inside the volume directory and a single process (to kill or SIGSTOP).
    let conf = include_str!("../../scripts/nginx-volume.conf")
        .replace("@PROCESS@", "master_process off; worker_processes 1;")
        .replace("@PREFIX@", &prefix.display().to_string())
        .replace("@TMP@", &tmp.display().to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@ROOT@", &dir.display().to_string());
    assert!(
        !conf.contains("@"),
        "unfilled placeholder in nginx-volume.conf"
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    vec![
        nginx.to_string(),
        "-e".into(),
        "stderr".into(),
        "-p".into(),
        prefix.display().to_string(),
        "-c".into(),
        conf_path.display().to_string(),
    ]
}

/// `hoard server` in front of `volumes`.
pub struct Cluster {
    /// Base URL of the index server.
    pub url: String,
    /// The index server process.
    pub index: Proc,
    /// The volumes.
    pub volumes: Vec<Volume>,
    /// Index database directory.
    pub db: PathBuf,
    /// Keeps every directory alive.
    pub tmp: tempfile::TempDir,
}

impl Cluster {
    /// `n` volumes of `kind`, replicas 3, subvolumes 10, plus `extra` server flags.
    pub fn start(kind: Kind, n: usize, extra: &[&str]) -> Cluster {
        Self::start_with(kind, n, &[], extra)
    }

    /// Like [`Cluster::start`], with extra `hoard volume` flags for native volumes.
    pub fn start_with(kind: Kind, n: usize, volume_extra: &[&str], extra: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let volumes: Vec<Volume> = (0..n)
            .map(|i| Volume::start_with(kind, tmp.path(), &format!("vol{i}"), volume_extra))
            .collect();
        let names: Vec<String> = volumes.iter().map(|v| v.addr.clone()).collect();
        Self::with_volumes(tmp, volumes, &names.join(","), extra)
    }

    /// An index server over already running `volumes`, told about `volume_list`.
    pub fn with_volumes(
        tmp: tempfile::TempDir,
        volumes: Vec<Volume>,
        volume_list: &str,
        extra: &[&str],
    ) -> Cluster {
        let db = tmp.path().join("db");
        Self::with_volumes_and_db(tmp, volumes, volume_list, &db, extra)
    }

    /// Like [`Cluster::with_volumes`], on an existing index database `db`.
    pub fn with_volumes_and_db(
        tmp: tempfile::TempDir,
        volumes: Vec<Volume>,
        volume_list: &str,
        db: &Path,
        extra: &[&str],
    ) -> Cluster {
        let port = free_port();
        let db = db.to_path_buf();
        let mut cmd: Vec<String> = vec![
            hoard_bin().into(),
            "server".into(),
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--db".into(),
            db.display().to_string(),
            "--volumes".into(),
            volume_list.into(),
        ];
        cmd.extend(extra.iter().map(|s| s.to_string()));
        let https = extra.contains(&"--tls-cert");
        let index = Proc::spawn(cmd, tmp.path().join("index.log"));
        let url = format!(
            "{}://127.0.0.1:{port}",
            if https { "https" } else { "http" }
        );
        wait_listening(&format!("127.0.0.1:{port}"));
        Cluster {
            url,
            index,
            volumes,
            db,
            tmp,
        }
    }

    /// kill -9 the index server and start it again on the same database.
    pub fn restart_index(&mut self) {
        self.index.restart();
        wait_listening(self.addr());
    }

    /// `127.0.0.1:<port>` of the index server.
    pub fn addr(&self) -> &str {
        self.url.split("://").nth(1).unwrap_or(&self.url)
    }

    /// `GET /-/admin/status`.
    pub async fn admin_status(&self) -> serde_json::Value {
        get_json(format!("{}/-/admin/status", self.url)).await
    }

    /// Polls until no background job runs; returns the last job's status.
    pub async fn wait_job(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.admin_status().await;
            if s["running"].is_null() && !s["last"].is_null() {
                return s["last"].clone();
            }
            assert!(Instant::now() < deadline, "job did not finish: {s}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs an online `verify --repair` with no grace period and waits for it; returns
    /// the finished job's status (asserted done).
    pub async fn repair(&self) -> serde_json::Value {
        let r = client()
            .post(format!("{}/-/admin/verify?repair=1&grace=0s", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
        let last = self.wait_job().await;
        assert_eq!(last["state"], "done", "{last}");
        last
    }

    /// `GET /-/health` of the index server.
    pub async fn health(&self) -> serde_json::Value {
        get_json(format!("{}/-/health", self.url)).await
    }

    /// Polls `/-/health` until `ok` holds for it (requests that fail, say while the
    /// server restarts, are retried) and returns that report; panics after 20 s,
    /// naming `what` and showing the last report.
    pub async fn wait_health(
        &self,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("{}/-/health", self.url);
        let mut last = serde_json::Value::Null;
        loop {
            if let Ok(r) = client().get(&url).send().await {
                if let Ok(h) = r.json::<serde_json::Value>().await {
                    if ok(&h) {
                        return h;
                    }
                    last = h;
                }
            }
            assert!(
                Instant::now() < deadline,
                "never {what}; last health: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the index reports volume `addr` (`host:port`) up — after a
    /// successful probe, not the initial assumption — or down.
    pub async fn wait_volume(&self, addr: &str, up: bool) {
        let what = format!("{addr} up={up}");
        self.wait_health(&what, |h| {
            volume_states(h)
                .iter()
                .any(|(a, is_up, seen)| a == addr && *is_up == up && (!up || *seen))
        })
        .await;
    }

    /// Waits until the index has probed every volume successfully and sees all up.
    pub async fn wait_all_up(&self) {
        self.wait_health("all volumes up", |h| {
            volume_states(h).iter().all(|(_, up, seen)| *up && *seen)
        })
        .await;
    }

    /// Every file on every volume, as `volume-index:path`.
    pub fn all_files(&self) -> Vec<String> {
        self.volumes
            .iter()
            .enumerate()
            .flat_map(|(i, v)| v.files().into_iter().map(move |f| format!("{i}:{f}")))
            .collect()
    }
}

/// `(server, up, probed successfully at least once)` of every volume in a health
/// report.
fn volume_states(health: &serde_json::Value) -> Vec<(String, bool, bool)> {
    health["volumes"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .map(|v| {
                    (
                        v["server"].as_str().unwrap_or_default().to_owned(),
                        v["up"] == true,
                        v["last_seen_ms"].as_u64().unwrap_or(0) > 0,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `GET url` (no redirects followed) and its body parsed as JSON.
pub async fn get_json(url: impl reqwest::IntoUrl) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A client that does not follow redirects.
pub fn client() -> reqwest::Client {
    // reqwest is built with rustls but no default crypto provider: install ring first.
    hoard::tls::install_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

/// Sends raw bytes (include `Connection: close`) and returns the response status.
pub fn raw_status(addr: &str, request: &[u8]) -> u16 {
    super::raw_request(addr, request)
        .unwrap_or_else(|e| panic!("raw request to {addr} failed: {e}"))
        .status
}
