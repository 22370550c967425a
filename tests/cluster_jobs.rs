//! Background jobs in an index cluster (issue 10), on the real binaries: a rebalance
//! runs once per cluster on the leader, its progress is visible from every member,
//! and when the leader is killed -9 mid-job the new leader takes it over and finishes
//! it.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Kind, Volume};
use common::ha::{http, IndexCluster, Links, WAIT};

/// Keys to move: at `max_rate=40` keys/s the rebalance takes several seconds, time
/// enough to kill the leader in the middle of it.
const KEYS: usize = 240;

async fn json(url: &str) -> Option<serde_json::Value> {
    http()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Polls `GET /-/admin/status` on `url` until `check` accepts it.
async fn wait_status(
    url: &str,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = json(&format!("{url}/-/admin/status")).await;
        if let Some(s) = s.as_ref().filter(|s| check(s)) {
            return s.clone();
        }
        assert!(Instant::now() < deadline, "{what}: last status {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_survives_the_death_of_the_leader() {
    let mut c = IndexCluster::start(3, 3, Links::Direct, &[]);
    let (leader, _) = c.leader().await;
    c.wait_volumes_up(&[1, 2, 3]).await;
    for i in 0..KEYS {
        let r = http()
            .put(format!("{}/k/{i}", c.url(1)))
            .body(format!("value {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "PUT /k/{i}");
    }

    // A fourth volume joins (through a follower: forwarded to the leader).
    let followers: Vec<u64> = c.ids().into_iter().filter(|&i| i != leader).collect();
    let extra = Volume::start(Kind::Native, c.tmp.path(), "vol3");
    let r = http()
        .post(format!("{}/-/admin/volumes", c.url(followers[0])))
        .json(&serde_json::json!({ "add": extra.addr }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    c.volumes.push(extra);
    c.wait_volumes_up(&c.ids()).await;

    // Started on a follower, the job runs on the leader.
    let r = http()
        .post(format!(
            "{}/-/admin/rebalance?max_rate=40",
            c.url(followers[0])
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let started: serde_json::Value = r.json().await.unwrap();
    assert_eq!(started["node"], leader, "{started}");
    let id = started["id"].clone();

    // Its progress is visible on the other follower.
    let seen = wait_status(&c.url(followers[1]), "progress on a follower", |s| {
        s["running"]["id"] == id && s["running"]["counts"]["scanned"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(seen["running"]["node"], leader, "{seen}");
    // A second job is refused while it runs, from any member.
    let again = http()
        .post(format!("{}/-/admin/verify", c.url(followers[1])))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    // The leader dies mid-job.
    c.kill(leader);
    c.forget(leader);
    let (new_leader, _) = c.wait_leader_among(&followers).await;
    let done = wait_status(&c.url(followers[0]), "the job finishing", |s| {
        s["last"]["id"] == id && s["last"]["state"] != "running"
    })
    .await;
    let last = &done["last"];
    assert_eq!(last["state"], "done", "{done}");
    assert_eq!(
        last["node"], new_leader,
        "finished by the new leader: {done}"
    );
    assert_eq!(last["counts"]["failed"], 0, "{done}");
    let log = c.nodes[&new_leader].proc.log_text();
    assert!(
        log.contains("taking over rebalance job"),
        "the new leader went on with the job:\n{log}"
    );
    let scanned = last["counts"]["scanned"].as_u64().unwrap();
    assert!(scanned >= KEYS as u64, "{done}");
    // The other survivor reports the same.
    let other = followers
        .iter()
        .find(|&&f| f != followers[0])
        .copied()
        .unwrap();
    wait_status(&c.url(other), "the same end on the other member", |s| {
        s["last"]["id"] == id && s["last"]["state"] == "done"
    })
    .await;

    // Every key is where the new placement puts it.
    let deadline = Instant::now() + WAIT;
    for i in 0..KEYS {
        let r = http()
            .get(format!("{}/k/{i}", c.url(new_leader)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "/k/{i}");
        assert_eq!(
            r.headers()["key-balance"],
            "balanced",
            "/k/{i} on {:?}",
            r.headers().get("key-volumes")
        );
        assert!(Instant::now() < deadline);
    }
}

/// The value of `key` read through `url` (the index's redirect, then the volume), or
/// why it could not be read.
async fn read_value(url: &str, key: &str) -> Result<String, String> {
    let r = http()
        .get(format!("{url}{key}"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let location = r
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| format!("{key}: status {}, no redirect", r.status()))?
        .to_string();
    let v = http()
        .get(&location)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if v.status() != 200 {
        return Err(format!("{location}: status {}", v.status()));
    }
    v.text().await.map_err(|e| e.to_string())
}

/// Keys the verify job checks before it looks for orphans: at `max_rate=15` keys/s,
/// several seconds, time enough to cut its member off and write through the others.
const VERIFIED: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_deletes_no_file_of_the_majority() {
    let c = IndexCluster::start(3, 3, Links::Proxied, &[]);
    let (old, _) = c.leader().await;
    c.wait_volumes_up(&c.ids()).await;
    for i in 0..VERIFIED {
        let r = http()
            .put(format!("{}/k/{i}", c.url(old)))
            .body(format!("value {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "PUT /k/{i}");
    }
    // A repairing verify (every unreferenced file is an orphan at once) on the leader.
    let r = http()
        .post(format!(
            "{}/-/admin/verify?repair=1&grace=0s&max_rate=15",
            c.url(old)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    wait_status(&c.url(old), "the verify running", |s| {
        s["running"]["counts"]["scanned"].as_u64() > Some(0)
    })
    .await;

    // The leader is cut off mid-job (it still believes it leads); the others elect a
    // leader and take writes, whose files the cut-off member's index does not know.
    c.partition(old);
    let others: Vec<u64> = c.ids().into_iter().filter(|&i| i != old).collect();
    let (new, _) = c.wait_leader_among(&others).await;
    for i in 0..10 {
        let r = http()
            .put(format!("{}/new/{i}", c.url(new)))
            .body(format!("new {i}"))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "PUT /new/{i}");
    }

    // The cut-off member's job goes on to its orphan pass and ends there.
    let deadline = Instant::now() + Duration::from_secs(90);
    let log = loop {
        let log = c.nodes[&old].proc.log_text();
        if log.contains("verify job ended") {
            break log;
        }
        assert!(Instant::now() < deadline, "the job never ended:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // It deleted nothing the majority refers to.
    for i in 0..10 {
        let got = read_value(&c.url(new), &format!("/new/{i}")).await;
        assert_eq!(
            got.as_deref(),
            Ok(format!("new {i}").as_str()),
            "/new/{i} after the cut-off member's orphan pass; its log:\n{log}"
        );
    }
    // It stopped before deleting (no quorum to confirm its reads, or the job taken
    // over), rather than running to its end on a stale index.
    assert!(log.contains("verify job failed"), "{log}");
    assert!(!log.contains("deleted orphan"), "{log}");
}
