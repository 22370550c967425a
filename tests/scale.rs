//! The index at scale: `hoard rebuild` streams (its memory does not grow with the number
//! of keys), writes records in key order through the bulk path (with md5s when asked),
//! and the scale benchmark runs at a smoke size. Value files are written straight into
//! the volume directories of real `hoard volume` servers (the layout their listings
//! serve), so many keys cost seconds, not HTTP PUTs.
//!
//! The scale benchmark, `scripts/bench-scale.sh`, runs here at a smoke size.

#[macro_use]
mod common;

use std::path::Path;
use std::process::Command;

use common::cluster::{hoard_bin, Kind, Volume};
use hoard::index::{Index, State};
use hoard::placement::{key_path, Placement};
use md5::{Digest, Md5};

/// Writes `value` as the replica files of `key` where `placement` puts them; `dirs[i]`
/// is the data directory of `placement`'s volume `i`.
fn place(placement: &Placement, dirs: &[(&str, &Path)], key: &[u8], value: &[u8]) {
    for location in placement.locate(key) {
        let (server, sub) = location.split_once('/').unwrap_or((&location, ""));
        let dir = dirs.iter().find(|(a, _)| *a == server).unwrap().1;
        let path = dir.join(sub).join(&key_path(key)[1..]);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, value).unwrap();
    }
}

/// Runs `hoard rebuild`; returns its JSON report and peak resident memory in kB.
fn rebuild(db: &Path, volumes: &[&str], extra: &[&str]) -> (serde_json::Value, u64) {
    let out = Command::new(hoard_bin())
        .args(["rebuild", "--db"])
        .arg(db)
        .args(["--volumes", &volumes.join(",")])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rebuild failed:\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr:\n{stderr}"));
    let peak = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak resident memory (VmHWM): "))
        .and_then(|rest| rest.trim_end_matches(" kB").parse::<u64>().ok())
        .unwrap_or_else(|| panic!("rebuild did not report its peak memory:\n{stderr}"));
    assert!(peak > 0, "peak memory {peak} kB");
    (report, peak)
}

/// A key of about 150 bytes (so per-key memory would show), number `i`.
fn long_key(i: usize) -> Vec<u8> {
    format!("/scale/{i:08}/{}", "k".repeat(130)).into_bytes()
}

#[test]
fn rebuild_memory_does_not_grow_with_keys() {
    let root = tempfile::tempdir().unwrap();
    let volume = Volume::start(Kind::Native, root.path(), "v1");
    let addr = volume.addr.as_str();
    let placement = Placement::new(vec![addr.to_string()], 1, 1).unwrap();
    let dirs = [(addr, volume.dir.as_path())];
    let args = ["--replicas", "1", "--subvolumes", "1", "--memory-mb", "4"];
    let mut peaks = Vec::new();
    let mut placed = 0;
    for (round, keys) in [10_000usize, 40_000].into_iter().enumerate() {
        for i in placed..keys {
            place(&placement, &dirs, &long_key(i), b"");
        }
        placed = keys;
        // Two rebuilds per size, the lower peak kept: what the allocator happens to hold
        // on to (timing, threads) only ever adds to a peak.
        let mut lowest = u64::MAX;
        for attempt in 0..2 {
            let db = root.path().join(format!("db{round}-{attempt}"));
            let (report, peak) = rebuild(&db, &[addr], &args);
            assert_eq!(report["counts"]["scanned"], keys as u64, "{report}");
            assert_eq!(report["counts"]["total"], keys as u64, "{report}");
            assert!(
                !db.join("rebuild-staging.redb").exists(),
                "staging area left behind"
            );
            let index = Index::open(&db).unwrap();
            assert_eq!(index.counts().live, keys as u64);
            index.close();
            eprintln!("{keys} keys: peak RSS {peak} kB");
            lowest = lowest.min(peak);
        }
        peaks.push(lowest);
    }
    // Both sizes fill the 4 MB budget's caches; 4x the keys (30k more: about 12 MB of
    // keys and locations alone, were they kept in memory) leave the same peak, give or
    // take allocator noise (with the system allocator the two peaks are within 0.6 MB;
    // mimalloc, hoard's allocator, keeps 1-3 MB more after the longer run).
    let grown = peaks[1].saturating_sub(peaks[0]);
    assert!(
        grown <= 4 * 1024,
        "peak RSS grew by {grown} kB from 10k to 40k keys: {peaks:?}"
    );
}

#[test]
fn rebuild_writes_sorted_records_with_md5() {
    let root = tempfile::tempdir().unwrap();
    let v1 = Volume::start(Kind::Native, root.path(), "v1");
    let v2 = Volume::start(Kind::Native, root.path(), "v2");
    let volumes = [v1.addr.as_str(), v2.addr.as_str()];
    let placement = Placement::new(volumes.iter().map(|v| v.to_string()).collect(), 2, 4).unwrap();
    let dirs = [
        (volumes[0], v1.dir.as_path()),
        (volumes[1], v2.dir.as_path()),
    ];
    let keys: Vec<Vec<u8>> = (0..300).map(|i| format!("/m/{i}").into_bytes()).collect();
    for (i, key) in keys.iter().enumerate() {
        place(&placement, &dirs, key, &vec![i as u8; i]);
    }
    let db = root.path().join("db");
    // Tiny batches: many transactions, md5s read in each.
    let args = [
        "--replicas",
        "2",
        "--subvolumes",
        "4",
        "--md5",
        "--memory-mb",
        "4",
    ];
    let (report, _) = rebuild(&db, &volumes, &args);
    assert_eq!(report["counts"]["scanned"], 300, "{report}");
    assert_eq!(report["counts"]["files_listed"], 600, "{report}");
    let index = Index::open(&db).unwrap();
    let mut seen = Vec::new();
    index
        .walk(None, |k, r| {
            seen.push((k.to_vec(), r));
            true
        })
        .unwrap();
    assert_eq!(seen.len(), 300);
    for (key, record) in &seen {
        let i: usize = std::str::from_utf8(&key[3..]).unwrap().parse().unwrap();
        let value = vec![i as u8; i];
        assert_eq!(record.state, State::Live);
        assert_eq!(record.volumes, placement.locate(key), "placement order");
        assert_eq!(record.size, i as u64);
        let md5: [u8; 16] = Md5::digest(&value).into();
        assert_eq!(record.md5, Some(md5));
    }
    let c = index.counts();
    assert_eq!((c.live, c.bytes), (300, (0..300).sum::<u64>()));
    index.close();
    // The new index exists now: a second rebuild into it is refused.
    let out = Command::new(hoard_bin())
        .args(["rebuild", "--db"])
        .arg(&db)
        .args(["--volumes", &volumes.join(",")])
        .args(["--replicas", "2", "--subvolumes", "4"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn scale_benchmark_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("bench");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench-scale.sh");
    let out = Command::new("bash")
        .args([script, "2000", "300"])
        .env("HOARD", hoard_bin())
        .env("DIR", &work)
        .env("SMALL", "500")
        .env("DURATION", "1s")
        .env("MEMORY_MB", "16")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench-scale.sh failed:\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON summary ({e}):\n{stderr}"));
    for n in ["500", "2000"] {
        let s = &report["sizes"][n];
        for field in [
            "bytes_per_key",
            "snapshot_bytes",
            "startup_s",
            "get_redirect_req_per_s",
            "http_list_keys_per_s",
            "scan_keys_per_s",
        ] {
            let v = s[field].as_f64().unwrap_or(0.0);
            assert!(v > 0.0, "{n} keys: {field} = {}: {report:#}", s[field]);
        }
        assert_eq!(s["get_redirect_errors"], 0, "{report:#}");
    }
    let rebuild = &report["rebuild"];
    assert_eq!(rebuild["files"], 300, "{report:#}");
    assert_eq!(rebuild["keys"], 100, "{report:#}");
    assert!(
        rebuild["peak_rss_kb"].as_u64().unwrap_or(0) > 0,
        "{report:#}"
    );
    assert!(!work.exists(), "the benchmark left its data behind");
}
