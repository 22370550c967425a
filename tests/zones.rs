//! Zones against a real cluster (`hoard server` + native `hoard volume`s, all separate
//! processes on loopback): every key's replicas span the zones, a whole zone down
//! leaves every key readable, reads prefer the index server's zone, and adding a zone
//! (or labelling volumes) is repaired by rebalance / verify --repair, moving only what
//! must move.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use common::cluster::{client, Cluster, Kind, Volume};
use reqwest::StatusCode;

/// Keys written per test.
const KEYS: usize = 60;

fn key(i: usize) -> String {
    format!("/zones/{i}")
}

fn value(i: usize) -> Vec<u8> {
    format!("value of key {i} ").repeat(1 + i % 7).into_bytes()
}

/// Six running volumes; the index server starts later, with labels chosen per test.
fn volumes(tmp: &tempfile::TempDir, n: usize) -> Vec<Volume> {
    (0..n)
        .map(|i| Volume::start(Kind::Native, tmp.path(), &format!("vol{i}")))
        .collect()
}

async fn put_all(c: &Cluster) {
    let http = client();
    for i in 0..KEYS {
        let r = http
            .put(format!("{}{}", c.url, key(i)))
            .body(value(i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "PUT {}", key(i));
    }
}

/// `(Key-Volumes servers, Key-Balance, Location)` of a key, from its redirect.
async fn locate(c: &Cluster, k: &str) -> (Vec<String>, String, String) {
    let r = client().get(format!("{}{k}", c.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "GET {k}");
    let h = |name: &str| r.headers()[name].to_str().unwrap().to_string();
    let servers = h("key-volumes")
        .split(',')
        .map(|loc| loc.split('/').next().unwrap().to_string())
        .collect();
    (servers, h("key-balance"), h("location"))
}

/// Reads a key's value through its redirect.
async fn read(c: &Cluster, k: &str) -> Vec<u8> {
    let (_, _, location) = locate(c, k).await;
    let r = client().get(&location).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{k} at {location}");
    r.bytes().await.unwrap().to_vec()
}

fn zone_map(pairs: &[(&Volume, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(v, z)| (v.addr.clone(), z.to_string()))
        .collect()
}

fn zones_of(servers: &[String], zones: &BTreeMap<String, String>) -> BTreeSet<String> {
    servers
        .iter()
        .map(|s| zones.get(s).cloned().unwrap_or_else(|| s.clone()))
        .collect()
}

fn count(report: &serde_json::Value, counter: &str) -> u64 {
    report["counts"][counter]
        .as_u64()
        .unwrap_or_else(|| panic!("{counter} in {report}"))
}

/// Starts a job (`POST /-/admin/<what>`) and waits for it to finish.
async fn job(c: &Cluster, what: &str) -> serde_json::Value {
    let r = client()
        .post(format!("{}/-/admin/{what}", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{what}");
    let last = c.wait_job().await;
    assert_eq!(last["state"], "done", "{last}");
    last
}

/// 6 volumes in 3 zones: every key spans the 3 zones and is read from the index
/// server's zone; with that whole zone down, every key is still readable (from the
/// others); the health report and admin API show the zones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_zones_spread_and_survive_a_zone() {
    let tmp = tempfile::tempdir().unwrap();
    let vols = volumes(&tmp, 6);
    let labels = ["z1", "z1", "z2", "z2", "z3", "z3"];
    let zones = zone_map(&vols.iter().zip(labels).collect::<Vec<_>>());
    let list: Vec<String> = vols
        .iter()
        .zip(labels)
        .map(|(v, z)| format!("{}@{z}", v.addr))
        .collect();
    let mut c = Cluster::with_volumes(tmp, vols, &list.join(","), &["--zone", "z2"]);
    c.wait_all_up().await;

    let health = c.health().await;
    assert_eq!(health["zone"], "z2", "{health}");
    let reported: Vec<(String, u64, u64)> = health["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| {
            (
                z["zone"].as_str().unwrap().to_string(),
                z["volumes"].as_u64().unwrap(),
                z["up"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reported,
        [
            ("z1".into(), 2, 2),
            ("z2".into(), 2, 2),
            ("z3".into(), 2, 2)
        ]
    );
    for v in health["volumes"].as_array().unwrap() {
        let server = v["server"].as_str().unwrap();
        assert_eq!(v["zone"].as_str(), zones.get(server).map(String::as_str));
    }
    let admin = common::cluster::get_json(format!("{}/-/admin/volumes", c.url)).await;
    assert_eq!(admin["zones"].as_object().unwrap().len(), 6, "{admin}");

    put_all(&c).await;
    let mut first_replica_zones = BTreeMap::<String, usize>::new();
    for i in 0..KEYS {
        let (servers, balance, location) = locate(&c, &key(i)).await;
        assert_eq!(balance, "balanced");
        assert_eq!(servers.len(), 3);
        let spanned = zones_of(&servers, &zones);
        assert_eq!(spanned.len(), 3, "{} on {servers:?}", key(i));
        *first_replica_zones
            .entry(zones[&servers[0]].clone())
            .or_default() += 1;
        // Reads go to the replica in the index server's zone.
        let host = location.split('/').nth(2).unwrap();
        assert_eq!(zones[host], "z2", "{} read from {host}", key(i));
    }
    // The first replica is not always in the same zone (placement is by key).
    assert!(first_replica_zones.len() > 1, "{first_replica_zones:?}");

    // The whole zone of the index server goes down: every key is still readable.
    for v in c.volumes.iter_mut().filter(|v| zones[&v.addr] == "z2") {
        v.stop();
    }
    for addr in zones.iter().filter(|(_, z)| *z == "z2").map(|(a, _)| a) {
        c.wait_volume(addr, false).await;
    }
    let health = c.health().await;
    let z2 = &health["zones"][1];
    assert_eq!(
        (z2["zone"].as_str(), z2["up"].as_u64()),
        (Some("z2"), Some(0))
    );
    let metrics = client()
        .get(format!("{}/-/metrics", c.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "hoard_zone_volumes_up{zone=\"z2\"} 0",
        "hoard_zone_volumes_up{zone=\"z1\"} 2",
        "hoard_zone_volumes{zone=\"z2\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in:\n{metrics}"
        );
    }
    for i in 0..KEYS {
        let (_, _, location) = locate(&c, &key(i)).await;
        let host = location.split('/').nth(2).unwrap();
        assert_ne!(zones[host], "z2", "{} redirected to a down volume", key(i));
        assert_eq!(read(&c, &key(i)).await, value(i), "{}", key(i));
    }
}

/// 4 volumes in 2 zones (replicas 3: every key spans both), then a third zone joins:
/// verify reports every key unspread; a rebalance moves exactly one replica of every
/// key (what must move: each key needs one copy in the new zone), after which every
/// key spans 3 zones and is balanced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_zone_rebalances_the_spread() {
    let tmp = tempfile::tempdir().unwrap();
    let vols = volumes(&tmp, 6);
    let labels = ["z1", "z1", "z2", "z2", "z3", "z3"];
    let zones = zone_map(&vols.iter().zip(labels).collect::<Vec<_>>());
    let spec = |i: usize| format!("{}@{}", vols[i].addr, labels[i]);
    let first: Vec<String> = (0..4).map(spec).collect();
    let added: Vec<String> = (4..6).map(spec).collect();
    let c = Cluster::with_volumes(tmp, vols, &first.join(","), &[]);
    c.wait_all_up().await;
    put_all(&c).await;
    let mut before = Vec::new();
    for i in 0..KEYS {
        let (servers, _, _) = locate(&c, &key(i)).await;
        assert_eq!(zones_of(&servers, &zones).len(), 2, "{servers:?}");
        before.push(servers);
    }

    let r = client()
        .post(format!("{}/-/admin/volumes", c.url))
        .json(&serde_json::json!({ "add": added }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["zones"].as_object().unwrap().len(), 6, "{body}");
    assert_eq!(body["volumes"].as_array().unwrap().len(), 6, "{body}");

    // Verify sees the lost spread (and, without --repair, changes nothing).
    let verified = job(&c, "verify").await;
    assert_eq!(count(&verified, "unspread"), KEYS as u64, "{verified}");
    assert_eq!(count(&verified, "moved"), 0, "{verified}");
    let (_, balance, _) = locate(&c, &key(0)).await;
    assert_eq!(balance, "unbalanced");

    let t = Instant::now();
    let rebalanced = job(&c, "rebalance").await;
    let moved_keys = count(&rebalanced, "moved");
    let mut moved_replicas = 0;
    for (i, old) in before.iter().enumerate() {
        let (servers, balance, _) = locate(&c, &key(i)).await;
        assert_eq!(balance, "balanced", "{}", key(i));
        assert_eq!(zones_of(&servers, &zones).len(), 3, "{servers:?}");
        let gained = servers.iter().filter(|s| !old.contains(s)).count();
        assert_eq!(gained, 1, "{}: {old:?} → {servers:?}", key(i));
        moved_replicas += gained;
        assert_eq!(read(&c, &key(i)).await, value(i));
    }
    println!(
        "adding a zone (2 → 3 zones, 4 → 6 volumes, {KEYS} keys × 3 replicas): rebalance \
         moved {moved_keys} keys, {moved_replicas} of {} replicas, in {:?}",
        KEYS * 3,
        t.elapsed()
    );
    assert_eq!(moved_keys, KEYS as u64, "{rebalanced}");
    assert_eq!(moved_replicas, KEYS);
    let again = job(&c, "verify").await;
    assert_eq!(count(&again, "unspread"), 0, "{again}");
}

/// Volumes labelled with zones after keys were written without: verify --repair moves
/// the keys whose replicas shared a zone, and afterwards none does. The labels are
/// recorded: they survive a restart of the index server with the same `--volumes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelling_zones_then_verify_repairs_the_spread() {
    let tmp = tempfile::tempdir().unwrap();
    let vols = volumes(&tmp, 6);
    let labels = ["z1", "z1", "z2", "z2", "z3", "z3"];
    let zones = zone_map(&vols.iter().zip(labels).collect::<Vec<_>>());
    let plain: Vec<String> = vols.iter().map(|v| v.addr.clone()).collect();
    let labelled: Vec<String> = vols
        .iter()
        .zip(labels)
        .map(|(v, z)| format!("{}@{z}", v.addr))
        .collect();
    let mut c = Cluster::with_volumes(tmp, vols, &plain.join(","), &[]);
    c.wait_all_up().await;
    put_all(&c).await;
    let mut crowded = 0;
    for i in 0..KEYS {
        let (servers, _, _) = locate(&c, &key(i)).await;
        crowded += usize::from(zones_of(&servers, &zones).len() < 3);
    }
    assert!(crowded > 0, "no key had two replicas in one zone");

    let r = client()
        .post(format!("{}/-/admin/volumes", c.url))
        .json(&serde_json::json!({ "add": labelled }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let repaired = job(&c, "verify?repair=1&grace=0s").await;
    assert_eq!(count(&repaired, "unspread"), crowded as u64, "{repaired}");
    assert_eq!(count(&repaired, "moved"), crowded as u64, "{repaired}");
    assert_eq!(count(&repaired, "failed"), 0, "{repaired}");
    println!("labelling zones: verify --repair moved {crowded} of {KEYS} keys");
    for i in 0..KEYS {
        let (servers, _, _) = locate(&c, &key(i)).await;
        assert_eq!(zones_of(&servers, &zones).len(), 3, "{servers:?}");
        assert_eq!(read(&c, &key(i)).await, value(i));
    }

    // Same --volumes (unlabelled): the recorded labels stay in force.
    c.restart_index();
    c.wait_all_up().await;
    let admin = common::cluster::get_json(format!("{}/-/admin/volumes", c.url)).await;
    assert_eq!(admin["zones"].as_object().unwrap().len(), 6, "{admin}");
    let again = job(&c, "verify").await;
    assert_eq!(count(&again, "unspread"), 0, "{again}");
}

/// In an index cluster the labels travel with the replicated volume list: labelled on
/// one member, every member shows the zones and places keys alike (same replicas,
/// spanning the 3 zones, balanced on each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_cluster_replicates_zones() {
    use common::ha::{IndexCluster, Links};
    let c = IndexCluster::start(3, 6, Links::Direct, &[]);
    c.leader().await;
    let labels = ["z1", "z1", "z2", "z2", "z3", "z3"];
    let zones = zone_map(&c.volumes.iter().zip(labels).collect::<Vec<_>>());
    let labelled: Vec<String> = c
        .volumes
        .iter()
        .zip(labels)
        .map(|(v, z)| format!("{}@{z}", v.addr))
        .collect();
    let ids = c.ids();
    let r = client()
        .post(format!("{}/-/admin/volumes", c.url(ids[1])))
        .json(&serde_json::json!({ "add": labelled }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    // Every member puts the labelled list in force.
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    for &id in &ids {
        loop {
            let admin = common::cluster::get_json(format!("{}/-/admin/volumes", c.url(id))).await;
            if admin["zones"].as_object().map(|z| z.len()) == Some(6) {
                break;
            }
            assert!(Instant::now() < deadline, "node {id}: {admin}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let http = client();
    for i in 0..KEYS / 4 {
        let r = http
            .put(format!("{}{}", c.url(ids[0]), key(i)))
            .body(value(i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "PUT {}", key(i));
        let mut seen = BTreeSet::new();
        for &id in &ids {
            let r = http
                .head(format!("{}{}", c.url(id), key(i)))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::FOUND, "node {id}: {}", key(i));
            assert_eq!(r.headers()["key-balance"], "balanced", "node {id}");
            seen.insert(r.headers()["key-volumes"].to_str().unwrap().to_string());
        }
        assert_eq!(seen.len(), 1, "members disagree: {seen:?}");
        let servers: Vec<String> = seen
            .into_iter()
            .next()
            .unwrap()
            .split(',')
            .map(|loc| loc.split('/').next().unwrap().to_string())
            .collect();
        assert_eq!(zones_of(&servers, &zones).len(), 3, "{servers:?}");
    }
}
