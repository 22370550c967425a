//! Issue 25: the continuous scrubber finds a flipped byte and a deleted replica on its
//! own and repairs both from a good copy; its state survives a restart. On the real
//! binary (`hoard dev --scrub-interval 1s`).

mod common;

use std::time::{Duration, Instant};

use common::cluster::{client, get_json};
use common::dev::DevStore;

const T: Duration = Duration::from_secs(60);

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
    let mut dev = DevStore::start(
        "scrub",
        "scrub-secret-key",
        &["--scrub-interval", "1s", "--scrub-max-rate", "100MiB/s"],
    )
    .await;
    let http = dev.http.clone();
    let files_of = |key: &[u8]| -> Vec<std::path::PathBuf> {
        dev.files_of(key).into_iter().map(|f| f.path).collect()
    };
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
    let a = files_of(b"/a");
    let b = files_of(b"/b");
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
    dev.proc.kill();
    dev.proc.restart();
    dev.wait_ready().await;
    let h = get_json(format!("{http}/-/health")).await;
    assert!(
        h["scrub"]["passes"].as_u64() >= Some(passes),
        "scrub state after restart: {h}"
    );
}
