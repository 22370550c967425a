//! Issue 25: the continuous scrubber finds a flipped byte and a deleted replica on its
//! own and repairs both from a good copy; its state survives a restart. On the real
//! binary (`hoard dev --scrub-interval 1s`).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cluster::{client, free_port, free_port_run, get_json, hoard_bin, wait_http, Proc};
use hoard::placement::file_from_path;

const T: Duration = Duration::from_secs(60);

/// Every value file of `key` under `data`'s three volumes.
fn files_of(data: &Path, key: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for v in 1..=3 {
        let root = data.join(format!("volume{v}"));
        for path in walk(&root) {
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let rel = match rel.split_once('/') {
                Some((sv, rest)) if sv.starts_with("sv") => rest.to_string(),
                _ => rel,
            };
            if file_from_path(&format!("/{rel}")).is_some_and(|(k, _)| k == key) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A counter from the metrics exposition (0 when not exported yet).
async fn counter(http: &str, name: &str) -> u64 {
    let text = client()
        .get(format!("{http}/-/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    let deadline = Instant::now() + T;
    while !cond().await {
        assert!(Instant::now() < deadline, "{what}: not within {T:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrubber_repairs_a_flipped_byte_and_a_lost_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port_run(7);
    let cmd = vec![
        hoard_bin().to_string(),
        "dev".into(),
        "--data".into(),
        data.display().to_string(),
        "--port".into(),
        port.to_string(),
        "--s3-port".into(),
        free_port().to_string(),
        "--scrub-interval".into(),
        "1s".into(),
        "--scrub-max-rate".into(),
        "100MiB/s".into(),
    ];
    let mut dev = Proc::spawn(cmd, tmp.path().join("dev.log"));
    let http = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{http}/-/health"));
    wait_until("volumes up", || async {
        let h = get_json(format!("{http}/-/health")).await;
        h["volumes"]
            .as_array()
            .is_some_and(|vs| vs.iter().filter(|v| v["up"] == true).count() == 3)
    })
    .await;
    let value = |seed: u8| -> Vec<u8> { (0..200_000u32).map(|i| (i as u8) ^ seed).collect() };
    for (key, seed) in [("/a", 1), ("/b", 2), ("/c", 3)] {
        let r = client()
            .put(format!("{http}{key}"))
            .body(value(seed))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "PUT {key}");
    }
    // One replica of /a gets a flipped byte, one of /b is deleted.
    let corrupt_before = counter(&http, "hoard_scrub_corrupt_total").await;
    let a = files_of(&data, b"/a");
    let b = files_of(&data, b"/b");
    assert_eq!((a.len(), b.len()), (3, 3));
    let mut bytes = std::fs::read(&a[0]).unwrap();
    bytes[1234] ^= 0x40;
    std::fs::write(&a[0], &bytes).unwrap();
    std::fs::remove_file(&b[1]).unwrap();
    // Nobody asks: the scrubber finds both and repairs them from good copies.
    wait_until("the scrubber repairs both replicas", || async {
        std::fs::read(&a[0]).is_ok_and(|got| got == value(1))
            && std::fs::read(&b[1]).is_ok_and(|got| got == value(2))
    })
    .await;
    let counts = (
        counter(&http, "hoard_scrub_corrupt_total").await,
        counter(&http, "hoard_scrub_repaired_total").await,
        counter(&http, "hoard_scrub_objects_total").await,
    );
    assert!(
        counts.0 >= corrupt_before + 2 && counts.1 >= 2 && counts.2 >= 9,
        "(corrupt, repaired, objects) = {counts:?}, corrupt before: {corrupt_before}"
    );
    // Its state is the index's: a pass done, and it survives a restart.
    wait_until("a complete pass recorded", || async {
        let h = get_json(format!("{http}/-/health")).await;
        h["scrub"]["passes"].as_u64() >= Some(1) && h["scrub"]["interval_seconds"] == 1
    })
    .await;
    let h = get_json(format!("{http}/-/health")).await;
    let passes = h["scrub"]["passes"].as_u64().unwrap_or(0);
    dev.kill();
    dev.restart();
    wait_http(&format!("{http}/-/health"));
    let h = get_json(format!("{http}/-/health")).await;
    assert!(
        h["scrub"]["passes"].as_u64() >= Some(passes),
        "scrub state after restart: {h}"
    );
}
