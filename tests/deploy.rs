//! The deployment files against the real binary: the systemd units (`systemd-analyze
//! verify`, and the binary started with exactly the units' environment), the Prometheus
//! alert rules and the Grafana dashboard (`promtool check rules`, and every metric they
//! name is exported by the binary's `/-/metrics`), and `scripts/release.sh`.

mod common;

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{client, free_port, free_port_run, hoard_bin, wait_http, Kind, Proc, Volume};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---- systemd ----

const UNITS: [&str; 2] = ["hoard-server.service", "hoard-volume@.service"];

/// The unit files with ExecStart pointing at the binary under test (systemd-analyze
/// checks that the executable exists), and an instance of the volume template.
fn staged_units(dir: &Path) -> Vec<PathBuf> {
    for unit in UNITS {
        let text =
            read(&format!("deploy/systemd/{unit}")).replace("/usr/local/bin/hoard", hoard_bin());
        std::fs::write(dir.join(unit), text).unwrap();
    }
    let instance = dir.join("hoard-volume@3001.service");
    std::os::unix::fs::symlink("hoard-volume@.service", &instance).unwrap();
    vec![dir.join("hoard-server.service"), instance]
}

#[test]
fn systemd_units_verify_clean() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIPPED systemd_units_verify_clean: systemd-analyze is not installed (./scripts/test.sh installs systemd)");
        return;
    };
    assert!(probe.status.success());
    let tmp = tempfile::tempdir().unwrap();
    let units = staged_units(tmp.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let text = output_text(&out);
    // systemd-analyze exits 0 on unknown keys and bad values ("…, ignoring"): any
    // message about our units is a failure. Messages about the host's own units are not
    // ours to judge.
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("hoard-")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{text}"
    );
}

#[test]
fn systemd_units_are_hardened_and_stop_gracefully() {
    for unit in UNITS {
        let text = read(&format!("deploy/systemd/{unit}"));
        let lines: BTreeSet<&str> = text.lines().map(str::trim).collect();
        for want in [
            "DynamicUser=yes",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=",
            "KillSignal=SIGTERM",
            "Restart=on-failure",
        ] {
            assert!(lines.contains(want), "{unit} lacks {want}");
        }
        let limit = lines
            .iter()
            .find_map(|l| l.strip_prefix("LimitNOFILE="))
            .unwrap_or_else(|| panic!("{unit} lacks LimitNOFILE"));
        assert!(limit.parse::<u64>().unwrap() >= 65536, "{unit}: {limit}");
        // Longer than the default --shutdown-grace (30 s), so a stop is never a SIGKILL
        // while requests drain.
        let stop = lines
            .iter()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .unwrap_or_else(|| panic!("{unit} lacks TimeoutStopSec"));
        assert!(stop.parse::<u64>().unwrap() > 30, "{unit}: {stop}");
    }
}

/// The `Environment=` settings of a unit, with `%i` and `%S` expanded.
fn unit_env(unit: &str, instance: &str, state: &Path) -> Vec<(String, String)> {
    read(&format!("deploy/systemd/{unit}"))
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .map(|kv| {
            let kv = kv
                .replace("%i", instance)
                .replace("%S", &state.display().to_string());
            let (k, v) = kv.split_once('=').expect("Environment=KEY=VALUE");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The subcommand of a unit's ExecStart (`hoard server` → `server`).
fn unit_command(unit: &str) -> Vec<String> {
    let text = read(&format!("deploy/systemd/{unit}"));
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/hoard"));
    words.map(str::to_string).collect()
}

fn spawn_unit(unit: &str, env: &[(String, String)], log: PathBuf) -> std::process::Child {
    Command::new(hoard_bin())
        .args(unit_command(unit))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// SIGTERM (the units' KillSignal), then the exit status within the units' stop timeout.
fn stop(child: &mut std::process::Child) -> bool {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(45);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_units_environment_runs_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let vport = free_port();
    let venv = unit_env("hoard-volume@.service", &vport.to_string(), &state);
    assert!(venv
        .iter()
        .any(|(k, v)| k == "HOARD_PORT" && *v == vport.to_string()));
    std::fs::create_dir_all(state.join(format!("hoard/volume-{vport}"))).unwrap();
    let mut volume = spawn_unit("hoard-volume@.service", &venv, tmp.path().join("v.log"));
    wait_http(&format!("http://127.0.0.1:{vport}/-/health"));

    let iport = free_port();
    let mut ienv = unit_env("hoard-server.service", "", &state);
    // What /etc/hoard/server.env would hold.
    ienv.push(("HOARD_VOLUMES".into(), format!("127.0.0.1:{vport}")));
    ienv.push(("HOARD_REPLICAS".into(), "1".into()));
    ienv.push(("HOARD_PORT".into(), iport.to_string()));
    std::fs::create_dir_all(state.join("hoard/index")).unwrap();
    let mut index = spawn_unit("hoard-server.service", &ienv, tmp.path().join("i.log"));
    let url = format!("http://127.0.0.1:{iport}");
    wait_http(&format!("{url}/-/health"));
    let deadline = Instant::now() + common::START_TIMEOUT;
    loop {
        let r = client()
            .put(format!("{url}/unit"))
            .body("via units")
            .send()
            .await;
        if r.as_ref().is_ok_and(|r| r.status() == 201) {
            break;
        }
        assert!(Instant::now() < deadline, "PUT never succeeded: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The index went where the unit says (StateDirectory), the value to the volume's.
    assert!(state
        .join("hoard/index")
        .read_dir()
        .unwrap()
        .next()
        .is_some());
    assert!(stop(&mut index), "index did not stop cleanly on SIGTERM");
    assert!(stop(&mut volume), "volume did not stop cleanly on SIGTERM");
    let log = std::fs::read_to_string(tmp.path().join("i.log")).unwrap();
    // HOARD_LOG_FORMAT=json: journald gets one JSON object per line.
    assert!(
        log.lines().all(|l| l.starts_with('{')),
        "non-JSON log line:\n{log}"
    );
}

// ---- Prometheus rules and the Grafana dashboard ----

fn promtool() -> &'static str {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("promtool is not installed: run ./scripts/test.sh, which installs it")
}

fn check_rules(path: &Path) {
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules:\n{}",
        output_text(&out)
    );
}

/// The PromQL expressions of the alert rules (`expr:` lines).
fn rule_exprs() -> Vec<String> {
    read("deploy/prometheus/hoard-alerts.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_string())
        .collect()
}

/// The PromQL expressions of every dashboard panel, Grafana's variables replaced by
/// values Prometheus accepts.
fn dashboard_exprs() -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/hoard-dashboard.json")).unwrap();
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out.into_iter()
        .map(|e| e.replace("$__rate_interval", "5m").replace("$job", ".*"))
        .collect()
}

/// Every `hoard_*` metric name in `exprs`, with histogram suffixes kept (a query names
/// `…_bucket`, which is what /metrics exports).
fn names(exprs: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in exprs {
        let bytes = e.as_bytes();
        let mut i = 0;
        while let Some(at) = e[i..].find("hoard_") {
            let start = i + at;
            let boundary = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let end = e[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(e.len(), |n| start + n);
            if boundary {
                out.insert(e[start..end].to_string());
            }
            i = end;
        }
    }
    out
}

#[test]
fn alert_rules_pass_promtool() {
    check_rules(&repo().join("deploy/prometheus/hoard-alerts.yml"));
    let exprs = rule_exprs();
    assert!(exprs.len() >= 6, "{exprs:?}");
    // The rules the deployment needs.
    let all = exprs.join("\n");
    for metric in [
        "hoard_volume_up",
        "hoard_raft_is_leader",
        "hoard_raft_apply_lag",
        "hoard_site_lag_seconds",
        "hoard_disk_free_bytes",
        "hoard_job_progress",
    ] {
        assert!(all.contains(metric), "no rule on {metric}");
    }
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool has no PromQL checker of its own: the queries become recording rules.
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 20, "{exprs:?}");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        // A JSON string is a valid YAML double-quoted scalar.
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    check_rules(&file);
}

/// Every metric name a `/-/metrics` text exports (samples, so histograms count with
/// their `_bucket`, `_sum` and `_count` series).
fn exported(text: &str, into: &mut BTreeSet<String>) {
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        into.insert(line[..end].to_string());
    }
}

async fn scrape(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// One binary-protocol HEALTH request (op 0x05, empty key); the answer's status byte.
fn proto_health(port: u16) -> u8 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[0x05, 0, 0]).unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).unwrap();
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_dashboard_name_is_exported() {
    let tmp = tempfile::tempdir().unwrap();
    // A second store receiving this one's changes (hoard_site_received_total).
    let site_port = free_port_run(7);
    let _site = Proc::spawn(
        vec![
            hoard_bin().into(),
            "dev".into(),
            "--data".into(),
            tmp.path().join("site").display().to_string(),
            "--port".into(),
            site_port.to_string(),
        ],
        tmp.path().join("site.log"),
    );
    let site = format!("http://127.0.0.1:{site_port}");
    wait_http(&format!("{site}/-/health"));

    // An index cluster member (of one) with every front-end and the cache on,
    // replicating to the site.
    let volumes: Vec<Volume> = (0..3)
        .map(|i| Volume::start(Kind::Native, tmp.path(), &format!("v{i}")))
        .collect();
    let names_list: Vec<String> = volumes.iter().map(|v| v.addr.clone()).collect();
    let port = free_port();
    let (tcp, json) = (free_port(), free_port());
    let index = Proc::spawn(
        [
            hoard_bin(),
            "server",
            "--node-id",
            "1",
            "--peers",
            &format!("1=127.0.0.1:{port}"),
            "--db",
            &tmp.path().join("db").display().to_string(),
            "--volumes",
            &names_list.join(","),
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--replicate-to",
            &site,
            "--tcp-port",
            &tcp.to_string(),
            "--json-port",
            &json.to_string(),
            "--cache-size",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        tmp.path().join("index.log"),
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{url}/-/health"));
    // Traffic on every path the queries look at: writes (replicated to the site),
    // reads, a miss, the JSON interface (cache fill and hit), the binary protocol.
    let deadline = Instant::now() + common::START_TIMEOUT;
    let mut written = 0;
    while written < 3 {
        let r = client()
            .put(format!("{url}/m/{written}"))
            .body(vec![b'x'; 100])
            .send()
            .await
            .unwrap();
        if r.status() == 201 {
            written += 1;
        } else {
            assert!(
                Instant::now() < deadline,
                "PUT: {}\n{}",
                r.status(),
                index.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let r = client().get(format!("{url}/m/0")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let r = client().get(format!("{url}/missing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let json_url = format!("http://127.0.0.1:{json}");
    for _ in 0..2 {
        let r = client()
            .get(format!("{json_url}/m/1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(proto_health(tcp), 0);
    // A verify job: the job series.
    let r = client()
        .post(format!("{url}/-/admin/verify"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = Instant::now() + common::START_TIMEOUT;
    loop {
        let s: serde_json::Value = client()
            .get(format!("{url}/-/admin/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["running"].is_null() && !s["last"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "verify did not finish: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The site has applied what was shipped to it.
    let deadline = Instant::now() + common::START_TIMEOUT;
    loop {
        let text = scrape(&format!("{site}/-/metrics")).await;
        if text.contains("hoard_site_received_total{") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing reached the site:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut have = BTreeSet::new();
    exported(&scrape(&format!("{url}/-/metrics")).await, &mut have);
    exported(
        &scrape(&format!("http://{}/-/metrics", volumes[0].addr)).await,
        &mut have,
    );
    exported(&scrape(&format!("{site}/-/metrics")).await, &mut have);

    let mut wanted = names(&rule_exprs());
    wanted.extend(names(&dashboard_exprs()));
    assert!(wanted.len() >= 20, "{wanted:?}");
    let missing: Vec<&String> = wanted.iter().filter(|n| !have.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named by the rules or the dashboard but not exported: {missing:?}\nexported: {have:?}"
    );
}

// ---- release tarball ----

#[test]
fn release_tarball_has_everything_and_its_checksum() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("dist");
    let out = Command::new(repo().join("scripts/release.sh"))
        .args(["--binary", hoard_bin(), "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "release.sh:\n{}", output_text(&out));
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("hoard-{version}-{}-linux", std::env::consts::ARCH);
    let tarball = out_dir.join(format!("{name}.tar.gz"));
    assert!(tarball.exists(), "{}", output_text(&out));

    let check = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&out_dir)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", output_text(&check));

    let list = Command::new("tar")
        .arg("tzf")
        .arg(&tarball)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    for file in [
        "bin/hoard",
        "VERSION",
        "README.md",
        "Containerfile",
        "scripts/image.sh",
        "deploy/compose.yaml",
        "deploy/systemd/hoard-server.service",
        "deploy/systemd/hoard-volume@.service",
        "deploy/grafana/hoard-dashboard.json",
        "deploy/prometheus/hoard-alerts.yml",
        "docs/OPERATIONS.md",
        "docs/ARCHITECTURE.md",
    ] {
        assert!(
            list.lines().any(|l| l == format!("{name}/{file}")),
            "{file} missing from the tarball:\n{list}"
        );
    }
    // The packaged binary runs and says what it is.
    let x = tmp.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    let untar = Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(untar.success());
    let v = Command::new(x.join(&name).join("bin/hoard"))
        .arg("--version")
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&v.stdout).into_owned();
    assert!(v.contains(version) && v.contains("commit "), "{v}");
    let recorded = std::fs::read_to_string(x.join(&name).join("VERSION")).unwrap();
    assert!(recorded.contains(v.trim()), "{recorded} vs {v}");

    // Built twice from the same inputs: the same bytes.
    let again = tmp.path().join("again");
    let out = Command::new(repo().join("scripts/release.sh"))
        .args(["--binary", hoard_bin(), "--out"])
        .arg(&again)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        std::fs::read(out_dir.join("SHA256SUMS")).unwrap(),
        std::fs::read(again.join("SHA256SUMS")).unwrap(),
        "the tarball is not reproducible"
    );
}
