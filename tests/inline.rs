//! Small values stored in the index (`--inline-max`, issue 13) on the real binary:
//! `hoard server` over native volumes, a JSON front-end replacing values across the
//! limit, verify, restarts (also with the option turned off), the sites feed between
//! two `hoard dev` stores, and an index cluster of three.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{
    client, free_port, free_port_run, hoard_bin, wait_http, Cluster, Kind, Proc,
};
use common::ha::{IndexCluster, Links};
use md5::{Digest, Md5};
use reqwest::StatusCode;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(30);

fn md5_hex(b: &[u8]) -> String {
    Md5::digest(b).iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` bytes that differ from key to key.
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn put(base: &str, key: &str, body: Vec<u8>) -> StatusCode {
    client()
        .put(format!("{base}{key}"))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

/// GET without following redirects: status, headers, body.
async fn get(base: &str, key: &str) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let r = client().get(format!("{base}{key}")).send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.bytes().await.unwrap().to_vec())
}

/// The value of `key`, following a redirect to a volume; `None` on 404.
async fn value(base: &str, key: &str) -> Option<Vec<u8>> {
    let (status, headers, body) = get(base, key).await;
    match status {
        StatusCode::NOT_FOUND => None,
        StatusCode::OK => Some(body),
        StatusCode::FOUND => {
            let loc = headers["location"].to_str().unwrap();
            let r = client().get(loc).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{loc}");
            Some(r.bytes().await.unwrap().to_vec())
        }
        s => panic!("GET {base}{key}: {s}"),
    }
}

/// Polls until `f` holds, or panics naming `what`.
async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Files of `key` on every volume.
/// Every file of `key` on the volumes, of any generation (`placement::file_path`).
fn files_of(c: &Cluster, key: &str) -> Vec<String> {
    let path = hoard::placement::key_path(key.as_bytes());
    let of_key = |f: &str| match f.rsplit_once('~') {
        Some((base, gen)) if gen.bytes().all(|b| b.is_ascii_digit()) => base.ends_with(&path),
        _ => f.ends_with(&path),
    };
    c.all_files().into_iter().filter(|f| of_key(f)).collect()
}

/// Runs an online verify (no repair) and returns its counters.
async fn verify(c: &Cluster) -> Value {
    let r = client()
        .post(format!("{}/-/admin/verify?grace=0s", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let last = c.wait_job().await;
    assert_eq!(
        (&last["kind"], &last["state"]),
        (&json!("verify"), &json!("done")),
        "{last}"
    );
    last["counts"].clone()
}

fn assert_clean(counts: &Value) {
    for counter in [
        "missing",
        "corrupt",
        "failed",
        "orphans",
        "unreachable",
        "stale_intents",
    ] {
        assert_eq!(counts[counter], 0, "{counter}: {counts}");
    }
}

/// A JSON-interface request: status and JSON body.
async fn json_call(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_values_live_in_the_index() {
    let json_port = free_port();
    let jp = json_port.to_string();
    let mut c = Cluster::start(
        Kind::Native,
        3,
        &["--inline-max", "4096", "--json-port", &jp],
    );
    let jurl = format!("http://127.0.0.1:{json_port}");
    c.wait_all_up().await;
    let url = c.url.clone();

    // A small value: 201, then GET answers 200 with it, no redirect; no file anywhere.
    let small = bytes(100, 1);
    assert_eq!(
        put(&url, "/small", small.clone()).await,
        StatusCode::CREATED
    );
    let (status, h, body) = get(&url, "/small").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, small);
    assert_eq!(h["content-length"], "100");
    assert_eq!(h["content-md5"], md5_hex(&small).as_str());
    assert_eq!(h["etag"], format!("\"{}\"", md5_hex(&small)).as_str());
    assert!(c.all_files().is_empty(), "{:?}", c.all_files());
    // HEAD: the same headers, no body.
    let r = client().head(format!("{url}/small")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "100");
    assert_eq!(r.headers()["content-md5"], md5_hex(&small).as_str());
    // Ranges: one range is 206, past the end 416.
    let r = client()
        .get(format!("{url}/small"))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/100");
    assert_eq!(r.bytes().await.unwrap(), small[10..20]);
    let r = client()
        .get(format!("{url}/small"))
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap(), small[95..]);
    let r = client()
        .get(format!("{url}/small"))
        .header("range", "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */100");
    // A live key is refused as before.
    assert_eq!(
        put(&url, "/small", bytes(5, 2)).await,
        StatusCode::FORBIDDEN
    );

    // Exactly the limit goes inline; one byte more goes to the volumes (302, 3 files).
    let edge = bytes(4096, 3);
    assert_eq!(put(&url, "/edge", edge.clone()).await, StatusCode::CREATED);
    assert_eq!(get(&url, "/edge").await.0, StatusCode::OK);
    let big = bytes(4097, 4);
    assert_eq!(put(&url, "/big", big.clone()).await, StatusCode::CREATED);
    assert_eq!(get(&url, "/big").await.0, StatusCode::FOUND);
    assert_eq!(value(&url, "/big").await, Some(big.clone()));
    assert_eq!(files_of(&c, "/big").len(), 3);
    assert!(files_of(&c, "/edge").is_empty());

    // The CLI client reads it (from the index server itself) and says where it is.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(hoard_bin())
            .args(args)
            .arg(format!("--url={url}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        out.stdout
    };
    assert_eq!(cli(&["get", "/edge"]), edge);
    let stat = String::from_utf8(cli(&["stat", "/edge"])).unwrap();
    assert!(
        stat.contains("size      4096") && stat.contains("balance   inline"),
        "{stat}"
    );

    // Listed like any key; batch GET says it is inline.
    let list: Value = common::cluster::get_json(format!("{url}/?list")).await;
    assert_eq!(list["keys"], json!(["/big", "/edge", "/small"]), "{list}");
    let r = client()
        .post(format!("{url}/-/batch"))
        .body(r#"[{"op":"get","key":"/edge"},{"op":"get","key":"/big"}]"#)
        .send()
        .await
        .unwrap();
    let batch: Value = r.json().await.unwrap();
    assert_eq!(batch[0]["status"], 200, "{batch}");
    assert_eq!(
        (&batch[0]["inline"], &batch[0]["size"]),
        (&json!(true), &json!(4096))
    );
    assert!(
        batch[0]["url"].is_null() && batch[1]["url"].is_string(),
        "{batch}"
    );

    // UNLINK, then DELETE.
    let unlink = reqwest::Method::from_bytes(b"UNLINK").unwrap();
    let r = client()
        .request(unlink, format!("{url}/small"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(get(&url, "/small").await.0, StatusCode::NOT_FOUND);
    let unlinked: Value = common::cluster::get_json(format!("{url}/?unlinked")).await;
    assert_eq!(unlinked["keys"], json!(["/small"]));
    let r = client()
        .delete(format!("{url}/small"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(get(&url, "/small").await.0, StatusCode::NOT_FOUND);
    let r = client()
        .delete(format!("{url}/small"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Through another front-end (the JSON interface, which replaces): a value on the
    // volumes replaced by an inline one — its files are cleaned, not leaked — and back.
    let long = "x".repeat(5000);
    let (status, _) = json_call(
        client()
            .put(format!("{jurl}/doc"))
            .body(json!({"value": long}).to_string()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(get(&url, "/doc").await.0, StatusCode::FOUND);
    assert_eq!(files_of(&c, "/doc").len(), 3);
    let (status, _) = json_call(
        client()
            .put(format!("{jurl}/doc"))
            .body(r#"{"value":"short"}"#),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, body) = get(&url, "/doc").await;
    assert_eq!((status, body), (StatusCode::OK, br#""short""#.to_vec()));
    wait_until("the replaced value's files are deleted", async || {
        files_of(&c, "/doc").is_empty()
    })
    .await;
    let (_, got) = json_call(client().get(format!("{jurl}/doc"))).await;
    assert_eq!(got["data"], "short");
    let (status, _) = json_call(
        client()
            .put(format!("{jurl}/doc"))
            .body(json!({"value": long}).to_string()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(get(&url, "/doc").await.0, StatusCode::FOUND);
    let (_, got) = json_call(client().get(format!("{jurl}/doc"))).await;
    assert_eq!(got["data"], long.as_str());
    assert_eq!(files_of(&c, "/doc").len(), 3);
    // And inline once more, then deleted: nothing of it is left anywhere.
    let (status, _) = json_call(client().put(format!("{jurl}/doc")).body(r#"{"value":1}"#)).await;
    assert_eq!(status, 200);
    let r = client().delete(format!("{url}/doc")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    wait_until("the deleted key's files are gone", async || {
        files_of(&c, "/doc").is_empty()
    })
    .await;

    // Verify finds nothing wrong: inline keys are neither missing replicas nor orphans.
    let counts = verify(&c).await;
    assert_clean(&counts);
    assert_eq!(counts["ok"], 2, "{counts}");

    // A restart keeps them; a restart with the option off still serves them, and new
    // small values then go to the volumes.
    c.restart_index();
    c.wait_all_up().await;
    let (status, _, body) = get(&url, "/edge").await;
    assert_eq!((status, body), (StatusCode::OK, edge.clone()));
    c.index.kill();
    let Cluster {
        tmp, volumes, db, ..
    } = c;
    let list: Vec<String> = volumes.iter().map(|v| v.addr.clone()).collect();
    let c =
        Cluster::with_volumes_and_db(tmp, volumes, &list.join(","), &db, &["--inline-max", "0"]);
    let url = c.url.clone();
    c.wait_all_up().await;
    let (status, _, body) = get(&url, "/edge").await;
    assert_eq!((status, body), (StatusCode::OK, edge.clone()));
    assert_eq!(put(&url, "/after", bytes(10, 5)).await, StatusCode::CREATED);
    assert_eq!(get(&url, "/after").await.0, StatusCode::FOUND);
    let counts = verify(&c).await;
    assert_clean(&counts);
    assert_eq!(counts["ok"], 3, "{counts}");
}

#[test]
fn an_inline_max_above_the_cap_is_a_startup_error() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let db = tmp.path().join("db").display().to_string();
    let out = std::process::Command::new(hoard_bin())
        .args([
            "server",
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--db",
            &db,
        ])
        .args([
            "--volumes",
            "127.0.0.1:1",
            "--replicas",
            "1",
            "--inline-max",
            "65537",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--inline-max 65537: at most 65536 bytes"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sites_feed_ships_inline_values() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = loop {
        let (a, b) = (free_port_run(7), free_port_run(7));
        if a.abs_diff(b) >= 4 {
            break (a, b);
        }
    };
    let dev = |data: &str, port: u16, extra: &[String]| {
        let mut cmd = vec![
            hoard_bin().to_string(),
            "dev".into(),
            "--data".into(),
            tmp.path().join(data).display().to_string(),
            "--port".into(),
            port.to_string(),
            "--s3-port".into(),
            free_port().to_string(),
        ];
        cmd.extend(extra.iter().cloned());
        let p = Proc::spawn(cmd, tmp.path().join(format!("{data}.log")));
        wait_http(&format!("http://127.0.0.1:{port}/-/health"));
        p
    };
    let (ua, ub) = (
        format!("http://127.0.0.1:{a}"),
        format!("http://127.0.0.1:{b}"),
    );
    let _b = dev("b", b, &[]);
    let extra = [
        "--inline-max".to_string(),
        "1024".into(),
        "--replicate-to".into(),
        ub.clone(),
    ];
    let _a = dev("a", a, &extra);
    let small = bytes(300, 6);
    // The dev store's volumes come up with it; retry the first PUT until they are.
    wait_until("a PUT on the shipping store", async || {
        put(&ua, "/shipped", small.clone()).await == StatusCode::CREATED
    })
    .await;
    assert_eq!(get(&ua, "/shipped").await.0, StatusCode::OK);
    // The other store (inline off) stores it on its volumes, byte for byte.
    wait_until("the value reached the other site", async || {
        value(&ub, "/shipped").await.as_deref() == Some(&small[..])
    })
    .await;
    assert_eq!(get(&ub, "/shipped").await.0, StatusCode::FOUND);
    // A delete ships too.
    let r = client()
        .delete(format!("{ua}/shipped"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    wait_until("the delete reached the other site", async || {
        get(&ub, "/shipped").await.0 == StatusCode::NOT_FOUND
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_cluster_replicates_inline_values() {
    let c = IndexCluster::start(3, 3, Links::Direct, &["--inline-max", "65536"]);
    let (leader, _) = c.leader().await;
    c.wait_volumes_up(&c.ids()).await;
    // Written through a follower (forwarded to the leader) and through the leader.
    let follower = c.ids().into_iter().find(|&i| i != leader).unwrap();
    let (one, two) = (bytes(65536, 7), bytes(10, 8));
    assert_eq!(
        put(&c.url(follower), "/one", one.clone()).await,
        StatusCode::CREATED
    );
    assert_eq!(
        put(&c.url(leader), "/two", two.clone()).await,
        StatusCode::CREATED
    );
    for (id, url) in c.urls() {
        for (key, want) in [("/one", &one), ("/two", &two)] {
            let (status, h, body) = get(&url, key).await;
            assert_eq!(status, StatusCode::OK, "node {id} {key}");
            assert_eq!(&body, want, "node {id} {key}");
            assert_eq!(h["content-md5"], md5_hex(want).as_str());
        }
    }
    for v in &c.volumes {
        assert!(v.files().is_empty(), "{:?}", v.files());
    }
}
