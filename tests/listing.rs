//! Listing bounds on the real binary: pages are clamped and bounded in the records they
//! examine, paging with `next` visits every key once, unlimited listings stream, and a
//! streamed listing stops reading the index when its client goes away.
//!
//! Listings read only the index, so the many keys these tests need are written straight
//! into the index database with the library before the server starts (a few seconds for
//! 100,000 keys, where PUTs would take minutes); one key is PUT and UNLINKed over HTTP.
//! The sizes come from the constants the server uses, so the tests follow them.

mod common;

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{client, Cluster, Kind, Volume};
use hoard::index::{Command, Index, CHUNK_BUDGET, MAX_PAGE_KEYS, PAGE_BUDGET};
use reqwest::StatusCode;

/// Writes live records of `keys` into the index database in `db` (server not running).
async fn prefill(db: &Path, volume: &str, keys: &[String]) {
    let index = Index::open(db).unwrap();
    for batch in keys.chunks(4096) {
        let tasks: Vec<_> = batch
            .iter()
            .map(|key| {
                let (index, key, volume) = (index.clone(), key.clone().into_bytes(), volume);
                let volumes = vec![volume.to_string()];
                tokio::spawn(async move {
                    let begin = Command::Begin {
                        key: key.clone(),
                        volumes,
                        now_ms: 1,
                        owner: 0,
                        replace: false,
                    };
                    index.apply(begin).await.unwrap().unwrap();
                    let commit = Command::Commit {
                        gen: 0,
                        key,
                        size: 1,
                        md5: None,
                        missing: Vec::new(),
                        now_ms: 2,
                        owner: 0,
                        meta: Vec::new(),
                    };
                    index.apply(commit).await.unwrap().unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    index.close();
}

/// One native volume and an index server whose database already holds `keys`.
async fn cluster_with(keys: &[String]) -> Cluster {
    let tmp = tempfile::tempdir().unwrap();
    let volume = Volume::start(Kind::Native, tmp.path(), "vol0");
    let db = tmp.path().join("db");
    prefill(&db, &volume.addr, keys).await;
    let addr = volume.addr.clone();
    let flags = ["--replicas", "1", "--subvolumes", "1"];
    Cluster::with_volumes_and_db(tmp, vec![volume], &addr, &db, &flags)
}

/// `GET path` on the index server: status and parsed JSON body.
async fn list(c: &Cluster, path: &str) -> serde_json::Value {
    let resp = client()
        .get(format!("{}{path}", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    resp.json().await.unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

/// The value of an unlabelled series in `/-/metrics` (0 before it is first set).
async fn metric(c: &Cluster, name: &str) -> u64 {
    let text = client()
        .get(format!("{}/-/metrics", c.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

const EXAMINED: &str = "hoard_list_records_examined_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_bounded_and_unlimited_listings_stream() {
    // More live keys than one page may examine, and keys around the prefix.
    let n = PAGE_BUDGET + 2_345;
    let live: Vec<String> = (0..n).map(|i| format!("/many/{i:06}")).collect();
    let around = ["/many", "/manyx", "/m/1", "/n/1"].map(String::from);
    let c = cluster_with(&[live.clone(), around.to_vec()].concat()).await;
    // One unlinked key, after every live one, written the ordinary way.
    let gone = format!("{}/many/~gone", c.url);
    let put = client().put(&gone).body("x").send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let unlink = client().request("UNLINK".parse().unwrap(), &gone);
    assert_eq!(
        unlink.send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );

    // An over-large limit is clamped to one page, with `next` where it stopped.
    let page = list(&c, "/many/?list&limit=999999999999").await;
    let keys = strings(&page["keys"]);
    assert_eq!(keys.len(), MAX_PAGE_KEYS);
    assert!(keys == live[..MAX_PAGE_KEYS], "not the first keys in order");
    assert_eq!(page["next"], live[MAX_PAGE_KEYS].as_str());

    // Paging with `next` visits every key exactly once, in order.
    let (mut seen, mut next, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = list(&c, &format!("/many/?list&limit=99999&start={next}")).await;
        seen.extend(strings(&page["keys"]));
        pages += 1;
        next = page["next"].as_str().unwrap().to_string();
        if next.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), n);
    assert!(seen == live, "paging did not visit every key once in order");
    assert_eq!(pages, n.div_ceil(MAX_PAGE_KEYS));

    // Without a limit: every key (no 413), streamed in chunks, the same bytes as the
    // buffered body had.
    let before = metric(&c, EXAMINED).await;
    let resp = client()
        .get(format!("{}/many/?list", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["transfer-encoding"], "chunked");
    assert!(resp.headers().get("content-length").is_none());
    let body = resp.text().await.unwrap();
    let expect = format!(
        r#"{{"next":"","keys":{}}}"#,
        serde_json::to_string(&live).unwrap()
    );
    assert!(
        body == expect,
        "unlimited listing differs from the buffered body"
    );
    // Each record (the unlinked one too) examined once, over many chunks.
    assert!(n > 100 * CHUNK_BUDGET);
    assert_eq!(metric(&c, EXAMINED).await - before, n as u64 + 1);

    // ?unlinked&limit=1 over live keys: the page stops after its budget of records,
    // empty, with `next` the first key not examined; the next page finds the key.
    let before = metric(&c, EXAMINED).await;
    let page = list(&c, "/many/?unlinked&limit=1").await;
    assert_eq!(page["keys"], serde_json::json!([]));
    assert_eq!(page["next"], live[PAGE_BUDGET].as_str());
    assert_eq!(metric(&c, EXAMINED).await - before, PAGE_BUDGET as u64);
    let start = page["next"].as_str().unwrap();
    let page = list(&c, &format!("/many/?unlinked&limit=1&start={start}")).await;
    assert_eq!(
        page,
        serde_json::json!({"next": "", "keys": ["/many/~gone"]})
    );
    // Unlimited, it is found after many chunks that found nothing.
    assert_eq!(
        list(&c, "/many/?unlinked").await,
        serde_json::json!({"next": "", "keys": ["/many/~gone"]})
    );
}

/// Sends `GET path` on a raw connection whose receive buffer is small, reads only the
/// response head, and closes the connection with the body unread.
fn read_head_then_disconnect(addr: &str, path: &str) -> String {
    use std::os::fd::AsRawFd as _;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let small: libc::c_int = 4096;
    // SAFETY: a valid socket and a c_int option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before the head");
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_listing_stops_reading_the_index() {
    // ~24 MB of listing: far more than the socket buffers between client and server
    // hold (Linux default tcp_wmem max 4 MB; the client's buffer is set small), so the
    // server cannot have read it all when the client goes away.
    let n = 24 * CHUNK_BUDGET;
    let segment = "s".repeat(150);
    let keys: Vec<String> = (0..n)
        .map(|i| {
            format!("/long/{i:06}/{segment}/{segment}/{segment}/{segment}/{segment}/{segment}")
        })
        .collect();
    let c = cluster_with(&keys).await;

    // Read to the end, the listing examines every record once: the metric is real.
    let before = metric(&c, EXAMINED).await;
    let all = list(&c, "/long/?list").await;
    assert_eq!(all["keys"].as_array().unwrap().len(), n);
    assert_eq!(metric(&c, EXAMINED).await - before, n as u64);

    // Disconnected after the head: once the body is dropped (no stream left), far fewer
    // records were examined.
    let before = metric(&c, EXAMINED).await;
    let head = read_head_then_disconnect(c.addr(), "/long/?list");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&c, "hoard_list_streams").await != 0 {
        assert!(
            Instant::now() < deadline,
            "the listing stream was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let examined = metric(&c, EXAMINED).await - before;
    assert!(
        examined < n as u64 / 2,
        "{examined} of {n} records examined after the client left"
    );
}
