//! Issue 25: an overwrite that fails, is abandoned or crashes — through every front-end
//! that overwrites (S3, minivault's binary protocol, its JSON interface) — never loses
//! the value it was to replace. Readers see the old value while the new one streams
//! and after it failed; the failed value's files are cleaned up; concurrent overwrites
//! of one key all succeed, the last to commit wins. On the real binary (`hoard dev`).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{client, get_json};
use hoard::proto::client::Client;
use hoard::proto::frame::{encode_request, Compression, Op, ValueHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ACCESS: &str = "overwrite";
const SECRET: &str = "overwrite-secret-key";
const T: Duration = Duration::from_secs(30);
/// What an abandoned upload announces, and what it sends before it goes away.
const ANNOUNCED: usize = 10 << 20;
const SENT: usize = 2 << 20;

use common::dev::DevStore as Dev;

/// `hoard dev` with every front-end on.
async fn start() -> Dev {
    Dev::start(ACCESS, SECRET, &[]).await
}

/// Writes in flight: the index's own count of `writing` records (/-/health).
async fn writing(dev: &Dev) -> u64 {
    let h = get_json(format!("{}/-/health", dev.http)).await;
    h["keys"]["writing"]
        .as_u64()
        .unwrap_or_else(|| panic!("no writing count in the health report: {h}"))
}

/// Waits until the index counts `want` writes in flight (`writing` records).
async fn wait_writing(dev: &Dev, want: u64) {
    let deadline = Instant::now() + T;
    loop {
        let now = writing(dev).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "writing records stayed at {now} (want {want})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value files on the three volumes, by key, as `generation → copies`.
fn files(dev: &Dev) -> BTreeMap<Vec<u8>, BTreeMap<u64, usize>> {
    let mut out: BTreeMap<Vec<u8>, BTreeMap<u64, usize>> = BTreeMap::new();
    for f in dev.value_files() {
        *out.entry(f.key).or_default().entry(f.gen).or_default() += 1;
    }
    out
}

/// Checks that `key`'s files are those of one value: three copies of one generation,
/// nothing left of any other.
fn assert_one_generation(dev: &Dev, key: &[u8]) {
    let gens = files(dev).get(key).cloned().unwrap_or_default();
    assert!(
        gens.len() == 1 && gens.values().all(|&n| n == 3),
        "files of {}: {gens:?} (generation → copies)",
        String::from_utf8_lossy(key)
    );
}

/// A value big enough to go to the volumes, different for each `seed`.
fn value(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Opens a raw connection to `addr` and sends `head` then `SENT` bytes of a body
/// announced as `ANNOUNCED` bytes long; the caller drops it to go away.
async fn abandoned_upload(addr: &str, head: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head).await.unwrap();
    s.write_all(&value(0xEE, SENT)).await.unwrap();
    s.flush().await.unwrap();
    s
}

/// The md5 of `bytes`, as S3 ETags and the script print it.
fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_s3_overwrite_keeps_the_old_object() {
    let dev = start().await;
    let old = value(1, 3 << 20);
    let src = dev.tmp.path().join("old");
    std::fs::write(&src, &old).unwrap();
    dev.s3_step(&["put", "bkt", "obj", src.to_str().unwrap()]);
    let url = dev.s3_step(&["presign-put", "bkt", "obj"]);
    let url = reqwest::Url::parse(&url).unwrap();
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let head =
        format!("PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {ANNOUNCED}\r\n\r\n");
    let upload = abandoned_upload(&addr, head.as_bytes()).await;
    // The overwrite is under way (its intent recorded): the old object is still served.
    wait_writing(&dev, 1).await;
    assert_eq!(dev.s3_step(&["md5", "bkt", "obj"]), md5_hex(&old));
    // The client goes away: the old object stays, and nothing of the new one does.
    drop(upload);
    wait_writing(&dev, 0).await;
    assert_eq!(dev.s3_step(&["md5", "bkt", "obj"]), md5_hex(&old));
    assert_one_generation(&dev, b"/bkt/obj");
    // A completed overwrite replaces it, and its old files go.
    let new = value(2, 1 << 20);
    std::fs::write(&src, &new).unwrap();
    dev.s3_step(&["put", "bkt", "obj", src.to_str().unwrap()]);
    assert_eq!(dev.s3_step(&["md5", "bkt", "obj"]), md5_hex(&new));
    wait_until(|| files(&dev)[&b"/bkt/obj".to_vec()].len() == 1).await;
    assert_one_generation(&dev, b"/bkt/obj");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_s3_overwrites_all_succeed_and_the_last_wins() {
    let dev = start().await;
    // The script runs 8 PUTs of one key at once (each its own value of 1 MiB) and
    // prints the ETags acknowledged, then the ETag a GET finds: one of them.
    let out = dev.s3_step(&["race", "bkt", "hot", "8"]);
    let (acked, last) = out.split_once('\n').expect("two lines");
    let acked: Vec<&str> = acked.split_whitespace().collect();
    assert_eq!(acked.len(), 8, "every PUT succeeds: {out}");
    assert!(acked.contains(&last.trim()), "{out}");
    wait_until(|| files(&dev)[&b"/bkt/hot".to_vec()].len() == 1).await;
    assert_one_generation(&dev, b"/bkt/hot");
}

/// A connection to the binary protocol.
async fn tcp(dev: &Dev) -> Client {
    Client::connect(&dev.tcp, T).await.unwrap()
}

/// A binary SET frame announcing `ANNOUNCED` bytes.
fn set_head(key: &[u8]) -> Vec<u8> {
    encode_request(
        Op::Set,
        key,
        Some(ValueHeader {
            len: ANNOUNCED as u32,
            compression: Compression::None,
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_binary_set_keeps_the_old_value() {
    let dev = start().await;
    let old = value(3, 1 << 20);
    tcp(&dev).await.set(b"bin", &old).await.unwrap();
    let upload = abandoned_upload(&dev.tcp, &set_head(b"bin")).await;
    wait_writing(&dev, 1).await;
    let during = tcp(&dev).await.get(b"bin").await.unwrap();
    assert!(
        during == old,
        "the old value is served during the overwrite"
    );
    drop(upload);
    wait_writing(&dev, 0).await;
    let after = tcp(&dev).await.get(b"bin").await.unwrap();
    assert!(after == old, "the old value survives the abandoned SET");
    assert_one_generation(&dev, b"/bin");
}

/// The JSON interface reads a whole body (at most `--json-max-body`) before it
/// writes: a PUT abandoned mid-body never reaches the store, and the old value stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_json_put_keeps_the_old_value() {
    let dev = start().await;
    let get = || async {
        let r = client()
            .get(format!("{}/doc", dev.json))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.bytes().await.unwrap().to_vec()
    };
    // Big enough for the volumes, within the default `--json-max-body` (1 MiB).
    let old = serde_json::json!({ "value": "o".repeat(500_000) }).to_string();
    let r = client()
        .put(format!("{}/doc", dev.json))
        .body(old)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let before = get().await;
    let addr = dev.json.trim_start_matches("http://").to_string();
    let head = format!(
        "PUT /doc HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {ANNOUNCED}\r\n\r\n{{\"value\":\""
    );
    let mut upload = abandoned_upload(&addr, head.as_bytes()).await;
    upload.shutdown().await.unwrap();
    // The server reads to the end of what was sent, then answers or drops it.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(T, upload.read_to_end(&mut rest)).await;
    drop(upload);
    assert_eq!(writing(&dev).await, 0);
    assert!(
        get().await == before,
        "the old value survives the abandoned PUT"
    );
    assert_one_generation(&dev, b"/doc");
}

/// kill -9 of the whole store while an overwrite streams: after the restart the old
/// value is served, and repair removes what the crashed write left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_an_overwrite_keeps_the_old_value() {
    let mut dev = start().await;
    let old = value(5, 1 << 20);
    tcp(&dev).await.set(b"crash", &old).await.unwrap();
    let upload = abandoned_upload(&dev.tcp, &set_head(b"crash")).await;
    wait_writing(&dev, 1).await;
    dev.proc.kill();
    drop(upload);
    dev.proc.restart();
    dev.wait_ready().await;
    let got = tcp(&dev).await.get(b"crash").await.unwrap();
    assert!(got == old, "the old value survives the crash");
    // The crashed write's intent — if its `Begin` reached the disk: it is not synced
    // (see ARCHITECTURE "Durable commits") — is left for repair, which rolls it back;
    // its files, if any, are orphans repair deletes.
    repair(&dev).await;
    assert_eq!(writing(&dev).await, 0);
    assert_one_generation(&dev, b"/crash");
    let after = tcp(&dev).await.get(b"crash").await.unwrap();
    assert!(after == old);
}

/// Runs an online `verify --repair --grace 0s` and waits for it to finish.
async fn repair(dev: &Dev) {
    let r = client()
        .post(format!("{}/-/admin/verify?repair=1&grace=0s", dev.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = Instant::now() + T;
    loop {
        let s = get_json(format!("{}/-/admin/status", dev.http)).await;
        if s["running"].is_null() && !s["last"].is_null() {
            assert_eq!(s["last"]["state"], "done", "{s}");
            return;
        }
        assert!(Instant::now() < deadline, "verify did not finish: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The store killed (`HOARD_CRASH_AT`, exactly kill -9) at each step of an overwrite
/// and of a delete, then restarted and repaired: before `Commit` the old value is
/// served, after it the new one; a delete, once begun, is finished. Every time exactly
/// one generation of the value's files is left (none after a delete), and no intent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_each_step_of_a_write_leaves_one_whole_value() {
    let mut dev = start().await;
    let (old, new) = (value(11, 300_000), value(12, 200_000));
    for step in [
        "write-begun",
        "write-uploaded",
        "write-committed",
        "delete-begun",
    ] {
        let key = format!("crash/{step}");
        tcp(&dev).await.set(key.as_bytes(), &old).await.unwrap();
        dev.proc.restart_env(&[&format!("HOARD_CRASH_AT={step}")]);
        dev.wait_ready().await;
        // The request dies with the store.
        if step == "delete-begun" {
            let r = client().delete(format!("{}/{key}", dev.http)).send().await;
            assert!(r.is_err(), "{step}: the DELETE was answered: {r:?}");
        } else {
            let r = tcp(&dev).await.set(key.as_bytes(), &new).await;
            assert!(r.is_err(), "{step}: the SET was answered");
        }
        let status = dev.proc.wait_exit(T);
        assert!(status.is_some(), "{step}: the store did not crash");
        let log = std::fs::read_to_string(&dev.proc.log).unwrap();
        assert!(
            log.contains(&format!("HOARD_CRASH_AT={step}: killing")),
            "{step}: not killed at its crash point"
        );
        dev.proc.restart();
        dev.wait_ready().await;
        let want = match step {
            "write-begun" | "write-uploaded" => Some(&old),
            "write-committed" => Some(&new),
            _ => None,
        };
        // The value read, `None` when the server answers an error (not found).
        let read = |dev: &Dev| {
            let (key, addr) = (key.clone(), dev.tcp.clone());
            async move {
                match Client::connect(&addr, T)
                    .await
                    .unwrap()
                    .get(key.as_bytes())
                    .await
                {
                    Ok(v) => Some(v.to_vec()),
                    Err(hoard::proto::ProtoError::Server(_)) => None,
                    Err(e) => panic!("GET {key}: {e}"),
                }
            }
        };
        let check = |got: Option<Vec<u8>>, when: &str| {
            assert!(
                got.as_ref() == want,
                "{step}, {when}: want {:?} bytes, got {:?}",
                want.map(Vec::len),
                got.map(|g| g.len())
            )
        };
        let got = read(&dev).await;
        check(got, "after the restart");
        repair(&dev).await;
        assert_eq!(writing(&dev).await, 0, "{step}: an intent is left");
        let key_path = format!("/{key}");
        match want {
            Some(_) => assert_one_generation(&dev, key_path.as_bytes()),
            None => assert!(
                !files(&dev).contains_key(key_path.as_bytes()),
                "{step}: files of the deleted key are left"
            ),
        }
        check(read(&dev).await, "after repair");
    }
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < deadline, "condition not met in {T:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
