//! The S3 API with real S3 clients, each doing what its users do: boto3 (Python
//! helper `tests/s3/boto3_client.py`), aws-cli, s3cmd and rclone — against `hoard dev`
//! and against `hoard server --s3-port` over native volumes. The clients are installed
//! by `scripts/test.sh`; a missing client fails its test.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::cluster::{free_port_run, hoard_bin, wait_http, wait_listening, Cluster, Kind, Proc};

const ACCESS: &str = "s3test";
const SECRET: &str = "s3test-secret";

/// An S3 endpoint under test and the native URL of the same store.
struct Endpoint {
    s3: String,
    native: String,
}

/// `hoard server --s3-port` over three native volumes.
fn server() -> (Cluster, Endpoint) {
    server_on(Kind::Native, 3)
}

/// `hoard server --s3-port` over `n` volumes of `kind`.
fn server_on(kind: Kind, n: usize) -> (Cluster, Endpoint) {
    let s3_port = common::free_port().to_string();
    let cluster = Cluster::start(
        kind,
        n,
        &[
            // The tests read S3 objects natively without a token.
            "--native-open",
            "--s3-port",
            &s3_port,
            "--s3-access-key",
            ACCESS,
            "--s3-secret-key",
            SECRET,
        ],
    );
    wait_listening(&format!("127.0.0.1:{s3_port}"));
    let ep = Endpoint {
        s3: format!("http://127.0.0.1:{s3_port}"),
        native: cluster.url.clone(),
    };
    (cluster, ep)
}

/// `hoard dev` with its S3 API (credentials given through the environment).
fn dev(data: &Path) -> (Proc, Endpoint) {
    let port = free_port_run(7);
    let s3_port = common::free_port();
    let cmd = vec![
        "env".to_string(),
        format!("HOARD_S3_ACCESS_KEY={ACCESS}"),
        format!("HOARD_S3_SECRET_KEY={SECRET}"),
        hoard_bin().to_string(),
        "dev".into(),
        "--data".into(),
        data.display().to_string(),
        "--port".into(),
        port.to_string(),
        "--s3-port".into(),
        s3_port.to_string(),
    ];
    let proc = Proc::spawn(cmd, data.with_extension("log"));
    wait_http(&format!("http://127.0.0.1:{port}/-/health"));
    wait_listening(&format!("127.0.0.1:{s3_port}"));
    let ep = Endpoint {
        s3: format!("http://127.0.0.1:{s3_port}"),
        native: format!("http://127.0.0.1:{port}"),
    };
    (proc, ep)
}

/// Runs `cmd` with the test's S3 credentials; panics with its output on failure.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .env("AWS_ACCESS_KEY_ID", ACCESS)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        // The endpoints are plain HTTP on loopback; a CA bundle from the environment
        // only trips clients up (rclone refuses its plain-HTTP transport with one).
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {cmd:?} (is it installed? scripts/test.sh installs it): {e}")
        });
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn boto3(ep: &Endpoint, work: &Path, checks: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3/boto3_client.py");
    let out = run(Command::new("python3")
        .arg(script)
        .args([&ep.s3, &ep.native])
        .arg(work)
        .args(checks));
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn boto3_against_dev() {
    let tmp = tempfile::tempdir().unwrap();
    let (_dev, ep) = dev(&tmp.path().join("data"));
    boto3(&ep, tmp.path(), &["objects", "listing", "auth"]);
}

#[test]
fn boto3_against_server_over_native_volumes() {
    let (cluster, ep) = server();
    boto3(
        &ep,
        cluster.tmp.path(),
        &["objects", "listing", "multipart", "auth"],
    );
}

/// Buckets and multipart uploads are index state: they survive a restart of the index
/// server (kill -9), and an upload started before it completes after it.
#[test]
fn upload_state_survives_an_index_restart() {
    let (mut cluster, ep) = server();
    let work = cluster.tmp.path().to_path_buf();
    boto3(&ep, &work, &["restart_before"]);
    cluster.restart_index();
    wait_listening(ep.s3.trim_start_matches("http://"));
    boto3(&ep, &work, &["restart_after"]);
}

fn aws(ep: &Endpoint, args: &[&str]) -> String {
    let out = run(Command::new("aws")
        .args(["--endpoint-url", &ep.s3])
        .args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory tree of `files` small files and one of `large` bytes; returns its root.
fn tree(root: &Path, files: usize, large: usize) -> std::path::PathBuf {
    let dir = root.join("tree");
    for i in 0..files {
        let sub = dir.join(format!("d{}", i % 3)).join(format!("e{}", i % 2));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            sub.join(format!("f{i}.txt")),
            format!("file {i}\n").repeat(i + 1),
        )
        .unwrap();
    }
    let big: Vec<u8> = (0..large).map(|_| fastrand::u8(..)).collect();
    std::fs::write(dir.join("big.bin"), big).unwrap();
    dir
}

/// Files under `dir` (relative paths) with their contents.
fn contents(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn aws_cli_cp_sync_ls_rm() {
    let (cluster, ep) = server();
    let work = cluster.tmp.path();
    // 20 MB: `aws s3 cp` uploads it in parts (8 MB threshold).
    let src = tree(work, 12, 20 << 20);
    aws(&ep, &["s3", "mb", "s3://cli"]);
    aws(
        &ep,
        &[
            "s3",
            "cp",
            &src.join("big.bin").display().to_string(),
            "s3://cli/one/big.bin",
        ],
    );
    let etag = aws(
        &ep,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "cli",
            "--key",
            "one/big.bin",
            "--query",
            "ETag",
        ],
    );
    assert!(
        etag.contains("-3"),
        "a 20 MB aws s3 cp is a 3-part upload: {etag}"
    );
    let back = work.join("big.back");
    aws(
        &ep,
        &[
            "s3",
            "cp",
            "s3://cli/one/big.bin",
            &back.display().to_string(),
        ],
    );
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(src.join("big.bin")).unwrap()
    );

    aws(
        &ep,
        &["s3", "sync", &src.display().to_string(), "s3://cli/tree"],
    );
    let listing = aws(&ep, &["s3", "ls", "--recursive", "s3://cli/tree/"]);
    assert_eq!(listing.lines().count(), 13, "{listing}");
    let top = aws(&ep, &["s3", "ls", "s3://cli/tree/"]);
    for want in ["PRE d0/", "PRE d1/", "PRE d2/", "big.bin"] {
        assert!(top.contains(want), "{want} missing from {top}");
    }
    // A second sync has nothing to do; a changed file is sent again.
    assert_eq!(
        aws(
            &ep,
            &["s3", "sync", &src.display().to_string(), "s3://cli/tree"]
        ),
        ""
    );
    std::fs::write(
        src.join("d0/e0/f0.txt"),
        "changed, and longer than before\n",
    )
    .unwrap();
    let again = aws(
        &ep,
        &["s3", "sync", &src.display().to_string(), "s3://cli/tree"],
    );
    assert!(again.contains("f0.txt"), "{again}");
    let down = work.join("down");
    aws(
        &ep,
        &["s3", "sync", "s3://cli/tree", &down.display().to_string()],
    );
    assert_eq!(contents(&down), contents(&src));

    // s3api: put and get with metadata.
    aws(
        &ep,
        &[
            "s3api",
            "put-object",
            "--bucket",
            "cli",
            "--key",
            "api.txt",
            "--body",
            &src.join("d1/e1/f1.txt").display().to_string(),
            "--content-type",
            "text/x-api",
            "--metadata",
            "origin=cli",
        ],
    );
    let head = aws(
        &ep,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "cli",
            "--key",
            "api.txt",
        ],
    );
    assert!(
        head.contains("text/x-api") && head.contains("\"origin\": \"cli\""),
        "{head}"
    );
    let got = work.join("api.txt");
    aws(
        &ep,
        &[
            "s3api",
            "get-object",
            "--bucket",
            "cli",
            "--key",
            "api.txt",
            &got.display().to_string(),
        ],
    );
    assert_eq!(
        std::fs::read(&got).unwrap(),
        std::fs::read(src.join("d1/e1/f1.txt")).unwrap()
    );

    aws(&ep, &["s3", "rm", "--recursive", "s3://cli/"]);
    assert_eq!(aws(&ep, &["s3", "ls", "--recursive", "s3://cli/"]), "");
    aws(&ep, &["s3", "rb", "s3://cli"]);
    assert!(!aws(&ep, &["s3", "ls"]).contains("cli"));
}

#[test]
fn s3cmd_and_rclone_copy_sync_list() {
    let tmp = tempfile::tempdir().unwrap();
    let (_dev, ep) = dev(&tmp.path().join("data"));
    let src = tree(tmp.path(), 9, 1 << 20);
    // An empty file: synced as a zero-byte object by both clients.
    std::fs::write(src.join("d1/empty"), b"").unwrap();
    let host = ep.s3.trim_start_matches("http://");

    // s3cmd, path-style over plain HTTP, no config file.
    let s3cmd = |args: &[&str]| -> String {
        let out = run(Command::new("s3cmd")
            .args(["--no-ssl", "--host", host, "--host-bucket", host])
            .args([
                "--access_key",
                ACCESS,
                "--secret_key",
                SECRET,
                "--region",
                "us-east-1",
            ])
            .args(["--config", "/dev/null"])
            .args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    s3cmd(&["mb", "s3://cmd"]);
    s3cmd(&["sync", &format!("{}/", src.display()), "s3://cmd/tree/"]);
    let ls = s3cmd(&["ls", "--recursive", "s3://cmd/tree/"]);
    assert_eq!(ls.lines().count(), 11, "{ls}");
    let down = tmp.path().join("cmd-down");
    s3cmd(&["sync", "s3://cmd/tree/", &format!("{}/", down.display())]);
    assert_eq!(contents(&down), contents(&src));
    // s3cmd modify: a CopyObject onto itself with REPLACE.
    s3cmd(&[
        "modify",
        "--mime-type=text/x-modified",
        "s3://cmd/tree/d1/empty",
    ]);
    let head = aws(
        &ep,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "cmd",
            "--key",
            "tree/d1/empty",
        ],
    );
    assert!(head.contains("text/x-modified"), "{head}");

    // rclone, with its S3 remote given on the command line.
    let rclone = |args: &[&str]| -> String {
        let out = run(Command::new("rclone")
            .args(["--config", "/dev/null", "--s3-provider", "Other"])
            .args([
                "--s3-access-key-id",
                ACCESS,
                "--s3-secret-access-key",
                SECRET,
            ])
            .args([
                "--s3-endpoint",
                &ep.s3,
                "--s3-force-path-style=true",
                "--s3-region",
                "us-east-1",
            ])
            .args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    rclone(&["mkdir", ":s3:rcl"]);
    rclone(&["copy", &src.display().to_string(), ":s3:rcl/tree"]);
    rclone(&["sync", &src.display().to_string(), ":s3:rcl/mirror"]);
    let listed = rclone(&["lsf", "-R", "--files-only", ":s3:rcl/mirror"]);
    assert_eq!(listed.lines().count(), 11, "{listed}");
    rclone(&["check", &src.display().to_string(), ":s3:rcl/tree"]);
    let down = tmp.path().join("rclone-down");
    rclone(&["copy", ":s3:rcl/mirror", &down.display().to_string()]);
    assert_eq!(contents(&down), contents(&src));
    // What rclone wrote is what s3cmd lists: one keyspace.
    let ls = s3cmd(&["ls", "--recursive", "s3://rcl/mirror/"]);
    assert_eq!(ls.lines().count(), 11, "{ls}");
}

/// Runs `hoard CMD --db DB --volumes VOLUMES EXTRA…` (an offline operation); its JSON
/// report, after checking it succeeded.
fn offline(cmd: &str, db: &Path, volumes: &[&str], extra: &[&str]) -> serde_json::Value {
    let out = Command::new(hoard_bin())
        .arg(cmd)
        .arg("--db")
        .arg(db)
        .args(["--volumes", &volumes.join(",")])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hoard {cmd} failed:\n{stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("hoard {cmd}: no JSON report ({e}):\n{stderr}"))
}

fn counted(report: &serde_json::Value, counter: &str) -> u64 {
    report["counts"][counter]
        .as_u64()
        .unwrap_or_else(|| panic!("{counter} in {report}"))
}

/// Every live key of the index in `db` with its size (the server must be stopped).
fn sizes(db: &Path) -> std::collections::BTreeMap<String, u64> {
    let index = hoard::index::Index::open(db).unwrap();
    let mut all = std::collections::BTreeMap::new();
    index
        .walk(None, |k, r| {
            assert_eq!(r.state, hoard::index::State::Live, "{k:?}");
            all.insert(String::from_utf8_lossy(k).into_owned(), r.size);
            true
        })
        .unwrap();
    index.close();
    all
}

/// `verify` (sizes) and `verify --deep` (contents) find every replica of every key
/// present and intact, and no orphan.
fn assert_clean(db: &Path, volumes: &[&str], keys: u64) {
    for deep in [&["--grace", "0s"][..], &["--deep", "--grace", "0s"]] {
        let report = offline("verify", db, volumes, deep);
        for bad in ["missing", "corrupt", "unreachable", "orphans"] {
            assert_eq!(counted(&report, bad), 0, "{bad}: {report}");
        }
        assert_eq!(counted(&report, "ok"), keys, "{report}");
    }
}

/// Zero-byte objects (boto3, aws-cli `sync` of a tree with empty files), CopyObject
/// onto itself, UploadPartCopy (boto3 `copy()`) and aws-chunked bodies — then what the
/// background operations make of the keys they left: `verify --deep` finds them clean,
/// `rebuild` indexes the empty files as zero-byte keys, `rebalance` moves them.
fn s3_gaps_on(kind: Kind) {
    let (mut cluster, ep) = server_on(kind, 4);
    let work = cluster.tmp.path().to_path_buf();
    boto3(&ep, &work, &["empty", "self_copy", "part_copy", "chunked"]);

    // aws s3 sync of a tree with empty files (and an empty file deep down).
    // 9 MB: `aws s3 cp` copies it s3 → s3 in parts (UploadPartCopy).
    let src = tree(&work, 6, 9 << 20);
    std::fs::write(src.join("empty.txt"), b"").unwrap();
    std::fs::create_dir_all(src.join("d9/deeper")).unwrap();
    std::fs::write(src.join("d9/deeper/.keep"), b"").unwrap();
    aws(&ep, &["s3", "mb", "s3://syncz"]);
    let tree_url = "s3://syncz/tree";
    aws(&ep, &["s3", "sync", &src.display().to_string(), tree_url]);
    let listing = aws(&ep, &["s3", "ls", "--recursive", "s3://syncz/tree/"]);
    assert_eq!(listing.lines().count(), 9, "{listing}");
    let zeros = listing
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("0"));
    assert_eq!(zeros.count(), 2, "{listing}");
    // Nothing to do the second time: the empty files are there.
    assert_eq!(
        aws(&ep, &["s3", "sync", &src.display().to_string(), tree_url]),
        ""
    );
    let down = work.join("syncz-down");
    aws(&ep, &["s3", "sync", tree_url, &down.display().to_string()]);
    assert_eq!(contents(&down), contents(&src));
    // aws s3 cp onto itself, changing the content type.
    let obj = "s3://syncz/tree/d0/e0/f0.txt";
    aws(
        &ep,
        &[
            "s3",
            "cp",
            obj,
            obj,
            "--content-type",
            "text/x-changed",
            "--metadata-directive",
            "REPLACE",
        ],
    );
    let head = aws(
        &ep,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "syncz",
            "--key",
            "tree/d0/e0/f0.txt",
        ],
    );
    assert!(head.contains("text/x-changed"), "{head}");
    aws(
        &ep,
        &[
            "s3",
            "cp",
            "s3://syncz/tree/big.bin",
            "s3://syncz/copied.bin",
        ],
    );
    let etag = aws(
        &ep,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "syncz",
            "--key",
            "copied.bin",
            "--query",
            "ETag",
        ],
    );
    assert!(
        etag.contains("-2"),
        "a 9 MB s3 → s3 copy is a 2-part copy: {etag}"
    );
    let copied = work.join("copied.back");
    aws(
        &ep,
        &[
            "s3",
            "cp",
            "s3://syncz/copied.bin",
            &copied.display().to_string(),
        ],
    );
    assert_eq!(
        std::fs::read(copied).unwrap(),
        std::fs::read(src.join("big.bin")).unwrap()
    );
    let back = work.join("f0.back");
    aws(&ep, &["s3", "cp", obj, &back.display().to_string()]);
    assert_eq!(
        std::fs::read(back).unwrap(),
        std::fs::read(src.join("d0/e0/f0.txt")).unwrap()
    );

    assert!(
        cluster.index.terminate(),
        "index server did not stop cleanly"
    );
    let original = sizes(&cluster.db);
    let empty = original.values().filter(|&&s| s == 0).count();
    assert!(empty >= 10, "{empty} zero-byte keys in {original:?}");
    let all: Vec<&str> = cluster.volumes.iter().map(|v| v.addr.as_str()).collect();
    assert_clean(&cluster.db, &all, original.len() as u64);

    // The index lost: rebuilt from the volumes, zero-byte keys included.
    let rebuilt = work.join("rebuilt");
    offline("rebuild", &rebuilt, &all, &[]);
    assert_eq!(sizes(&rebuilt), original);

    // Zero-byte replicas lost on one volume: verify --repair re-creates them.
    let lost: Vec<String> = cluster.volumes[0]
        .files()
        .into_iter()
        .filter(|f| {
            std::fs::metadata(cluster.volumes[0].dir.join(f))
                .unwrap()
                .len()
                == 0
        })
        .collect();
    assert!(!lost.is_empty(), "no zero-byte file on {}", all[0]);
    for f in &lost {
        std::fs::remove_file(cluster.volumes[0].dir.join(f)).unwrap();
    }
    let report = offline("verify", &cluster.db, &all, &["--repair", "--grace", "0s"]);
    assert_eq!(counted(&report, "missing"), lost.len() as u64, "{report}");
    assert_eq!(counted(&report, "repaired"), lost.len() as u64, "{report}");
    assert_clean(&cluster.db, &all, original.len() as u64);

    // Down to three volumes: the empty files move like any other.
    let report = offline("rebalance", &cluster.db, &all[..3], &[]);
    assert!(counted(&report, "moved") > 0, "{report}");
    assert_eq!(sizes(&cluster.db), original);
    assert!(cluster.volumes[3].files().is_empty());
    assert_clean(&cluster.db, &all[..3], original.len() as u64);
}

#[test]
fn s3_gaps_over_native_volumes() {
    s3_gaps_on(Kind::Native);
}

#[test]
fn s3_gaps_over_nginx() {
    s3_gaps_on(Kind::Nginx);
}
