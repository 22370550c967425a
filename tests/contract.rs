//! The index server's HTTP contract (minikeyvalue's), run once against native volumes
//! and once against stock nginx WebDAV volumes. Every test starts real processes.

#[macro_use]
mod common;

use common::cluster::{client, raw_status, Cluster, Kind};
use md5::{Digest, Md5};
use reqwest::StatusCode;

both_kinds!(
    values_round_trip,
    odd_keys,
    put_rules,
    delete_and_unlink,
    listing,
    range_through_redirect,
    concurrent_puts_one_winner,
    restart_keeps_data,
    stopped_volume,
    client_abort_leaves_nothing,
    reserved_paths,
    unbalanced_after_volume_added,
);

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn value(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn put(c: &Cluster, path: &str, body: Vec<u8>) -> StatusCode {
    client()
        .put(format!("{}{path}", c.url))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

/// GET through the index: asserts the 302 and returns the volume's answer.
async fn get(c: &Cluster, path: &str) -> (StatusCode, Vec<u8>) {
    let resp = client()
        .get(format!("{}{path}", c.url))
        .send()
        .await
        .unwrap();
    if resp.status() != StatusCode::FOUND {
        return (resp.status(), Vec::new());
    }
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let resp = client().get(location).send().await.unwrap();
    (resp.status(), resp.bytes().await.unwrap().to_vec())
}

async fn status(c: &Cluster, method: &str, path: &str) -> StatusCode {
    client()
        .request(method.parse().unwrap(), format!("{}{path}", c.url))
        .send()
        .await
        .unwrap()
        .status()
}

async fn list(c: &Cluster, query: &str) -> serde_json::Value {
    let resp = client()
        .get(format!("{}{query}", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{query}");
    assert_eq!(resp.headers()["content-type"], "application/json");
    resp.json().await.unwrap()
}

async fn values_round_trip(kind: Kind) {
    let c = Cluster::start(kind, 5, &[]);
    for (path, len) in [("/one", 1), ("/small", 1000), ("/sixteen-mb", 16 << 20)] {
        let data = value(len, len as u8);
        assert_eq!(
            put(&c, path, data.clone()).await,
            StatusCode::CREATED,
            "{path}"
        );
        let resp = client()
            .get(format!("{}{path}", c.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND);
        let h = resp.headers();
        assert_eq!(h["content-length"], "0");
        assert_eq!(h["content-md5"], md5_hex(&data).as_str());
        assert_eq!(h["key-balance"], "balanced");
        let volumes: Vec<&str> = h["key-volumes"].to_str().unwrap().split(',').collect();
        assert_eq!(volumes.len(), 3);
        let location = h["location"].to_str().unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| location.starts_with(&format!("http://{v}/"))),
            "{location} not on {volumes:?}"
        );
        let (st, got) = get(&c, path).await;
        assert_eq!(st, 200);
        assert!(got == data, "{path}: value differs");
        // HEAD redirects the same way.
        assert_eq!(status(&c, "HEAD", path).await, StatusCode::FOUND);
    }
    // Three replicas of each of the three values, as plain files.
    assert_eq!(c.all_files().len(), 9);
    // A chunked upload (no Content-Length), as `curl -T -` sends.
    let data = value(300_000, 9);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(7000).map(|c| Ok(c.to_vec())).collect();
    let resp = client()
        .put(format!("{}/chunked", c.url))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(get(&c, "/chunked").await.1 == data);
}

async fn odd_keys(kind: Kind) {
    let c = Cluster::start(kind, 3, &[]);
    for (i, (path, key)) in [
        ("/with%20space", "/with space"),
        ("/%C3%BCn%C3%AFc%C3%B6de", "/ünïcöde"),
        ("/nested/deep/key/x", "/nested/deep/key/x"),
        ("/%3F%3F%3F%3E%3E%3E", "/???>>>"), // base64 has '/' and '+'
        ("/plus+sign", "/plus+sign"),
    ]
    .iter()
    .enumerate()
    {
        let data = value(100 + i, i as u8);
        assert_eq!(
            put(&c, path, data.clone()).await,
            StatusCode::CREATED,
            "{path}"
        );
        assert!(get(&c, path).await.1 == data, "{path}");
        let listed = list(&c, &format!("{}?list", path)).await;
        assert_eq!(listed["keys"][0], *key, "{path}");
    }
    // %2F decodes to '/', so these name the same key (as in minikeyvalue).
    assert_eq!(put(&c, "/a%2Fb", value(10, 1)).await, StatusCode::CREATED);
    assert_eq!(put(&c, "/a/b", value(10, 2)).await, StatusCode::FORBIDDEN);
    assert!(get(&c, "/a/b").await.1 == value(10, 1));
}

async fn put_rules(kind: Kind) {
    let c = Cluster::start(kind, 3, &[]);
    assert_eq!(put(&c, "/k", value(10, 1)).await, StatusCode::CREATED);
    assert_eq!(put(&c, "/k", value(10, 2)).await, StatusCode::FORBIDDEN);
    assert!(
        get(&c, "/k").await.1 == value(10, 1),
        "overwrite must not change it"
    );
    assert_eq!(
        put(&c, "/empty", Vec::new()).await,
        StatusCode::LENGTH_REQUIRED
    );
    // An empty chunked body is refused the same way and leaves no trace.
    let addr = c.url.trim_start_matches("http://");
    let st = raw_status(
        addr,
        b"PUT /empty-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(st, 411);
    assert_eq!(status(&c, "GET", "/empty").await, StatusCode::NOT_FOUND);
    assert_eq!(
        status(&c, "GET", "/empty-chunked").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(&c, "POST", "/k").await,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(put(&c, "/", value(1, 1)).await, StatusCode::BAD_REQUEST);
    assert_eq!(c.all_files().len(), 3);
}

async fn delete_and_unlink(kind: Kind) {
    let c = Cluster::start(kind, 3, &[]);
    assert_eq!(status(&c, "DELETE", "/nope").await, StatusCode::NOT_FOUND);
    assert_eq!(status(&c, "UNLINK", "/nope").await, StatusCode::NOT_FOUND);

    assert_eq!(put(&c, "/d", value(10, 1)).await, StatusCode::CREATED);
    assert_eq!(status(&c, "DELETE", "/d").await, StatusCode::NO_CONTENT);
    let resp = client().get(format!("{}/d", c.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["content-length"], "0");
    assert_eq!(status(&c, "DELETE", "/d").await, StatusCode::NOT_FOUND);
    assert!(c.all_files().is_empty(), "{:?}", c.all_files());

    assert_eq!(put(&c, "/u", value(10, 1)).await, StatusCode::CREATED);
    assert_eq!(status(&c, "UNLINK", "/u").await, StatusCode::NO_CONTENT);
    assert_eq!(status(&c, "GET", "/u").await, StatusCode::NOT_FOUND);
    assert_eq!(status(&c, "UNLINK", "/u").await, StatusCode::NOT_FOUND);
    assert_eq!(c.all_files().len(), 3, "unlink keeps the data");
    assert_eq!(
        list(&c, "/?unlinked").await["keys"],
        serde_json::json!(["/u"])
    );
    assert_eq!(list(&c, "/?list").await["keys"], serde_json::json!([]));
    // An unlinked key can be written again.
    assert_eq!(put(&c, "/u", value(10, 2)).await, StatusCode::CREATED);
    assert!(get(&c, "/u").await.1 == value(10, 2));
    assert_eq!(status(&c, "UNLINK", "/u").await, StatusCode::NO_CONTENT);
    assert_eq!(status(&c, "DELETE", "/u").await, StatusCode::NO_CONTENT);
    assert!(c.all_files().is_empty());

    // --protect: DELETE only after UNLINK.
    let p = Cluster::start(kind, 3, &["--protect"]);
    assert_eq!(put(&p, "/p", value(10, 1)).await, StatusCode::CREATED);
    assert_eq!(status(&p, "DELETE", "/p").await, StatusCode::FORBIDDEN);
    assert!(get(&p, "/p").await.1 == value(10, 1));
    assert_eq!(status(&p, "UNLINK", "/p").await, StatusCode::NO_CONTENT);
    assert_eq!(status(&p, "DELETE", "/p").await, StatusCode::NO_CONTENT);

    // --fallback: missing keys redirect there.
    let f = Cluster::start(kind, 3, &["--fallback", "fallback.example:8080"]);
    let resp = client()
        .get(format!("{}/gone%20x", f.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        resp.headers()["location"],
        "http://fallback.example:8080/gone%20x"
    );
}

async fn listing(kind: Kind) {
    let c = Cluster::start(kind, 3, &[]);
    for k in ["/l/c", "/l/a", "/l/b", "/l/d", "/m/x"] {
        assert_eq!(put(&c, k, value(5, 1)).await, StatusCode::CREATED);
    }
    assert_eq!(
        list(&c, "/l/?list").await,
        serde_json::json!({"next": "", "keys": ["/l/a", "/l/b", "/l/c", "/l/d"]})
    );
    assert_eq!(
        list(&c, "/l/?list&limit=3").await,
        serde_json::json!({"next": "/l/d", "keys": ["/l/a", "/l/b", "/l/c"]})
    );
    assert_eq!(
        list(&c, "/l/?list&start=/l/d&limit=3").await,
        serde_json::json!({"next": "", "keys": ["/l/d"]})
    );
    assert_eq!(
        list(&c, "/?list").await["keys"].as_array().unwrap().len(),
        5
    );
    assert_eq!(list(&c, "/zzz?list").await["keys"], serde_json::json!([]));
    assert_eq!(
        status(&c, "GET", "/l/?list&limit=abc").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        status(&c, "GET", "/l/?list&limit=-2").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        status(&c, "GET", "/l/?bogus").await,
        StatusCode::BAD_REQUEST
    );
}

async fn range_through_redirect(kind: Kind) {
    let c = Cluster::start(kind, 3, &[]);
    let data = value(1000, 3);
    assert_eq!(put(&c, "/r", data.clone()).await, StatusCode::CREATED);
    let resp = client().get(format!("{}/r", c.url)).send().await.unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let resp = client()
        .get(&location)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[10..20]);
    let resp = client()
        .get(&location)
        .header("range", "bytes=5000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
}

async fn concurrent_puts_one_winner(kind: Kind) {
    let c = Cluster::start(kind, 3, &[]);
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let url = format!("{}/contended", c.url);
            tokio::spawn(async move {
                client()
                    .put(url)
                    .body(value(2 << 20, i))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| [
        StatusCode::CREATED,
        StatusCode::CONFLICT,
        StatusCode::FORBIDDEN
    ]
    .contains(s)));
    let (st, got) = get(&c, "/contended").await;
    assert_eq!(st, 200);
    assert!((0..8).any(|i| got == value(2 << 20, i)));
}

async fn restart_keeps_data(kind: Kind) {
    let mut c = Cluster::start(kind, 3, &[]);
    for i in 0..20u8 {
        assert_eq!(
            put(&c, &format!("/keep/{i}"), value(1000, i)).await,
            StatusCode::CREATED
        );
    }
    assert_eq!(
        status(&c, "UNLINK", "/keep/0").await,
        StatusCode::NO_CONTENT
    );
    c.restart_index();
    for i in 1..20u8 {
        assert!(get(&c, &format!("/keep/{i}")).await.1 == value(1000, i));
    }
    assert_eq!(
        list(&c, "/keep/?list").await["keys"]
            .as_array()
            .unwrap()
            .len(),
        19
    );
    assert_eq!(
        list(&c, "/keep/?unlinked").await["keys"],
        serde_json::json!(["/keep/0"])
    );
    for v in &mut c.volumes {
        v.restart();
    }
    assert!(get(&c, "/keep/7").await.1 == value(1000, 7));
}

async fn stopped_volume(kind: Kind) {
    let mut c = Cluster::start(kind, 4, &[]);
    let keys: Vec<String> = (0..30).map(|i| format!("/sv/{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(put(&c, k, value(100, i as u8)).await, StatusCode::CREATED);
    }
    let down = c.volumes[0].addr.clone();
    c.volumes[0].stop();
    c.wait_volume(&down, false).await;
    // Every key still redirects to a live replica, never to the stopped one.
    for (i, k) in keys.iter().enumerate() {
        for _ in 0..3 {
            let resp = client().get(format!("{}{k}", c.url)).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::FOUND);
            let location = resp.headers()["location"].to_str().unwrap();
            assert!(!location.contains(&down), "{k} → {location}");
        }
        assert!(get(&c, k).await.1 == value(100, i as u8), "{k}");
    }
    // A write whose placement includes the stopped volume fails cleanly.
    let mut refused = 0;
    for i in 0..20 {
        let k = format!("/new/{i}");
        match put(&c, &k, value(10, 1)).await {
            StatusCode::CREATED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                assert_eq!(status(&c, "GET", &k).await, StatusCode::NOT_FOUND);
            }
            other => panic!("{k}: {other}"),
        }
    }
    assert!(
        refused > 0,
        "3 of 4 volumes per key: some placements include the stopped one"
    );
    let health: serde_json::Value = common::cluster::get_json(format!("{}/-/health", c.url)).await;
    let vols = health["volumes"].as_array().unwrap();
    assert!(vols
        .iter()
        .any(|v| v["server"] == down.as_str() && v["up"] == false));
    // A DELETE touching the stopped volume: 503, the key is gone from view, the copies
    // on reachable volumes are removed; a retry once the volume is back finishes it.
    let (victim, files_before) = {
        let mut victim = None;
        for k in &keys {
            let resp = client().get(format!("{}{k}", c.url)).send().await.unwrap();
            if resp.headers()["key-volumes"]
                .to_str()
                .unwrap()
                .contains(&down)
            {
                victim = Some(k.clone());
                break;
            }
        }
        (
            victim.expect("some key has a replica on the stopped volume"),
            c.all_files().len(),
        )
    };
    assert_eq!(
        status(&c, "DELETE", &victim).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(status(&c, "GET", &victim).await, StatusCode::NOT_FOUND);
    assert_eq!(
        c.all_files().len(),
        files_before - 2,
        "reachable copies deleted"
    );
    c.volumes[0].restart();
    c.wait_volume(&down, true).await;
    // The key was deleted by the first request (it has been invisible since): the retry
    // finishes removing its files and answers 404, as for any absent key.
    assert_eq!(status(&c, "DELETE", &victim).await, StatusCode::NOT_FOUND);
    assert_eq!(
        c.all_files().len(),
        files_before - 3,
        "the last copy is deleted too"
    );
    for i in 0..20 {
        let k = format!("/new2/{i}");
        assert_eq!(put(&c, &k, value(10, 1)).await, StatusCode::CREATED, "{k}");
    }
}

async fn client_abort_leaves_nothing(kind: Kind) {
    let c = Cluster::start(kind, 3, &[]);
    let addr = c.url.trim_start_matches("http://").to_string();
    // Content-Length promises 1 MB, 64 KB arrive; once the index has recorded the
    // intent (the write is under way), the client goes away.
    let conn = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "PUT /aborted HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n"
        )
        .unwrap();
        s.write_all(&vec![7u8; 65536]).unwrap();
        s
    })
    .await
    .unwrap();
    c.wait_health("the upload under way", |h| h["keys"]["writing"] == 1)
        .await;
    drop(conn);
    // The write is rolled back: nothing visible, nothing on disk, no intent left, key
    // writable again.
    c.wait_health("the intent rolled back", |h| {
        h["keys"]["writing"] == 0 && h["writes_in_flight"] == 0
    })
    .await;
    assert!(c.all_files().is_empty(), "files left: {:?}", c.all_files());
    assert_eq!(status(&c, "GET", "/aborted").await, StatusCode::NOT_FOUND);
    assert_eq!(list(&c, "/?list").await["keys"], serde_json::json!([]));
    assert_eq!(put(&c, "/aborted", value(10, 1)).await, StatusCode::CREATED);
}

async fn reserved_paths(kind: Kind) {
    let c = Cluster::start(kind, 3, &[]);
    assert_eq!(
        put(&c, "/-/health", value(1, 1)).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        put(&c, "/-/anything", value(1, 1)).await,
        StatusCode::BAD_REQUEST
    );
    let health = client()
        .get(format!("{}/-/health", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["volumes"].as_array().unwrap().len(), 3);
    let addr = c.url.trim_start_matches("http://");
    for bad in ["/../etc/passwd", "/a/%2e%2e/b", "/a%00b", "/%FF%FE"] {
        let req = format!(
            "PUT {bad} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
        );
        assert_eq!(raw_status(addr, req.as_bytes()), 400, "{bad}");
    }
    let long = format!("/{}", "k".repeat(2000));
    assert_eq!(put(&c, &long, value(1, 1)).await, StatusCode::URI_TOO_LONG);
    assert!(c.all_files().is_empty());
}

async fn unbalanced_after_volume_added(kind: Kind) {
    let mut c = Cluster::start(kind, 4, &["--md5sum=false"]);
    let keys: Vec<String> = (0..40).map(|i| format!("/bal/{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(put(&c, k, value(50, i as u8)).await, StatusCode::CREATED);
    }
    let resp = client()
        .get(format!("{}{}", c.url, keys[0]))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers().get("content-md5").is_none(),
        "--md5sum=false"
    );

    // Restart the index with a fifth volume: placement changes for some keys, which are
    // now "unbalanced" but still served from the volumes their records name.
    let extra = common::cluster::Volume::start(kind, c.tmp.path(), "vol4");
    let mut list: Vec<String> = c.volumes.iter().map(|v| v.addr.clone()).collect();
    list.push(extra.addr.clone());
    c.index.kill();
    let tmp = std::mem::replace(&mut c.tmp, tempfile::tempdir().unwrap());
    let volumes = std::mem::take(&mut c.volumes);
    let db = c.db.clone();
    drop(c);
    let c = Cluster::with_volumes_and_db(tmp, volumes, &list.join(","), &db, &[]);
    let mut unbalanced = 0;
    for (i, k) in keys.iter().enumerate() {
        let resp = client().get(format!("{}{k}", c.url)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND);
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        assert!(
            !location.contains(&extra.addr),
            "{k} redirected to the new, empty volume"
        );
        if resp.headers()["key-balance"] == "unbalanced" {
            unbalanced += 1;
        }
        assert!(get(&c, k).await.1 == value(50, i as u8), "{k}");
    }
    // With 5 volumes and 3 replicas, each key's set includes the new volume with p = 3/5.
    assert!(
        (5..40).contains(&unbalanced),
        "{unbalanced} of 40 unbalanced"
    );
}
