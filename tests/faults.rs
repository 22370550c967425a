//! Crashes and hangs under load, on the real binaries: kill -9 of the index server and
//! of a volume during a 16-way PUT/DELETE load, losing (replicas − 1) volumes, and a
//! volume frozen with SIGSTOP. Each test states the promise it checks.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{client, Cluster, Kind};
use hoard::placement::{key_from_path, key_path, Placement};
use reqwest::StatusCode;

/// The tests here load the machine and assert time bounds: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Concurrent writers in the load.
const WORKERS: usize = 16;
/// Value sizes the load cycles through (the key names the size).
const SIZES: [usize; 6] = [1, 700, 9_000, 70_000, 300_000, 1_000_000];

/// The value stored under `key`: deterministic, so any file on any volume can be
/// checked against it. The size is the number after the last `-` in the key.
fn value_for(key: &str) -> Vec<u8> {
    // Generated once per key: the checks compare every file with it, repeatedly.
    static CACHE: std::sync::Mutex<BTreeMap<String, Vec<u8>>> =
        std::sync::Mutex::new(BTreeMap::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let value = cache.entry(key.to_owned()).or_insert_with(|| {
        let size: usize = key.rsplit('-').next().unwrap().parse().unwrap();
        let seed = key
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut v = vec![0u8; size];
        rng.fill(&mut v);
        v
    });
    value.clone()
}

/// What the clients of a load saw.
#[derive(Debug, Default)]
struct Outcome {
    /// Keys that got 201.
    acked: BTreeSet<String>,
    /// Keys that got 204 to DELETE (after a 201).
    deleted: BTreeSet<String>,
    /// Keys whose PUT got a 5xx: must not be visible.
    refused: BTreeSet<String>,
    /// Keys whose request broke off (index gone): either state is fine, but a live key
    /// must be complete.
    doubtful: BTreeSet<String>,
    /// Anything else: a bug.
    unexpected: Vec<String>,
}

impl Outcome {
    fn merge(&mut self, o: Outcome) {
        self.acked.extend(o.acked);
        self.deleted.extend(o.deleted);
        self.refused.extend(o.refused);
        self.doubtful.extend(o.doubtful);
        self.unexpected.extend(o.unexpected);
    }
}

/// One writer: PUTs fresh keys of cycling sizes; every fourth step DELETEs one of its
/// acknowledged keys (keeping at least three). Runs until `stop`.
async fn worker(url: String, w: usize, stop: Arc<AtomicBool>) -> Outcome {
    let http = client();
    let mut out = Outcome::default();
    let mut mine: Vec<String> = Vec::new();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        if i % 4 == 0 && mine.len() > 3 {
            let key = mine.remove(fastrand::usize(..mine.len()));
            match http.delete(format!("{url}{key}")).send().await {
                Ok(r) if r.status() == StatusCode::NO_CONTENT => {
                    out.acked.remove(&key);
                    out.deleted.insert(key);
                }
                // The delete could not finish (a replica volume is down): the key is
                // invisible until a retry or repair completes it.
                Ok(r) if r.status().is_server_error() => {
                    out.acked.remove(&key);
                    out.doubtful.insert(key);
                }
                Ok(r) => out.unexpected.push(format!("DELETE {key}: {}", r.status())),
                Err(_) => {
                    out.acked.remove(&key);
                    out.doubtful.insert(key);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            continue;
        }
        let key = format!("/w{w}/k{i}-{}", SIZES[(i + w) % SIZES.len()]);
        let body = value_for(&key);
        match http.put(format!("{url}{key}")).body(body).send().await {
            Ok(r) if r.status() == StatusCode::CREATED => {
                out.acked.insert(key.clone());
                mine.push(key);
            }
            Ok(r) if r.status().is_server_error() => {
                out.refused.insert(key);
            }
            Ok(r) => out.unexpected.push(format!("PUT {key}: {}", r.status())),
            Err(_) => {
                out.doubtful.insert(key);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    out
}

/// Runs [`WORKERS`] writers against the cluster until the returned flag is set; the
/// handle yields the merged outcome.
fn start_load(c: &Cluster) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Outcome>) {
    let stop = Arc::new(AtomicBool::new(false));
    let url = c.url.clone();
    let flag = Arc::clone(&stop);
    let handle = tokio::spawn(async move {
        let tasks: Vec<_> = (0..WORKERS)
            .map(|w| tokio::spawn(worker(url.clone(), w, Arc::clone(&flag))))
            .collect();
        let mut all = Outcome::default();
        for t in tasks {
            all.merge(t.await.unwrap());
        }
        all
    });
    (stop, handle)
}

/// A client reused by the checks (one per thread: each test has its own runtime and
/// threads, and pooled connections belong to a runtime).
fn http() -> reqwest::Client {
    thread_local! {
        static HTTP: reqwest::Client = client();
    }
    HTTP.with(reqwest::Client::clone)
}

/// GET through the index: `(status, Key-Volumes, body after following the redirect)`.
async fn read(c: &Cluster, key: &str) -> (StatusCode, Vec<String>, Vec<u8>) {
    let http = http();
    let r = http.get(format!("{}{key}", c.url)).send().await.unwrap();
    if r.status() != StatusCode::FOUND {
        return (r.status(), Vec::new(), Vec::new());
    }
    let volumes = r.headers()["key-volumes"]
        .to_str()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let body = http.get(location).send().await.unwrap();
    assert_eq!(body.status(), StatusCode::OK, "{key}: volume refused");
    (
        StatusCode::FOUND,
        volumes,
        body.bytes().await.unwrap().to_vec(),
    )
}

/// The value of `key` as stored on the replica at `location`, `None` if absent.
async fn replica(location: &str, key: &str) -> Option<Vec<u8>> {
    let url = format!("http://{location}{}", key_path(key.as_bytes()));
    let r = http().get(url).send().await.ok()?;
    if r.status() != StatusCode::OK {
        return None;
    }
    Some(r.bytes().await.ok()?.to_vec())
}

/// Every live key (from `?list`), each with data identical to its value on every one
/// of its replicas.
async fn assert_live_keys_complete(c: &Cluster) -> BTreeSet<String> {
    let list: serde_json::Value = common::cluster::get_json(format!("{}/?list", c.url)).await;
    let keys: BTreeSet<String> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    for key in &keys {
        let (status, volumes, body) = read(c, key).await;
        assert_eq!(status, StatusCode::FOUND, "{key} listed but not readable");
        let want = value_for(key);
        assert!(body == want, "{key}: served value differs");
        for v in &volumes {
            let got = replica(v, key).await;
            assert!(
                got.as_deref() == Some(&want[..]),
                "{key}: replica {v} incomplete"
            );
        }
    }
    keys
}

/// Every file on every volume (outside hidden temp directories) is a complete value:
/// no torn file exists anywhere, whether or not a record points at it.
fn assert_no_torn_files(c: &Cluster) {
    for v in &c.volumes {
        for rel in v.files() {
            // `[svXX/]aa/bb/<base64 key, possibly with '/'>`.
            let rel_key = match rel.split_once('/') {
                Some((sv, rest)) if sv.starts_with("sv") => rest,
                _ => rel.as_str(),
            };
            let path = format!("/{rel_key}");
            let key = key_from_path(&path)
                .unwrap_or_else(|| panic!("unexpected file {path} on {}", v.addr));
            let key = String::from_utf8(key).unwrap();
            let data = std::fs::read(v.dir.join(&rel)).unwrap();
            assert!(data == value_for(&key), "torn file for {key} on {}", v.addr);
        }
    }
}

/// Repair of leftover intents: every leftover `writing` record is invisible (404 to
/// GET, absent from `?list`); an online `verify --repair` (grace 0) rolls each one back,
/// leaving no `writing` record, no missing replica, and the key writable again.
async fn repair(c: &mut Cluster) {
    let leftovers = writing_records(c);
    let http = client();
    let listed = assert_live_keys_complete(c).await;
    for key in &leftovers {
        assert!(!listed.contains(key), "{key}: writing record listed");
        let (status, _, _) = read(c, key).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{key}: writing record visible"
        );
    }
    let r = http
        .post(format!("{}/-/admin/verify?repair=1&grace=0s", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let last = c.wait_job().await;
    assert_eq!(last["state"], "done", "{last}");
    assert_eq!(last["counts"]["failed"], 0, "{last}");
    let left = writing_records(c);
    assert!(left.is_empty(), "intents left after repair: {left:?}");
    assert_live_keys_complete(c).await;
    for key in &leftovers {
        let r = http
            .put(format!("{}{key}", c.url))
            .body(value_for(key))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{key}: cannot be written again"
        );
        let (status, _, body) = read(c, key).await;
        assert!(status == StatusCode::FOUND && body == value_for(key));
    }
}

/// PUTs each key's value (see `value_for`) and asserts 201.
async fn put_created(c: &Cluster, keys: &[String]) {
    let http = client();
    for key in keys {
        let r = http
            .put(format!("{}{key}", c.url))
            .body(value_for(key))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{key}");
    }
}

/// Keys with a `writing` record, read straight from the index database (the server is
/// stopped cleanly for this and started again).
fn writing_records(c: &mut Cluster) -> Vec<String> {
    assert!(c.index.terminate(), "index server did not stop cleanly");
    let index = hoard::index::Index::open(&c.db).unwrap();
    let mut keys = Vec::new();
    index
        .walk(None, |k, r| {
            if r.state == hoard::index::State::Writing {
                keys.push(String::from_utf8_lossy(k).into_owned());
            }
            true
        })
        .unwrap();
    index.close();
    c.restart_index();
    wait_health(c);
    keys
}

/// Waits for `/-/health` to answer with every volume up.
fn wait_health(c: &Cluster) {
    wait_volumes(c, |_, up| up);
}

/// Waits until the index's health report satisfies `ok(volume addr, up)` for every
/// volume.
fn wait_volumes(c: &Cluster, ok: impl Fn(&str, bool) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let url = format!("{}/-/health", c.url);
    while Instant::now() < deadline {
        let resp = common::raw_request(
            c.addr(),
            b"GET /-/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        if let Ok(r) = resp {
            if r.status == 200 {
                let body = String::from_utf8_lossy(&r.body).into_owned();
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                    let all = v["volumes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|s| ok(s["server"].as_str().unwrap(), s["up"].as_bool().unwrap()));
                    if all {
                        return;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{url}: volumes did not reach the expected state");
}

/// Promise 1: kill -9 of the index server during the load loses no acknowledged
/// write, resurrects no acknowledged delete, and leaves no live key incomplete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_crash_under_load() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(Kind::Native, 3, &[]);
    let (stop, load) = start_load(&c);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    c.index.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.restart_index();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let out = load.await.unwrap();
    assert!(out.unexpected.is_empty(), "{:?}", out.unexpected);
    assert!(
        out.acked.len() > 20,
        "too little load: {:?}",
        out.acked.len()
    );
    assert!(!out.doubtful.is_empty(), "the crash interrupted nothing");

    let live = assert_live_keys_complete(&c).await;
    for key in &out.acked {
        assert!(live.contains(key), "acknowledged {key} lost");
    }
    for key in &out.deleted {
        assert!(!live.contains(key), "deleted {key} is back");
        assert_eq!(read(&c, key).await.0, StatusCode::NOT_FOUND);
    }
    assert_no_torn_files(&c);
    repair(&mut c).await;
}

/// Promise 2: kill -9 of a volume during the load: every write either fails cleanly
/// (5xx, nothing visible) or is complete on all replicas; no torn file exists; after
/// the volume restarts every acknowledged key is fully replicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_crash_under_load() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(Kind::Native, 3, &["--voltimeout", "500ms"]);
    let (stop, load) = start_load(&c);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    c.volumes[1].stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let out = load.await.unwrap();
    assert!(out.unexpected.is_empty(), "{:?}", out.unexpected);
    assert!(!out.refused.is_empty(), "the crash refused nothing");
    assert!(
        out.acked.len() > 20,
        "too little load: {} acked, {} refused, {} doubtful; index log:\n{}",
        out.acked.len(),
        out.refused.len(),
        out.doubtful.len(),
        tail(&c.index.log_text())
    );

    // While the volume is down: refused writes are invisible, and nothing on the
    // surviving volumes is torn.
    for key in &out.refused {
        assert_eq!(
            read(&c, key).await.0,
            StatusCode::NOT_FOUND,
            "{key} visible"
        );
    }
    assert_no_torn_files(&c);

    c.volumes[1].restart();
    wait_health(&c);
    assert_no_torn_files(&c);
    let live = assert_live_keys_complete(&c).await;
    for key in &out.acked {
        assert!(live.contains(key), "acknowledged {key} lost");
    }
    for key in out.refused.iter().chain(&out.deleted) {
        assert!(!live.contains(key), "{key} is live");
    }
    repair(&mut c).await;
}

/// Promise 3: with any (replicas − 1) volumes down, every GET of an existing key
/// redirects to a live replica holding it (once the prober has seen them down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_two_of_four_volumes_down() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(Kind::Native, 4, &["--voltimeout", "300ms"]);
    let keys: Vec<String> = (0..40).map(|i| format!("/loss/k{i}-{}", 100 + i)).collect();
    put_created(&c, &keys).await;
    for a in 0..4 {
        for b in a + 1..4 {
            c.volumes[a].stop();
            c.volumes[b].stop();
            let down = [c.volumes[a].addr.clone(), c.volumes[b].addr.clone()];
            wait_volumes(&c, |addr, up| up != down.iter().any(|d| d == addr));
            for key in &keys {
                let (status, _, body) = read(&c, key).await;
                assert_eq!(status, StatusCode::FOUND, "{key} with {down:?} down");
                assert!(body == value_for(key), "{key}: wrong value");
            }
            c.volumes[a].restart();
            c.volumes[b].restart();
            wait_health(&c);
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Promise 4: a volume frozen with SIGSTOP makes the writes that need it fail within
/// the bound (`--voltimeout` + probe interval + 100 ms watch, here 1 s + 0.5 s + 0.1 s;
/// asserted < 4 s), including one already streaming; writes not touching it and all
/// reads go on; the server's descriptors and threads stay bounded; after SIGCONT
/// everything works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_volume() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start(Kind::Native, 4, &["--replicas", "2", "--voltimeout", "1s"]);
    let http = client();
    let names: Vec<String> = c.volumes.iter().map(|v| v.addr.clone()).collect();
    let placement = Placement::new(names, 2, 10).unwrap();
    let hung = c.volumes[0].addr.clone();
    let touches = |key: &str| {
        placement
            .locate(key.as_bytes())
            .iter()
            .any(|l| hoard::placement::server_of(l) == hung)
    };
    let before: Vec<String> = (0..30)
        .map(|i| format!("/hang/old{i}-{}", 50 + i))
        .collect();
    put_created(&c, &before).await;

    // An upload to the hung volume already streaming when it freezes.
    let streaming_key = (0..)
        .map(|i| format!("/hang/stream{i}-1"))
        .find(|k| touches(k))
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream(rx));
    let url = format!("{}{streaming_key}", c.url);
    let streaming = tokio::spawn(async move {
        let start = Instant::now();
        let r = client().put(url).body(body).send().await;
        (r.map(|r| r.status()), start.elapsed())
    });
    tx.send(Ok(vec![b'x'; 64 * 1024])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = c.volumes[0].proc.pid().unwrap();
    signal(pid, libc::SIGSTOP);
    let frozen_at = Instant::now();
    // Keep the streaming upload alive (its data can no longer reach the frozen volume).
    let feeder = tokio::spawn(async move {
        for _ in 0..100 {
            if tx.send(Ok(vec![b'y'; 64 * 1024])).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (status, took) = streaming.await.unwrap();
    feeder.abort();
    let status = status.expect("the streaming PUT got no answer");
    assert!(status.is_server_error(), "streaming PUT answered {status}");
    assert!(took < Duration::from_secs(5), "streaming PUT took {took:?}");
    assert!(frozen_at.elapsed() < Duration::from_secs(4));

    // New writes: those needing the frozen volume fail fast, the others succeed.
    let index_pid = c.index.pid().unwrap();
    let mut tasks = Vec::new();
    for i in 0..120 {
        let key = format!("/hang/new{i}-{}", 10 + i);
        let needs = touches(&key);
        let url = format!("{}{key}", c.url);
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let r = client()
                .put(url)
                .body(value_for(&key))
                .send()
                .await
                .unwrap();
            (key, needs, r.status(), start.elapsed())
        }));
    }
    let mut refused = 0;
    for t in tasks {
        let (key, needs, status, took) = t.await.unwrap();
        assert!(took < Duration::from_secs(4), "{key} took {took:?}");
        if needs {
            assert!(
                status.is_server_error(),
                "{key} needs the frozen volume: {status}"
            );
            refused += 1;
        } else {
            assert_eq!(status, StatusCode::CREATED, "{key} does not need it");
        }
    }
    assert!(refused > 0);
    // Reads never touch volumes: every old key redirects to a live replica.
    wait_volumes(&c, |addr, up| up != (addr == hung));
    for key in &before {
        let (status, _, body) = read(&c, key).await;
        assert_eq!(status, StatusCode::FOUND);
        assert!(body == value_for(key));
    }
    let fds = common::proc_fds(index_pid);
    assert!(fds < 400, "index holds {fds} descriptors");
    let threads = common::proc_threads(index_pid);
    assert!(threads < 64, "index runs {threads} threads");
    let rss = common::proc_rss_kb(index_pid);
    assert!(rss < 512 * 1024, "index uses {rss} KiB");

    signal(pid, libc::SIGCONT);
    wait_health(&c);
    let key = (0..)
        .map(|i| format!("/hang/after{i}-77"))
        .find(|k| touches(k))
        .unwrap();
    let r = http
        .put(format!("{}{key}", c.url))
        .body(value_for(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (status, _, body) = read(&c, &key).await;
    assert!(status == StatusCode::FOUND && body == value_for(&key));
}

/// The last lines of a log, for failure messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.contains("is down")).collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A stream over an mpsc receiver (for a request body fed by the test).
fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
