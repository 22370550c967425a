//! Issue 25, item 2: checksums on every read path, on the real binary (`hoard dev`).
//! One or two of a value's three replica files get a flipped byte on disk; then
//!
//! * `hoard get` still gets the right bytes (it tries the other replicas), and the
//!   index, told which replicas it skipped, has them repaired,
//! * S3 GetObject, the binary protocol's GET and the JSON interface's GET (all proxied
//!   through `Store::open`) return the right bytes, report the corrupt replicas
//!   (`hoard_corrupt_replicas_total`) and the upkeep worker repairs them,
//! * a whole-file GET of a corrupt file straight from the native volume never
//!   completes cleanly (a small file: an error status; a large one: cut short), while a
//!   good replica's and a Range GET are served as before.

mod common;

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{client, hoard_bin};
use common::dev::{DevStore, ValueFile};
use hoard::proto::client::Client;

const ACCESS: &str = "checksums";
const SECRET: &str = "checksums-secret-key";
const T: Duration = Duration::from_secs(30);

/// `hoard dev` with every front-end on.
struct Dev(DevStore);

impl std::ops::Deref for Dev {
    type Target = DevStore;
    fn deref(&self) -> &DevStore {
        &self.0
    }
}

/// One replica file of a value: which volume of the dev store, and where on disk.
type Replica = ValueFile;

impl Dev {
    async fn start() -> Dev {
        Dev(DevStore::start(ACCESS, SECRET, &[]).await)
    }

    /// The replica files of `key` (any generation), in volume order.
    fn replicas(&self, key: &[u8]) -> Vec<Replica> {
        let out = self.files_of(key);
        assert_eq!(
            out.len(),
            3,
            "replicas of {}: {out:?}",
            String::from_utf8_lossy(key)
        );
        out
    }

    /// The URL of a replica file on its volume.
    fn url(&self, r: &Replica) -> String {
        format!("http://127.0.0.1:{}/{}", self.port + r.volume, r.rel)
    }

    /// A metric's value in the store's /-/metrics (0 when absent).
    async fn metric(&self, name: &str) -> f64 {
        let text = client()
            .get(format!("{}/-/metrics", self.http))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Runs `hoard ARGS` against the store.
    fn hoard(&self, args: &[&str]) -> std::process::Output {
        Command::new(hoard_bin())
            .args(args)
            .env("HOARD_URL", &self.http)
            .env_remove("HOARD_TOKEN")
            .env_remove("HOARD_CONFIG")
            .output()
            .unwrap()
    }

    /// PUTs `value` at `key` through the minikeyvalue API.
    async fn put(&self, key: &str, value: &[u8]) {
        let r = client()
            .put(format!("{}{key}", self.http))
            .body(value.to_vec())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "PUT {key}: {}", r.status());
    }

    /// True when every replica file of `key` holds `stored`.
    fn all_good(&self, key: &[u8], stored: &[u8]) -> bool {
        self.replicas(key)
            .iter()
            .all(|r| std::fs::read(&r.path).is_ok_and(|b| b == stored))
    }

    /// Reads with `read` (which checks what it got) at least 5 times and until every
    /// replica file of `key` holds `stored` again: reads pick replicas at random, so
    /// reading on is what finds (and queues for repair) each corrupt one.
    async fn read_until_repaired<F, Fut>(&self, key: &[u8], stored: &[u8], mut read: F)
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let deadline = Instant::now() + T;
        for i in 0.. {
            read(i).await;
            if i >= 4 && self.all_good(key, stored) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the corrupt replicas of {} were not repaired",
                String::from_utf8_lossy(key)
            );
        }
    }
}

/// Flips one byte in the middle of the file in place (same inode: what bit rot does).
fn flip_byte(path: &Path) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = f.metadata().unwrap().len();
    let at = len / 2;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x5a;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
}

/// A value, different for each `seed`.
fn value(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 8) as u8)
        .collect()
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads `n` times with `hoard get` into a file and checks each result.
fn hoard_gets(dev: &Dev, key: &str, want: &[u8], n: usize, what: &str) {
    let out = dev.tmp.path().join("got");
    for i in 0..n {
        let _ = std::fs::remove_file(&out);
        let o = dev.hoard(&["get", key, "-o", out.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "{what}: hoard get #{i} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got = std::fs::read(&out).unwrap();
        assert!(got == want, "{what}: hoard get #{i} wrote wrong bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hoard_get_reads_past_one_and_two_corrupt_replicas() {
    let dev = Dev::start().await;
    // One value the volume reads in one go (64 KiB at most), one it streams.
    for (key, len) in [("/get/small", 10_000), ("/get/large", 300_000)] {
        let v = value(7, len);
        dev.put(key, &v).await;
        for corrupt in [1, 2] {
            for r in &dev.replicas(key.as_bytes())[..corrupt] {
                flip_byte(&r.path);
            }
            // Every get succeeds; the replicas it had to skip are named to the index,
            // which checks them itself and has them repaired.
            let what = format!("{key}, {corrupt} corrupt");
            dev.read_until_repaired(key.as_bytes(), &v, |_| {
                hoard_gets(&dev, key, &v, 1, &what);
                std::future::ready(())
            })
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_get_object_skips_corrupt_replicas_reports_and_repairs_them() {
    let dev = Dev::start().await;
    let before = dev.metric("hoard_corrupt_replicas_total").await;

    // S3 GetObject: one corrupt replica, then two (once the first two were repaired).
    let obj = value(1, 100_000);
    let src = dev.tmp.path().join("obj");
    std::fs::write(&src, &obj).unwrap();
    dev.s3_step(&["put", "bkt", "obj", src.to_str().unwrap()]);
    for corrupt in [1, 2] {
        let replicas = dev.replicas(b"/bkt/obj");
        for r in &replicas[..corrupt] {
            flip_byte(&r.path);
        }
        dev.read_until_repaired(b"/bkt/obj", &obj, |i| {
            let got = dev.s3_step(&["md5", "bkt", "obj"]);
            assert_eq!(got, md5_hex(&obj), "GetObject #{i}, {corrupt} corrupt");
            std::future::ready(())
        })
        .await;
    }

    // Each of the 3 corrupt replicas was repaired, so found by a read and counted.
    let after = dev.metric("hoard_corrupt_replicas_total").await;
    assert!(
        after - before >= 3.0,
        "corrupt replicas counted: {before} → {after}"
    );
}

/// A value too large to be checked before its first byte is sent: a read of a corrupt
/// replica must end in an error (never a clean end with wrong bytes), and it is
/// repaired like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_get_object_of_a_large_value_never_ends_cleanly_with_wrong_bytes() {
    let dev = Dev::start().await;
    let obj = value(3, 1 << 20);
    let src = dev.tmp.path().join("big");
    std::fs::write(&src, &obj).unwrap();
    dev.s3_step(&["put", "bkt", "big", src.to_str().unwrap()]);
    for r in &dev.replicas(b"/bkt/big")[..2] {
        flip_byte(&r.path);
    }
    let want = md5_hex(&obj);
    let mut errors = 0;
    dev.read_until_repaired(b"/bkt/big", &obj, |i| {
        let got = dev.s3_step(&["md5-or-error", "bkt", "big"]);
        match got.as_str() {
            "error" => errors += 1,
            _ => assert_eq!(got, want, "GetObject #{i} ended cleanly with wrong bytes"),
        }
        std::future::ready(())
    })
    .await;
    // Both corrupt replicas were found by reads, which failed.
    assert!(errors >= 2, "{errors} failed reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_get_skips_two_corrupt_replicas_and_repairs_them() {
    let dev = Dev::start().await;
    let bin = value(2, 50_000);
    Client::connect(&dev.tcp, T)
        .await
        .unwrap()
        .set(b"bin", &bin)
        .await
        .unwrap();
    for r in &dev.replicas(b"/bin")[..2] {
        flip_byte(&r.path);
    }
    dev.read_until_repaired(b"/bin", &bin, |i| {
        let (tcp, bin) = (dev.tcp.clone(), bin.clone());
        async move {
            let mut c = Client::connect(&tcp, T).await.unwrap();
            let got = c.get(b"bin").await.unwrap();
            assert!(got == bin, "binary GET #{i} returned wrong bytes");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_get_skips_two_corrupt_replicas_and_repairs_them() {
    let dev = Dev::start().await;
    let doc = serde_json::json!({ "value": "j".repeat(20_000) }).to_string();
    let r = client()
        .put(format!("{}/doc", dev.json))
        .body(doc)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let json = dev.json.clone();
    let json_get = move || {
        let json = json.clone();
        async move {
            let r = client().get(format!("{json}/doc")).send().await.unwrap();
            assert!(r.status().is_success(), "JSON GET: {}", r.status());
            r.bytes().await.unwrap().to_vec()
        }
    };
    let good = json_get().await;
    let stored = std::fs::read(&dev.replicas(b"/doc")[0].path).unwrap();
    for r in &dev.replicas(b"/doc")[..2] {
        flip_byte(&r.path);
    }
    dev.read_until_repaired(b"/doc", &stored, |i| {
        let (get, good) = (json_get.clone(), good.clone());
        async move {
            assert!(get().await == good, "JSON GET #{i} returned wrong bytes");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_volume_never_completes_a_corrupt_whole_file_get() {
    let dev = Dev::start().await;
    let before = dev.metric("hoard_volume_corrupt_reads_total").await;
    for (key, len) in [("/vol/small", 10_000), ("/vol/large", 3 << 20)] {
        let v = value(9, len);
        dev.put(key, &v).await;
        let replicas = dev.replicas(key.as_bytes());
        flip_byte(&replicas[0].path);

        // The corrupt file: never a 200 whose body completes.
        let r = client().get(dev.url(&replicas[0])).send().await.unwrap();
        if r.status().is_success() {
            let body = r.bytes().await;
            assert!(
                body.is_err(),
                "{key}: the corrupt file's GET completed cleanly ({} bytes)",
                body.map(|b| b.len()).unwrap_or(0)
            );
        }
        // A good replica is served whole.
        let r = client().get(dev.url(&replicas[1])).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.bytes().await.unwrap() == v, "{key}: good replica");
        // A Range GET is not checked (the whole file's checksum says nothing of a
        // part): served as before, corrupt byte included.
        let r = client()
            .get(dev.url(&replicas[0]))
            .header("range", "bytes=0-99")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert!(r.bytes().await.unwrap()[..] == v[..100]);
    }
    let after = dev.metric("hoard_volume_corrupt_reads_total").await;
    assert!(
        after - before >= 2.0,
        "corrupt reads counted: {before} → {after}"
    );
}
