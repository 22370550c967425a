//! Hostile input against the real binaries: a table of malformed, malicious or abusive
//! requests, each expecting one specific clean status, with the servers still serving
//! after every case; then slow clients (slowloris), broken uploads, 10k idle
//! connections, and a check that nothing was created outside the configured
//! directories.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::cluster::{client, Cluster, Kind};
use common::{proc_fds, proc_rss_kb, raw_request};
use reqwest::StatusCode;

/// Header and body read timeouts given to every server in this file.
const TIMEOUT: &str = "2s";

/// Expected "status" of a case the server answers by closing the connection.
const CLOSED: u16 = 0;

/// Which server a case is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Index,
    Volume,
}

/// A request line and headers, with `Connection: close` and the body appended.
fn req(method: &str, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    if !body.is_empty()
        && !headers
            .iter()
            .any(|h| h.contains("ength") || h.contains("ncoding"))
    {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn get(path: &str) -> Vec<u8> {
    req("GET", path, &[], b"")
}

fn put(path: &str) -> Vec<u8> {
    req("PUT", path, &[], b"pwned")
}

fn ranged(range: &str) -> Vec<u8> {
    req("GET", "/r/file", &[&format!("Range: {range}")], b"")
}

/// The catalogue: (name, target, raw request, expected status).
#[rustfmt::skip]
fn catalogue() -> Vec<(&'static str, Target, Vec<u8>, u16)> {
    use Target::*;
    let long_key = format!("/{}", "k".repeat(1100));
    let huge_header = format!("X-Big: {}", "a".repeat(40 * 1024));
    let big_head = format!("X-Big: {}", "a".repeat(90 * 1024));
    let many: Vec<String> = (0..150).map(|i| format!("X-H{i}: v")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let chunked = ["Transfer-Encoding: chunked"];
    vec![
        // Path traversal on the index: refused before anything is looked up.
        ("index dotdot", Index, get("/../etc/passwd"), 400),
        ("index dotdot put", Index, put("/../pwned"), 400),
        ("index encoded dotdot", Index, get("/a/%2e%2e/b"), 400),
        ("index encoded DOTDOT", Index, get("/a/%2E%2E/b"), 400),
        ("index encoded slashes", Index, get("/a%2F..%2F..%2Fetc%2Fpasswd"), 400),
        ("index all encoded", Index, put("/%2e%2e%2f%2e%2e%2fpwned"), 400),
        ("index dot segment", Index, put("/a/./pwned"), 400),
        ("index absolute-form", Index, get("http://evil/../etc/passwd"), 400),
        ("index NUL", Index, put("/a%00pwned"), 400),
        ("index NUL get", Index, get("/a%00b"), 400),
        ("index control char", Index, put("/a%0Apwned"), 400),
        // A backslash is an ordinary key character (its file name is base64): stored
        // safely, never a separator.
        ("index encoded backslash", Index, put("/%5C..%5C..%5Cpwned-bs"), 201),
        ("index raw backslash", Index, get("/a\\b"), 404),
        ("index invalid UTF-8", Index, put("/%FFpwned"), 400),
        ("index truncated UTF-8", Index, get("/%C3"), 400),
        ("index overlong UTF-8", Index, get("/%C0%AE%C0%AE/x"), 400),
        ("index raw non-ASCII", Index, b"GET /\xff\xfe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(), 400),
        // Sizes.
        ("index key too long", Index, get(&long_key), 414),
        ("index key too long put", Index, put(&long_key), 414),
        ("index file name too long", Index, put(&format!("/{}", "k".repeat(199))), 414),
        ("index huge header", Index, req("GET", "/k", &[&huge_header], b""), 431),
        ("index head over the buffer", Index, req("GET", "/k", &[&big_head], b""), 431),
        ("index too many headers", Index, req("GET", "/k", &many, b""), 431),
        // Methods.
        ("index PATCH", Index, req("PATCH", "/k", &[], b""), 405),
        ("index OPTIONS", Index, req("OPTIONS", "/k", &[], b""), 405),
        ("index PROPFIND", Index, req("PROPFIND", "/k", &[], b""), 405),
        ("index TRACE", Index, req("TRACE", "/k", &[], b""), 405),
        ("index made-up method", Index, req("FROB", "/k", &[], b""), 405),
        ("index reserved put", Index, put("/-/health"), 400),
        ("index reserved delete", Index, req("DELETE", "/-/x", &[], b""), 400),
        ("index root unlink", Index, req("UNLINK", "/", &[], b""), 400),
        // Listing parameters.
        ("list limit not a number", Index, get("/?list&limit=abc"), 400),
        ("list limit negative", Index, get("/?list&limit=-1"), 400),
        // Clamped to one page of at most 10,000 keys, like any over-large limit.
        ("list limit overflow", Index, get("/?list&limit=99999999999999999999999"), 200),
        ("list limit empty", Index, get("/?list&limit="), 400),
        ("list op not first", Index, get("/?limit=3&list"), 400),
        ("list unknown op", Index, get("/?frob"), 400),
        // Framing.
        ("bad chunk size", Index, req("PUT", "/chunky", &chunked, b"ZZ\r\nabc\r\n0\r\n\r\n"), 400),
        ("chunk without end", Index, req("PUT", "/chunky2", &chunked, b"3\r\nabcdef\r\n0\r\n\r\n"), 400),
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length (hyper drops it).
        ("CL and TE", Index, req("PUT", "/both", &["Content-Length: 3", chunked[0]], b"3\r\nabc\r\n0\r\n\r\n"), 201),
        ("two Content-Lengths", Index, req("PUT", "/two", &["Content-Length: 3", "Content-Length: 4"], b"abcd"), 400),
        ("Content-Length not a number", Index, req("PUT", "/nan", &["Content-Length: abc"], b""), 400),
        ("Content-Length negative", Index, req("PUT", "/neg", &["Content-Length: -5"], b""), 400),
        ("empty PUT", Index, req("PUT", "/empty", &["Content-Length: 0"], b""), 411),
        ("empty chunked PUT", Index, req("PUT", "/empty2", &chunked, b"0\r\n\r\n"), 411),
        ("header with NUL", Index, b"GET /k HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\nConnection: close\r\n\r\n".to_vec(), 400),
        ("TLS hello on plain port", Index, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(), 400),
        // No HTTP/1 answer is possible to an HTTP/2 preface: the connection is closed.
        ("HTTP/2 preface on HTTP/1", Index, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), CLOSED),
        ("bad version", Index, b"GET /k HTTP/9.9\r\nHost: t\r\n\r\n".to_vec(), 400),
        // Volume: traversal and hidden paths.
        ("volume dotdot", Volume, get("/../etc/passwd"), 400),
        ("volume encoded dotdot", Volume, get("/%2e%2e/%2e%2e/etc/passwd"), 400),
        ("volume encoded slashes", Volume, put("/a%2F..%2F..%2Fpwned"), 400),
        ("volume backslashes", Volume, get("/..%5C..%5Cwin.ini"), 400),
        ("volume raw backslash", Volume, get("/a\\b"), 400),
        ("volume NUL", Volume, put("/a%00pwned"), 400),
        ("volume temp dir", Volume, put("/.hoard-tmp/pwned"), 400),
        ("volume temp listing", Volume, get("/.hoard-tmp/"), 400),
        ("volume hidden", Volume, get("/a/.hidden"), 400),
        ("volume invalid UTF-8", Volume, put("/%FFpwned"), 400),
        ("volume bad escape", Volume, get("/a%zz"), 400),
        ("volume huge header", Volume, req("GET", "/r/file", &[&huge_header], b""), 431),
        // Volume: methods.
        ("volume PROPFIND", Volume, req("PROPFIND", "/", &[], b""), 405),
        ("volume MKCOL", Volume, req("MKCOL", "/d/", &[], b""), 405),
        ("volume MOVE", Volume, req("MOVE", "/r/file", &["Destination: /x"], b""), 405),
        ("volume made-up method", Volume, req("FROB", "/r/file", &[], b""), 405),
        ("volume bad chunk", Volume, req("PUT", "/c/pwned", &chunked, b"QQ\r\nabc\r\n0\r\n\r\n"), 400),
        // Volume: ranges (RFC 9110 §14): unsatisfiable or unparsable → 416; several
        // ranges may be ignored → 200 with the whole file.
        ("range ok", Volume, ranged("bytes=0-9"), 206),
        ("range suffix", Volume, ranged("bytes=-10"), 206),
        ("range open end", Volume, ranged("bytes=90-"), 206),
        ("range past end", Volume, ranged("bytes=200-300"), 416),
        ("range zero suffix", Volume, ranged("bytes=-0"), 416),
        ("range reversed", Volume, ranged("bytes=9-2"), 416),
        ("range garbage", Volume, ranged("bytes=abc"), 416),
        ("range other unit", Volume, ranged("items=0-5"), 416),
        ("range multiple", Volume, ranged("bytes=0-1,5-6"), 200),
    ]
}

/// True when the server at `addr` still answers a plain request.
fn alive(addr: &str, target: Target) -> bool {
    let probe = match target {
        Target::Index => get("/-/health"),
        Target::Volume => req("HEAD", "/", &[], b""),
    };
    raw_request(addr, &probe).is_ok_and(|r| r.status == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_of_hostile_requests() {
    let volume_args = ["--header-timeout", TIMEOUT, "--body-timeout", TIMEOUT];
    let c = Cluster::start_with(Kind::Native, 3, &volume_args, &volume_args);
    let vol = c.volumes[0].addr.clone();
    // A 100-byte file for the range cases.
    let body: Vec<u8> = (0..100u8).collect();
    let status = client()
        .put(format!("http://{vol}/r/file"))
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 201);

    let cases = catalogue();
    assert!(cases.len() >= 50, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for (name, target, request, want) in cases {
        let addr = match target {
            Target::Index => c.addr().to_string(),
            Target::Volume => vol.clone(),
        };
        let got = tokio::task::spawn_blocking({
            let addr = addr.clone();
            move || match raw_request(&addr, &request) {
                Ok(r) => Ok(r.status),
                // Closed without a response.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Ok(CLOSED),
                Err(e) => Err(e),
            }
        })
        .await
        .unwrap();
        match got {
            Ok(status) if status == want => {}
            other => failures.push(format!("{name}: want {want}, got {other:?}")),
        }
        let still = tokio::task::spawn_blocking(move || alive(&addr, target))
            .await
            .unwrap();
        assert!(still, "{name}: the server stopped answering");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_nothing_escaped(&c);
}

/// No file anywhere under the test directory outside the volumes' own trees carries
/// the `pwned` marker, and no volume file outside its key layout does either.
fn assert_nothing_escaped(c: &Cluster) {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(c.tmp.path(), &mut files);
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy();
        assert!(!name.contains("pwned"), "created {}", f.display());
    }
    // The test directory holds only what the cluster was configured with.
    for e in std::fs::read_dir(c.tmp.path()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let known = name == "db" || name.starts_with("vol") || name.ends_with(".log");
        assert!(known, "unexpected {name} in the test directory");
    }
    // Above the test directory: nothing named after the marker either.
    let parent = c.tmp.path().parent().unwrap();
    for e in std::fs::read_dir(parent).unwrap().flatten() {
        assert!(
            !e.file_name().to_string_lossy().contains("pwned"),
            "created {}",
            e.path().display()
        );
    }
}

/// Opens a connection and sends `head`, keeping the connection open.
fn open_with(addr: &str, head: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(head).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Reads until the server closes; returns the bytes, or panics if the server kept the
/// connection open past the client's 15 s read timeout (the servers here are told to
/// give up after 2 s; their default is 30 s). How long it took is printed.
fn read_until_closed(mut s: TcpStream, what: &str) -> Vec<u8> {
    let start = Instant::now();
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        // Closed with unread data on the server's side.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "{what}: not closed by the server ({e}) after {:?}",
            start.elapsed()
        ),
    }
    eprintln!("{what}: closed after {:?}", start.elapsed());
    out
}

/// The index server's `/-/health` report (blocking).
fn index_health(addr: &str) -> serde_json::Value {
    let r = raw_request(addr, &get("/-/health")).expect("/-/health");
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).expect("/-/health is not JSON")
}

/// Polls the index's `/-/health` until `ok` holds (blocking); panics after 20 s.
fn wait_index_health(addr: &str, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = index_health(addr);
        if ok(&h) {
            return;
        }
        assert!(Instant::now() < deadline, "never {what}: {h}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// No write in flight and no intent recorded.
fn no_writes(h: &serde_json::Value) -> bool {
    h["writes_in_flight"] == 0 && h["keys"]["writing"] == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_broken_clients() {
    let args = ["--header-timeout", TIMEOUT, "--body-timeout", TIMEOUT];
    let c = Cluster::start_with(Kind::Native, 3, &args, &args);
    let index = c.addr().to_string();
    let vol = c.volumes[0].addr.clone();

    let checks = tokio::task::spawn_blocking(move || {
        // Slowloris: a head that never ends is cut off after the header timeout.
        for addr in [&index, &vol] {
            let s = open_with(addr, b"GET /k HTTP/1.1\r\nHost: t\r\nX-Slow: ");
            read_until_closed(s, &format!("{addr}: slow head"));
            // An idle connection is closed too.
            let s = open_with(addr, b"");
            read_until_closed(s, &format!("{addr}: idle connection"));
        }
        // A body that stops mid-way fails after the body timeout, with a 400 sent.
        let s = open_with(
            &index,
            b"PUT /slow-body HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n0123456789",
        );
        let bytes = read_until_closed(s, "index: slow body");
        let head = String::from_utf8_lossy(&bytes);
        assert!(
            head.starts_with("HTTP/1.1 400"),
            "slow body answered {head:?}"
        );
        let s = open_with(
            &vol,
            b"PUT /v/slow HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n0123456789",
        );
        let bytes = read_until_closed(s, "volume: slow body");
        assert!(String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 400"));
        // Content-Length longer than the body, then the client goes away.
        let mut s = open_with(
            &index,
            b"PUT /short-body HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nabc",
        );
        s.flush().unwrap();
        drop(s);
        wait_index_health(&index, "the short body cleaned up", no_writes);
        // Chunked upload cut off mid-way (once the index recorded its intent) by a
        // disconnect.
        let mut s = open_with(
            &index,
            b"PUT /cut-chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n",
        );
        s.flush().unwrap();
        wait_index_health(&index, "the chunked upload under way", |h| {
            h["keys"]["writing"] == 1
        });
        drop(s);
        wait_index_health(&index, "the chunked upload cleaned up", no_writes);
    });
    checks.await.unwrap();

    // Nothing stored and every intent cleaned: no key visible, no file on any volume,
    // no write in flight, and the same keys can be written now.
    let http = client();
    for key in ["/slow-body", "/short-body", "/cut-chunked"] {
        let status = http
            .get(format!("{}{key}", c.url))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{key} is visible");
    }
    assert!(c.all_files().is_empty(), "files left: {:?}", c.all_files());
    let health: serde_json::Value = common::cluster::get_json(format!("{}/-/health", c.url)).await;
    assert_eq!(health["writes_in_flight"], 0);
    // No intent record is left behind either (read from the stopped index's database).
    let mut c = c;
    assert!(c.index.terminate(), "index did not stop cleanly");
    let index = hoard::index::Index::open(&c.db).unwrap();
    index
        .walk(None, |k, r| {
            panic!(
                "record left for {:?}: {:?}",
                String::from_utf8_lossy(k),
                r.state
            )
        })
        .unwrap();
    index.close();
    c.restart_index();
    for key in ["/slow-body", "/short-body", "/cut-chunked"] {
        let status = http
            .put(format!("{}{key}", c.url))
            .body("fine")
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(
            status, 201,
            "{key} cannot be written after the broken upload"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections() {
    // Default header timeout (30 s): the idle connections stay for the whole test.
    let c = Cluster::start(Kind::Native, 1, &["--replicas", "1"]);
    let pid = c.index.pid().unwrap();
    let fds = hoard::net::raise_fd_limit();
    let n = 10_000usize.min(
        usize::try_from(fds)
            .unwrap_or(usize::MAX)
            .saturating_sub(1000),
    );
    assert!(n >= 5_000, "open-files limit {fds} too low for this test");
    let addr = c.addr().to_string();
    let idle = tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|_| TcpStream::connect(&addr).expect("connect"))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();

    // The server still answers, promptly, while all of them are open.
    // (How long that takes is printed, not asserted: it depends on the machine; a
    // server that stopped answering fails the 60 s limit.)
    let http = client();
    let start = Instant::now();
    let requests = async {
        let put = http
            .put(format!("{}/after-idle", c.url))
            .body("still here")
            .send()
            .await
            .unwrap()
            .status();
        let health = http
            .get(format!("{}/-/health", c.url))
            .send()
            .await
            .unwrap()
            .status();
        (put, health)
    };
    let (put, health) = tokio::time::timeout(Duration::from_secs(60), requests)
        .await
        .expect("the server stopped answering with the idle connections open");
    assert_eq!((put, health), (StatusCode::CREATED, StatusCode::OK));
    eprintln!(
        "PUT + GET with {n} idle connections open: {:?}",
        start.elapsed()
    );
    let open = proc_fds(pid);
    assert!(open >= n / 2, "the server holds only {open} descriptors");
    let rss = proc_rss_kb(pid);
    assert!(
        rss < 1024 * 1024,
        "server uses {rss} KiB with {n} idle connections"
    );
    drop(idle);

    // Closed connections are released.
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc_fds(pid) > 500 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        proc_fds(pid) <= 500,
        "{} descriptors still open",
        proc_fds(pid)
    );
}

/// At `--max-connections` the server stops accepting (more connections wait in the
/// kernel's queue) and says so in its log, rather than going quiet — a server whose
/// connections never ended would otherwise look idle while nobody can reach it.
#[test]
fn the_connection_cap_is_logged_when_reached() {
    let tmp = tempfile::tempdir().unwrap();
    let v = common::cluster::Volume::start_with(
        Kind::Native,
        tmp.path(),
        "v",
        &["--max-connections", "2", "--header-timeout", "120s"],
    );
    // Two idle connections hold both places; a third waits in the accept queue.
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&v.addr).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !v
        .proc
        .log_text()
        .contains("the most allowed (--max-connections)")
    {
        assert!(
            Instant::now() < deadline,
            "no warning at the connection cap:\n{}",
            v.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);
}
