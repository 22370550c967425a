//! The write path's correctness under races and failures, on the real binaries: a
//! rolled-back write never lands late on a volume, a volume cancels uploads overtaken
//! by a DELETE or a newer PUT, the upkeep worker is not stopped by one stuck key, files
//! of a replaced record are not forgotten, and an unclean index shutdown is reported.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{client, Cluster, Kind, Volume};
use common::uploads_in_progress;
use reqwest::StatusCode;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Polls `check` every 50 ms until it returns true; panics with `what` after `limit`.
async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A volume whose disk is full: it answers the prober, reads every PUT body to its end
/// and then refuses it with 507 (the first `fail` PUTs; later ones answer 201 without
/// storing anything); DELETEs answer 204.
async fn full_volume(fail: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let failed = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            let failed = Arc::clone(&failed);
            tokio::spawn(async move {
                let mut conn = BufReader::new(conn);
                loop {
                    let mut head = Vec::new();
                    loop {
                        let mut line = String::new();
                        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push(line.to_ascii_lowercase());
                    }
                    let len: usize = head
                        .iter()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    let mut body = vec![0; len];
                    conn.read_exact(&mut body).await.unwrap();
                    let status = match head[0].split(' ').next().unwrap() {
                        "put" if failed.fetch_add(1, Ordering::SeqCst) < fail => {
                            "507 Insufficient Storage"
                        }
                        "put" => "201 Created",
                        "delete" => "204 No Content",
                        "head" if head[0].starts_with("head / ") => "200 OK",
                        _ => "404 Not Found",
                    };
                    let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Defect: a volume that had the whole body renamed it into place after the index's
/// rollback DELETE (an orphan; with a quick retry, the old bytes under the new record).
/// Volume A holds every upload 1 s before its rename; volume B refuses the first PUT
/// after reading it. The failed PUT must leave nothing on A once A's upload has ended,
/// and a retry must leave exactly its own bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_write_never_lands_late() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Volume::start_with(
        Kind::Native,
        tmp.path(),
        "a",
        &["--test-rename-delay", "1s"],
    );
    let (a_dir, a_pid) = (a.dir.clone(), a.proc.pid().unwrap());
    let b = full_volume(1).await;
    let list = format!("{},{b}", a.addr);
    let c = Cluster::with_volumes(tmp, vec![a], &list, &["--replicas", "2"]);
    let http = client();
    let url = format!("{}/race", c.url);

    let r = http.put(&url).body(vec![b'1'; 4096]).send().await.unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    // Whatever A was doing with the upload is over: nothing of it may remain.
    wait_until(Duration::from_secs(10), "A's upload to end", || async {
        uploads_in_progress(&a_dir, a_pid) == 0
    })
    .await;
    assert_eq!(c.volumes[0].files(), Vec::<String>::new());
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
    assert_eq!(c.health().await["keys"]["writing"], 0);

    // A retry at once succeeds, and A holds the retry's bytes.
    let r = http.put(&url).body(vec![b'2'; 4096]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let files = c.volumes[0].files();
    assert_eq!(files.len(), 1, "{files:?}");
    let stored = std::fs::read(c.volumes[0].dir.join(&files[0])).unwrap();
    assert_eq!(stored, vec![b'2'; 4096]);
}

/// The native volume itself: a DELETE, or a newer PUT of the same path, cancels an
/// upload that is not yet renamed into place (409), so it can never land afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_cancels_uploads_overtaken_by_delete_or_newer_put() {
    let tmp = tempfile::tempdir().unwrap();
    let v = Volume::start_with(
        Kind::Native,
        tmp.path(),
        "v",
        &["--test-rename-delay", "1s"],
    );
    let http = client();
    let url = format!("http://{}/ab/cd/file", v.addr);
    let put = |body: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move { http.put(&url).body(body).send().await.unwrap().status() })
    };
    let in_flight = |n: usize| {
        let (dir, pid) = (v.dir.clone(), v.proc.pid().unwrap());
        move || {
            let dir = dir.clone();
            async move { uploads_in_progress(&dir, pid) == n }
        }
    };

    // PUT, then DELETE while the upload waits to be renamed.
    let first = put("old");
    wait_until(Duration::from_secs(10), "the upload", in_flight(1)).await;
    let deleted = http.delete(&url).send().await.unwrap().status();
    assert_eq!(deleted, StatusCode::NOT_FOUND);
    assert_eq!(first.await.unwrap(), StatusCode::CONFLICT);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);

    // Two PUTs of one path: the older is cancelled, the newer stays.
    let older = put("one");
    wait_until(Duration::from_secs(10), "the first upload", in_flight(1)).await;
    let newer = put("two");
    wait_until(Duration::from_secs(10), "the second upload", in_flight(2)).await;
    assert_eq!(older.await.unwrap(), StatusCode::CONFLICT);
    assert_eq!(newer.await.unwrap(), StatusCode::CREATED);
    let got = http.get(&url).send().await.unwrap();
    assert_eq!(got.text().await.unwrap(), "two");
    assert_eq!(uploads_in_progress(&v.dir, v.proc.pid().unwrap()), 0);
}

/// Defect: the degraded-write completer copied one key at a time with no deadline,
/// holding the key's lock: one hung volume stopped every other completion and made
/// the key unwritable (409) for good. Volume C hangs (SIGSTOP) while a copy to it is in
/// flight; the replicas missing on D must still be completed, and the stuck key must
/// become writable again once C is seen down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stuck_completion_stops_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let names = ["a", "b", "c", "d"];
    let volumes: Vec<Volume> = names
        .iter()
        .map(|n| {
            let extra: &[&str] = if *n == "c" {
                &["--test-rename-delay", "60s"]
            } else {
                &[]
            };
            Volume::start_with(Kind::Native, tmp.path(), n, extra)
        })
        .collect();
    let list: Vec<String> = volumes.iter().map(|v| v.addr.clone()).collect();
    let (c_addr, d_addr) = (list[2].clone(), list[3].clone());
    let mut c = Cluster::with_volumes(
        tmp,
        volumes,
        &list.join(","),
        &[
            "--replicas",
            "2",
            "--write-quorum",
            "1",
            "--voltimeout",
            "300ms",
        ],
    );
    let http = client();
    c.volumes[2].stop();
    c.volumes[3].stop();
    c.wait_volume(&c_addr, false).await;
    c.wait_volume(&d_addr, false).await;
    // Keys whose replicas include C (one will hang) and keys missing only on D.
    let (mut on_c, mut on_d) = (Vec::new(), Vec::new());
    for i in 0..60 {
        let key = format!("/stuck/{i}");
        let r = http
            .put(format!("{}{key}", c.url))
            .body(key.clone())
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            continue; // placed on C and D only
        }
        assert_eq!(r.status(), StatusCode::CREATED, "{key}");
        let r = http.get(format!("{}{key}", c.url)).send().await.unwrap();
        let volumes = r.headers()["key-volumes"].to_str().unwrap().to_owned();
        if volumes.contains(&c_addr) {
            on_c.push(key);
        } else if volumes.contains(&d_addr) {
            on_d.push(key);
        }
    }
    assert!(!on_c.is_empty() && on_d.len() >= 3, "{on_c:?} {on_d:?}");

    // C comes back; as soon as a copy to it is in flight, it hangs.
    c.volumes[2].restart();
    let c_dir = c.volumes[2].dir.clone();
    let c_pid = c.volumes[2].proc.pid().unwrap();
    wait_until(Duration::from_secs(20), "a copy to C", || async {
        uploads_in_progress(&c_dir, c_pid) > 0
    })
    .await;
    let pid = c.volumes[2].proc.pid().unwrap().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    c.volumes[3].restart();

    // Every replica missing on D is completed regardless.
    wait_until(Duration::from_secs(30), "completions on D", || async {
        c.volumes[3].files().len() >= on_d.len()
    })
    .await;
    // The keys waiting for C are not locked for good: a DELETE is answered (503 while
    // C is down), not 409.
    let key = &on_c[0];
    wait_until(
        Duration::from_secs(15),
        "the stuck key to be unlocked",
        || async {
            let r = http.delete(format!("{}{key}", c.url)).send().await.unwrap();
            r.status() != StatusCode::CONFLICT
        },
    )
    .await;
    signal("-CONT");
}

/// Defect: a write replacing an unlinked record (or an abandoned intent, or an
/// interrupted delete) forgot the locations of the old value when the placement had
/// changed, leaving files nothing refers to. They are now kept as stale locations and
/// deleted by the upkeep worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_values_leave_no_file_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let volumes: Vec<Volume> = ["a", "b", "c"]
        .iter()
        .map(|n| Volume::start(Kind::Native, tmp.path(), n))
        .collect();
    let third = volumes[2].addr.clone();
    let list = format!("{},{}", volumes[0].addr, volumes[1].addr);
    let c = Cluster::with_volumes(tmp, volumes, &list, &["--replicas", "1"]);
    let http = client();
    let keys: Vec<String> = (0..30).map(|i| format!("/replaced/{i}")).collect();
    for key in &keys {
        let url = format!("{}{key}", c.url);
        assert_eq!(
            http.put(&url).body("old").send().await.unwrap().status(),
            201
        );
        let unlink = reqwest::Method::from_bytes(b"UNLINK").unwrap();
        assert_eq!(
            http.request(unlink, &url).send().await.unwrap().status(),
            204
        );
    }
    // A third volume joins: about a third of the keys are placed on it now.
    let r = http
        .post(format!("{}/-/admin/volumes", c.url))
        .body(format!(r#"{{"add": "{third}"}}"#))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    for key in &keys {
        let url = format!("{}{key}", c.url);
        assert_eq!(
            http.put(&url).body("new").send().await.unwrap().status(),
            201
        );
    }
    let mut moved = 0;
    for key in &keys {
        moved += usize::from(key_volumes(&c, key).await.contains(&third));
    }
    assert!(moved > 0, "no key moved to the new volume");
    // Exactly one file per key remains, each the new value.
    wait_until(
        Duration::from_secs(15),
        "old copies to be deleted",
        || async { c.all_files().len() == keys.len() },
    )
    .await;
    for v in &c.volumes {
        for f in v.files() {
            assert_eq!(std::fs::read(v.dir.join(f)).unwrap(), b"new");
        }
    }
}

/// The replica locations GET names for `key` (`Key-Volumes`).
async fn key_volumes(c: &Cluster, key: &str) -> String {
    let r = client()
        .get(format!("{}{key}", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "{key}");
    r.headers()["key-volumes"].to_str().unwrap().to_owned()
}

/// Defect: `index_recovered` in `/-/health` was always false. It now says whether the
/// index was shut down uncleanly last time: true after kill -9, false after SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_an_unclean_shutdown() {
    let mut c = Cluster::start(Kind::Native, 1, &["--replicas", "1"]);
    let http = client();
    assert_eq!(c.health().await["index_recovered"], false);
    let r = http
        .put(format!("{}/k", c.url))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    c.restart_index(); // kill -9, start again
    assert_eq!(c.health().await["index_recovered"], true);
    assert!(c.index.terminate(), "clean shutdown failed");
    c.index.restart();
    common::cluster::wait_listening(c.addr());
    assert_eq!(c.health().await["index_recovered"], false);
    let r = http.get(format!("{}/k", c.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
}

/// Defect: rebalance (and verify) picked copy sources from every location a record
/// names, including replicas a degraded write left missing; without an md5
/// (`--md5sum=false`) only the size was checked, so a stale file of the right size
/// there was copied as the value. Volume C misses every value and holds such files
/// (and refuses writes, so the upkeep cannot fix it first); a rebalance onto a new
/// volume D must copy only real replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_never_copies_from_a_missing_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let token = ["--auth-token", "only-for-c"];
    let volumes: Vec<Volume> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let extra: &[&str] = if *n == "c" { &token } else { &[] };
            Volume::start_with(Kind::Native, tmp.path(), n, extra)
        })
        .collect();
    let list: Vec<String> = volumes.iter().map(|v| v.addr.clone()).collect();
    let c_addr = list[2].clone();
    let mut c = Cluster::with_volumes(
        tmp,
        volumes,
        &list.join(","),
        &[
            "--write-quorum",
            "2",
            "--md5sum=false",
            "--voltimeout",
            "300ms",
        ],
    );
    let http = client();
    c.volumes[2].stop();
    c.wait_volume(&c_addr, false).await;
    let keys: Vec<String> = (0..40).map(|i| format!("/source/{i}")).collect();
    let value = |key: &str| key.repeat(64).into_bytes();
    for key in &keys {
        let url = format!("{}{key}", c.url);
        let r = http.put(&url).body(value(key)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{key}");
        // A file of the right size but the wrong bytes where C's replica would be.
        let volumes = key_volumes(&c, key).await;
        let on_c = volumes.split(',').find(|v| v.starts_with(&c_addr)).unwrap();
        let sub = on_c.strip_prefix(c_addr.as_str()).unwrap();
        let path = format!(
            "{}{sub}{}",
            c.volumes[2].dir.display(),
            hoard::placement::key_path(key.as_bytes())
        );
        std::fs::create_dir_all(Path::new(&path).parent().unwrap()).unwrap();
        std::fs::write(&path, vec![b'#'; value(key).len()]).unwrap();
    }
    c.volumes[2].restart();
    c.wait_volume(&c_addr, true).await;
    // A fourth volume joins, and a rebalance moves keys onto it.
    let d = Volume::start(Kind::Native, c.tmp.path(), "d");
    let r = http
        .post(format!("{}/-/admin/volumes", c.url))
        .body(format!(r#"{{"add": "{}", "rebalance": true}}"#, d.addr))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let job = c.wait_job().await;
    assert!(job["counts"]["moved"].as_u64().unwrap_or(0) > 0, "{job}");
    let mut checked = 0;
    for key in &keys {
        let volumes = key_volumes(&c, key).await;
        let Some(on_d) = volumes.split(',').find(|v| v.starts_with(&d.addr)) else {
            continue;
        };
        let sub = on_d.strip_prefix(d.addr.as_str()).unwrap();
        let path = format!(
            "{}{sub}{}",
            d.dir.display(),
            hoard::placement::key_path(key.as_bytes())
        );
        let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            stored == value(key),
            "{key} on D holds {:?}…: copied from a missing replica",
            String::from_utf8_lossy(&stored[..8.min(stored.len())])
        );
        checked += 1;
    }
    assert!(checked > 0, "no key moved to D");
}
