//! Compact index records (issue 15): `hoard server` started on an index written in the
//! legacy record format (by `hoard bench index-scale --legacy-format`) serves it at
//! once, migrates it in the background, reports the migration in `/-/health`
//! (`index_format`), resumes it after a kill -9, and leaves every record readable and
//! in the compact format.

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
        n(&format["examined"]) <= keys + 1 - n(&first["examined"]),
        "walked again from the start: {format} after {first}"
    );
    assert!(
        n(&format["rewritten"]) <= keys - n(&first["rewritten"]),
        "{format} after {first}"
    );
    assert_eq!(format["corrupt"], 0, "{health}");
    assert_eq!(health["keys"]["live"], keys + 1, "{health}");
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
    assert_eq!(index.counts().live, keys + 1);
    index.close();
}
