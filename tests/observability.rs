//! Metrics, health, logs, configuration precedence and graceful shutdown, on the real
//! binary.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::cluster::{client, free_port, hoard_bin, wait_http, Cluster, Kind, Proc};
use reqwest::StatusCode;

fn promtool() -> &'static str {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("promtool is not installed: run ./scripts/test.sh, which installs it")
}

/// `promtool check metrics` on `text`; panics with its complaints.
fn check_metrics(text: &str) {
    use std::io::Write;
    let mut child = Command::new(promtool())
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

async fn text(url: &str) -> String {
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.text().await.unwrap()
}

/// The value of the first sample of `name` whose labels contain all of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|lab| l.contains(lab)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_and_move() {
    let c = Cluster::start(Kind::Native, 3, &[]);
    let before = text(&format!("{}/-/metrics", c.url)).await;
    check_metrics(&before);
    for i in 0..5 {
        let r = client()
            .put(format!("{}/m/{i}", c.url))
            .body(vec![1u8; 1000])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = client().get(format!("{}/m/0", c.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let r = client()
        .get(format!("{}/missing", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let after = text(&format!("{}/-/metrics", c.url)).await;
    check_metrics(&after);
    let puts = sample(
        &after,
        "hoard_http_requests_total",
        &["method=\"PUT\"", "status=\"201\""],
    );
    assert_eq!(puts, Some(5.0), "{after}");
    assert_eq!(
        sample(
            &after,
            "hoard_http_requests_total",
            &["method=\"GET\"", "status=\"302\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, "hoard_http_requests_total", &["status=\"404\""]),
        Some(1.0)
    );
    assert_eq!(sample(&after, "hoard_keys", &["state=\"live\""]), Some(5.0));
    assert_eq!(sample(&after, "hoard_stored_bytes", &[]), Some(5000.0));
    assert_eq!(
        sample(
            &after,
            "hoard_http_received_bytes_total",
            &["role=\"index\""]
        ),
        Some(5000.0)
    );
    assert!(sample(&after, "hoard_replica_write_duration_seconds_count", &[]).unwrap() >= 5.0);
    assert!(
        sample(
            &after,
            "hoard_index_operation_duration_seconds_count",
            &["op=\"apply\""]
        )
        .unwrap()
            >= 10.0
    );
    assert_eq!(
        sample(&after, "hoard_volume_up", &[&c.volumes[0].addr]),
        Some(1.0)
    );

    // Background job progress: a verify's counters.
    let r = client()
        .post(format!("{}/-/admin/verify", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    c.wait_job().await;
    let jobs = text(&format!("{}/-/metrics", c.url)).await;
    check_metrics(&jobs);
    assert_eq!(sample(&jobs, "hoard_job_running", &[]), Some(0.0));
    assert_eq!(
        sample(
            &jobs,
            "hoard_job_progress",
            &["kind=\"verify\"", "counter=\"scanned\""]
        ),
        Some(5.0),
        "{jobs}"
    );

    // A volume's own metrics: requests, bytes and its disk.
    let vol = text(&format!("http://{}/-/metrics", c.volumes[0].addr)).await;
    check_metrics(&vol);
    assert_eq!(
        sample(
            &vol,
            "hoard_http_requests_total",
            &["role=\"volume\"", "method=\"PUT\""]
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &vol,
            "hoard_http_received_bytes_total",
            &["role=\"volume\""]
        ),
        Some(5000.0)
    );
    assert!(sample(&vol, "hoard_disk_free_bytes", &[]).unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_volumes() {
    let mut c = Cluster::start(Kind::Native, 3, &[]);
    let health = |c: &Cluster| {
        let url = format!("{}/-/health", c.url);
        async move { common::cluster::get_json(url).await }
    };
    let ready = |c: &Cluster| {
        let url = format!("{}/-/health/ready", c.url);
        async move { client().get(url).send().await.unwrap().status() }
    };
    // Every volume answered a probe (they are assumed up until then).
    c.wait_all_up().await;
    let h = health(&c).await;
    assert_eq!(h["role"], "index");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(h["index_recovered"], false);
    assert_eq!(h["keys"]["live"], 0);
    for v in h["volumes"].as_array().unwrap() {
        assert_eq!(v["up"], true);
        assert!(v["disk_free_bytes"].as_u64().unwrap() > 0, "{v}");
    }
    assert_eq!(ready(&c).await, StatusCode::OK);

    c.volumes[1].stop();
    let down = c.volumes[1].addr.clone();
    c.wait_volume(&down, false).await;
    // 2 of 3 volumes up with 3 replicas: not ready for writes.
    assert_eq!(ready(&c).await, StatusCode::SERVICE_UNAVAILABLE);
    c.volumes[1].restart();
    c.wait_volume(&down, true).await;
    assert_eq!(ready(&c).await, StatusCode::OK);
}

/// Which of `ports` the server answers on.
fn listening(ports: &[u16]) -> Vec<u16> {
    ports
        .iter()
        .copied()
        .filter(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        .collect()
}

#[test]
fn config_precedence_cli_env_file_default() {
    let tmp = tempfile::tempdir().unwrap();
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let conf = tmp.path().join("hoard.toml");
    std::fs::write(
        &conf,
        format!(
            "[server]\nport = {file_port}\nbind = \"127.0.0.1\"\ndb = \"{}\"\nvolumes = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\"]\n",
            tmp.path().join("db").display()
        ),
    )
    .unwrap();
    let start = |env: bool, flag: bool| {
        let mut cmd = Command::new(hoard_bin());
        cmd.args(["server", "--config"]).arg(&conf);
        if flag {
            cmd.args(["--port", &flag_port.to_string()]);
        }
        if env {
            cmd.env("HOARD_PORT", env_port.to_string());
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let k = Kill(child);
        let all = [file_port, env_port, flag_port];
        let deadline = std::time::Instant::now() + common::START_TIMEOUT;
        while std::time::Instant::now() < deadline {
            let up = listening(&all);
            if !up.is_empty() {
                drop(k);
                return up;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        panic!("server did not start");
    };
    assert_eq!(
        start(true, true),
        vec![flag_port],
        "flag beats env and file"
    );
    assert_eq!(start(true, false), vec![env_port], "env beats file");
    assert_eq!(start(false, false), vec![file_port], "file beats default");

    // Bad values fail at start-up and name the option.
    let out = Command::new(hoard_bin())
        .args(["server", "--config"])
        .arg(&conf)
        .args(["--voltimeout", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--voltimeout"));
    std::fs::write(&conf, "[server]\nreplicas = \"three\"\n").unwrap();
    let out = Command::new(hoard_bin())
        .args(["server", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--replicas"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --help documents defaults.
    let out = Command::new(hoard_bin())
        .args(["server", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("[default: 3]") && help.contains("HOARD_VOLTIMEOUT"),
        "{help}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_with_one_line_per_request() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = tmp.path().join("vol.log");
    let mut p = Proc::spawn(
        vec![
            hoard_bin().into(),
            "volume".into(),
            "-v".into(),
            "--log-format".into(),
            "json".into(),
            "--dir".into(),
            tmp.path().join("v").display().to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
        ],
        log,
    );
    wait_http(&format!("http://127.0.0.1:{port}/"));
    let r = client()
        .put(format!("http://127.0.0.1:{port}/aa/bb/x"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(p.terminate());
    let text = p.log_text();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let put = lines
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("PUT /aa/bb/x 201 5 "))
        })
        .unwrap_or_else(|| panic!("no request line in {text}"));
    assert_eq!(put["level"], "INFO");
}

/// An upload body: `chunks` chunks of 64 KiB, one every `every`.
fn slow_body(chunks: u64, every: Duration) -> reqwest::Body {
    let body = futures_util::stream::unfold(0u64, move |sent| async move {
        if sent >= chunks {
            return None;
        }
        tokio::time::sleep(every).await;
        Some((Ok::<_, std::io::Error>(vec![5u8; 64 << 10]), sent + 1))
    });
    reqwest::Body::wrap_stream(body)
}

/// Starts a PUT of `chunks` × 64 KiB at `url`, one chunk per `every` (with a
/// Content-Length when `sized`), then waits until the index holds its intent; the
/// upload's outcome when it ends.
async fn slow_put(
    c: &Cluster,
    url: String,
    chunks: u64,
    every: Duration,
    sized: bool,
) -> tokio::task::JoinHandle<Result<StatusCode, reqwest::Error>> {
    let body = slow_body(chunks, every);
    let upload = tokio::spawn(async move {
        let mut req = client().put(url);
        if sized {
            req = req.header("content-length", chunks * (64 << 10));
        }
        req.body(body).send().await.map(|r| r.status())
    });
    wait_writing(c).await;
    upload
}

/// Waits until the index holds the intent of a write in flight.
async fn wait_writing(c: &Cluster) {
    c.wait_health("an upload in flight", |h| {
        h["writes_in_flight"] == 1 && h["keys"]["writing"] == 1
    })
    .await;
}

/// SIGTERM while a large upload streams, with the default grace (30 s): the upload
/// finishes (201, readable afterwards), then the index closes cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_large_put_lets_it_complete() {
    let mut c = Cluster::start(Kind::Native, 3, &[]);
    // 32 MiB in about 1.3 s.
    let chunks = 512u64;
    let len = chunks * (64 << 10);
    let url = format!("{}/slow", c.url);
    let upload = slow_put(&c, url, chunks, Duration::from_millis(2), true).await;
    assert!(
        c.index.terminate(),
        "index did not exit cleanly:\n{}",
        c.index.log_text()
    );
    let outcome = upload.await.unwrap();
    assert!(
        matches!(outcome, Ok(StatusCode::CREATED)),
        "the upload was not let finish: {outcome:?}"
    );

    c.restart_index();
    let h: serde_json::Value = common::cluster::get_json(format!("{}/-/health", c.url)).await;
    assert_eq!(h["index_recovered"], false, "index was not closed cleanly");
    assert_eq!(h["keys"]["writing"], 0, "an intent was left behind: {h}");
    assert_eq!(h["keys"]["live"], 1, "{h}");
    let r = client()
        .get(format!("{}/slow", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let got = client().get(location).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().len() as u64, len);
}

/// SIGTERM while an upload streams that outlasts `--shutdown-grace`: the server exits
/// anyway; the write is cut off, nothing becomes visible (no key, no file on any
/// volume), and its intent is left, invisible, for repair — which rolls it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cuts_off_upload_beyond_grace() {
    let mut c = Cluster::start(Kind::Native, 3, &["--shutdown-grace", "1s"]);
    // 64 KiB every 50 ms for up to 60 s: far beyond the grace.
    let url = format!("{}/cut", c.url);
    let upload = slow_put(&c, url, 1200, Duration::from_millis(50), false).await;
    assert!(
        c.index.terminate(),
        "index did not exit after the grace:\n{}",
        c.index.log_text()
    );
    let outcome = upload.await.unwrap();
    assert!(
        !matches!(outcome, Ok(StatusCode::CREATED)),
        "a write cut off by the shutdown was acknowledged"
    );

    c.restart_index();
    let http = client();
    let h = c.health().await;
    assert_eq!(
        h["keys"]["writing"], 1,
        "the cut-off write left no intent: {h}"
    );
    assert_eq!(h["keys"]["live"], 0, "{h}");
    let got = http.get(format!("{}/cut", c.url)).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::NOT_FOUND);
    let list: serde_json::Value = common::cluster::get_json(format!("{}/?list", c.url)).await;
    assert_eq!(list["keys"], serde_json::json!([]));
    assert!(c.all_files().is_empty(), "{:?}", c.all_files());

    // Repair rolls the intent back; the key can be written again.
    c.wait_all_up().await;
    let last = c.repair().await;
    assert_eq!(last["counts"]["intents_rolled_back"], 1, "{last}");
    assert_eq!(c.health().await["keys"]["writing"], 0);
    let r = http
        .put(format!("{}/cut", c.url))
        .body("whole")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}
