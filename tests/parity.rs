//! Operator rough edges of issue 30, item 6, on the real binary: `hoard dev` derives
//! its front-end ports from `--port`; the metrics pass promtool with every front-end and
//! the cache on, and the cache gauge agrees with the health report; no colour codes in
//! logs that do not go to a terminal; offline ops pass a token to protected volumes;
//! `hoard compact` offline and online (writes and reads going on around it);
//! minikv's CLI spellings; `hoard --version` names the commit.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{client, free_port_run, hoard_bin, wait_http, Cluster, Kind, Proc};
use serde_json::Value;

/// `hoard dev` on `port` with `extra` flags; the process and its data directory.
fn dev(port: u16, extra: &[&str]) -> (Proc, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd: Vec<String> = vec![
        hoard_bin().into(),
        "dev".into(),
        "--data".into(),
        tmp.path().join("data").display().to_string(),
        "--port".into(),
        port.to_string(),
    ];
    cmd.extend(extra.iter().map(|s| s.to_string()));
    let proc = Proc::spawn(cmd, tmp.path().join("dev.log"));
    // The index port answers only once every front-end has been started.
    let url = format!("http://127.0.0.1:{port}/-/health");
    if common::wait_for_url(&url, common::START_TIMEOUT).is_none() {
        panic!("{url} did not come up:\n{}", proc.log_text());
    }
    (proc, tmp)
}

fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Polls the JSON interface's `/health` until the volumes are up; returns it.
async fn wait_volumes(json: &str) -> Value {
    let deadline = Instant::now() + common::START_TIMEOUT;
    loop {
        let h: Value = client()
            .get(format!("{json}/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if h["data"]["volumes_up"].as_u64() >= Some(3) {
            return h;
        }
        assert!(Instant::now() < deadline, "volumes not up: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dev_stores_side_by_side_and_front_ends_switch_off() {
    // Two stores 7 ports apart, nothing but --port given: every front-end of each is
    // on its own derived port (before, both tried S3 on 9000 and the second failed).
    let base = free_port_run(21);
    let (a, _ta) = dev(base, &[]);
    let (b, _tb) = dev(base + 7, &[]);
    for (p, port) in [(&a, base), (&b, base + 7)] {
        let s3 = client()
            .get(format!("http://127.0.0.1:{}/", port + 4))
            .send()
            .await
            .unwrap_or_else(|e| panic!("S3 not on --port + 4: {e}\n{}", p.log_text()));
        // Unsigned: S3 refuses it, with an S3 (XML) error.
        assert!(s3.status().is_client_error(), "{}", p.log_text());
        let body = s3.text().await.unwrap();
        assert!(body.contains("<Error>"), "{body}");
        assert!(accepts(port + 5), "binary protocol not on --port + 5");
        wait_volumes(&format!("http://127.0.0.1:{}", port + 6)).await;
    }

    // 0 switches each off.
    let off = base + 14;
    let (p, _t) = dev(
        off,
        &["--s3-port", "0", "--tcp-port", "0", "--json-port", "0"],
    );
    for port in [off + 4, off + 5, off + 6] {
        assert!(!accepts(port), "port {port} is listening\n{}", p.log_text());
    }
    let log = p.log_text();
    assert!(!log.contains("S3 API on"), "{log}");
}

/// `promtool check metrics` on `text`; panics with its complaints.
fn check_metrics(text: &str) {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("promtool is not installed: run ./scripts/test.sh, which installs it");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected the metrics:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the unlabelled sample `name`.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The index's metrics and the JSON interface's `/health`, after checking that the
/// index's own `/-/health` reports the same cache figures as the latter.
async fn metrics_and_health(port: u16) -> (String, Value) {
    let metrics = client()
        .get(format!("http://127.0.0.1:{port}/-/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let index: Value = client()
        .get(format!("http://127.0.0.1:{port}/-/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let health: Value = client()
        .get(format!("http://127.0.0.1:{}/health", port + 6))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(index["cache"], health["data"]["cache"], "{index}");
    (metrics, health)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_with_every_front_end_and_the_cache() {
    let port = free_port_run(7);
    let (_p, _t) = dev(port, &["--cache-size", "1"]);
    let json = format!("http://127.0.0.1:{}", port + 6);
    wait_volumes(&json).await;
    // Use every front-end: JSON writes and reads (a miss that fills the cache, then a
    // hit), a binary-protocol connection held open, an S3 request.
    for i in 0..3 {
        let r = client()
            .put(format!("{json}/doc{i}"))
            .body(format!(r#"{{"value": "value number {i}"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        for _ in 0..2 {
            let r = client().get(format!("{json}/doc{i}")).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    let _conn = std::net::TcpStream::connect(("127.0.0.1", port + 5)).unwrap();
    let _ = client()
        .get(format!("http://127.0.0.1:{}/", port + 4))
        .send()
        .await
        .unwrap();

    let (metrics, health) = metrics_and_health(port).await;
    check_metrics(&metrics);
    for name in [
        "hoard_cache_bytes",
        "hoard_cache_requests_total",
        "hoard_proto_connections",
    ] {
        assert!(
            metrics.contains(&format!("# HELP {name} ")),
            "{name}\n{metrics}"
        );
    }
    let held = health["data"]["cache"]["bytes"].as_f64().unwrap();
    assert!(held > 0.0, "{health}");
    assert_eq!(gauge(&metrics, "hoard_cache_bytes"), Some(held), "{health}");

    // A delete drops the entry: the gauge follows the health report down.
    let r = client()
        .delete(format!("{json}/doc0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (metrics, health) = metrics_and_health(port).await;
    check_metrics(&metrics);
    let after = health["data"]["cache"]["bytes"].as_f64().unwrap();
    assert!(after < held, "{health}");
    assert_eq!(
        gauge(&metrics, "hoard_cache_bytes"),
        Some(after),
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_have_no_colour_codes_off_a_terminal() {
    let port = free_port_run(7);
    let (p, _t) = dev(port, &["-v"]);
    let r = client()
        .get(format!("http://127.0.0.1:{port}/colour-probe"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The request's log line (stderr is a file here, not a terminal).
    let deadline = Instant::now() + common::START_TIMEOUT;
    let log = loop {
        let log = p.log_text();
        if log.contains("colour-probe") {
            break log;
        }
        assert!(Instant::now() < deadline, "no request line:\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!log.contains('\u{1b}'), "ANSI escape in the log:\n{log:?}");
}

/// `hoard verify|rebalance … --volumes <cluster's>` plus `extra`; exit status and stdout.
fn offline(c: &Cluster, op: &str, extra: &[&str]) -> (bool, String, String) {
    let volumes: Vec<&str> = c.volumes.iter().map(|v| v.addr.as_str()).collect();
    let out = Command::new(hoard_bin())
        .arg(op)
        .arg("--db")
        .arg(&c.db)
        .args(["--volumes", &volumes.join(",")])
        .args(extra)
        .env_remove("HOARD_AUTH_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_ops_pass_the_token_to_protected_volumes() {
    const TOKEN: &str = "offline-secret";
    let mut c = Cluster::start_with(
        Kind::Native,
        3,
        &["--auth-token", TOKEN, "--auth-mode", "all"],
        &["--auth-token", TOKEN],
    );
    c.wait_all_up().await;
    for i in 0..5 {
        let r = client()
            .put(format!("{}/tok/{i}", c.url))
            .bearer_auth(TOKEN)
            .body(vec![b'x'; 100 + i])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    assert!(c.index.terminate(), "index did not stop cleanly");

    // Without the token every replica read is refused (401): problems are reported.
    let (ok, stdout, stderr) = offline(&c, "verify", &["--deep"]);
    assert!(!ok, "verify passed without a token:\n{stdout}{stderr}");
    // With it, everything checks out.
    let (ok, stdout, stderr) = offline(&c, "verify", &["--deep", "--auth-token", TOKEN]);
    assert!(ok, "verify with the token failed:\n{stdout}{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let file = file.display().to_string();
    let (ok, stdout, stderr) = offline(&c, "rebalance", &["--auth-token-file", &file]);
    assert!(
        ok,
        "rebalance with the token file failed:\n{stdout}{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minikv_put_file_and_delete_spellings() {
    let port = free_port_run(7);
    let (_p, t) = dev(port, &[]);
    wait_volumes(&format!("http://127.0.0.1:{}", port + 6)).await;
    let url = format!("http://127.0.0.1:{port}");
    let file = t.path().join("value.txt");
    std::fs::write(&file, b"minikv spelling").unwrap();
    let run = |args: &[&str]| {
        Command::new(hoard_bin())
            .args(args)
            .args(["--url", &url])
            .output()
            .unwrap()
    };
    let put = run(&["put", "/mk", "--file", &file.display().to_string()]);
    assert!(put.status.success(), "{put:?}");
    let get = run(&["get", "/mk"]);
    assert!(get.status.success(), "{get:?}");
    assert_eq!(get.stdout, b"minikv spelling");
    let del = run(&["delete", "/mk"]);
    assert!(del.status.success(), "{del:?}");
    let get = run(&["get", "/mk"]);
    assert!(!get.status.success(), "still there after delete: {get:?}");
    // FILE and --file together are refused rather than silently picking one.
    let both = run(&["put", "/mk2", "a", "--file", "b"]);
    assert!(!both.status.success());
}

#[test]
fn version_names_the_git_commit() {
    let out = Command::new(hoard_bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match head {
        Ok(h) if h.status.success() => {
            let commit = String::from_utf8_lossy(&h.stdout).trim().to_string();
            assert!(
                text.contains(&format!("commit {commit}")),
                "{text} does not name HEAD {commit}"
            );
        }
        // A source tree without git (a release tarball): the commit is still printed.
        _ => assert!(text.contains("(commit "), "{text}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_register_with_a_url_like_kalavaras() {
    let c = Cluster::start(Kind::Native, 3, &[]);
    c.wait_all_up().await;
    let v4 = common::cluster::Volume::start(Kind::Native, c.tmp.path(), "v4");
    let v5 = common::cluster::Volume::start(Kind::Native, c.tmp.path(), "v5");
    let post = |body: String, json: bool| {
        let mut req = client()
            .post(format!("{}/-/admin/volumes", c.url))
            .body(body);
        if json {
            req = req.header("content-type", "application/json");
        }
        req.send()
    };
    // A plain-text URL, as a kalavara volume announces itself.
    let r = post(format!("http://{}\n", v4.addr), false).await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    // The JSON form.
    let r = post(format!(r#"{{"url": "http://{}/"}}"#, v5.addr), true)
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    // Not a volume URL: refused, nothing changes.
    let r = post("http://nowhere/".into(), false).await.unwrap();
    assert_eq!(r.status(), 400);
    let vols: Value = client()
        .get(format!("{}/-/admin/volumes", c.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = vols["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(listed.len(), 5, "{vols}");
    assert!(
        listed.contains(&v4.addr.as_str()) && listed.contains(&v5.addr.as_str()),
        "{vols}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_returns_free_pages_offline() {
    // Values kept in the index records (inline), so deleting them frees index pages.
    let mut c = Cluster::start(Kind::Native, 3, &["--inline-max", "60000"]);
    c.wait_all_up().await;
    let n = 120;
    for i in 0..n {
        let r = client()
            .put(format!("{}/big/{i}", c.url))
            .body(vec![b'a' + (i % 26) as u8; 50_000])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    for i in 1..n {
        let r = client()
            .delete(format!("{}/big/{i}", c.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let db = c.db.display().to_string();
    // The running server holds the file: refused, and nothing is touched.
    let busy = Command::new(hoard_bin())
        .args(["compact", "--db", &db])
        .output()
        .unwrap();
    assert!(!busy.status.success(), "compacted under a running server");
    assert!(c.index.terminate(), "index did not stop cleanly");

    let out = Command::new(hoard_bin())
        .args(["compact", "--db", &db])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let sizes: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (before, after) = (
        sizes["before_bytes"].as_u64().unwrap(),
        sizes["after_bytes"].as_u64().unwrap(),
    );
    // ~6 MB were written and all but 50 kB deleted.
    assert!(before > 4_000_000, "{sizes}");
    assert!(after < before / 4, "{sizes}");

    // The server opens the compacted index cleanly and serves what was kept.
    c.index.restart();
    common::cluster::wait_listening(c.addr());
    let health: Value = client()
        .get(format!("{}/-/health", c.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["index_recovered"], false, "{health}");
    assert_eq!(health["keys"]["live"], 1, "{health}");
    let r = client()
        .get(format!("{}/big/0", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 50_000);
}

/// `hoard compact --url URL` with `extra` flags: success, stdout, stderr.
fn compact_online_cli(url: &str, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(hoard_bin())
        .args(["compact", "--url", url])
        .args(extra)
        .env_remove("HOARD_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What one writer of the online-compaction test saw.
#[derive(Default)]
struct Seen {
    /// Keys whose PUT was acknowledged (201), with the value's fill byte and when.
    acked: Vec<(String, u8, Instant)>,
    /// Reads of acknowledged keys that returned them intact.
    reads: usize,
    /// Requests answered with anything else, or not at all.
    failures: Vec<String>,
}

/// PUTs `w/i` (inline values) and reads back an earlier one, counting acknowledged
/// PUTs in `count`, until three more PUTs after `stop` is set.
async fn write_and_read(
    url: String,
    w: usize,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
) -> Seen {
    let mut seen = Seen::default();
    let (mut i, mut after_stop) = (0usize, 0);
    while after_stop < 3 {
        if stop.load(Ordering::Relaxed) {
            after_stop += 1;
        }
        let key = format!("{url}/live/{w}/{i}");
        let fill = b'a' + (i % 26) as u8;
        match client()
            .put(&key)
            .bearer_auth(ONLINE_TOKEN)
            .body(vec![fill; 300])
            .send()
            .await
        {
            Ok(r) if r.status() == 201 => {
                seen.acked.push((key, fill, Instant::now()));
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => seen.failures.push(format!("PUT {key}: {}", r.status())),
            Err(e) => seen.failures.push(format!("PUT {key}: {e}")),
        }
        if let Some((key, fill, _)) = seen.acked.get(i / 2).cloned() {
            match client().get(&key).bearer_auth(ONLINE_TOKEN).send().await {
                Ok(r) if r.status() == 200 => {
                    let body = r.bytes().await.unwrap_or_default();
                    if body.len() == 300 && body.iter().all(|b| *b == fill) {
                        seen.reads += 1;
                    } else {
                        seen.failures.push(format!("GET {key}: wrong value"));
                    }
                }
                Ok(r) => seen.failures.push(format!("GET {key}: {}", r.status())),
                Err(e) => seen.failures.push(format!("GET {key}: {e}")),
            }
        }
        i += 1;
    }
    seen
}

const ONLINE_TOKEN: &str = "compact-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_online_while_writes_and_reads_go_on() {
    // Values kept in the index records (inline), so deleting them frees index pages.
    let mut c = Cluster::start(
        Kind::Native,
        3,
        &["--inline-max", "60000", "--auth-token", ONLINE_TOKEN],
    );
    c.wait_all_up().await;
    let n = 60;
    for i in 0..n {
        let r = client()
            .put(format!("{}/big/{i}", c.url))
            .bearer_auth(ONLINE_TOKEN)
            .body(vec![b'a' + (i % 26) as u8; 50_000])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    // Every other one deleted: holes in the file that only a compaction closes.
    for i in (1..n).step_by(2) {
        let r = client()
            .delete(format!("{}/big/{i}", c.url))
            .bearer_auth(ONLINE_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    // Without the token: refused, nothing done.
    let (ok, _, stderr) = compact_online_cli(&c.url, &[]);
    assert!(!ok, "compacted without the token");
    assert!(stderr.contains("401"), "{stderr}");

    let stop = Arc::new(AtomicBool::new(false));
    let counts: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::default()).collect();
    let writers: Vec<_> = counts
        .iter()
        .enumerate()
        .map(|(w, n)| {
            let run = write_and_read(c.url.clone(), w, Arc::clone(&stop), Arc::clone(n));
            tokio::spawn(run)
        })
        .collect();
    // Once every writer has had writes acknowledged, compact under them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while counts.iter().any(|n| n.load(Ordering::Relaxed) < 5) {
        assert!(Instant::now() < deadline, "writers did not get going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let url = c.url.clone();
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || compact_online_cli(&url, &["--token", ONLINE_TOKEN]))
            .await
            .unwrap();
    let finished = Instant::now();
    assert!(ok, "online compaction failed:\n{stdout}{stderr}");
    let sizes: Value = serde_json::from_str(stdout.trim()).unwrap();
    let (before, after) = (
        sizes["before_bytes"].as_u64().unwrap(),
        sizes["after_bytes"].as_u64().unwrap(),
    );
    // ~3 MB were written and half of it deleted.
    assert!(before > 2_000_000, "{sizes}");
    assert!(after < before * 3 / 4, "{sizes}");
    assert!(sizes["paused_ms"].as_f64().is_some(), "{sizes}");
    eprintln!(
        "online compaction: {sizes} in {:?}",
        finished.duration_since(started)
    );
    // Each writer goes on for three more writes, then stops.
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        let seen = w.await.unwrap();
        assert!(seen.failures.is_empty(), "{:?}", seen.failures);
        assert!(seen.reads > 0);
        assert!(
            seen.acked.iter().any(|(_, _, t)| *t < started),
            "no write acknowledged before the compaction"
        );
        assert!(
            seen.acked.iter().any(|(_, _, t)| *t > finished),
            "no write acknowledged after the compaction"
        );
        acked.extend(seen.acked);
    }

    eprintln!("{} writes acknowledged", acked.len());
    // Every acknowledged value reads back, also after a restart on the compacted file.
    for round in ["after the compaction", "after a restart"] {
        for (key, fill, _) in &acked {
            let r = client()
                .get(key)
                .bearer_auth(ONLINE_TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{key} {round}");
            let body = r.bytes().await.unwrap();
            assert!(
                body.len() == 300 && body.iter().all(|b| b == fill),
                "{key} {round}"
            );
        }
        for i in (0..n).step_by(2) {
            let r = client()
                .get(format!("{}/big/{i}", c.url))
                .bearer_auth(ONLINE_TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "big/{i} {round}");
            let body = r.bytes().await.unwrap();
            let fill = b'a' + (i % 26) as u8;
            assert!(
                body.len() == 50_000 && body.iter().all(|b| *b == fill),
                "big/{i} {round}"
            );
        }
        if round == "after the compaction" {
            assert!(c.index.terminate(), "index did not stop cleanly");
            c.index.restart();
            common::cluster::wait_listening(c.addr());
        }
    }
}

/// The volumes `GET /-/admin/volumes` of the index at `url` lists.
async fn listed_volumes(url: &str) -> Vec<String> {
    let Ok(r) = client().get(format!("{url}/-/admin/volumes")).send().await else {
        return Vec::new();
    };
    let v: Value = r.json().await.unwrap_or_default();
    v["volumes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_listed(url: &str, volume: &str, p: &Proc) {
    let deadline = Instant::now() + common::START_TIMEOUT;
    while !listed_volumes(url).await.iter().any(|v| v == volume) {
        assert!(
            Instant::now() < deadline,
            "{volume} never registered with {url}\n{}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_registers_itself_and_again_after_the_index_forgot_it() {
    const TOKEN: &str = "register-secret";
    let mut c = Cluster::start(Kind::Native, 3, &["--auth-token", TOKEN]);
    c.wait_all_up().await;
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let dir = c.tmp.path().join("v4");
    let volume = Proc::spawn(
        [
            hoard_bin(),
            "volume",
            "--dir",
            &dir.display().to_string(),
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--auth-token",
            TOKEN,
            // Two index URLs, the first one dead: the next is tried.
            "--register",
            &format!("http://127.0.0.1:{},{}", common::free_port(), c.url),
            "--advertise",
            &addr,
            "--register-every",
            "100ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        c.tmp.path().join("v4.log"),
    );
    wait_listed(&c.url, &addr, &volume).await;
    c.wait_volume(&addr, true).await;
    assert!(
        volume.log_text().contains("registered as"),
        "{}",
        volume.log_text()
    );

    // A new index (its membership lost with its directory) on the same address: the
    // volume registers again.
    assert!(c.index.terminate());
    let volumes: Vec<&str> = c.volumes.iter().map(|v| v.addr.as_str()).collect();
    let fresh = Proc::spawn(
        [
            hoard_bin(),
            "server",
            "--port",
            c.addr().rsplit(':').next().unwrap(),
            "--bind",
            "127.0.0.1",
            "--db",
            &c.tmp.path().join("db2").display().to_string(),
            "--volumes",
            &volumes.join(","),
            "--auth-token",
            TOKEN,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        c.tmp.path().join("index2.log"),
    );
    common::cluster::wait_listening(c.addr());
    wait_listed(&c.url, &addr, &fresh).await;
    assert_eq!(listed_volumes(&c.url).await.len(), 4);
}

#[test]
fn register_needs_an_address_to_advertise() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(hoard_bin())
        .args(["volume", "--dir"])
        .arg(tmp.path())
        .args([
            "--port",
            "1",
            "--bind",
            "0.0.0.0",
            "--register",
            "http://127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--advertise"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_interval_syncs_on_a_timer() {
    let tmp = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut v = Proc::spawn(
        [
            hoard_bin(),
            "volume",
            "--dir",
            &tmp.path().join("v").display().to_string(),
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--fsync",
            "interval=50ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        tmp.path().join("v.log"),
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{url}/-/health"));
    let r = client()
        .put(format!("{url}/ab/cd/value"))
        .body("synced later")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = client()
        .get(format!("{url}/ab/cd/value"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "synced later");
    // The timer runs: syncs are counted, and none failed.
    let deadline = Instant::now() + common::START_TIMEOUT;
    loop {
        let m = client()
            .get(format!("{url}/-/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let ok = m
            .lines()
            .find_map(|l| l.strip_prefix(r#"hoard_volume_syncs_total{result="ok"} "#))
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(!m.contains(r#"result="error""#), "{m}");
        if ok >= 2.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no syncs:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(v.terminate(), "volume did not stop cleanly");

    // Other spellings: minikv's and the old booleans are accepted (the volume then
    // stops at the next check, --register without --advertise); nonsense is refused.
    for (policy, ok) in [
        ("never", true),
        ("always", true),
        ("false", true),
        ("true", true),
        ("sometimes", false),
        ("interval=0s", false),
    ] {
        let out = Command::new(hoard_bin())
            .args(["volume", "--dir"])
            .arg(tmp.path().join("w"))
            .args([
                "--fsync",
                policy,
                "--bind",
                "0.0.0.0",
                "--register",
                "http://x:1",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(err.contains("--advertise"), ok, "{policy}: {err}");
        assert_eq!(err.contains("invalid value"), !ok, "{policy}: {err}");
    }
}
