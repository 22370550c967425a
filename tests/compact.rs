//! Compact index records (issue 15): `hoard server` started on an index written in the
//! legacy record format (by `hoard bench index-scale --legacy-format`) serves it at
//! once, migrates it in the background, reports the migration in `/-/health`
//! (`index_format`), resumes it after a kill -9, and leaves every record readable and
//! in the compact format — with PUTs going on all along, every acknowledged one kept —
//! and the file, compacted at the next start, at about the compact size.

#[macro_use]
mod common;

use std::process::Command;

use common::cluster::{client, hoard_bin, Cluster, Kind, Volume};
use hoard::index::Index;

#[tokio::test(flavor = "multi_thread")]
async fn server_migrates_a_legacy_index_while_serving_it() {
    let root = tempfile::tempdir().unwrap();
    let volumes: Vec<Volume> = (0..3)
        .map(|i| Volume::start(Kind::Native, root.path(), &format!("v{i}")))
        .collect();
    let list = volumes
        .iter()
        .map(|v| v.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    let db = root.path().join("db");
    let keys = 60_000;
    let out = Command::new(hoard_bin())
        .args(["bench", "index-scale", "--db"])
        .arg(&db)
        .args(["-n", &keys.to_string(), "--lookups", "10", "--json"])
        .args(["--legacy-format", "--volumes", &list])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["record_format"], "legacy", "{report}");
    let sample = report["sample_key"].as_str().unwrap().to_string();
    let file_size = || std::fs::metadata(db.join("index.redb")).unwrap().len();
    let legacy_bytes = file_size();
    let before: hoard::index::Record = {
        let index = Index::open_with(&db, false).unwrap();
        assert!(!index.migration().compact);
        let r = index.get(sample.as_bytes()).unwrap().unwrap();
        index.close();
        r
    };

    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::with_volumes_and_db(tmp, volumes, &list, &db, &[]);
    // Reads and writes work from the start, migrated or not.
    let base = cluster.url.clone();
    let get = |key: String| {
        let url = format!("{base}{key}");
        async move { client().get(url).send().await.unwrap() }
    };
    // A GET redirects to one of the key's replicas (picked at random).
    let redirects_to_a_replica = |r: reqwest::Response| {
        assert_eq!(r.status(), 302);
        let location = r.headers()["location"].to_str().unwrap().to_string();
        assert!(
            before
                .volumes
                .iter()
                .any(|v| location.starts_with(&format!("http://{v}/"))),
            "{location} vs {:?}",
            before.volumes
        );
    };
    redirects_to_a_replica(get(sample.clone()).await);
    let put = client()
        .put(format!("{}/fresh/key", cluster.url))
        .body("new value")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);

    // PUTs all along the migration (and across the restart), spread over the key space
    // (behind and ahead of the copy's cursor); the acknowledged ones must all be kept.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let putter = tokio::spawn({
        let (stop, url) = (stop.clone(), cluster.url.clone());
        async move {
            let (mut acked, mut tried) = (Vec::new(), 0u64);
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("/bench/scale/{:010}/put{i}", (i * 7919) % keys);
                i += 1;
                tried += 1;
                let sent = client()
                    .put(format!("{url}{key}"))
                    .body(format!("value {i}"))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 201 => acked.push(key),
                    _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                }
            }
            (acked, tried)
        }
    });

    // Killed mid-way, the server resumes from the cursor the last batch committed.
    let mut cluster = cluster;
    let first = cluster
        .wait_health("migration under way", |h| {
            h["index_format"]["examined"].as_u64() > Some(0)
        })
        .await;
    let first = &first["index_format"];
    assert_eq!(
        first["compact"], false,
        "the migration ended before the restart: {first}"
    );
    cluster.restart_index();
    let health = cluster
        .wait_health("index migrated", |h| h["index_format"]["compact"] == true)
        .await;
    let format = &health["index_format"];
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    assert!(
        n(&format["rewritten"]) <= keys - n(&first["rewritten"]),
        "{format} after {first}"
    );
    assert_eq!(format["corrupt"], 0, "{health}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, tried) = putter.await.unwrap();
    assert!(!acked.is_empty());
    // Keys copied: those after the cursor (the PUTs' new keys among them), not all.
    assert!(
        n(&format["examined"]) <= keys + 1 + tried - n(&first["examined"]),
        "copied again from the start: {format} after {first}"
    );
    for key in &acked {
        assert_eq!(get(key.clone()).await.status(), 302, "{key}");
    }
    // (A PUT cut by the kill may or may not have committed.)
    let health = cluster.wait_health("up", |_| true).await;
    let live = n(&health["keys"]["live"]);
    assert!(
        live >= keys + 1 + acked.len() as u64 && live <= keys + 1 + tried,
        "{live} live, {} PUTs acknowledged of {tried}: {health}",
        acked.len()
    );

    // The old table's pages are free in the file until the next start, which returns
    // them to the file system: the file ends smaller than the legacy one (at about the
    // size of a bulk-loaded compact index: 95 vs 161 B/key, docs/BENCHMARKS.md).
    assert_eq!(
        health["index_format"]["compaction_pending"], true,
        "{health}"
    );
    cluster.restart_index();
    let health = cluster
        .wait_health("file compacted", |h| {
            h["index_format"]["compact"] == true && h["index_format"]["compaction_pending"] == false
        })
        .await;
    let shrunk = file_size();
    assert!(
        shrunk * 10 <= legacy_bytes * 7,
        "{shrunk} B after the migration vs {legacy_bytes} B legacy: {health}"
    );
    assert_eq!(n(&health["keys"]["live"]), live, "{health}");
    for key in acked.iter().step_by(7) {
        assert_eq!(get(key.clone()).await.status(), 302, "{key}");
    }
    redirects_to_a_replica(get(sample.clone()).await);
    assert_eq!(get("/fresh/key".into()).await.status(), 302);
    let listed: serde_json::Value = get("/bench/?list&limit=5".into())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 5, "{listed}");

    // Stopped, the index is compact for good, with the same records.
    assert!(cluster.index.terminate(), "server did not stop cleanly");
    let index = Index::open_with(&db, false).unwrap();
    assert!(index.migration().compact);
    assert_eq!(index.get(sample.as_bytes()).unwrap(), Some(before));
    assert_eq!(index.counts().live, live);
    index.close();
}
