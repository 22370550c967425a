//! `--rate-limit` on every front-end port of `hoard server` (the real binary): the
//! HTTP API, S3 (boto3 sees `SlowDown`), the binary protocol and the JSON interface;
//! per client: another client address (127.0.0.2) is not held back by 127.0.0.1's
//! excess, and the health checks stay exempt.
//!
//! The limit is 1 request per second (bursts of 1): of ten requests sent back to back,
//! at least one is refused unless they take nine seconds — no timing is assumed
//! beyond that.

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use common::cluster::{free_port, wait_listening, Cluster, Kind};
use hoard::proto::client::Client;
use hoard::proto::ProtoError;
use reqwest::StatusCode;

const ACCESS: &str = "limited";
const SECRET: &str = "limited-secret";
const TRIES: usize = 10;

struct Ports {
    s3: String,
    tcp: String,
    json: String,
}

fn server() -> (Cluster, Ports) {
    let (s3, tcp, json) = (free_port(), free_port(), free_port());
    let (s3, tcp, json) = (s3.to_string(), tcp.to_string(), json.to_string());
    let cluster = Cluster::start(
        Kind::Native,
        1,
        &[
            "--replicas",
            "1",
            "--rate-limit",
            "1",
            "--native-open",
            "--s3-port",
            &s3,
            "--s3-access-key",
            ACCESS,
            "--s3-secret-key",
            SECRET,
            "--tcp-port",
            &tcp,
            "--json-port",
            &json,
        ],
    );
    let ports = Ports {
        s3: format!("127.0.0.1:{s3}"),
        tcp: format!("127.0.0.1:{tcp}"),
        json: format!("127.0.0.1:{json}"),
    };
    for addr in [&ports.s3, &ports.tcp, &ports.json] {
        wait_listening(addr);
    }
    (cluster, ports)
}

/// A client (no redirects) from local address `from`.
fn http_from(from: &str) -> reqwest::Client {
    hoard::tls::install_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// The HTTP API: 429 with Retry-After for 127.0.0.1 beyond its budget, while
/// 127.0.0.2 still gets through; `/-/health` is exempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_limits_each_client() {
    let (c, _) = server();
    let one = http_from("127.0.0.1");
    let mut limited = 0;
    for _ in 0..TRIES {
        let r = one.get(format!("{}/nothing", c.url)).send().await.unwrap();
        match r.status() {
            StatusCode::NOT_FOUND => {}
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert!(r.headers().contains_key("retry-after"));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(limited >= 1, "no request of {TRIES} was limited");
    // Another client has its own budget.
    let two = http_from("127.0.0.2");
    let r = two.get(format!("{}/nothing", c.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    for _ in 0..TRIES {
        let r = one.get(format!("{}/-/health", c.url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}

/// S3: boto3 (retries off) gets `SlowDown` (503) beyond the budget; another client
/// address is not held back.
#[test]
fn s3_answers_slow_down() {
    let (_c, ports) = server();
    let script = format!(
        "import boto3\n\
         from botocore.client import Config\n\
         from botocore.exceptions import ClientError\n\
         s3 = boto3.client('s3', endpoint_url='http://{s3}', region_name='us-east-1',\n\
         \x20   aws_access_key_id='{ACCESS}', aws_secret_access_key='{SECRET}',\n\
         \x20   config=Config(s3={{'addressing_style': 'path'}}, retries={{'max_attempts': 1}}))\n\
         codes = []\n\
         for _ in range({TRIES}):\n\
         \x20   try:\n\
         \x20       s3.list_buckets()\n\
         \x20       codes.append('ok')\n\
         \x20   except ClientError as e:\n\
         \x20       codes.append(e.response['Error']['Code'] + ' ' + str(e.response['ResponseMetadata']['HTTPStatusCode']))\n\
         print(' '.join(sorted(set(codes))))\n",
        s3 = ports.s3
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .expect("python3 with boto3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SlowDown 503"), "{stdout}");
    assert!(
        stdout
            .split_whitespace()
            .all(|w| ["ok", "SlowDown", "503"].contains(&w)),
        "{stdout}"
    );
    // Unsigned request from another address: past the limiter (AccessDenied, not
    // SlowDown).
    let out = Command::new("curl")
        .args(["-sS", "--interface", "127.0.0.2"])
        .arg(format!("http://{}/", ports.s3))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("AccessDenied"), "{body}");
}

/// The binary protocol: requests beyond the budget are answered with an error and the
/// connection keeps serving; HEALTH is exempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_protocol_refuses_beyond_the_limit() {
    let (_c, ports) = server();
    let mut client = Client::connect(&ports.tcp, Duration::from_secs(20))
        .await
        .unwrap();
    let mut limited = 0;
    for _ in 0..TRIES {
        match client.get(b"nothing").await {
            Err(ProtoError::Server(m)) if m.contains("rate limit") => limited += 1,
            Err(ProtoError::Server(m)) if m.contains("not found") => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(limited >= 1, "no request of {TRIES} was limited");
    for _ in 0..TRIES {
        let health = client.health().await.unwrap();
        assert_eq!(health["status"], "ok", "{health}");
    }
}

/// The JSON interface: 429 with Retry-After and `{"success": false}` beyond the
/// budget; `/health` is exempt; another client address is not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_interface_limits_each_client() {
    let (_c, ports) = server();
    let one = http_from("127.0.0.1");
    let mut limited = 0;
    for _ in 0..TRIES {
        let r = one
            .get(format!("http://{}/nothing", ports.json))
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::NOT_FOUND => {}
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert!(r.headers().contains_key("retry-after"));
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["success"], false, "{body}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(limited >= 1, "no request of {TRIES} was limited");
    let two = http_from("127.0.0.2");
    let r = two
        .get(format!("http://{}/nothing", ports.json))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    for _ in 0..TRIES {
        let r = one
            .get(format!("http://{}/health", ports.json))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}
