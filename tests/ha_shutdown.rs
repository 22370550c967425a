//! A member of a 3-node index cluster stops promptly and cleanly on SIGTERM, leader or
//! follower, while its peers keep their Raft connections to it busy; the others go on
//! serving writes.

mod common;

use std::time::{Duration, Instant};

use common::ha::{http, IndexCluster, Links};

/// How long a SIGTERMed member may take to exit: a liveness bound (the shutdown grace
/// is 30 s, so a drain held open by peer connections shows up as a timeout), not a
/// performance assertion.
const EXIT_WITHIN: Duration = Duration::from_secs(20);

/// PUTs `key` on `url` until it answers 201 (a leader change may be under way).
async fn put_until_created(url: &str, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http()
            .put(format!("{url}/{key}"))
            .body("after the member left")
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if matches!(&r, Ok(r) if r.status() == 201) {
            return;
        }
        assert!(Instant::now() < deadline, "PUT {key} on {url}: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERMs node `id` and asserts it exits 0 within [`EXIT_WITHIN`] (the bound of
/// `Proc::terminate`, which kills it after that), having closed its index.
fn terminate_within(c: &mut IndexCluster, id: u64) {
    let node = c.nodes.get_mut(&id).expect("node");
    let started = Instant::now();
    let exited = node.proc.terminate();
    let log = node.proc.log_text();
    assert!(
        exited,
        "node {id} did not exit 0 within {EXIT_WITHIN:?} of SIGTERM ({:?})\n{log}",
        started.elapsed()
    );
    assert!(
        log.contains("index closed; bye"),
        "node {id} did not close its index\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_follower_then_the_leader() {
    let mut c = IndexCluster::start(3, 3, Links::Direct, &[]);
    let (leader, _) = c.leader().await;
    let url = c.url(leader);
    put_until_created(&url, "before").await;
    c.wait_converged(&c.ids()).await;

    // A follower: the leader's heartbeats and appends keep a connection to it busy.
    let follower = c
        .ids()
        .into_iter()
        .find(|&i| i != leader)
        .expect("follower");
    terminate_within(&mut c, follower);
    c.forget(follower);
    put_until_created(&url, "without-follower").await;

    // The leader: the remaining follower holds a connection to it.
    terminate_within(&mut c, leader);
    c.forget(leader);
}
