//! `deploy/compose.yaml` for real: the image built by `scripts/image.sh` (from the
//! binary under test), three index servers and three volumes brought up with
//! podman-compose, a write, the leader's container stopped, a write and reads through
//! the survivors, and everything torn down (containers, their data volumes, the image).
//!
//! Needs podman, runc and podman-compose (`./scripts/test.sh` installs them). Skipped,
//! with a message saying why, where they are missing or containers cannot run here, or
//! when `HOARD_SKIP_CONTAINERS=1`. Every name (compose project, image tag, data volumes)
//! is unique to the run, and every port is a free one.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cluster::{client, free_port, hoard_bin};
use serde_json::Value;

const SERVICES: [&str; 3] = ["index1", "index2", "index3"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A command's output, or `None` if it could not be started.
fn run(cmd: &mut Command) -> Option<Output> {
    cmd.output().ok()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The podman-compose command: on PATH, or pip's user install directory.
fn podman_compose() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from("podman-compose")];
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".local/bin/podman-compose"));
    }
    candidates
        .into_iter()
        .find(|c| run(Command::new(c).arg("--version")).is_some_and(|o| o.status.success()))
}

/// One compose project of this run: torn down, with its data and image, when dropped.
struct Project {
    name: String,
    image: String,
    compose: PathBuf,
    env: Vec<(String, String)>,
    _conf: tempfile::TempDir,
}

impl Project {
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn podman(&self) -> Command {
        let mut c = self.command(Path::new("podman"));
        c.args(["--runtime", "runc"]);
        c
    }

    fn compose(&self, args: &[&str]) -> Output {
        let mut c = self.command(&self.compose);
        c.args(["--podman-args=--runtime runc", "-p", &self.name, "-f"])
            .arg(repo().join("deploy/compose.yaml"))
            .args(args);
        run(&mut c).expect("podman-compose could not be started")
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for s in SERVICES {
            let out = self.compose(&["logs", "--tail", "30", s]);
            all.push_str(&format!("--- {s} ---\n{}\n", text(&out)));
        }
        all
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let down = self.compose(&["down", "-v", "-t", "5"]);
        if !down.status.success() {
            eprintln!("compose down failed: {}", text(&down));
        }
        let _ = run(self.podman().args(["rmi", "-f", &self.image]));
    }
}

/// Why containers cannot be tested here, or the podman-compose command.
fn usable() -> Result<PathBuf, String> {
    if std::env::var("HOARD_SKIP_CONTAINERS").is_ok_and(|v| v == "1") {
        return Err("HOARD_SKIP_CONTAINERS=1".into());
    }
    match run(Command::new("podman").arg("--version")) {
        Some(o) if o.status.success() => {}
        _ => return Err("podman is not installed (./scripts/test.sh installs it)".into()),
    }
    podman_compose().ok_or_else(|| {
        "podman-compose is not installed (./scripts/test.sh: pip install podman-compose)".into()
    })
}

/// The `raft` part of `/-/health` of the index server at `port`, if it answers.
async fn raft(port: u16) -> Option<Value> {
    let r = client()
        .get(format!("http://127.0.0.1:{port}/-/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    Some(v["raft"].clone())
}

/// Waits until the index servers on `ports` agree on a leader among them; its index in
/// `ports`.
async fn leader(ports: &[u16], p: &Project) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut seen = Vec::new();
        for &port in ports {
            seen.push(raft(port).await);
        }
        let leaders: Vec<Option<u64>> = seen
            .iter()
            .map(|r| r.as_ref().and_then(|r| r["leader_id"].as_u64()))
            .collect();
        if let Some(Some(id)) = leaders.first() {
            if leaders.iter().all(|l| *l == Some(*id)) {
                if let Some(i) = seen
                    .iter()
                    .position(|r| r.as_ref().and_then(|r| r["node_id"].as_u64()) == Some(*id))
                {
                    return i;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader among {ports:?}: {seen:?}\n{}",
            p.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the index server on `port` sees its three volumes up.
async fn volumes_up(port: u16, p: &Project) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client()
            .get(format!("http://127.0.0.1:{port}/-/health/ready"))
            .send()
            .await
        {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "volumes not up\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn put(port: u16, key: &str, body: &str) -> u16 {
    client()
        .put(format!("http://127.0.0.1:{port}/{key}"))
        .body(body.to_string())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// PUTs until the write is taken: a leader may still be settling its first commit.
/// A retry answered 403 (the key exists) means an earlier attempt committed after all;
/// the reads check the value either way.
async fn put_until_taken(port: u16, key: &str, body: &str, p: &Project) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match put(port, key, body).await {
            201 => return,
            403 if attempts > 1 => return,
            status => assert!(
                Instant::now() < deadline,
                "PUT {key}: {status}\n{}",
                p.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET through the 302 to a volume, as a client would.
async fn get(port: u16, key: &str) -> (u16, String) {
    hoard::tls::install_provider();
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = c
        .get(format!("http://127.0.0.1:{port}/{key}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_survives_losing_its_leader() {
    let compose = match usable() {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED compose_cluster_survives_losing_its_leader: {why}");
            return;
        }
    };
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let name = format!("hoardtest{}x{}", std::process::id(), millis % 1_000_000_000);
    let image = format!("localhost/hoard-test:{name}");
    // Hosts like ours refuse podman's default rlimits: a containers.conf of the run's
    // own says so, unless the caller named one.
    let conf = tempfile::tempdir().unwrap();
    let conf_file = conf.path().join("containers.conf");
    std::fs::write(&conf_file, "[containers]\ndefault_ulimits = []\n").unwrap();
    let mut env = vec![("HOARD_IMAGE".to_string(), image.clone())];
    if std::env::var_os("CONTAINERS_CONF").is_none() {
        env.push(("CONTAINERS_CONF".into(), conf_file.display().to_string()));
    }
    let mut ports = Vec::new();
    while ports.len() < 6 {
        let p = free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let var = if i < 3 {
            format!("HOARD_INDEX{}_PORT", i + 1)
        } else {
            format!("HOARD_VOLUME{}_PORT", i - 2)
        };
        env.push((var, p.to_string()));
    }
    let project = Project {
        name,
        image: image.clone(),
        compose,
        env,
        _conf: conf,
    };

    // The image, from the binary under test.
    let built = run(project.command(&repo().join("scripts/image.sh")).args([
        "--binary",
        hoard_bin(),
        "--tag",
        &image,
    ]))
    .expect("scripts/image.sh could not be started");
    assert!(built.status.success(), "image.sh failed:\n{}", text(&built));
    let probe = run(project.podman().args(["run", "--rm", &image, "--version"])).unwrap();
    if !probe.status.success() {
        eprintln!(
            "SKIPPED compose_cluster_survives_losing_its_leader: containers cannot run here:\n{}",
            text(&probe)
        );
        return;
    }
    assert!(
        String::from_utf8_lossy(&probe.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        text(&probe)
    );

    let up = project.compose(&["up", "-d"]);
    assert!(up.status.success(), "compose up failed:\n{}", text(&up));
    let index_ports = &ports[..3];
    let first = leader(index_ports, &project).await;
    volumes_up(index_ports[first], &project).await;
    assert_eq!(
        put(index_ports[first], "before", "written before").await,
        201
    );

    // Stop the leader's container; the other two elect a new leader.
    let stop = project.compose(&["stop", "-t", "10", SERVICES[first]]);
    assert!(stop.status.success(), "stop failed:\n{}", text(&stop));
    let survivors: Vec<u16> = index_ports
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, p)| *p)
        .collect();
    assert!(
        raft(index_ports[first]).await.is_none(),
        "the stopped leader still answers"
    );
    let second = survivors[leader(&survivors, &project).await];
    put_until_taken(second, "after", "written after", &project).await;
    for port in &survivors {
        assert_eq!(
            get(*port, "before").await,
            (200, "written before".to_string())
        );
        assert_eq!(
            get(*port, "after").await,
            (200, "written after".to_string())
        );
    }
}
