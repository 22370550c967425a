//! Sites: asynchronous replication between two `hoard dev` stores on loopback
//! (`--replicate-to`): writes, unlinks and deletes appear on the other store, a target
//! that was down catches up, the cursor survives a restart of the shipping store, and
//! two stores replicating to each other make no loop.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{client, free_port_run, hoard_bin, wait_http, Proc};
use reqwest::StatusCode;

const DEADLINE: Duration = Duration::from_secs(30);

fn dev(data: &Path, port: u16, extra: &[String]) -> Proc {
    let mut cmd = vec![
        hoard_bin().to_string(),
        "dev".into(),
        "--data".into(),
        data.display().to_string(),
        "--port".into(),
        port.to_string(),
        // Any free port (dev would otherwise derive it from --port: P+4).
        "--s3-port".into(),
        common::free_port().to_string(),
    ];
    cmd.extend(extra.iter().cloned());
    let p = Proc::spawn(cmd, data.with_extension("log"));
    wait_http(&format!("http://127.0.0.1:{port}/-/health"));
    p
}

/// Two port runs of 4 that do not overlap.
fn two_ports() -> (u16, u16) {
    let a = free_port_run(7);
    loop {
        let b = free_port_run(7);
        if b.abs_diff(a) >= 4 {
            return (a, b);
        }
    }
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

async fn put(base: &str, key: &str, body: Vec<u8>) {
    let resp = client()
        .put(format!("{base}{key}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "PUT {base}{key}");
}

async fn call(base: &str, method: &str, key: &str) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let resp = client()
        .request(m, format!("{base}{key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::NO_CONTENT,
        "{method} {base}{key}"
    );
}

/// The value of `key` (following the redirect), `None` when the index answers 404.
async fn value(base: &str, key: &str) -> Option<Vec<u8>> {
    let resp = client().get(format!("{base}{key}")).send().await.unwrap();
    match resp.status() {
        StatusCode::NOT_FOUND => None,
        StatusCode::FOUND => {
            let loc = resp.headers()["location"].to_str().unwrap().to_string();
            Some(
                client()
                    .get(loc)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
                    .to_vec(),
            )
        }
        s => panic!("GET {base}{key}: {s}"),
    }
}

/// Keys listed by `?unlinked` under `/`.
async fn unlinked(base: &str) -> String {
    let resp = client()
        .get(format!("{base}/?unlinked"))
        .send()
        .await
        .unwrap();
    resp.text().await.unwrap()
}

/// Polls `check` until it is true or the deadline passes (then panics with `what`).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn health(base: &str) -> serde_json::Value {
    common::cluster::get_json(format!("{base}/-/health")).await
}

/// Feed entries `base` has not yet shipped to its (only) target.
async fn lag_entries(base: &str) -> u64 {
    health(base).await["sites"][0]["lag"]["entries"]
        .as_u64()
        .unwrap()
}

/// Changes `base` received from other sites and acknowledged (applied or superseded).
async fn received(base: &str) -> u64 {
    let text = client()
        .get(format!("{base}/-/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("hoard_site_received_total{") && !l.contains("failed"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_replication_catches_up_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (pa, pb) = two_ports();
    let (a, b) = (url(pa), url(pb));
    let mut site_b = dev(&tmp.path().join("b"), pb, &[]);
    let to_b = vec!["--replicate-to".to_string(), b.clone()];
    let mut site_a = dev(&tmp.path().join("a"), pa, &to_b);

    // PUT, an overwrite-free unlink, a delete, and a value bigger than any buffer.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    put(&a, "/one", b"first".to_vec()).await;
    put(&a, "/big", big.clone()).await;
    put(&a, "/gone", b"soon deleted".to_vec()).await;
    put(&a, "/hidden", b"unlinked later".to_vec()).await;
    eventually("/gone on B", || async {
        value(&b, "/gone").await.is_some()
    })
    .await;
    call(&a, "DELETE", "/gone").await;
    call(&a, "UNLINK", "/hidden").await;
    eventually("A's changes on B", || async {
        value(&b, "/one").await.as_deref() == Some(b"first")
            && value(&b, "/gone").await.is_none()
            && value(&b, "/hidden").await.is_none()
            && unlinked(&b).await.contains("/hidden")
    })
    .await;
    assert_eq!(value(&b, "/big").await.unwrap(), big);
    eventually("A's lag back to 0", || async { lag_entries(&a).await == 0 }).await;
    let metrics = client()
        .get(format!("{a}/-/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("hoard_site_lag_entries{") && l.ends_with(" 0")),
        "{metrics}"
    );

    // B down: A keeps the changes (lag), B catches up once back.
    site_b.kill();
    put(&a, "/while-down", b"queued".to_vec()).await;
    call(&a, "DELETE", "/one").await;
    assert_eq!(lag_entries(&a).await, 2);
    site_b.restart();
    wait_http(&format!("{b}/-/health"));
    eventually("B caught up", || async {
        value(&b, "/while-down").await.as_deref() == Some(b"queued")
            && value(&b, "/one").await.is_none()
    })
    .await;
    eventually("A's lag back to 0", || async { lag_entries(&a).await == 0 }).await;

    // A restarted: its cursor survives, nothing is shipped again.
    let before = received(&b).await;
    assert!(site_a.terminate(), "{}", site_a.log_text());
    site_a.restart();
    wait_http(&format!("{a}/-/health"));
    put(&a, "/after-restart", b"new".to_vec()).await;
    eventually("the new key on B", || async {
        value(&b, "/after-restart").await.is_some()
    })
    .await;
    eventually("A's lag back to 0", || async { lag_entries(&a).await == 0 }).await;
    assert_eq!(received(&b).await, before + 1, "{}", site_a.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_replication_makes_no_loop() {
    let tmp = tempfile::tempdir().unwrap();
    let (pa, pb) = two_ports();
    let (a, b) = (url(pa), url(pb));
    let _site_a = dev(
        &tmp.path().join("a"),
        pa,
        &["--replicate-to".into(), b.clone()],
    );
    let _site_b = dev(
        &tmp.path().join("b"),
        pb,
        &["--replicate-to".into(), a.clone()],
    );

    put(&a, "/from-a", b"a1".to_vec()).await;
    put(&b, "/from-b", b"b1".to_vec()).await;
    eventually("each key on both sites", || async {
        value(&b, "/from-a").await.is_some() && value(&a, "/from-b").await.is_some()
    })
    .await;
    // Later changes of the other site's key win there too.
    call(&b, "DELETE", "/from-a").await;
    eventually("the delete on A", || async {
        value(&a, "/from-a").await.is_none()
    })
    .await;
    put(&b, "/from-a", b"a2 from b".to_vec()).await;
    call(&a, "DELETE", "/from-b").await;
    eventually("the later changes on both sites", || async {
        value(&a, "/from-a").await.as_deref() == Some(b"a2 from b")
            && value(&b, "/from-b").await.is_none()
    })
    .await;
    // Markers both ways: anything an echo would ship was fed before them.
    put(&a, "/marker-a", b"m".to_vec()).await;
    put(&b, "/marker-b", b"m".to_vec()).await;
    eventually("markers on both sites, lag 0", || async {
        value(&b, "/marker-a").await.is_some()
            && value(&a, "/marker-b").await.is_some()
            && lag_entries(&a).await == 0
            && lag_entries(&b).await == 0
    })
    .await;
    // Exactly the changes made on the other site, each once: nothing came back.
    // A made: PUT /from-a, DELETE /from-b, PUT /marker-a.
    // B made: PUT /from-b, DELETE + PUT /from-a, PUT /marker-b.
    assert_eq!(received(&b).await, 3);
    assert_eq!(received(&a).await, 4);
    assert_eq!(
        value(&b, "/from-a").await.as_deref(),
        Some(&b"a2 from b"[..])
    );
    assert_eq!(value(&a, "/from-b").await, None);
}

/// An index cluster replicating to a `hoard dev`: only the leader ships, the cursor is
/// replicated state (every member reports the lag), and a new leader goes on from it
/// after the old one is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_cluster_ships_from_its_leader_and_survives_its_death() {
    use common::ha::{IndexCluster, Links};
    let tmp = tempfile::tempdir().unwrap();
    let pb = free_port_run(7);
    let b = url(pb);
    let _site_b = dev(&tmp.path().join("b"), pb, &[]);
    let mut c = IndexCluster::start(3, 3, Links::Direct, &["--replicate-to", &b]);
    let (leader, _) = c.leader().await;
    c.wait_volumes_up(&c.ids()).await;
    // Replication starts once the leader registered the target (replicated: every
    // member shows it).
    for id in c.ids() {
        let u = c.url(id);
        eventually("the target registered", || async {
            health(&u).await["sites"][0]["lag"]["registered"] == true
        })
        .await;
    }
    let lag_everywhere = |c: &IndexCluster| {
        let urls: Vec<String> = c.ids().iter().map(|&id| c.url(id)).collect();
        async move {
            for u in urls {
                if lag_entries(&u).await != 0 {
                    return false;
                }
            }
            true
        }
    };

    let followers: Vec<u64> = c.ids().into_iter().filter(|&i| i != leader).collect();
    for i in 0..10 {
        // Through a follower too: the write is the cluster's, shipped by the leader.
        let node = if i % 2 == 0 { leader } else { followers[0] };
        put(
            &c.url(node),
            &format!("/c/{i}"),
            format!("v{i}").into_bytes(),
        )
        .await;
    }
    eventually("the cluster's writes on B", || async {
        value(&b, "/c/9").await.is_some() && value(&b, "/c/0").await.is_some()
    })
    .await;
    eventually("lag 0 on every member", || lag_everywhere(&c)).await;
    assert_eq!(received(&b).await, 10);

    // The leader dies: the new one goes on from the replicated cursor.
    c.kill(leader);
    c.forget(leader);
    let (new_leader, _) = c.wait_leader_among(&followers).await;
    put(&c.url(new_leader), "/c/after", b"after".to_vec()).await;
    eventually("the new leader's shipping", || async {
        value(&b, "/c/after").await.as_deref() == Some(b"after")
    })
    .await;
    eventually("lag 0 on every member", || lag_everywhere(&c)).await;
    // Each change arrived once: nothing shipped twice, by two members or from scratch.
    assert_eq!(received(&b).await, 11);
    for i in 0..10 {
        let want = format!("v{i}").into_bytes();
        assert_eq!(value(&b, &format!("/c/{i}")).await, Some(want));
    }
}

/// One key written on both sites while they cannot talk: once they can, both hold the
/// later write (last writer wins by origin commit time), whichever ships first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_writes_converge_to_the_later_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (pa, pb) = two_ports();
    let (a, b) = (url(pa), url(pb));
    let mut site_a = dev(
        &tmp.path().join("a"),
        pa,
        &["--replicate-to".into(), b.clone()],
    );
    let mut site_b = dev(
        &tmp.path().join("b"),
        pb,
        &["--replicate-to".into(), a.clone()],
    );
    // Each site writes the key while the other is down: A first, B later.
    site_b.kill();
    put(&a, "/x", b"older, from A".to_vec()).await;
    site_a.kill();
    site_b.restart();
    wait_http(&format!("{b}/-/health"));
    put(&b, "/x", b"later, from B".to_vec()).await;
    site_a.restart();
    wait_http(&format!("{a}/-/health"));
    eventually("both sites caught up", || async {
        lag_entries(&a).await == 0 && lag_entries(&b).await == 0
    })
    .await;
    let later = Some(b"later, from B".to_vec());
    assert_eq!(value(&a, "/x").await, later);
    assert_eq!(value(&b, "/x").await, later);
}

/// A zero-byte value (an empty S3 object; the native API refuses empty PUTs) is
/// shipped and stored on the other site like any value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_byte_s3_object_replicates() {
    let tmp = tempfile::tempdir().unwrap();
    let (pa, pb) = two_ports();
    let (a, b) = (url(pa), url(pb));
    let _site_b = dev(&tmp.path().join("b"), pb, &[]);
    let s3_port = common::free_port();
    let cmd = vec![
        hoard_bin().to_string(),
        "dev".into(),
        "--data".into(),
        tmp.path().join("a").display().to_string(),
        "--port".into(),
        pa.to_string(),
        "--s3-port".into(),
        s3_port.to_string(),
        "--replicate-to".into(),
        b.clone(),
    ];
    let _site_a = Proc::spawn(cmd, tmp.path().join("a.log"));
    wait_http(&format!("{a}/-/health"));
    common::cluster::wait_listening(&format!("127.0.0.1:{s3_port}"));
    let endpoint = format!("http://127.0.0.1:{s3_port}");
    let aws = |args: &[&str]| {
        let out = std::process::Command::new("aws")
            .args(["--endpoint-url", &endpoint])
            .args(args)
            // hoard dev's default S3 user.
            .env("AWS_ACCESS_KEY_ID", "hoard")
            .env("AWS_SECRET_ACCESS_KEY", "hoardhoard")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_CA_BUNDLE")
            .output()
            .expect("aws-cli (scripts/test.sh installs it)");
        assert!(out.status.success(), "aws {args:?}: {out:?}");
    };
    aws(&["s3", "mb", "s3://rep"]);
    aws(&["s3api", "put-object", "--bucket", "rep", "--key", "empty"]);
    put(&a, "/rep/after", b"a value after it".to_vec()).await;
    eventually("both keys on B", || async {
        value(&b, "/rep/after").await.is_some() && value(&b, "/rep/empty").await.is_some()
    })
    .await;
    assert_eq!(value(&b, "/rep/empty").await.unwrap(), b"");
    eventually("A's lag back to 0", || async { lag_entries(&a).await == 0 }).await;
}

/// A key the target cannot take (busy: another write of it holds its lock there) is
/// retried aside: the changes after it keep arriving meanwhile, and it arrives once
/// the target lets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_key_does_not_stall_the_feed() {
    let tmp = tempfile::tempdir().unwrap();
    let (pa, pb) = two_ports();
    let (a, b) = (url(pa), url(pb));
    let _site_b = dev(&tmp.path().join("b"), pb, &[]);
    let to_b = vec!["--replicate-to".to_string(), b.clone()];
    let _site_a = dev(&tmp.path().join("a"), pa, &to_b);

    // On B, a native PUT of /busy whose body trickles: it holds B's lock of the key
    // until its body ends.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok(b"slow ".to_vec())).await.unwrap();
    let body = reqwest::Body::wrap_stream(stream_of(rx));
    let slow = tokio::spawn(client().put(format!("{b}/busy")).body(body).send());
    // A writes /busy (an overwrite on B takes no lock: it arrives), then unlinks it:
    // B answers 409 to the unlink while the slow write holds the key's lock.
    put(&a, "/busy", b"from A".to_vec()).await;
    eventually("/busy from A on B", || async {
        value(&b, "/busy").await.as_deref() == Some(b"from A")
    })
    .await;
    call(&a, "UNLINK", "/busy").await;
    for i in 0..5 {
        put(&a, &format!("/after/{i}"), format!("v{i}").into_bytes()).await;
    }
    eventually("the changes after the busy key on B", || async {
        let mut all = true;
        for i in 0..5 {
            all &= value(&b, &format!("/after/{i}")).await.is_some();
        }
        all
    })
    .await;
    let status = health(&a).await["sites"][0].clone();
    assert!(
        status["errors"].as_u64() > Some(0) && status["aside"] == 1,
        "the busy key was tried, refused, and waits aside: {status}"
    );
    assert!(!slow.is_finished(), "the slow write ended too early");
    assert!(lag_entries(&a).await > 0, "the busy key is still due");
    assert!(value(&b, "/busy").await.is_some(), "not unlinked on B yet");
    // The slow write ends (B's replicated overwrite took its intent over: it fails),
    // the key's lock is free: the unlink arrives and the lag drains.
    tx.send(Ok(b"write".to_vec())).await.unwrap();
    drop(tx);
    let _ = slow.await.unwrap();
    eventually("/busy unlinked on B", || async {
        value(&b, "/busy").await.is_none() && unlinked(&b).await.contains("/busy")
    })
    .await;
    eventually("A's lag back to 0", || async { lag_entries(&a).await == 0 }).await;
}

/// The receiving half of a channel as a stream of body chunks.
fn stream_of(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Targets are replicated state: a server restarted without `--replicate-to` keeps the
/// target its earlier flag registered, and goes on shipping to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_the_flag_keeps_shipping_to_registered_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let (pa, pb) = two_ports();
    let (a, b) = (url(pa), url(pb));
    let _site_b = dev(&tmp.path().join("b"), pb, &[]);
    let to_b = vec!["--replicate-to".to_string(), b.clone()];
    let mut site_a = dev(&tmp.path().join("a"), pa, &to_b);
    put(&a, "/seeded", b"by the flag".to_vec()).await;
    eventually("/seeded on B", || async {
        value(&b, "/seeded").await.is_some()
    })
    .await;
    // Restarted without the flag: the target stays, and is shipped to.
    assert!(site_a.terminate(), "{}", site_a.log_text());
    drop(site_a);
    let _site_a = dev(&tmp.path().join("a"), pa, &[]);
    put(&a, "/later", b"no flag".to_vec()).await;
    eventually("/later on B", || async {
        value(&b, "/later").await.as_deref() == Some(b"no flag")
    })
    .await;
    let sites = health(&a).await["sites"].clone();
    assert_eq!(sites[0]["target"], b.as_str(), "{sites}");
    eventually("A's lag back to 0", || async { lag_entries(&a).await == 0 }).await;
}
