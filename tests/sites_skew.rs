//! Two sites replicating to each other whose clocks disagree by minutes (libfaketime,
//! `FAKETIME_DONT_FAKE_MONOTONIC=1`), written through the native API and S3 — the
//! crossing writes and deletes of issue 27. Every request is recorded; after quiet a
//! checker compares the sites key by key (existence, bytes, content type, user
//! metadata, version) and checks the winners:
//!
//! * causal: each key is written on the fast-clock site, the change seen on the other,
//!   then written (S3 overwrite, native delete + put, or delete) there — the later
//!   change must win on both sites, whatever the clocks say;
//! * concurrent: four clients (native and S3 on each site) write and delete the same
//!   few keys at once — both sites must end identical, each key's state one a client
//!   wrote, with the same version on both.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{client, free_port, free_port_run, hoard_bin, wait_http, Proc};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Where libfaketime lives on Debian.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// Site B's clock offset (site A runs on the real clock).
const SKEW: &str = "+90s";
/// Keys of the causal phase (a third each: S3 overwrite, native delete + put, delete).
const CAUSAL_KEYS: usize = 24;
/// Keys of the concurrent phase, and operations per client.
const CROSSING_KEYS: usize = 6;
const CROSSING_OPS: usize = 12;
const DEADLINE: Duration = Duration::from_secs(60);

struct Site {
    name: &'static str,
    native: String,
    s3: String,
    _proc: Proc,
}

fn start_site(name: &'static str, dir: &Path, port: u16, peer: u16, skew: Option<&str>) -> Site {
    let s3_port = free_port();
    let mut cmd = vec!["env".to_string()];
    if let Some(offset) = skew {
        assert!(
            Path::new(LIBFAKETIME).exists(),
            "libfaketime is needed ({LIBFAKETIME}; scripts/test.sh installs it)"
        );
        cmd.push(format!("LD_PRELOAD={LIBFAKETIME}"));
        cmd.push(format!("FAKETIME={offset}"));
        cmd.push("FAKETIME_DONT_FAKE_MONOTONIC=1".into());
    }
    cmd.extend([
        hoard_bin().to_string(),
        "dev".into(),
        "--data".into(),
        dir.display().to_string(),
        "--port".into(),
        port.to_string(),
        "--s3-port".into(),
        s3_port.to_string(),
        "--replicate-to".into(),
        format!("http://127.0.0.1:{peer}"),
    ]);
    let proc = Proc::spawn(cmd, dir.with_extension("log"));
    let native = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{native}/-/health"));
    common::cluster::wait_listening(&format!("127.0.0.1:{s3_port}"));
    Site {
        name,
        native,
        s3: format!("http://127.0.0.1:{s3_port}"),
        _proc: proc,
    }
}

/// Runs S3 `ops` (see tests/s3/sites_ops.py) against `endpoint`, one process.
async fn s3_ops(endpoint: &str, ops: Vec<Value>) -> Vec<Value> {
    let endpoint = endpoint.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3/sites_ops.py");
        let mut child = common::die_with_test(&mut std::process::Command::new("python3"))
            .arg(script)
            .arg(&endpoint)
            .env("AWS_ACCESS_KEY_ID", "hoard")
            .env("AWS_SECRET_ACCESS_KEY", "hoardhoard")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 with boto3 (scripts/test.sh installs it)");
        let input = serde_json::to_vec(&ops).unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "sites_ops.py: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    })
    .await
    .unwrap()
}

/// One recorded request.
#[derive(Debug, Clone)]
struct Event {
    site: &'static str,
    front: &'static str,
    key: String,
    /// `put` or `delete`.
    op: &'static str,
    body: String,
    ct: String,
    ok: bool,
}

type History = std::sync::Arc<std::sync::Mutex<Vec<Event>>>;
/// Answers no case allows, found while the load ran.
type Problems = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

fn record(h: &History, e: Event) {
    h.lock().unwrap().push(e);
}

fn s3_put(key: &str, body: &str, site: &str) -> Value {
    json!({"op": "put", "key": key, "body": body, "ct": format!("text/{site}"),
           "meta": {"site": site, "body": body}})
}

/// Native `DELETE` then `PUT` of `/skew/<key>`: whether the PUT was stored, or the
/// unexpected answer (recorded as a problem; the write may or may not have happened).
async fn native_replace(base: &str, key: &str, body: &str) -> Result<bool, String> {
    let url = format!("{base}/skew/{key}");
    let del = client().delete(&url).send().await.unwrap().status();
    if !matches!(del.as_u16(), 204 | 404 | 409) {
        return Err(format!("DELETE {url}: {del}"));
    }
    let put = client()
        .put(&url)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    // 403: written again meanwhile (by replication); 409: a write in flight.
    match put.status().as_u16() {
        201 => Ok(true),
        403 | 409 => Ok(false),
        s => Err(format!(
            "PUT {url}: {s} {}",
            put.text().await.unwrap_or_default()
        )),
    }
}

async fn native_delete(base: &str, key: &str) -> Result<bool, String> {
    let url = format!("{base}/skew/{key}");
    let resp = client().delete(&url).send().await.unwrap();
    match resp.status().as_u16() {
        204 => Ok(true),
        404 | 409 => Ok(false),
        s => Err(format!(
            "DELETE {url}: {s} {}",
            resp.text().await.unwrap_or_default()
        )),
    }
}

/// The version a site holds for `key` (`None`: never seen), from the sites endpoint.
async fn version(site: &Site, key: &str) -> Option<Value> {
    let url = format!("{}/-/sites/apply/skew/{key}", site.native);
    let resp = client().get(&url).send().await.unwrap();
    match resp.status() {
        StatusCode::NOT_FOUND => None,
        StatusCode::OK => Some(resp.json::<Value>().await.unwrap()),
        s => panic!("GET {url}: {s}"),
    }
}

/// What a site holds for each key: the S3 view (existence, md5, body, type, metadata)
/// and the version.
async fn snapshot(site: &Site, keys: &[String]) -> BTreeMap<String, (Value, Option<Value>)> {
    let ops = keys
        .iter()
        .map(|k| json!({"op": "state", "key": k}))
        .collect();
    let states = s3_ops(&site.s3, ops).await;
    let mut out = BTreeMap::new();
    for (key, mut state) in keys.iter().zip(states) {
        assert_eq!(
            state["ok"], true,
            "state of {key} on {}: {state}",
            site.name
        );
        state.as_object_mut().unwrap().remove("ok");
        let v = version(site, key).await.map(|mut v| {
            // The version and whether it is a tombstone: what must agree.
            let keep = json!({"version": v["version"].take(), "deleted": v["deleted"].take()});
            keep
        });
        out.insert(key.clone(), (state, v));
    }
    out
}

async fn lag(site: &Site) -> u64 {
    let h = common::cluster::get_json(format!("{}/-/health", site.native)).await;
    h["sites"][0]["lag"]["entries"]
        .as_u64()
        .expect("lag entries")
}

/// Waits until neither site has changes left to ship, twice in a row.
async fn quiet(a: &Site, b: &Site) {
    let deadline = Instant::now() + DEADLINE;
    let mut calm = 0;
    while calm < 2 {
        assert!(Instant::now() < deadline, "replication never caught up");
        if lag(a).await == 0 && lag(b).await == 0 {
            calm += 1;
        } else {
            calm = 0;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Both sites' views of every key must be equal; the differences.
fn diverging(
    a: &BTreeMap<String, (Value, Option<Value>)>,
    b: &BTreeMap<String, (Value, Option<Value>)>,
) -> Vec<String> {
    let show = |v: Option<&(Value, Option<Value>)>| match v {
        Some((s, v)) if s["exists"] == true => format!(
            "{} ({}, {}) at {}",
            s["body"],
            s["ct"],
            s["meta"],
            v.as_ref().map_or(Value::Null, |v| v["version"].clone())
        ),
        Some((_, v)) => format!(
            "absent at {}",
            v.as_ref().map_or(Value::Null, |v| v["version"].clone())
        ),
        None => "nothing".into(),
    };
    a.iter()
        .filter(|(k, va)| b.get(*k) != Some(va))
        .map(|(k, va)| format!("{k} differs: A {} / B {}", show(Some(va)), show(b.get(k))))
        .collect()
}

/// A key's state must be one a recorded write of it made (or absent).
fn invented(history: &[Event], view: &BTreeMap<String, (Value, Option<Value>)>) -> Vec<String> {
    let mut out = Vec::new();
    for (key, (state, _)) in view {
        if state["exists"] != true {
            continue;
        }
        let body = state["body"].as_str().unwrap_or_default();
        let writer = history
            .iter()
            .find(|e| e.key == *key && e.op == "put" && e.body == body);
        match writer {
            None => out.push(format!("{key}: holds {body:?}, which nobody wrote")),
            Some(e) if e.front == "s3" && state["ct"] != e.ct.as_str() => out.push(format!(
                "{key}: {body:?} with content type {}, written as {}",
                state["ct"], e.ct
            )),
            Some(e) if e.front == "s3" && state["meta"]["body"] != body => {
                out.push(format!("{key}: {body:?} with metadata {}", state["meta"]))
            }
            Some(_) => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sites_with_skewed_clocks_converge_to_the_highest_version() {
    let tmp = tempfile::tempdir().unwrap();
    let pa = free_port_run(7);
    let pb = loop {
        let p = free_port_run(7);
        if p.abs_diff(pa) >= 7 {
            break p;
        }
    };
    let a = start_site("a", &tmp.path().join("a"), pa, pb, None);
    let b = start_site("b", &tmp.path().join("b"), pb, pa, Some(SKEW));
    for site in [&a, &b] {
        let made = s3_ops(&site.s3, vec![json!({"op": "mkbucket"})]).await;
        assert_eq!(made[0]["ok"], true, "{made:?}");
    }
    let history: History = Default::default();
    let answers: Problems = Default::default();
    causal(&a, &b, &history).await;
    crossing(&a, &b, &history, &answers).await;
    quiet(&a, &b).await;

    let mut keys: Vec<String> = (0..CAUSAL_KEYS).map(|k| format!("c{k}")).collect();
    keys.push("m0".into());
    keys.extend((0..CROSSING_KEYS).map(|k| format!("x{k}")));
    let view_a = snapshot(&a, &keys).await;
    let view_b = snapshot(&b, &keys).await;
    let history = history.lock().unwrap().clone();
    let mut problems = answers.lock().unwrap().clone();
    problems.extend(diverging(&view_a, &view_b));
    problems.extend(invented(&history, &view_a));
    problems.extend(causal_winners(&history, &view_a));
    assert!(
        problems.is_empty(),
        "{} problems after quiet (B's clock {SKEW}):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Each key written on B (fast clock), seen on A, then changed on A: A's change is the
/// later one and must win on both sites.
async fn causal(a: &Site, b: &Site, history: &History) {
    let mut ops_b = Vec::new();
    for k in 0..CAUSAL_KEYS {
        let key = format!("c{k}");
        let body = format!("b-first-{key}");
        if k % 3 == 1 {
            let ok = native_replace(&b.native, &key, &body).await;
            assert_eq!(ok, Ok(true), "first native PUT of {key} on B");
            let ok = true;
            record(history, event("b", "native", &key, "put", &body, ok));
        } else {
            ops_b.push(s3_put(&key, &body, "b"));
            record(history, event("b", "s3", &key, "put", &body, true));
        }
    }
    for r in s3_ops(&b.s3, ops_b).await {
        assert_eq!(r["ok"], true, "S3 PUT on B: {r}");
    }
    // B's clock really runs ahead: its versions are stamped a minute or more ahead.
    let held = version(b, "c0").await.expect("B holds c0");
    let ms = held["version"]["ms"]
        .as_u64()
        .or(held["ms"].as_u64())
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        ms > now + 60_000,
        "B's change of c0 at {ms}, now {now}: no skew"
    );
    // Seen on A: its change comes after B's.
    let deadline = Instant::now() + DEADLINE;
    for k in 0..CAUSAL_KEYS {
        let key = format!("c{k}");
        let want = format!("b-first-{key}");
        loop {
            let got = client()
                .get(format!("{}/skew/{key}", a.native))
                .send()
                .await
                .unwrap();
            if got.status() == StatusCode::FOUND || got.status() == StatusCode::OK {
                let loc = got.headers().get("location").cloned();
                let bytes = match loc {
                    Some(l) => client().get(l.to_str().unwrap()).send().await.unwrap(),
                    None => got,
                };
                if bytes.text().await.unwrap() == want {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "{key} never reached A");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut ops_a = Vec::new();
    for k in 0..CAUSAL_KEYS {
        let key = format!("c{k}");
        let body = format!("a-later-{key}");
        match k % 3 {
            0 => {
                ops_a.push(s3_put(&key, &body, "a"));
                record(history, event("a", "s3", &key, "put", &body, true));
            }
            1 => {
                let ok = native_replace(&a.native, &key, &body).await;
                assert_eq!(ok, Ok(true), "native delete + put of {key} on A");
                let ok = true;
                record(history, event("a", "native", &key, "put", &body, ok));
            }
            _ => {
                ops_a.push(json!({"op": "delete", "key": key}));
                record(history, event("a", "s3", &key, "delete", "", true));
            }
        }
    }
    // And a multipart object, which travels as one value with its ETag and metadata.
    let mut multipart = s3_put("m0", "a-multipart-m0", "a");
    multipart["op"] = json!("multipart");
    ops_a.push(multipart);
    record(
        history,
        event("a", "s3", "m0", "put", "a-multipart-m0", true),
    );
    for r in s3_ops(&a.s3, ops_a).await {
        assert_eq!(r["ok"], true, "S3 request on A: {r}");
    }
}

fn event(
    site: &'static str,
    front: &'static str,
    key: &str,
    op: &'static str,
    body: &str,
    ok: bool,
) -> Event {
    Event {
        site,
        front,
        key: key.to_string(),
        op,
        body: body.to_string(),
        ct: format!("text/{site}"),
        ok,
    }
}

/// In the causal phase, A's change (the last recorded for the key) is what both hold.
fn causal_winners(
    history: &[Event],
    view: &BTreeMap<String, (Value, Option<Value>)>,
) -> Vec<String> {
    let mut out = Vec::new();
    for k in 0..CAUSAL_KEYS {
        let key = format!("c{k}");
        let last = history.iter().rev().find(|e| e.key == key && e.ok).unwrap();
        assert_eq!(last.site, "a");
        let (state, _) = &view[&key];
        let holds = match last.op {
            "delete" => state["exists"] != true,
            _ => state["exists"] == true && state["body"] == last.body.as_str(),
        };
        if !holds {
            out.push(format!(
                "{key}: the later change ({} {} on A) lost: the sites hold {state}",
                last.front, last.op
            ));
        }
    }
    out
}

/// Four clients — native and S3 on each site — writing and deleting the same keys at
/// once.
async fn crossing(a: &Site, b: &Site, history: &History, answers: &Problems) {
    let mut tasks = Vec::new();
    for (site, name) in [(a, "a"), (b, "b")] {
        // S3: one batch of requests in one process.
        let mut ops = Vec::new();
        for i in 0..CROSSING_OPS {
            let key = format!("x{}", fastrand::usize(..CROSSING_KEYS));
            if fastrand::u8(..4) == 0 {
                ops.push(json!({"op": "delete", "key": key}));
            } else {
                ops.push(s3_put(&key, &format!("{name}-s3-{key}-{i}"), name));
            }
        }
        let endpoint = site.s3.clone();
        let h = history.clone();
        let p = answers.clone();
        tasks.push(tokio::spawn(async move {
            let results = s3_ops(&endpoint, ops.clone()).await;
            for (op, r) in ops.iter().zip(results) {
                let error = r["error"].as_str().unwrap_or_default();
                // A write in flight of the same key (OperationAborted) is an answer
                // S3 allows; anything else is not.
                if r["ok"] != true && !error.contains("OperationAborted") {
                    p.lock()
                        .unwrap()
                        .push(format!("S3 {op} on {name}: {error}"));
                }
                let key = op["key"].as_str().unwrap();
                let (kind, body) = match op["op"].as_str() {
                    Some("put") => ("put", op["body"].as_str().unwrap()),
                    _ => ("delete", ""),
                };
                record(&h, event(name, "s3", key, kind, body, r["ok"] == true));
            }
        }));
    }
    let native = |site: &Site, name: &'static str, h: History, p: Problems| {
        let base = site.native.clone();
        async move {
            for i in 0..CROSSING_OPS {
                let key = format!("x{}", fastrand::usize(..CROSSING_KEYS));
                if fastrand::u8(..4) == 0 {
                    let ok = native_delete(&base, &key).await;
                    record(
                        &h,
                        event(name, "native", &key, "delete", "", ok == Ok(true)),
                    );
                    if let Err(e) = ok {
                        p.lock().unwrap().push(e);
                    }
                } else {
                    let body = format!("{name}-native-{key}-{i}");
                    // Recorded before: a PUT whose answer is lost may still be stored.
                    record(&h, event(name, "native", &key, "put", &body, false));
                    match native_replace(&base, &key, &body).await {
                        Ok(true) => record(&h, event(name, "native", &key, "put", &body, true)),
                        Ok(false) => {}
                        Err(e) => p.lock().unwrap().push(e),
                    }
                }
            }
        }
    };
    tasks.push(tokio::spawn(native(
        a,
        "a",
        history.clone(),
        answers.clone(),
    )));
    tasks.push(tokio::spawn(native(
        b,
        "b",
        history.clone(),
        answers.clone(),
    )));
    for t in tasks {
        t.await.unwrap();
    }
}
