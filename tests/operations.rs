//! Operations against a real cluster: rebuild, rebalance (offline and online), kill -9
//! during a rebalance, verify/repair and orphan collection. Every test starts real
//! processes; volume servers are parameterised by [`Kind`].

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{client, hoard_bin, Cluster, Kind, Volume};
use futures_util::stream::{self, StreamExt};
use hoard::index::{Command as IndexCommand, Index, Record};
use hoard::placement::{key_path, Placement};
use reqwest::StatusCode;

both_kinds!(
    rebuild_and_rebalance_round_trip,
    rebuild_walks_native_volumes_in_one_request_per_subvolume,
    kill_during_rebalance,
    verify_repairs,
    online_rebalance_under_load,
);

/// Deterministic value of key number `i`.
fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8) ^ (i >> 8) as u8)
        .collect()
}

/// Key `i`: plain, with a space, or one whose base64 file name contains `/`.
fn key(prefix: &str, i: usize) -> String {
    match i % 3 {
        0 => format!("/{prefix}/{i}"),
        1 => format!("/{prefix}/sp ace/{i}"),
        _ => format!("/{prefix}/{i}/???>>>"),
    }
}

fn encode(key: &str) -> String {
    key.replace('%', "%25")
        .replace(' ', "%20")
        .replace('?', "%3F")
        .replace('>', "%3E")
}

/// PUTs `n` keys concurrently; returns `(key, value)`.
async fn populate(
    c: &Cluster,
    prefix: &str,
    n: usize,
    len: impl Fn(usize) -> usize,
) -> Vec<(String, Vec<u8>)> {
    let items: Vec<(String, Vec<u8>)> =
        (0..n).map(|i| (key(prefix, i), value(i, len(i)))).collect();
    let http = client();
    let results: Vec<StatusCode> = stream::iter(items.clone())
        .map(|(k, v)| {
            let (http, url) = (http.clone(), format!("{}{}", c.url, encode(&k)));
            async move { http.put(url).body(v).send().await.unwrap().status() }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(
        results.iter().all(|s| *s == StatusCode::CREATED),
        "{results:?}"
    );
    let deep = items
        .iter()
        .filter(|(k, _)| key_path(k.as_bytes()).matches('/').count() > 3)
        .count();
    assert!(deep > 0, "no key with '/' in its base64");
    items
}

/// GET through the index, following the redirect.
async fn read(http: &reqwest::Client, url: &str, key: &str) -> Result<Vec<u8>, String> {
    let resp = http
        .get(format!("{url}{}", encode(key)))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::FOUND {
        return Err(format!("{key}: index answered {}", resp.status()));
    }
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let resp = http
        .get(&location)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::OK {
        return Err(format!("{location}: volume answered {}", resp.status()));
    }
    Ok(resp.bytes().await.map_err(|e| e.to_string())?.to_vec())
}

async fn check_values(url: &str, items: &[(String, Vec<u8>)]) {
    let http = client();
    let bad: Vec<String> = stream::iter(items)
        .map(|(k, v)| {
            let http = &http;
            async move {
                match read(http, url, k).await {
                    Ok(got) if got == *v => None,
                    Ok(_) => Some(format!("{k}: value differs")),
                    Err(e) => Some(e),
                }
            }
        })
        .buffer_unordered(16)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    assert!(
        bad.is_empty(),
        "{} bad values, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

/// Every record of the index in `db` (the server must be stopped).
fn dump(db: &Path) -> BTreeMap<Vec<u8>, Record> {
    let index = Index::open(db).unwrap();
    let mut all = BTreeMap::new();
    index
        .walk(None, |k, r| {
            all.insert(k.to_vec(), r);
            true
        })
        .unwrap();
    index.close();
    all
}

/// Runs `hoard args…`; returns whether it succeeded and its JSON report.
async fn hoard(args: Vec<String>) -> (bool, serde_json::Value) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(hoard_bin()).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("hoard {args:?}: no JSON report ({e}); stderr:\n{stderr}"));
        if !out.status.success() {
            eprintln!("hoard {args:?} failed:\n{stderr}");
        }
        eprintln!("hoard {}: {}s", args[0], report["elapsed_s"]);
        (out.status.success(), report)
    })
    .await
    .unwrap()
}

fn args(cmd: &str, db: &Path, volumes: &[&Volume], extra: &[&str]) -> Vec<String> {
    let names: Vec<&str> = volumes.iter().map(|v| v.addr.as_str()).collect();
    let mut a = vec![
        cmd.to_string(),
        "--db".into(),
        db.display().to_string(),
        "--volumes".into(),
        names.join(","),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn placement(volumes: &[&Volume]) -> Placement {
    Placement::new(volumes.iter().map(|v| v.addr.clone()).collect(), 3, 10).unwrap()
}

/// Same keys with the same replica sets, sizes and states.
fn assert_same_records(want: &BTreeMap<Vec<u8>, Record>, got: &BTreeMap<Vec<u8>, Record>) {
    assert_eq!(want.len(), got.len(), "key count");
    for (k, w) in want {
        let g = got
            .get(k)
            .unwrap_or_else(|| panic!("{} missing", String::from_utf8_lossy(k)));
        assert_eq!(
            (&w.volumes, w.size, w.state),
            (&g.volumes, g.size, g.state),
            "{}",
            String::from_utf8_lossy(k)
        );
    }
}

fn assert_at_placement(records: &BTreeMap<Vec<u8>, Record>, p: &Placement) {
    for (k, r) in records {
        assert_eq!(r.volumes, p.locate(k), "{}", String::from_utf8_lossy(k));
    }
}

fn count(report: &serde_json::Value, counter: &str) -> u64 {
    report["counts"][counter]
        .as_u64()
        .unwrap_or_else(|| panic!("{counter} in {report}"))
}

async fn rebuild_and_rebalance_round_trip(kind: Kind) {
    let mut c = Cluster::start(kind, 5, &[]);
    let t = Instant::now();
    let items = populate(&c, "rt", 2000, |i| 100 + i % 900).await;
    eprintln!("populate: {:?}", t.elapsed());
    assert!(c.index.terminate(), "index server did not stop cleanly");
    let original = dump(&c.db);
    assert_eq!(original.len(), 2000);
    let all: Vec<&Volume> = c.volumes.iter().collect();
    let three: Vec<&Volume> = c.volumes[..3].iter().collect();

    // Rebuild from the five volumes: exactly the original records.
    let rebuilt = c.tmp.path().join("rebuilt");
    let (ok, report) = hoard(args("rebuild", &rebuilt, &all, &[])).await;
    assert!(ok, "{report}");
    assert_eq!(count(&report, "files_listed"), 6000);
    assert_same_records(&original, &dump(&rebuilt));
    // Rebuilding into an existing index is refused.
    let (ok, _) = hoard(args("rebuild", &rebuilt, &all, &[])).await;
    assert!(!ok);

    // Shrink to three volumes.
    let (ok, report) = hoard(args("rebalance", &c.db, &three, &[])).await;
    assert!(ok, "{report}");
    assert!(count(&report, "moved") > 1000, "{report}");
    let shrunk = dump(&c.db);
    assert_at_placement(&shrunk, &placement(&three));
    for v in &c.volumes[3..] {
        assert!(
            v.files().is_empty(),
            "{} still holds {} files",
            v.addr,
            v.files().len()
        );
    }
    let rebuilt3 = c.tmp.path().join("rebuilt3");
    let (ok, _) = hoard(args("rebuild", &rebuilt3, &three, &[])).await;
    assert!(ok);
    assert_same_records(&shrunk, &dump(&rebuilt3));
    // A second run has nothing to do.
    let (ok, report) = hoard(args("rebalance", &c.db, &three, &[])).await;
    assert!(ok);
    assert_eq!((count(&report, "moved"), count(&report, "ok")), (0, 2000));

    // And back to five: the original placement again.
    let (ok, report) = hoard(args("rebalance", &c.db, &all, &["--max-rate", "1000MB/s"])).await;
    assert!(ok, "{report}");
    let grown = dump(&c.db);
    assert_same_records(&original, &grown);
    let rebuilt5 = c.tmp.path().join("rebuilt5");
    let (ok, _) = hoard(args("rebuild", &rebuilt5, &all, &[])).await;
    assert!(ok);
    assert_same_records(&grown, &dump(&rebuilt5));

    // verify --deep learns the md5s the rebuild could not know.
    let (ok, report) = hoard(args("verify", &rebuilt5, &all, &["--deep"])).await;
    assert!(ok, "{report}");
    assert_eq!(count(&report, "md5_filled"), 2000);
    assert_eq!(count(&report, "orphans"), 0);
    let filled = dump(&rebuilt5);
    for (k, r) in &original {
        assert_eq!(filled[k].md5, r.md5);
    }

    c.index.restart();
    common::cluster::wait_http(&format!("{}/-/health", c.url));
    check_values(&c.url, &items).await;
}

/// Native volumes announce streamed walks (`GET /-/walk/<dir>/`) on their listings: a
/// rebuild reads each subvolume with one request instead of one listing per directory.
/// nginx volumes are listed directory by directory. Both give the same index.
async fn rebuild_walks_native_volumes_in_one_request_per_subvolume(kind: Kind) {
    let mut c = Cluster::start(kind, 3, &[]);
    // 150 keys: every one of the 3 x 10 subvolumes holds some.
    populate(&c, "walk", 150, |i| 10 + i).await;
    assert!(c.index.terminate(), "index server did not stop cleanly");
    let original = dump(&c.db);
    let all: Vec<&Volume> = c.volumes.iter().collect();
    let rebuilt = c.tmp.path().join("rebuilt");
    let rebuild = args("rebuild", &rebuilt, &all, &[]);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(hoard_bin())
            .args(rebuild)
            .env("HOARD_LOG", "hoard=info")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("streamed walks"))
        .unwrap_or_else(|| panic!("no listing summary in:\n{stderr}"));
    // "listed N files with D directory listings and W streamed walks (…)"
    let number_before = |word: &str| -> u64 {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| *w == word).unwrap();
        words[at - 1].parse().unwrap()
    };
    assert_eq!(number_before("files"), 450, "{line}");
    let (dirs, walks) = (number_before("directory"), number_before("streamed"));
    match kind {
        // The root of each volume is listed, its subvolumes (10 each) walked.
        Kind::Native => assert_eq!((dirs, walks), (3, 30), "{line}"),
        Kind::Nginx => assert!(walks == 0 && dirs > 450, "{line}"),
    }
    assert_same_records(&original, &dump(&rebuilt));
}

async fn kill_during_rebalance(kind: Kind) {
    let mut c = Cluster::start(kind, 5, &[]);
    let items = populate(&c, "kill", 300, |_| 64 << 10).await;
    assert!(c.index.terminate());
    let three: Vec<&Volume> = c.volumes[..3].iter().collect();
    // About 30 MB to copy at 4 MB/s (some 7 s). Each run is killed as soon as it has
    // moved a few keys — seen as old replicas deleted from the two leaving volumes,
    // which happens only after the index durably points at the new copies — so each is
    // killed mid-way, whatever the machine's speed.
    let leaving_files =
        |c: &Cluster| -> usize { c.volumes[3..].iter().map(|v| v.files().len()).sum() };
    let rebalance = args("rebalance", &c.db, &three, &["--max-rate", "4MB/s"]);
    for round in 0..3 {
        let before = leaving_files(&c);
        let mut child = Command::new(hoard_bin())
            .args(&rebalance)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while leaving_files(&c) + 3 > before {
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: the rebalance ended before it was killed"
            );
            assert!(Instant::now() < deadline, "round {round}: no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let moved_before = dump(&c.db)
        .iter()
        .filter(|(k, r)| r.volumes == placement(&three).locate(k))
        .count();
    eprintln!("{moved_before} keys moved by the killed runs");
    assert!(moved_before > 0, "the killed runs moved no key");
    let (ok, report) = hoard(rebalance.clone()).await;
    assert!(ok, "{report}");
    assert!(
        count(&report, "moved") > 0,
        "the last run had no work left: {report}"
    );
    let records = dump(&c.db);
    assert_eq!(records.len(), items.len());
    assert_at_placement(&records, &placement(&three));

    // Consistent: every replica there and intact; leftovers are only orphans.
    let (_, report) = hoard(args("verify", &c.db, &three, &["--deep", "--grace", "0s"])).await;
    assert_eq!(
        (count(&report, "missing"), count(&report, "corrupt")),
        (0, 0),
        "{report}"
    );
    // Every replica the records name is on disk (read from the disk, not through the
    // volumes: deep verify counts an unreachable volume apart from missing replicas).
    let absent = absent_replicas(&c, &records);
    assert!(absent.is_empty(), "before repair: {absent:?}");
    let all: Vec<&Volume> = c.volumes.iter().collect();
    let (ok, report) = hoard(args("verify", &c.db, &all, &["--repair", "--grace", "0s"])).await;
    assert!(ok, "{report}");
    assert_eq!(count(&report, "orphans"), count(&report, "orphans_deleted"));
    let absent = absent_replicas(&c, &records);
    assert!(
        absent.is_empty(),
        "repair deleted live replicas: {absent:?}\n{report}"
    );
    let per_volume: Vec<usize> = c.volumes.iter().map(|v| v.files().len()).collect();
    assert_eq!(
        per_volume.iter().sum::<usize>(),
        3 * items.len(),
        "exactly three replicas per key remain (files per volume: {per_volume:?})\n{report}"
    );
    let (ok, report) = hoard(args("verify", &c.db, &all, &["--grace", "0s"])).await;
    assert!(ok, "{report}");

    c.index.restart();
    common::cluster::wait_http(&format!("{}/-/health", c.url));
    check_values(&c.url, &items).await;
}

/// `(key, location)` of every replica `records` name whose file is not on disk.
fn absent_replicas(c: &Cluster, records: &BTreeMap<Vec<u8>, Record>) -> Vec<(String, String)> {
    let mut absent = Vec::new();
    for (k, r) in records {
        for loc in &r.volumes {
            if !replica_file(c, loc, k).exists() {
                absent.push((String::from_utf8_lossy(k).into_owned(), loc.clone()));
            }
        }
    }
    absent
}

/// Absolute path of `key`'s replica file at `location` (`host:port/svXX`).
fn replica_file(c: &Cluster, location: &str, key: &[u8]) -> std::path::PathBuf {
    let (server, sub) = location.split_once('/').unwrap_or((location, ""));
    let v = c.volumes.iter().find(|v| v.addr == server).unwrap();
    v.dir.join(sub).join(&key_path(key)[1..])
}

async fn verify_repairs(kind: Kind) {
    let mut c = Cluster::start(kind, 4, &[]);
    let items = populate(&c, "vr", 60, |i| 1000 + i).await;
    assert!(c.index.terminate());
    let all: Vec<&Volume> = c.volumes.iter().collect();
    let records = dump(&c.db);
    let keys: Vec<&Vec<u8>> = records.keys().collect();

    // One replica deleted, one corrupted in place (same size, other bytes).
    let deleted = replica_file(&c, &records[keys[0]].volumes[1], keys[0]);
    std::fs::remove_file(&deleted).unwrap();
    let corrupted = replica_file(&c, &records[keys[1]].volumes[0], keys[1]);
    let mut bytes = std::fs::read(&corrupted).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&corrupted, &bytes).unwrap();
    // An orphan (no record), foreign files, a crashed write and an interrupted delete.
    let p = placement(&all);
    let orphan = replica_file(&c, &p.locate(b"/no/such/key")[0], b"/no/such/key");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"orphan").unwrap();
    let foreign = [
        c.volumes[0].dir.join("notes.txt"),
        c.volumes[0].dir.join("sv01/zz/readme"),
    ];
    for f in &foreign {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, b"not ours").unwrap();
    }
    let intent_key = b"/crashed/write".to_vec();
    let intent_loc = p.locate(&intent_key);
    let intent_file = replica_file(&c, &intent_loc[0], &intent_key);
    std::fs::create_dir_all(intent_file.parent().unwrap()).unwrap();
    std::fs::write(&intent_file, b"half").unwrap();
    let doomed = keys[2].clone();
    {
        let index = Index::open(&c.db).unwrap();
        let begin = IndexCommand::Begin {
            key: intent_key.clone(),
            volumes: intent_loc.clone(),
            now_ms: hoard::index::now_ms(),
            owner: 0,
            replace: false,
        };
        index.apply(begin).await.unwrap().unwrap();
        let delete = IndexCommand::BeginDelete {
            key: doomed.clone(),
            protect: false,
            now_ms: 1,
            owner: 0,
        };
        index.apply(delete).await.unwrap().unwrap();
        index.close();
    }

    // Report only: shallow finds the missing replica, deep the corrupt one too.
    let (ok, report) = hoard(args("verify", &c.db, &all, &[])).await;
    assert!(!ok, "problems must fail the run");
    assert_eq!(
        (count(&report, "missing"), count(&report, "corrupt")),
        (1, 0),
        "{report}"
    );
    assert_eq!(count(&report, "stale_deletes"), 1);
    assert_eq!(
        count(&report, "stale_intents"),
        0,
        "the intent is within the grace period"
    );
    assert_eq!(
        count(&report, "orphans"),
        0,
        "the orphan is within the grace period"
    );
    let (_, report) = hoard(args("verify", &c.db, &all, &["--deep", "--grace", "0s"])).await;
    assert_eq!(
        (count(&report, "missing"), count(&report, "corrupt")),
        (1, 1),
        "{report}"
    );
    assert_eq!(
        (count(&report, "stale_intents"), count(&report, "orphans")),
        (1, 1)
    );
    assert!(orphan.exists() && intent_file.exists() && !deleted.exists());

    // Repair everything.
    let (ok, report) = hoard(args(
        "verify",
        &c.db,
        &all,
        &["--repair", "--deep", "--grace", "0s"],
    ))
    .await;
    assert!(ok, "{report}");
    assert_eq!(count(&report, "repaired"), 2, "{report}");
    assert_eq!(count(&report, "intents_rolled_back"), 1);
    assert_eq!(count(&report, "deletes_finished"), 1);
    assert_eq!(count(&report, "orphans_deleted"), 1);
    let by_key: BTreeMap<&[u8], &Vec<u8>> = items.iter().map(|(k, v)| (k.as_bytes(), v)).collect();
    assert_eq!(
        std::fs::read(&deleted).unwrap(),
        *by_key[keys[0].as_slice()]
    );
    assert_eq!(
        std::fs::read(&corrupted).unwrap(),
        *by_key[keys[1].as_slice()]
    );
    assert!(!orphan.exists() && !intent_file.exists());
    assert!(
        foreign.iter().all(|f| f.exists()),
        "foreign files are never touched"
    );
    let after = dump(&c.db);
    assert!(!after.contains_key(&intent_key) && !after.contains_key(&doomed));
    for loc in &records[&doomed].volumes {
        assert!(!replica_file(&c, loc, &doomed).exists());
    }
    let (ok, report) = hoard(args("verify", &c.db, &all, &["--deep", "--grace", "0s"])).await;
    assert!(ok, "{report}");
    assert_eq!(count(&report, "ok"), items.len() as u64 - 1);
}

async fn online_rebalance_under_load(kind: Kind) {
    let mut c = Cluster::start(kind, 3, &[]);
    let items = Arc::new(populate(&c, "on", 400, |i| 2000 + i * 7).await);
    let new: Vec<Volume> = (3..5)
        .map(|i| Volume::start(kind, c.tmp.path(), &format!("vol{i}")))
        .collect();
    let added: Vec<String> = new.iter().map(|v| v.addr.clone()).collect();
    c.volumes.extend(new);

    // A writer and a reader run during the whole membership change and rebalance.
    let stop = Arc::new(AtomicBool::new(false));
    let (writes, reads) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let writer = {
        let (url, stop, writes, failed) =
            (c.url.clone(), stop.clone(), writes.clone(), failed.clone());
        tokio::spawn(async move {
            let http = client();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let k = format!("{url}/written/{i}");
                match http.put(&k).body(value(i, 3000)).send().await {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed
                        .lock()
                        .unwrap()
                        .push(format!("PUT {k}: {}", r.status())),
                    Err(e) => failed.lock().unwrap().push(format!("PUT {k}: {e}")),
                }
                i += 1;
            }
        })
    };
    let reader = {
        let (url, stop, reads, failed, items) = (
            c.url.clone(),
            stop.clone(),
            reads.clone(),
            failed.clone(),
            items.clone(),
        );
        tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::Relaxed) {
                let (k, v) = &items[fastrand::usize(..items.len())];
                match read(&http, &url, k).await {
                    Ok(got) if got == *v => {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => failed.lock().unwrap().push(format!("GET {k}: wrong value")),
                    Err(e) => failed.lock().unwrap().push(format!("GET {e}")),
                }
            }
        })
    };
    // Both are under way before the membership changes.
    wait_until("the load started", || {
        writes.load(Ordering::Relaxed) > 0 && reads.load(Ordering::Relaxed) > 0
    })
    .await;

    let http = client();
    let resp = http
        .post(format!("{}/-/admin/volumes", c.url))
        .json(&serde_json::json!({ "add": added }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["volumes"].as_array().unwrap().len(), 5);

    // One key by hand (minikeyvalue's REBALANCE), then all of them in the background.
    let (k0, _) = &items[0];
    let resp = http
        .request(
            "REBALANCE".parse().unwrap(),
            format!("{}{}", c.url, encode(k0)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = http
        .get(format!("{}{}", c.url, encode(k0)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["key-balance"], "balanced");
    let resp = http
        .request(
            "REBALANCE".parse().unwrap(),
            format!("{}/no/such/key", c.url),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let resp = http
        .post(format!("{}/-/admin/rebalance?max_rate=400", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = http
        .post(format!("{}/-/admin/verify", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT, "one job at a time");
    let s = c.admin_status().await;
    assert_eq!(s["running"]["kind"], "rebalance", "{s}");
    let last = c.wait_job().await;
    assert_eq!(last["state"], "done", "{last}");
    assert_eq!(count(&last, "failed"), 0, "{last}");
    assert!(count(&last, "moved") > 100, "{last}");
    // The load goes on a little after the rebalance (writes to the new placement,
    // reads of moved keys).
    let (w, r) = (
        writes.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed),
    );
    wait_until("the load went on after the rebalance", || {
        writes.load(Ordering::Relaxed) >= w + 5 && reads.load(Ordering::Relaxed) >= r + 5
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    reader.await.unwrap();
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(writes.load(Ordering::Relaxed) > 0 && reads.load(Ordering::Relaxed) > 0);

    // Every old key is balanced on five volumes and intact.
    for (k, _) in items.iter() {
        let resp = http
            .head(format!("{}{}", c.url, encode(k)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["key-balance"], "balanced", "{k}");
    }
    check_values(&c.url, &items).await;

    // Online verify: nothing wrong, old replicas are all gone (after the delay).
    let resp = http
        .post(format!("{}/-/admin/verify?repair=1&deep=1&grace=0s", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let last = c.wait_job().await;
    assert_eq!(last["kind"], "verify");
    for counter in ["missing", "corrupt", "failed", "orphans", "unreachable"] {
        assert_eq!(count(&last, counter), 0, "{counter}: {last}");
    }

    // Registered volumes survive a restart with the same --volumes.
    c.restart_index();
    let vols: serde_json::Value =
        common::cluster::get_json(format!("{}/-/admin/volumes", c.url)).await;
    assert_eq!(vols["volumes"].as_array().unwrap().len(), 5, "{vols}");
}

/// Polls `ok` until it holds; panics after 60 s.
async fn wait_until(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `hoard verify --repair` killed (kill -9) mid-way through repairs, then run again:
/// the rerun finishes the work, and the cluster ends fully consistent — every replica
/// present and intact, leftover intents and interrupted deletes gone, no orphan — with
/// every value readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_killed_midway() {
    let mut c = Cluster::start(Kind::Native, 4, &[]);
    let items = populate(&c, "vk", 120, |i| 4000 + i).await;
    assert!(c.index.terminate());
    let all: Vec<&Volume> = c.volumes.iter().collect();
    let p = placement(&all);
    let records = dump(&c.db);
    let keys: Vec<Vec<u8>> = records.keys().cloned().collect();

    // Damage: the second replica of every key but the last three deleted, and the
    // first one of every tenth corrupted; three interrupted deletes (the last keys),
    // three leftover intents with a partial file each, and three orphans.
    let mut deleted = Vec::new();
    let mut corrupted = Vec::new();
    for (i, k) in keys[..keys.len() - 3].iter().enumerate() {
        let f = replica_file(&c, &records[k].volumes[1], k);
        std::fs::remove_file(&f).unwrap();
        deleted.push((k.clone(), f));
        if i % 10 == 0 {
            let f = replica_file(&c, &records[k].volumes[0], k);
            let mut bytes = std::fs::read(&f).unwrap();
            bytes[0] ^= 0xff;
            std::fs::write(&f, &bytes).unwrap();
            corrupted.push((k.clone(), f));
        }
    }
    let doomed: Vec<Vec<u8>> = keys[keys.len() - 3..].to_vec();
    let intents: Vec<Vec<u8>> = (0..3)
        .map(|i| format!("/vk-intent/{i}").into_bytes())
        .collect();
    let orphans: Vec<std::path::PathBuf> = (0..3)
        .map(|i| {
            let k = format!("/vk-orphan/{i}").into_bytes();
            replica_file(&c, &p.locate(&k)[0], &k)
        })
        .collect();
    {
        let index = Index::open(&c.db).unwrap();
        for k in &intents {
            let volumes = p.locate(k);
            let f = replica_file(&c, &volumes[0], k);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, b"half").unwrap();
            let begin = IndexCommand::Begin {
                key: k.clone(),
                volumes,
                now_ms: 1,
                owner: 0,
                replace: false,
            };
            index.apply(begin).await.unwrap().unwrap();
        }
        for k in &doomed {
            let delete = IndexCommand::BeginDelete {
                key: k.clone(),
                protect: false,
                now_ms: 1,
                owner: 0,
            };
            index.apply(delete).await.unwrap().unwrap();
        }
        index.close();
    }
    for f in &orphans {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, b"orphan").unwrap();
    }

    // First run, paced at 20 keys/s (some 6 s for everything): killed once it has
    // re-created a few replicas.
    let repair = args(
        "verify",
        &c.db,
        &all,
        &["--repair", "--deep", "--grace", "0s", "--max-rate", "20"],
    );
    let restored = |deleted: &[(Vec<u8>, std::path::PathBuf)]| {
        deleted.iter().filter(|(_, f)| f.exists()).count()
    };
    let mut child = Command::new(hoard_bin())
        .args(&repair)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while restored(&deleted) < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "verify ended before it was killed"
        );
        assert!(Instant::now() < deadline, "verify repaired nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let restored_by_killed = restored(&deleted);
    eprintln!(
        "the killed run restored {restored_by_killed} of {} replicas",
        deleted.len()
    );
    assert!(
        restored_by_killed < deleted.len(),
        "the killed run had finished"
    );

    // The rerun finishes the job.
    let unpaced = args(
        "verify",
        &c.db,
        &all,
        &["--repair", "--deep", "--grace", "0s"],
    );
    let (ok, report) = hoard(unpaced).await;
    assert!(ok, "{report}");
    assert!(
        count(&report, "repaired") > 0,
        "the rerun had nothing left: {report}"
    );
    assert_eq!(count(&report, "failed"), 0, "{report}");

    // Consistent: a report-only deep verify finds nothing, every replica is intact on
    // disk, the intents and interrupted deletes are gone with their files.
    let (ok, report) = hoard(args("verify", &c.db, &all, &["--deep", "--grace", "0s"])).await;
    assert!(ok, "{report}");
    for counter in [
        "missing",
        "corrupt",
        "stale_intents",
        "stale_deletes",
        "orphans",
    ] {
        assert_eq!(count(&report, counter), 0, "{counter}: {report}");
    }
    let by_key: BTreeMap<&[u8], &Vec<u8>> = items.iter().map(|(k, v)| (k.as_bytes(), v)).collect();
    let after = dump(&c.db);
    assert_eq!(after.len(), keys.len() - doomed.len(), "records left");
    for (k, r) in &after {
        assert_eq!(r.volumes, records[k].volumes);
        for loc in &r.volumes {
            let f = replica_file(&c, loc, k);
            assert!(
                std::fs::read(&f).ok().as_ref() == Some(by_key[k.as_slice()]),
                "{} is not intact",
                f.display()
            );
        }
    }
    for k in &doomed {
        for loc in &records[k].volumes {
            assert!(!replica_file(&c, loc, k).exists());
        }
    }
    for k in &intents {
        assert!(!replica_file(&c, &p.locate(k)[0], k).exists());
    }
    assert!(orphans.iter().all(|f| !f.exists()), "orphans left");
    assert!(corrupted.iter().all(|(_, f)| f.exists()));

    c.index.restart();
    common::cluster::wait_http(&format!("{}/-/health", c.url));
    let live: Vec<(String, Vec<u8>)> = items
        .into_iter()
        .filter(|(k, _)| !doomed.contains(&k.as_bytes().to_vec()))
        .collect();
    check_values(&c.url, &live).await;
}

/// Repair races everything that writes files: online `verify --repair --grace 0s` runs
/// back to back while keys are moved one by one (`REBALANCE`) after volumes joined,
/// new keys are written and deleted through the HTTP API, and registers are overwritten
/// through the JSON API (no key lock: their intents are what repair may roll back).
/// Recorded outcomes are then checked: every acknowledged value reads back (a register
/// holds its last acknowledged value or one written after it whose outcome is unknown),
/// deleted keys are gone, and every replica a record names is on disk and intact —
/// repair never deleted a file a record, or a write in flight, refers to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_races_rebalance_and_writes() {
    let json_port = common::free_port();
    let jp = json_port.to_string();
    let mut c = Cluster::start(Kind::Native, 3, &["--json-port", &jp]);
    let json = format!("http://127.0.0.1:{json_port}");
    let items = populate(&c, "race", 150, |i| 1000 + i * 13).await;
    let new: Vec<Volume> = (3..5)
        .map(|i| Volume::start(Kind::Native, c.tmp.path(), &format!("vol{i}")))
        .collect();
    let added: Vec<String> = new.iter().map(|v| v.addr.clone()).collect();
    c.volumes.extend(new);
    let done = Arc::new(AtomicU64::new(0));
    let url = c.url.clone();

    // Writes and deletes of new keys: (key, value, acknowledged put, acknowledged delete).
    let writer = {
        let (url, done) = (url.clone(), done.clone());
        tokio::spawn(async move {
            let http = client();
            let mut log = Vec::new();
            for i in 0..240 {
                let k = format!("/new/{i}");
                let v = value(i, 2000 + i);
                let put = http.put(format!("{url}{k}")).body(v.clone()).send().await;
                let put_ok = matches!(&put, Ok(r) if r.status() == StatusCode::CREATED);
                let mut deleted = false;
                if put_ok && i % 4 == 0 {
                    let del = http.delete(format!("{url}{k}")).send().await;
                    deleted = matches!(&del, Ok(r) if r.status() == StatusCode::NO_CONTENT);
                }
                log.push((k, v, put_ok, deleted));
            }
            done.fetch_add(1, Ordering::SeqCst);
            log
        })
    };
    // Registers overwritten in turn through the JSON API: per register, the values in
    // the order sent, with whether each was acknowledged.
    let registers = {
        let (json, done) = (json.clone(), done.clone());
        tokio::spawn(async move {
            let http = client();
            let mut log: Vec<Vec<(String, bool)>> = vec![Vec::new(); 4];
            for round in 0..40 {
                for (r, history) in log.iter_mut().enumerate() {
                    let v = format!("reg{r}-{round}-{}", "x".repeat(500 + round));
                    let body = serde_json::json!({ "value": v }).to_string();
                    let resp = http.put(format!("{json}/reg{r}")).body(body).send().await;
                    history.push((v, matches!(&resp, Ok(x) if x.status() == StatusCode::OK)));
                }
            }
            done.fetch_add(1, Ordering::SeqCst);
            log
        })
    };
    // Moves: each populated key by hand, after each of two volumes joined.
    let mover = {
        let (url, done, keys, added) = (
            url.clone(),
            done.clone(),
            items.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            added.clone(),
        );
        tokio::spawn(async move {
            let http = client();
            let mut moved = 0;
            for volume in added {
                let resp = http
                    .post(format!("{url}/-/admin/volumes"))
                    .json(&serde_json::json!({ "add": [volume] }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                for k in &keys {
                    let resp = http
                        .request("REBALANCE".parse().unwrap(), format!("{url}{}", encode(k)))
                        .send()
                        .await
                        .unwrap();
                    moved += usize::from(resp.status() == StatusCode::NO_CONTENT);
                }
            }
            done.fetch_add(1, Ordering::SeqCst);
            moved
        })
    };
    // Repair, back to back, until the others are done.
    let http = client();
    let mut repairs = 0;
    let mut deleted_orphans = 0;
    while done.load(Ordering::SeqCst) < 3 {
        let resp = http
            .post(format!("{url}/-/admin/verify?repair=1&grace=0s"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let last = c.wait_job().await;
        assert_eq!(last["state"], "done", "{last}");
        deleted_orphans += count(&last, "orphans_deleted");
        // Nothing here leaves a replica missing from an unchanged record (no fault, no
        // degraded write): a replica repair re-created was a live one deleted.
        assert_eq!(
            count(&last, "repaired"),
            0,
            "a live replica was deleted: {last}"
        );
        repairs += 1;
    }
    let writes = writer.await.unwrap();
    let registers = registers.await.unwrap();
    let moved = mover.await.unwrap();
    eprintln!("{repairs} repairs ({deleted_orphans} orphans deleted) during {moved} moves");
    assert!(
        repairs >= 2 && moved > 0,
        "{repairs} repairs, {moved} moves"
    );

    // Repair once more, then the history: every acknowledged value is there.
    c.repair().await;
    let mut want: Vec<(String, Vec<u8>)> = items.clone();
    for (k, v, put_ok, deleted) in &writes {
        let resp = http.get(format!("{url}{k}")).send().await.unwrap();
        if *deleted {
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{k} was deleted");
        } else if *put_ok {
            want.push((k.clone(), v.clone()));
        }
    }
    assert!(want.len() > items.len(), "no write was acknowledged");
    check_values(&url, &want).await;
    for (r, history) in registers.iter().enumerate() {
        let resp = http.get(format!("{json}/reg{r}")).send().await.unwrap();
        let body: serde_json::Value = resp.json().await.unwrap();
        let got = body["data"].as_str().map(str::to_string);
        let last_ack = history.iter().rposition(|(_, ok)| *ok);
        let allowed: Vec<&String> = history[last_ack.unwrap_or(0)..]
            .iter()
            .enumerate()
            .filter(|(i, (_, ok))| *i == 0 && last_ack.is_some() || !ok)
            .map(|(_, (v, _))| v)
            .collect();
        let got = got.unwrap_or_else(|| panic!("reg{r} lost its value: {body}"));
        assert!(
            allowed.contains(&&got),
            "reg{r} holds {got:.20}…, not one of its possible values"
        );
        assert!(
            last_ack.is_some(),
            "no overwrite of reg{r} was acknowledged"
        );
    }
    // Every replica of every record on disk and intact.
    let status = http
        .post(format!("{url}/-/admin/verify?deep=1&grace=0s"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), StatusCode::ACCEPTED);
    let last = c.wait_job().await;
    for counter in ["missing", "corrupt", "failed", "unreachable"] {
        assert_eq!(count(&last, counter), 0, "{counter}: {last}");
    }
}
