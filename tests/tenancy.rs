//! Tenancy and no bypass (issue 26) on the real binaries: S3 access keys as users,
//! each isolated from the others' buckets, grants and revocations taking effect at
//! once, quotas, an index cluster (keys and grants made through one member, used
//! through others), and the native API (HTTP, batch, binary protocol, JSON) never
//! reaching multipart parts nor, without the token, a bucket's contents. boto3 runs
//! `tests/s3/tenancy.py`; the admin side is the `hoard key` / `hoard bucket` CLI.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::{hoard_bin, wait_listening, Cluster, Kind, Proc};
use common::free_port;
use common::ha::{IndexCluster, Links};

const ADMIN: &str = "tenancy-admin-token";

/// Runs `tests/s3/tenancy.py` with `args`; panics with its output on failure.
fn script(args: &[&str]) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3/tenancy.py");
    let out = Command::new("python3")
        .arg(path)
        .args(args)
        .env_remove("AWS_CA_BUNDLE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("python3");
    let text = format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tenancy.py {args:?} failed:\n{text}");
    text
}

/// Two access keys created with `hoard key create`: each sees and touches only its own
/// bucket (list, get, put, delete, multipart, copies across buckets); grants given
/// and taken back take effect at once; quotas on PUT, copy and multipart completion;
/// a deleted key is refused.
#[test]
fn keys_are_isolated_and_grants_and_quotas_apply() {
    let s3_port = free_port().to_string();
    let cluster = Cluster::start(
        Kind::Native,
        3,
        &["--auth-token", ADMIN, "--s3-port", &s3_port],
    );
    wait_listening(&format!("127.0.0.1:{s3_port}"));
    let s3 = format!("http://127.0.0.1:{s3_port}");
    let out = script(&["isolation", hoard_bin(), ADMIN, &cluster.url, &s3]);
    assert!(out.contains("isolation: ok"), "{out}");
    // No secret reaches the log.
    let log = cluster.index.log_text();
    assert!(log.contains("created"), "{log}");
    for line in out.lines().filter(|l| l.contains("secret key:")) {
        let secret = line.rsplit(' ').next().unwrap();
        assert!(!log.contains(secret), "a secret was logged");
    }
}

/// A 3-member index cluster: keys and grants made through member 1's admin API are
/// used at once through the S3 APIs of members 2 and 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_grants_replicate_across_an_index_cluster() {
    let mut c = IndexCluster::start(3, 3, Links::Direct, &["--auth-token", ADMIN]);
    c.leader().await;
    let (p2, p3) = (free_port().to_string(), free_port().to_string());
    for (id, port) in [(2, &p2), (3, &p3)] {
        c.nodes
            .get_mut(&id)
            .unwrap()
            .proc
            .restart_with(&["--s3-port", port]);
        wait_listening(&format!("127.0.0.1:{port}"));
    }
    c.leader().await;
    let admin = c.url(1);
    let s3 = |p: &str| format!("http://127.0.0.1:{p}");
    let (s2, s3_) = (s3(&p2), s3(&p3));
    let out = tokio::task::spawn_blocking(move || {
        script(&["cluster", hoard_bin(), ADMIN, &admin, &s2, &s3_])
    })
    .await
    .unwrap();
    assert!(out.contains("cluster: ok"), "{out}");
}

/// boto3: a bucket with an object and a multipart upload with one part; prints the
/// upload id.
const SETUP: &str = r#"
import sys, boto3
from botocore.client import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
    aws_access_key_id="alice", aws_secret_access_key="alice-secret",
    config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))
s3.create_bucket(Bucket="alice-b")
s3.put_object(Bucket="alice-b", Key="obj", Body=b"alice's object")
up = s3.create_multipart_upload(Bucket="alice-b", Key="mp")["UploadId"]
s3.upload_part(Bucket="alice-b", Key="mp", UploadId=up, PartNumber=1, Body=b"part one")
print(up)
"#;

fn server_cmd(db: &std::path::Path, port: u16, extra: &[&str]) -> Vec<String> {
    let mut cmd: Vec<String> = [
        hoard_bin(),
        "server",
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--db",
        &db.display().to_string(),
        "--volumes",
        "127.0.0.1:1",
        "--replicas",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cmd.extend(extra.iter().map(|s| s.to_string()));
    cmd
}

/// A server with S3 users and `--auth-mode none` refuses to start without
/// `--native-open` — also later without `--s3-port`, once its index holds keys.
#[test]
fn an_open_native_api_beside_s3_users_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let s3 = [
        "--s3-port",
        "0",
        "--s3-access-key",
        "a",
        "--s3-secret-key",
        "s",
    ];
    let mut p = Proc::spawn(server_cmd(&db, free_port(), &s3), tmp.path().join("1.log"));
    let status = p
        .wait_exit(Duration::from_secs(30))
        .expect("the server kept running");
    assert!(!status.success());
    assert!(p.log_text().contains("--native-open"), "{}", p.log_text());
    // With a token it starts (and seeds the key into its index).
    let port = free_port();
    let mut flags = s3.to_vec();
    flags.extend(["--auth-token", ADMIN]);
    let mut p = Proc::spawn(server_cmd(&db, port, &flags), tmp.path().join("2.log"));
    common::cluster::wait_http(&format!("http://127.0.0.1:{port}/-/health"));
    let keys = Command::new(hoard_bin())
        .args(["key", "list", "--url", &format!("http://127.0.0.1:{port}")])
        .args(["--token", ADMIN])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&keys.stdout).contains("a  seeded"),
        "{keys:?}"
    );
    p.terminate();
    // Without S3 flags nor token: the index has users, so still refused.
    let mut p = Proc::spawn(server_cmd(&db, free_port(), &[]), tmp.path().join("3.log"));
    let status = p
        .wait_exit(Duration::from_secs(30))
        .expect("the server kept running");
    assert!(!status.success(), "{}", p.log_text());
    // Declared open: it starts.
    let port = free_port();
    let mut p = Proc::spawn(
        server_cmd(&db, port, &["--native-open"]),
        tmp.path().join("4.log"),
    );
    common::cluster::wait_http(&format!("http://127.0.0.1:{port}/-/health"));
    p.terminate();
}

/// Multipart parts are never reachable natively (HTTP, batch, listings, binary
/// protocol, JSON), even with the token; a bucket's objects only with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_api_does_not_bypass_s3_tenancy() {
    let (s3, tcp, json) = (free_port(), free_port(), free_port());
    let (s3, tcp, json) = (s3.to_string(), tcp.to_string(), json.to_string());
    let cluster = Cluster::start(
        Kind::Native,
        3,
        &[
            "--auth-token",
            ADMIN,
            "--s3-port",
            &s3,
            "--s3-access-key",
            "alice",
            "--s3-secret-key",
            "alice-secret",
            "--tcp-port",
            &tcp,
            "--json-port",
            &json,
        ],
    );
    wait_listening(&format!("127.0.0.1:{s3}"));
    let out = Command::new("python3")
        .args(["-c", SETUP, &format!("http://127.0.0.1:{s3}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let upload = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let part = format!("/.s3-multipart/{upload}/00001");
    let http = common::cluster::client();
    let url = |k: &str| format!("{}{k}", cluster.url);
    let bearer = format!("Bearer {ADMIN}");
    let status = |r: reqwest::Response| r.status().as_u16();
    // A bucket's object: not without the token (reads are otherwise open in this
    // auth mode), yes with it.
    assert_eq!(
        status(http.get(url("/alice-b/obj")).send().await.unwrap()),
        403
    );
    assert_eq!(
        status(http.get(url("/alice-b/?list")).send().await.unwrap()),
        403
    );
    let with = http
        .get(url("/alice-b/obj"))
        .header("authorization", &bearer);
    assert_eq!(status(with.send().await.unwrap()), 302);
    // A part: never, not even with the token.
    for req in [
        http.get(url(&part)),
        http.head(url(&part)),
        http.put(url("/.s3-multipart/x/00001")).body("planted"),
        http.delete(url(&part)),
        http.get(url("/.s3-multipart/?list")),
    ] {
        let r = req.header("authorization", &bearer).send().await.unwrap();
        assert_eq!(status(r), 403);
    }
    let all = http.get(url("/?list")).header("authorization", &bearer);
    let listed = all.send().await.unwrap().text().await.unwrap();
    assert!(
        listed.contains("/alice-b/obj") && !listed.contains(".s3-multipart"),
        "{listed}"
    );
    let batch = serde_json::json!([{"op": "get", "key": part}]);
    let r = http
        .post(url("/-/batch"))
        .header("authorization", &bearer)
        .json(&batch);
    let outcome: serde_json::Value = r.send().await.unwrap().json().await.unwrap();
    assert_eq!(outcome[0]["status"], 403, "{outcome}");
    // JSON interface: reads are open in this mode, but not a bucket's nor a part.
    let j = |k: &str| format!("http://127.0.0.1:{json}{k}");
    assert_eq!(
        status(http.get(j("/alice-b/obj")).send().await.unwrap()),
        403
    );
    let r = http
        .get(j(&part))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 403);
    // Binary protocol (its keys are hoard's without the leading `/`), authenticated:
    // the object yes, the part no.
    let addr = format!("127.0.0.1:{tcp}");
    let mut c = hoard::proto::client::Client::connect(&addr, Duration::from_secs(5))
        .await
        .unwrap();
    c.auth(ADMIN).await.unwrap();
    assert_eq!(&c.get(b"alice-b/obj").await.unwrap()[..], b"alice's object");
    let refused = c.get(&part.as_bytes()[1..]).await.unwrap_err().to_string();
    assert!(refused.contains("access denied"), "{refused}");
    let refused = c
        .set(b".s3-multipart/y/00001", b"planted")
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("access denied"), "{refused}");
}
