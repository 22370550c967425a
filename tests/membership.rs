//! Online membership changes of the index cluster (issue 10), on the real binaries,
//! through the `hoard cluster` CLI: a node whose disk was wiped comes back under a new
//! id (`--join`, `hoard cluster add`), catches up from a snapshot, votes, and the dead
//! id is removed and retired for good.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::cluster::hoard_bin;
use common::ha::{http, IndexCluster, Links, WAIT};

/// Keys written before the replacement: with `--snapshot-every 40` their ~2 log
/// entries each are far more than the log kept after a snapshot, so the new node can
/// only catch up from a snapshot.
const KEYS: usize = 120;

fn cli(args: &[&str]) -> Output {
    std::process::Command::new(hoard_bin())
        .args(args)
        .output()
        .expect("running hoard")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn put(url: &str, key: &str, value: &str) -> reqwest::StatusCode {
    http()
        .put(format!("{url}{key}"))
        .body(value.to_string())
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("PUT")
        .status()
}

/// The key count a node reports from its own copy of the index.
async fn live_keys(url: &str) -> Option<u64> {
    let h: serde_json::Value = http()
        .get(format!("{url}/-/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    h["keys"]["live"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_replaced_under_a_new_id() {
    let mut c = IndexCluster::start(3, 3, Links::Direct, &["--snapshot-every", "40"]);
    c.leader().await;
    c.wait_volumes_up(&[1, 2, 3]).await;
    let url1 = c.url(1);
    for i in 0..KEYS {
        let status = put(&url1, &format!("/before/{i}"), &format!("value {i}")).await;
        assert_eq!(status, 201, "PUT /before/{i}");
    }

    // Node 3 loses its disk.
    c.kill(3);
    let dead = c.forget(3);
    std::fs::remove_dir_all(&dead.db).unwrap();

    // It comes back as node 4, joining; until added it is no member.
    c.start_joining(4, &["--snapshot-every", "40"]);
    let url4 = c.url(4);
    let s4 = c.status(4).await.expect("node 4 answers");
    assert!(
        s4.members.is_empty(),
        "a joining node has no membership: {s4:?}"
    );

    let add = cli(&[
        "cluster",
        "add",
        &format!("4=127.0.0.1:{}", c.nodes[&4].port),
        "--url",
        &url1,
    ]);
    assert!(add.status.success(), "cluster add: {}", text(&add));
    assert!(
        String::from_utf8_lossy(&add.stdout).contains("node 4 added"),
        "{}",
        text(&add)
    );

    let remove = cli(&["cluster", "remove", "3", "--url", &url4]);
    assert!(remove.status.success(), "cluster remove: {}", text(&remove));

    // The dead id is retired: it cannot come back.
    let reuse = cli(&["cluster", "add", "3=127.0.0.1:1", "--url", &url1]);
    assert!(!reuse.status.success(), "{}", text(&reuse));
    assert!(
        String::from_utf8_lossy(&reuse.stderr).contains("never reused"),
        "{}",
        text(&reuse)
    );
    // Nor can a member be added twice, or a non-member removed.
    let twice = cli(&["cluster", "add", "4=127.0.0.1:1", "--url", &url1]);
    assert!(!twice.status.success(), "{}", text(&twice));
    let unknown = cli(&["cluster", "remove", "9", "--url", &url1]);
    assert!(!unknown.status.success(), "{}", text(&unknown));

    let status = cli(&["cluster", "status", "--json", "--url", &url4]);
    assert!(status.status.success(), "{}", text(&status));
    let view: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let voters: Vec<u64> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "voter")
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(voters, vec![1, 2, 4], "{view}");
    assert_eq!(view["retired"], serde_json::json!([3]), "{view}");
    let table = cli(&["cluster", "status", "--url", &url1]);
    assert!(table.status.success(), "{}", text(&table));
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("voter"),
        "{}",
        text(&table)
    );

    // Node 4 holds every key in its own copy of the index (from the snapshot).
    c.wait_converged(&[1, 2, 4]).await;
    let deadline = Instant::now() + WAIT;
    while live_keys(&url4).await != Some(KEYS as u64) {
        assert!(
            Instant::now() < deadline,
            "node 4 has {:?} live keys, want {KEYS}",
            live_keys(&url4).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let log4 = c.nodes[&4].proc.log_text();
    assert!(
        log4.contains("installed snapshot"),
        "node 4 caught up without a snapshot:\n{log4}"
    );

    // Node 4 votes: with node 1 dead too, nodes 2 and 4 are a majority of {1, 2, 4}.
    c.kill(1);
    c.forget(1);
    c.wait_leader_among(&[2, 4]).await;
    c.wait_volumes_up(&[4]).await;
    assert_eq!(put(&url4, "/after", "written after").await, 201);
    let follows = reqwest::Client::builder().no_proxy().build().unwrap();
    let got = follows
        .get(format!("{}/before/7", c.url(2)))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200, "GET follows the redirect to a volume");
    assert_eq!(got.text().await.unwrap(), "value 7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_commands_on_a_single_server_say_why_they_cannot() {
    let c = common::cluster::Cluster::start(common::cluster::Kind::Native, 3, &[]);
    let out = cli(&[
        "cluster",
        "status",
        "--url",
        &format!("http://{}", c.addr()),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an index cluster member"),
        "{}",
        text(&out)
    );
}

/// The usual replacement: the new node runs where the dead one ran, at the same
/// address. Until the dead id is removed the leader still sends it Raft RPCs — at that
/// address, where the new node now answers. They must not be taken for the dead
/// node's answers: before Raft RPCs named the node they are for, the new node's empty
/// log answered the leader's AppendEntries for the dead node, the leader saw that
/// node's log "go back" and its Raft core panicked (openraft: "follower log reversion
/// is not allowed") — found by the nemesis suite's wiped-member fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_at_the_dead_nodes_address_is_not_taken_for_it() {
    let mut c = IndexCluster::start(3, 3, Links::Direct, &[]);
    c.leader().await;
    c.wait_volumes_up(&[1, 2, 3]).await;
    let url1 = c.url(1);
    for i in 0..20 {
        assert_eq!(put(&url1, &format!("/before/{i}"), "v").await, 201);
    }
    // Node 3 has acknowledged those entries; now it loses its disk.
    c.wait_converged(&[1, 2, 3]).await;
    let port = c.nodes[&3].port;
    c.kill(3);
    let dead = c.forget(3);
    std::fs::remove_dir_all(&dead.db).unwrap();
    c.start_joining_at(4, port, &[]);

    let add = cli(&[
        "cluster",
        "add",
        &format!("4=127.0.0.1:{port}"),
        "--url",
        &url1,
    ]);
    assert!(add.status.success(), "cluster add: {}", text(&add));
    let remove = cli(&["cluster", "remove", "3", "--url", &url1]);
    assert!(remove.status.success(), "cluster remove: {}", text(&remove));
    c.wait_converged(&[1, 2, 4]).await;
    assert_eq!(put(&c.url(4), "/after", "v").await, 201);
    for node in c.nodes.values() {
        let log = node.proc.log_text();
        assert!(
            !log.contains("panicked"),
            "node {} panicked:\n{log}",
            node.id
        );
    }
}
