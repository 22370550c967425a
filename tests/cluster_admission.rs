//! Client admission in an index cluster (issue 23): `--rate-limit` and
//! `--request-timeout` bound clients only. The members' own traffic under `/-/raft/`
//! and the membership changes under `/-/cluster/` bypass both (they carry their own
//! bounds), so a client flood cannot make the leader miss heartbeats, and a slow
//! `cluster add` is not cut off half-way, leaving a learner behind.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::free_port;
use common::ha::{http, IndexCluster, Links, WAIT};

/// How long the clients flood the members: several election timeouts (0.5–1 s), so a
/// throttled heartbeat would have cost the leader its leadership.
const FLOOD: Duration = Duration::from_secs(4);

/// Client loops per member.
const FLOODERS: usize = 4;

/// Floods `url` with GETs until `stop`; counts the 429 answers in `refused`.
async fn flood(url: String, stop: Arc<AtomicBool>, refused: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        let r = http()
            .get(format!("{url}/flood/key"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 429) {
            refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flood_does_not_throttle_raft() {
    let c = IndexCluster::start(3, 3, Links::Direct, &["--rate-limit", "5"]);
    let (leader, term) = c.leader().await;
    c.wait_volumes_up(&c.ids()).await;
    let sampler = c.start_sampler();

    let stop = Arc::new(AtomicBool::new(false));
    let mut refused = Vec::new();
    let mut tasks = Vec::new();
    for id in c.ids() {
        let count = Arc::new(AtomicU64::new(0));
        for _ in 0..FLOODERS {
            let (url, stop, count) = (c.url(id), Arc::clone(&stop), Arc::clone(&count));
            tasks.push(tokio::spawn(flood(url, stop, count)));
        }
        refused.push((id, count));
    }
    let started = Instant::now();

    // Every member is saturated; its Raft endpoints still answer (never 429).
    for (id, count) in &refused {
        let deadline = Instant::now() + WAIT;
        while count.load(Ordering::Relaxed) == 0 {
            assert!(
                Instant::now() < deadline,
                "node {id} never refused a client"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = http()
            .post(format!("{}/-/raft/read-index", c.url(*id)))
            .body("null")
            .send()
            .await
            .expect("read-index");
        assert_ne!(r.status(), 429, "node {id} throttled a Raft call");
    }

    // A write through the leader succeeds (the client itself retries its 429s).
    let deadline = Instant::now() + WAIT;
    loop {
        let r = http()
            .put(format!("{}/during/flood", c.url(leader)))
            .body("value")
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("PUT");
        if r.status() == 201 {
            break;
        }
        assert_eq!(r.status(), 429, "PUT during the flood");
        assert!(Instant::now() < deadline, "no PUT got through the flood");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The flood goes on for several election timeouts.
    tokio::time::sleep(FLOOD.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("flooder");
    }
    sampler.stop().await;

    // One leader, one term, all along.
    let samples = c.samples.samples();
    let flooded: Vec<_> = samples.iter().filter(|s| s.at >= started).collect();
    assert!(
        !flooded.is_empty(),
        "no Raft state sampled during the flood"
    );
    for s in &flooded {
        assert_eq!(
            (s.status.term, s.status.leader_id),
            (term, Some(leader)),
            "node {} during the flood: {:?}\n{}",
            s.node,
            s.status,
            c.logs()
        );
    }
    assert_eq!(c.leader().await, (leader, term));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_outlives_the_request_timeout() {
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
    let mut c = IndexCluster::start(3, 3, Links::Direct, &["--request-timeout", "1s"]);
    let (leader, _) = c.leader().await;

    // Node 4 is added before it runs: the leader waits for it to catch up.
    let port = free_port();
    let add = tokio::spawn({
        let url = c.url(leader);
        async move {
            let r = http()
                .post(format!("{url}/-/cluster/members"))
                .json(&serde_json::json!({ "id": 4, "addr": format!("127.0.0.1:{port}") }))
                .timeout(Duration::from_secs(120))
                .send()
                .await
                .expect("cluster add");
            let status = r.status();
            (status, r.text().await.unwrap_or_default())
        }
    });
    // The change is still under way after twice the request timeout...
    let sent = Instant::now();
    while sent.elapsed() < REQUEST_TIMEOUT * 2 {
        if add.is_finished() {
            let ended = add.await;
            panic!("the add ended before node 4 ran: {ended:?}\n{}", c.logs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... and completes once the node runs.
    c.start_joining_at(4, port, &[]);
    let (status, body) = add.await.expect("add task");
    assert_eq!(status, 200, "{body}\n{}", c.logs());
    let view: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
    assert_eq!(view["voters"], serde_json::json!([1, 2, 3, 4]), "{body}");
    c.wait_converged(&[1, 2, 3, 4]).await;
}
