//! Integration tests of `hoard volume`: the real binary, real sockets, a temp directory.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{raw_request, RawResponse, VolumeProc};
use reqwest::{header, Client, StatusCode};

/// A volume serving `<tmp>/vol`, so that `<tmp>` can be checked for escapes.
struct Fixture {
    tmp: tempfile::TempDir,
    vol: VolumeProc,
    http: Client,
}

impl Fixture {
    fn new() -> Self {
        Self::with(&[])
    }

    /// A volume started with `extra` arguments, e.g. `--fsync=false` (which takes the
    /// inline small-request paths).
    fn with(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let vol = VolumeProc::start_with(&tmp.path().join("vol"), extra);
        hoard::tls::install_provider();
        let http = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        Self { tmp, vol, http }
    }

    fn url(&self, path: &str) -> String {
        self.vol.url(path)
    }

    fn dir(&self) -> &Path {
        self.vol.dir()
    }

    async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> StatusCode {
        let res = self.http.put(self.url(path)).body(body).send().await;
        res.expect("PUT").status()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }

    async fn get_range(&self, path: &str, range: &str) -> reqwest::Response {
        let req = self.http.get(self.url(path)).header(header::RANGE, range);
        req.send().await.expect("GET with Range")
    }

    fn raw(&self, request: String) -> RawResponse {
        raw_request(&self.vol.addr(), request.as_bytes()).expect("raw request")
    }

    /// Entries of the temp directory (uploads with a name, large files being deleted)
    /// plus the unnamed uploads the process holds open.
    fn temp_files(&self) -> usize {
        let entries = std::fs::read_dir(self.dir().join(".hoard-tmp"))
            .expect("temp dir exists")
            .count();
        entries + common::unnamed_uploads(self.dir(), self.vol.pid())
    }
}

/// Both ways a volume writes: with fsync (on the blocking pool) and without (inline);
/// the latter also on a runtime of one worker thread (`--runtime-threads 1`).
const FSYNC_MODES: [&[&str]; 3] = [
    &[],
    &["--fsync=false"],
    &["--fsync=false", "--runtime-threads", "1"],
];

#[tokio::test]
async fn put_get_head_and_replace() {
    for extra in FSYNC_MODES {
        check_put_get_head_and_replace(&Fixture::with(extra)).await;
    }
}

async fn check_put_get_head_and_replace(f: &Fixture) {
    assert_eq!(f.put("/k", "hello").await, StatusCode::CREATED);
    let res = f.get("/k").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().contains_key(header::LAST_MODIFIED));
    assert!(res.headers().contains_key(header::ETAG));
    assert_eq!(res.bytes().await.unwrap(), "hello");

    let head = f.http.head(f.url("/k")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()[header::CONTENT_LENGTH], "5");

    assert_eq!(f.put("/k", "bye").await, StatusCode::NO_CONTENT);
    assert_eq!(f.get("/k").await.bytes().await.unwrap(), "bye");
    assert_eq!(std::fs::read(f.dir().join("k")).unwrap(), b"bye");
    assert_eq!(f.put("/empty", "").await, StatusCode::CREATED);
    assert_eq!(f.get("/empty").await.bytes().await.unwrap(), "");
    assert_eq!(f.get("/missing").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(f.temp_files(), 0);

    // A plain GET of a small file is answered by the fast path, a conditional or
    // ranged one by ServeFile: same validators, and they work across the two.
    let plain = f.get("/k").await;
    let ranged = f.get_range("/k", "bytes=0-").await;
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    for h in [
        header::ETAG,
        header::LAST_MODIFIED,
        header::CONTENT_TYPE,
        header::ACCEPT_RANGES,
    ] {
        assert_eq!(plain.headers().get(&h), ranged.headers().get(&h), "{h}");
    }
    let etag = plain.headers()[header::ETAG].clone();
    let cond = f.http.get(f.url("/k")).header(header::IF_NONE_MATCH, etag);
    assert_eq!(
        cond.send().await.unwrap().status(),
        StatusCode::NOT_MODIFIED
    );
}

#[tokio::test]
async fn ranges() {
    let f = Fixture::new();
    assert_eq!(f.put("/r", "0123456789").await, StatusCode::CREATED);
    for (range, want, content_range) in [
        ("bytes=0-3", "0123", "bytes 0-3/10"),
        ("bytes=-3", "789", "bytes 7-9/10"),
        ("bytes=5-", "56789", "bytes 5-9/10"),
    ] {
        let res = f.get_range("/r", range).await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(res.headers()[header::CONTENT_RANGE], content_range);
        assert_eq!(res.bytes().await.unwrap(), want, "{range}");
    }
    let res = f.get_range("/r", "bytes=20-30").await;
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
}

#[tokio::test]
async fn nested_paths_are_created() {
    for extra in FSYNC_MODES {
        check_nested_paths_are_created(&Fixture::with(extra)).await;
    }
}

async fn check_nested_paths_are_created(f: &Fixture) {
    assert_eq!(f.put("/ab/cd/L2Eb+/x==", "v").await, StatusCode::CREATED);
    assert_eq!(
        std::fs::read(f.dir().join("ab/cd/L2Eb+/x==")).unwrap(),
        b"v"
    );
    assert_eq!(f.get("/ab/cd/L2Eb+/x==").await.bytes().await.unwrap(), "v");
    assert_eq!(f.put("/1/2/3/4/5/6/7/8", "deep").await, StatusCode::CREATED);
    assert_eq!(
        f.get("/1/2/3/4/5/6/7/8").await.bytes().await.unwrap(),
        "deep"
    );
}

#[tokio::test]
async fn chunked_put() {
    let f = Fixture::new();
    let res = f.raw(
        "PUT /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            .to_owned(),
    );
    assert_eq!(res.status, 201);
    assert_eq!(f.get("/c").await.bytes().await.unwrap(), "hello world");

    // The same through a streaming client body.
    let chunks: Vec<Result<&'static str, std::io::Error>> = vec![Ok("a"), Ok("bc"), Ok("def")];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    assert_eq!(f.put("/c", body).await, StatusCode::NO_CONTENT);
    assert_eq!(f.get("/c").await.bytes().await.unwrap(), "abcdef");
}

#[tokio::test]
async fn interrupted_upload_is_never_visible() {
    use std::io::Write as _;
    let f = Fixture::new();
    assert_eq!(f.put("/old", "old").await, StatusCode::CREATED);
    for path in ["/new", "/old"] {
        let mut s = std::net::TcpStream::connect(f.vol.addr()).unwrap();
        // More than the 1 MiB the volume buffers in memory, so a temp file exists.
        let head = format!("PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&vec![7u8; 1_500_000]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while f.temp_files() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            f.temp_files(),
            1,
            "the upload is being written to a temp file"
        );
        drop(s);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.temp_files() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(f.temp_files(), 0, "temp file left behind");
    assert_eq!(f.get("/new").await.status(), StatusCode::NOT_FOUND);
    assert!(!f.dir().join("new").exists());
    assert_eq!(f.get("/old").await.bytes().await.unwrap(), "old");
}

#[tokio::test]
async fn delete() {
    for extra in FSYNC_MODES {
        check_delete(&Fixture::with(extra)).await;
    }
}

async fn check_delete(f: &Fixture) {
    assert_eq!(f.put("/d/k", "x").await, StatusCode::CREATED);
    let del = |p: &str| f.http.delete(f.url(p)).send();
    assert_eq!(del("/d/k").await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(f.get("/d/k").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(del("/d/k").await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(
        del("/nope/k").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(del("/d").await.unwrap().status(), StatusCode::CONFLICT);
    assert_eq!(del("/d/").await.unwrap().status(), StatusCode::CONFLICT);
    assert!(f.dir().join("d").is_dir());

    // A large file is moved out of the way and unlinked after (or, without fsync,
    // beside) the answer: gone at once, and nothing stays in the temp directory.
    let big = vec![7u8; 3 << 20];
    assert_eq!(f.put("/d/big", big).await, StatusCode::CREATED);
    assert_eq!(
        del("/d/big").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(f.get("/d/big").await.status(), StatusCode::NOT_FOUND);
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.temp_files() > 0 {
        assert!(
            Instant::now() < deadline,
            "the deleted file stays in the temp directory"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn directory_listing() {
    let f = Fixture::new();
    assert_eq!(f.put("/ab/cd/x", "12345").await, StatusCode::CREATED);
    assert_eq!(f.put("/ab/y", "1").await, StatusCode::CREATED);

    let res = f.get("/ab/").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    let list: serde_json::Value = res.json_text().await;
    let list = list.as_array().expect("a JSON array");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["name"], "cd");
    assert_eq!(list[0]["type"], "directory");
    assert!(list[0].get("size").is_none());
    assert_eq!(list[1]["name"], "y");
    assert_eq!(list[1]["type"], "file");
    assert_eq!(list[1]["size"], 1);
    for entry in list {
        let mtime = entry["mtime"].as_str().expect("mtime is a string");
        assert!(httpdate::parse_http_date(mtime).is_ok(), "{mtime}");
    }

    let root: serde_json::Value = f.get("/").await.json_text().await;
    let names: Vec<_> = root
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["name"])
        .collect();
    assert_eq!(names, ["ab"], "the temp dir must not be listed");

    let head = f.http.head(f.url("/")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(f.get("/missing/").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(f.get("/ab/y/").await.status(), StatusCode::NOT_FOUND);

    let res = f.get("/ab/cd?x=1").await;
    assert_eq!(res.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(res.headers()[header::LOCATION], "/ab/cd/?x=1");
    let res = f.get("/ab").await;
    assert_eq!(res.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(res.headers()[header::LOCATION], "/ab/");
}

/// `json()` needs reqwest's `json` feature; parse the text instead.
trait JsonText {
    async fn json_text(self) -> serde_json::Value;
}

impl JsonText for reqwest::Response {
    async fn json_text(self) -> serde_json::Value {
        let text = self.text().await.expect("body");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }
}

#[tokio::test]
async fn unsafe_paths_are_refused() {
    let f = Fixture::new();
    assert_eq!(f.put("/a/b", "inside").await, StatusCode::CREATED);
    let paths = [
        "/../escape",
        "/../etc/passwd",
        "/%2e%2e/escape",
        "/%2E%2E/escape",
        "/a/..%2Fescape",
        "/a/../../escape",
        "/a/%2e%2e%2f%2e%2e%2fescape",
        "/./escape",
        "/a\\..\\..\\escape",
        "/a%5C..%5C..%5Cescape",
        "/a%00b",
        "/a/b%00",
        "/%ff",
        "/a%zz",
        "/.hoard-tmp/x",
        "/.hidden",
    ];
    for method in ["PUT", "GET", "DELETE"] {
        for path in paths {
            let res = f.raw(format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbad"
            ));
            assert_eq!(res.status, 400, "{method} {path}");
        }
    }
    let outside: Vec<_> = std::fs::read_dir(f.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        outside,
        ["vol"],
        "nothing may be created outside the volume"
    );
    assert_eq!(f.get("/a/b").await.bytes().await.unwrap(), "inside");
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_leaving_the_root_are_forbidden() {
    for extra in FSYNC_MODES {
        check_symlinks_leaving_the_root_are_forbidden(&Fixture::with(extra)).await;
    }
}

async fn check_symlinks_leaving_the_root_are_forbidden(f: &Fixture) {
    let outside = f.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "s").unwrap();
    std::os::unix::fs::symlink(&outside, f.dir().join("out")).unwrap();
    assert_eq!(f.get("/out/secret").await.status(), StatusCode::FORBIDDEN);
    assert_eq!(f.put("/out/new", "x").await, StatusCode::FORBIDDEN);
    assert_eq!(f.put("/out/sub/new", "x").await, StatusCode::FORBIDDEN);
    let del = f.http.delete(f.url("/out/secret")).send().await.unwrap();
    assert_eq!(del.status(), StatusCode::FORBIDDEN);
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    let root: serde_json::Value = f.get("/").await.json_text().await;
    assert_eq!(
        root.as_array().unwrap().len(),
        0,
        "escaping link is not listed"
    );

    // A symlink that stays inside is followed (the general path, not the fast one).
    std::fs::create_dir(f.dir().join("real")).unwrap();
    std::os::unix::fs::symlink(f.dir().join("real"), f.dir().join("in")).unwrap();
    assert_eq!(f.put("/in/x", "inside").await, StatusCode::CREATED);
    assert_eq!(f.put("/in/sub/y", "deeper").await, StatusCode::CREATED);
    assert_eq!(std::fs::read(f.dir().join("real/x")).unwrap(), b"inside");
    assert_eq!(f.get("/in/sub/y").await.bytes().await.unwrap(), "deeper");
    let del = f.http.delete(f.url("/in/x")).send().await.unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    assert!(!f.dir().join("real/x").exists());
}

#[tokio::test]
async fn conflicts_and_methods() {
    for extra in FSYNC_MODES {
        check_conflicts_and_methods(&Fixture::with(extra)).await;
    }
}

async fn check_conflicts_and_methods(f: &Fixture) {
    assert_eq!(f.put("/file", "x").await, StatusCode::CREATED);
    assert_eq!(f.put("/file/below", "x").await, StatusCode::CONFLICT);
    assert_eq!(f.put("/dir/", "x").await, StatusCode::CONFLICT);
    assert_eq!(f.put("/", "x").await, StatusCode::CONFLICT);
    assert_eq!(f.put("/dir/k", "x").await, StatusCode::CREATED);
    assert_eq!(f.put("/dir", "x").await, StatusCode::CONFLICT);
    let res = f.http.post(f.url("/file")).body("x").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(res.headers().contains_key(header::ALLOW));
    assert_eq!(f.temp_files(), 0);
}

#[tokio::test]
async fn restart_keeps_files_and_clears_temp() {
    let mut f = Fixture::new();
    assert_eq!(f.put("/ab/cd/k", "kept").await, StatusCode::CREATED);
    std::fs::write(f.dir().join(".hoard-tmp/put-leftover"), "junk").unwrap();
    f.vol.restart();
    assert_eq!(f.get("/ab/cd/k").await.bytes().await.unwrap(), "kept");
    assert_eq!(f.temp_files(), 0);
}

#[tokio::test]
async fn large_value_round_trips() {
    let f = Fixture::new();
    let mut value = vec![0u8; 16 << 20];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in value.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    assert_eq!(f.put("/big", value.clone()).await, StatusCode::CREATED);
    let res = f.get("/big").await;
    assert_eq!(
        res.headers()[header::CONTENT_LENGTH],
        (16 << 20).to_string()
    );
    let got = res.bytes().await.unwrap();
    assert!(got == value, "16 MiB value differs after the round trip");
}

/// The lines of a streamed walk (`GET /-/walk/<dir>/`): its file entries as
/// `"name size"`, sorted, and its last line.
async fn walk_lines(f: &Fixture, dir: &str) -> (Vec<String>, serde_json::Value) {
    let res = f.get(&format!("/-/walk{dir}")).await;
    assert_eq!(res.status(), StatusCode::OK, "walk of {dir}");
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/x-ndjson");
    let text = res.text().await.expect("walk body");
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let last = lines.pop().expect("an end line");
    let mut files: Vec<String> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["type"], "file", "{l}");
            let mtime = l["mtime"].as_str().expect("mtime");
            assert!(httpdate::parse_http_date(mtime).is_ok(), "{mtime}");
            format!("{} {}", l["name"].as_str().unwrap(), l["size"])
        })
        .collect();
    files.sort();
    (files, last)
}

#[cfg(unix)]
#[tokio::test]
async fn streamed_walk() {
    let f = Fixture::new();
    for (path, body) in [
        ("/sv00/ab/cd/x==", "12345"),
        ("/sv00/ab/cd/deep/er", "1"),
        ("/sv00/ef/01/y", "12"),
        ("/sv01/ab/cd/z", "123"),
        ("/top", "1234"),
    ] {
        assert_eq!(f.put(path, body).await, StatusCode::CREATED, "{path}");
    }
    std::fs::write(f.dir().join("sv00/.hidden"), "h").unwrap();
    std::fs::write(f.dir().join(".hoard-tmp/upload"), "u").unwrap();
    let outside = f.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "s").unwrap();
    std::os::unix::fs::symlink(&outside, f.dir().join("sv00/out")).unwrap();
    std::os::unix::fs::symlink(f.dir().join("sv01"), f.dir().join("sv00/in")).unwrap();
    std::os::unix::fs::symlink(f.dir().join("sv00"), f.dir().join("sv00/ab/loop")).unwrap();

    // Listings announce the endpoint.
    let res = f.get("/").await;
    assert_eq!(res.headers()["x-hoard-walk"], "1");

    let (files, last) = walk_lines(&f, "/sv00/").await;
    assert_eq!(
        files,
        [
            "ab/cd/deep/er 1",
            "ab/cd/x== 5",
            "ef/01/y 2",
            "in/ab/cd/z 3",
        ],
        "hidden names, links leaving the root and cycles are left out"
    );
    assert_eq!(last["type"], "end");
    assert_eq!(last["files"], 4);

    let (files, last) = walk_lines(&f, "/").await;
    assert_eq!(files.len(), 6, "{files:?}");
    assert!(files.contains(&"top 4".to_string()));
    assert!(!files.iter().any(|f| f.contains("hoard-tmp")));
    assert_eq!(last["files"], 6);
    let (files, _) = walk_lines(&f, "/sv00/in/").await;
    assert_eq!(files, ["ab/cd/z 3"]);
    let (files, last) = walk_lines(&f, "/sv00/ab/cd/deep/").await;
    assert_eq!(
        (files, last["files"].as_u64()),
        (vec!["er 1".into()], Some(1))
    );

    assert_eq!(
        f.get("/-/walk/missing/").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(f.get("/-/walk/top/").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(f.get("/-/walk/sv00").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        f.get("/-/walk/sv00/out/").await.status(),
        StatusCode::FORBIDDEN
    );
    for path in ["/-/walk/../", "/-/walk/%2e%2e/", "/-/walk/.hoard-tmp/"] {
        let res = f.raw(format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(res.status, 400, "{path}");
    }
    let res = f.http.delete(f.url("/-/walk/sv00/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        f.get("/sv00/ab/cd/x==").await.bytes().await.unwrap(),
        "12345"
    );
}

/// A walk of a directory far larger than the volume's memory growth allows: the
/// entries are streamed, never gathered.
#[tokio::test]
async fn streamed_walk_of_a_large_directory_has_bounded_memory() {
    let f = Fixture::new();
    let dir = f.dir().join("big");
    std::fs::create_dir(&dir).unwrap();
    let n = 20_000;
    let long = "n".repeat(245);
    for i in 0..n {
        std::fs::File::create(dir.join(format!("{long}{i}"))).unwrap();
    }
    // A first, small walk: thread and buffer set-up is not what is measured.
    assert_eq!(f.put("/small/x", "x").await, StatusCode::CREATED);
    assert_eq!(walk_lines(&f, "/small/").await.0, ["x 1"]);
    let before = common::proc_status(f.vol.pid(), "VmHWM");
    let res = f.get("/-/walk/big/").await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.bytes_stream();
    let (mut bytes, mut lines) = (0usize, 0usize);
    let mut last = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
        let chunk = chunk.expect("walk body");
        bytes += chunk.len();
        lines += chunk.iter().filter(|&&b| b == b'\n').count();
        last.extend_from_slice(&chunk);
        let keep = last.len().saturating_sub(100);
        last.drain(..keep);
    }
    assert_eq!(lines, n + 1);
    assert!(
        String::from_utf8_lossy(&last).ends_with(&format!("{{\"type\":\"end\",\"files\":{n}}}\n")),
        "{}",
        String::from_utf8_lossy(&last)
    );
    let grown_kib = common::proc_status(f.vol.pid(), "VmHWM").saturating_sub(before);
    assert!(bytes > 5 << 20, "the walk sent only {bytes} bytes");
    assert!(
        (grown_kib as usize) < (bytes >> 10) / 3,
        "the volume's peak memory grew by {grown_kib} KiB for a {} KiB walk",
        bytes >> 10
    );
}
