//! minivault's binary protocol (`--tcp-port`) on the real binary: the Rust client, raw
//! sockets for bad input, and HTTP to check what was (not) stored.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{
    client, free_port, free_port_run, hoard_bin, wait_http, Cluster, Kind, Proc,
};
use hoard::proto::client::{Client, Value};
use hoard::proto::frame::{encode_request, Compression, Op, ValueHeader};
use hoard::proto::ProtoError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(20);

/// `hoard dev` with the binary protocol on, plus `extra` flags.
struct Dev {
    http: String,
    tcp: String,
    proc: Proc,
    _tmp: tempfile::TempDir,
}

impl Dev {
    async fn start(extra: &[&str]) -> Dev {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let port = free_port_run(7);
        let tcp_port = free_port();
        let mut cmd: Vec<String> = vec![
            hoard_bin().into(),
            "dev".into(),
            "--data".into(),
            data.display().to_string(),
            "--port".into(),
            port.to_string(),
            "--tcp-port".into(),
            tcp_port.to_string(),
            // Any free port (dev would otherwise derive it from --port: P+4).
            "--s3-port".into(),
            common::free_port().to_string(),
        ];
        cmd.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn(cmd, tmp.path().join("dev.log"));
        let http = format!("http://127.0.0.1:{port}");
        wait_http(&format!("{http}/-/health"));
        let dev = Dev {
            http,
            tcp: format!("127.0.0.1:{tcp_port}"),
            proc,
            _tmp: tmp,
        };
        wait_volumes(&dev.tcp, None).await;
        dev
    }

    async fn client(&self) -> Client {
        Client::connect(&self.tcp, T).await.unwrap()
    }
}

/// Polls HEALTH until the three volumes are up (AUTH first with `token`).
async fn wait_volumes(tcp: &str, token: Option<&str>) {
    let deadline = Instant::now() + T;
    loop {
        if let Ok(mut c) = Client::connect(tcp, T).await {
            if let Some(t) = token {
                c.auth(t).await.unwrap();
            }
            if let Ok(h) = c.health().await {
                if h["volumes_up"].as_u64() >= Some(3) {
                    assert_eq!(h["status"], "ok");
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "volumes did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value HTTP serves for `key` (following the redirect), `None` on 404.
async fn http_value(base: &str, key: &str) -> Option<Vec<u8>> {
    let r = client().get(format!("{base}/{key}")).send().await.unwrap();
    match r.status().as_u16() {
        404 => None,
        302 => {
            let loc = r.headers()["location"].to_str().unwrap().to_string();
            let r = client().get(loc).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            Some(r.bytes().await.unwrap().to_vec())
        }
        s => panic!("GET /{key}: {s}"),
    }
}

fn server_error(r: Result<impl std::fmt::Debug, ProtoError>) -> String {
    match r {
        Err(ProtoError::Server(msg)) => msg,
        other => panic!("expected an error answer, got {other:?}"),
    }
}

fn set_frame(key: &[u8], value: &[u8], compression: Compression) -> Vec<u8> {
    let mut b = encode_request(
        Op::Set,
        key,
        Some(ValueHeader {
            len: value.len() as u32,
            compression,
        }),
    );
    b.extend_from_slice(value);
    b
}

/// Reads one answer off a raw socket: status and data.
async fn read_answer(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    tokio::time::timeout(T, s.read_exact(&mut head))
        .await
        .expect("no answer")
        .expect("connection closed before an answer");
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    let mut data = vec![0; len as usize];
    s.read_exact(&mut data).await.unwrap();
    (head[0], data)
}

/// Asserts the server closes `s` (EOF) without answering more.
async fn assert_closed(s: &mut TcpStream) {
    let mut rest = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut rest))
        .await
        .expect("connection not closed")
        .ok();
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_delete_and_http_agree() {
    let dev = Dev::start(&[]).await;
    let mut c = dev.client().await;
    c.set(b"greeting", b"hello").await.unwrap();
    assert_eq!(&c.get(b"greeting").await.unwrap()[..], b"hello");
    assert_eq!(
        http_value(&dev.http, "greeting").await.as_deref(),
        Some(&b"hello"[..])
    );
    // SET overwrites (minivault), unlike an HTTP PUT.
    c.set(b"greeting", b"bonjour").await.unwrap();
    assert_eq!(&c.get(b"greeting").await.unwrap()[..], b"bonjour");
    // A value written over HTTP is read over TCP.
    let r = client()
        .put(format!("{}/from-http", dev.http))
        .body("via http")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(&c.get(b"from-http").await.unwrap()[..], b"via http");
    // zstd: stored decompressed, a large value streamed both ways.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i / 7 % 256) as u8).collect();
    c.set_zstd(b"big", &big, 3).await.unwrap();
    assert!(c.get(b"big").await.unwrap() == big);
    assert!(http_value(&dev.http, "big").await.unwrap() == big);
    let raw: Vec<u8> = (0..1_500_000u32).map(|_| fastrand::u8(..)).collect();
    c.set(b"raw", &raw).await.unwrap();
    assert!(c.get(b"raw").await.unwrap() == raw);
    // DELETE, then GET and DELETE of a missing key are error answers.
    c.delete(b"greeting").await.unwrap();
    assert_eq!(server_error(c.get(b"greeting").await), "not found");
    assert_eq!(server_error(c.delete(b"greeting").await), "not found");
    assert_eq!(http_value(&dev.http, "greeting").await, None);
    // Empty values cannot be stored; the connection keeps serving.
    assert!(server_error(c.set(b"empty", b"").await).contains("empty"));
    let h = c.health().await.unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["role"], "index");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let dev = Dev::start(&[]).await;
    let mut c = dev.client().await;
    let raw = |b: &'static [u8]| {
        Some(Value {
            bytes: b,
            compression: Compression::None,
        })
    };
    let n = 40;
    for i in 0..n {
        let key = format!("p{i}");
        c.send(Op::Set, key.as_bytes(), raw(b"v1")).await.unwrap();
        c.send(Op::Get, key.as_bytes(), None).await.unwrap();
        c.send(Op::Delete, key.as_bytes(), None).await.unwrap();
        c.send(Op::Get, key.as_bytes(), None).await.unwrap();
    }
    c.send(Op::Health, b"", None).await.unwrap();
    c.flush().await.unwrap();
    for i in 0..n {
        assert!(c.recv().await.unwrap().is_empty(), "SET p{i}");
        assert_eq!(&c.recv().await.unwrap()[..], b"v1", "GET p{i}");
        assert!(c.recv().await.unwrap().is_empty(), "DELETE p{i}");
        assert_eq!(server_error(c.recv().await), "not found", "GET p{i}");
    }
    assert!(c.recv().await.unwrap().starts_with(b"{"));
    // All of it written as one burst of bytes works the same.
    let mut burst = Vec::new();
    for i in 0..n {
        burst.extend(set_frame(
            format!("q{i}").as_bytes(),
            b"x",
            Compression::None,
        ));
        burst.extend(encode_request(Op::Get, format!("q{i}").as_bytes(), None));
    }
    let mut s = TcpStream::connect(&dev.tcp).await.unwrap();
    s.write_all(&burst).await.unwrap();
    for _ in 0..n {
        assert_eq!(read_answer(&mut s).await, (0x00, vec![]));
        assert_eq!(read_answer(&mut s).await, (0x00, b"x".to_vec()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_frames_answer_an_error_and_the_connection_goes_on() {
    let dev = Dev::start(&["--tcp-max-value", "100000"]).await;
    let mut s = TcpStream::connect(&dev.tcp).await.unwrap();
    let ok_get = |key: &[u8]| encode_request(Op::Get, key, None);
    let mut c = dev.client().await;
    c.set(b"keep", b"old value").await.unwrap();

    // Over-large key (hoard keys are at most 1024 bytes with the leading '/').
    s.write_all(&ok_get(&[b'k'; 2000])).await.unwrap();
    let (status, msg) = read_answer(&mut s).await;
    assert_eq!(status, 0xFF);
    assert!(String::from_utf8_lossy(&msg).contains("too long"));
    // A SET with an over-large key: its value is skipped too.
    s.write_all(&set_frame(&[b'k'; 5000], b"value", Compression::None))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut s).await.0, 0xFF);
    // Over-large value: refused, its bytes skipped, nothing stored.
    s.write_all(&set_frame(b"huge", &vec![1u8; 150_000], Compression::None))
        .await
        .unwrap();
    let (status, msg) = read_answer(&mut s).await;
    assert_eq!(status, 0xFF);
    assert!(
        String::from_utf8_lossy(&msg).contains("too large"),
        "{msg:?}"
    );
    // Unknown compression byte.
    let mut b = encode_request(Op::Set, b"flag", None);
    b.extend_from_slice(&3u32.to_le_bytes());
    b.push(7);
    b.extend_from_slice(b"abc");
    s.write_all(&b).await.unwrap();
    let (status, msg) = read_answer(&mut s).await;
    assert_eq!(status, 0xFF);
    assert!(String::from_utf8_lossy(&msg).contains("compression"));
    // Bad zstd, over a new key and over an existing one.
    s.write_all(&set_frame(
        b"badz",
        b"this is not zstd at all",
        Compression::Zstd,
    ))
    .await
    .unwrap();
    let (status, msg) = read_answer(&mut s).await;
    assert_eq!(status, 0xFF);
    assert!(String::from_utf8_lossy(&msg).contains("zstd"), "{msg:?}");
    s.write_all(&set_frame(
        b"keep",
        b"\x28\xb5\x2f\xfdgarbage",
        Compression::Zstd,
    ))
    .await
    .unwrap();
    assert_eq!(read_answer(&mut s).await.0, 0xFF);
    // Truncated zstd (a valid stream cut short).
    let packed = zstd::bulk::compress(&vec![5u8; 10_000], 3).unwrap();
    s.write_all(&set_frame(
        b"cut",
        &packed[..packed.len() / 2],
        Compression::Zstd,
    ))
    .await
    .unwrap();
    assert_eq!(read_answer(&mut s).await.0, 0xFF);
    // A zstd bomb: small on the wire, over --tcp-max-value once decompressed.
    let bomb = zstd::bulk::compress(&vec![0u8; 5_000_000], 19).unwrap();
    assert!(bomb.len() < 100_000);
    s.write_all(&set_frame(b"bomb", &bomb, Compression::Zstd))
        .await
        .unwrap();
    let (status, msg) = read_answer(&mut s).await;
    assert_eq!(status, 0xFF);
    assert!(
        String::from_utf8_lossy(&msg).contains("too large"),
        "{msg:?}"
    );
    // Keys hoard refuses (control characters) are error answers, value skipped.
    s.write_all(&set_frame(b"a\x01b", b"v", Compression::None))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut s).await.0, 0xFF);
    // The same connection still serves; nothing was stored; the old value survived.
    s.write_all(&ok_get(b"keep")).await.unwrap();
    assert_eq!(read_answer(&mut s).await, (0x00, b"old value".to_vec()));
    for key in ["huge", "flag", "badz", "cut", "bomb"] {
        s.write_all(&ok_get(key.as_bytes())).await.unwrap();
        assert_eq!(
            read_answer(&mut s).await,
            (0xFF, b"not found".to_vec()),
            "{key}"
        );
        assert_eq!(http_value(&dev.http, key).await, None, "{key}");
    }
    // Ones that fit the limit work.
    c.set_zstd(b"fits", &vec![9u8; 100_000], 3).await.unwrap();
    assert_eq!(c.get(b"fits").await.unwrap().len(), 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_framing_closes_the_connection_and_stores_nothing() {
    let dev = Dev::start(&["--tcp-idle-timeout", "1s"]).await;
    // A lying value length: 100 announced, 10 sent, then the peer stops sending.
    let mut s = TcpStream::connect(&dev.tcp).await.unwrap();
    let mut b = encode_request(
        Op::Set,
        b"liar",
        Some(ValueHeader {
            len: 100,
            compression: Compression::None,
        }),
    );
    b.extend_from_slice(&[b'x'; 10]);
    s.write_all(&b).await.unwrap();
    s.shutdown().await.unwrap();
    let (status, _) = read_answer(&mut s).await;
    assert_eq!(status, 0xFF);
    assert_closed(&mut s).await;
    // The same, left hanging: the idle timeout ends it.
    let mut s = TcpStream::connect(&dev.tcp).await.unwrap();
    s.write_all(&b).await.unwrap();
    assert_eq!(read_answer(&mut s).await.0, 0xFF);
    assert_closed(&mut s).await;
    // A lying key length, then EOF.
    let mut s = TcpStream::connect(&dev.tcp).await.unwrap();
    s.write_all(&[0x01, 50, 0, b'a', b'b']).await.unwrap();
    s.shutdown().await.unwrap();
    let (status, msg) = read_answer(&mut s).await;
    assert_eq!((status, msg), (0xFF, b"truncated frame".to_vec()));
    assert_closed(&mut s).await;
    // An unknown op: its length cannot be known.
    let mut s = TcpStream::connect(&dev.tcp).await.unwrap();
    s.write_all(&[0x04, 1, 0, b'k']).await.unwrap();
    let (status, msg) = read_answer(&mut s).await;
    assert_eq!(status, 0xFF);
    assert!(String::from_utf8_lossy(&msg).contains("unknown op"));
    assert_closed(&mut s).await;
    // A compressed value cut off by the peer.
    let packed = zstd::bulk::compress(&vec![3u8; 50_000], 1).unwrap();
    let mut frame = set_frame(b"zcut", &packed, Compression::Zstd);
    frame.truncate(frame.len() - 5);
    let mut s = TcpStream::connect(&dev.tcp).await.unwrap();
    s.write_all(&frame).await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_answer(&mut s).await.0, 0xFF);
    assert_closed(&mut s).await;
    // Nothing stored; the server serves new connections.
    let mut c = dev.client().await;
    for key in [&b"liar"[..], b"zcut"] {
        assert_eq!(server_error(c.get(key).await), "not found");
    }
    assert_eq!(http_value(&dev.http, "liar").await, None);
    c.set(b"after", b"fine").await.unwrap();
    assert_eq!(&c.get(b"after").await.unwrap()[..], b"fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_comes_first() {
    let tcp_port = free_port();
    let port_arg = tcp_port.to_string();
    let cluster = Cluster::start(
        Kind::Native,
        3,
        &["--auth-token", "s3cret", "--tcp-port", &port_arg],
    );
    let tcp = format!("127.0.0.1:{tcp_port}");
    common::cluster::wait_listening(&tcp);
    wait_volumes(&tcp, Some("s3cret")).await;

    let mut c = Client::connect(&tcp, T).await.unwrap();
    assert!(server_error(c.get(b"k").await).contains("authentication required"));
    assert!(server_error(c.set(b"k", b"v").await).contains("authentication required"));
    assert!(server_error(c.health().await).contains("authentication required"));
    // Still the same connection: AUTH, then it works.
    c.auth("s3cret").await.unwrap();
    assert_eq!(
        server_error(c.get(b"k").await),
        "not found",
        "the refused SET stored nothing"
    );
    c.set(b"k", b"v").await.unwrap();
    assert_eq!(&c.get(b"k").await.unwrap()[..], b"v");

    // A wrong token is answered, then the connection closes.
    let mut s = TcpStream::connect(&tcp).await.unwrap();
    s.write_all(&encode_request(Op::Auth, b"guess", None))
        .await
        .unwrap();
    let (status, msg) = read_answer(&mut s).await;
    assert_eq!((status, msg), (0xFF, b"authentication failed".to_vec()));
    assert_closed(&mut s).await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait() {
    let dev = Dev::start(&["--tcp-max-connections", "1"]).await;
    let mut first = dev.client().await;
    first.health().await.unwrap();
    // The second connection is accepted by the kernel but not served while the first
    // is open.
    let mut second = Client::connect(&dev.tcp, T).await.unwrap();
    second.send(Op::Health, b"", None).await.unwrap();
    second.flush().await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(500), second.recv()).await;
    assert!(waiting.is_err(), "served over the cap: {waiting:?}");
    drop(first);
    let h = second.recv().await.unwrap();
    assert!(h.starts_with(b"{"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_proto_runs_every_phase() {
    let dev = Dev::start(&[]).await;
    let volume = {
        let port: u16 = dev.http.rsplit(':').next().unwrap().parse().unwrap();
        format!("127.0.0.1:{}", port + 1)
    };
    let (http, tcp) = (dev.http.clone(), dev.tcp.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(hoard_bin())
            .args(["bench", "proto", "--url", &http, "--tcp", &tcp])
            .args([
                "--volume", &volume, "--zstd", "-n", "60", "-c", "3", "--json",
            ])
            .args(["--gets", "50", "--hot-keys", "7"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases: Vec<&str> = j["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "http",
            "binary",
            "binary-zstd",
            "binary-pipelined",
            "volume",
            "http-get",
            "binary-get"
        ]
    );
    for p in j["phases"].as_array().unwrap() {
        assert_eq!(p["errors"], 0, "{p}");
        assert!(p["ops_per_sec"].as_f64().unwrap() > 0.0);
        if p["phase"].as_str().unwrap().ends_with("-get") {
            assert_eq!(p["ops"], 50, "{p}");
            assert_eq!(p["get"]["count"], 50, "{p}");
            assert_eq!(p["set"]["count"], 0, "{p}");
            continue;
        }
        assert_eq!(p["ops"], 60, "{p}");
        for r in ["set", "get", "delete"] {
            assert_eq!(p[r]["count"], 60, "{p}");
        }
    }
    // Nothing left behind.
    let mut c = dev.client().await;
    let h = c.health().await.unwrap();
    assert_eq!(h["keys"]["live"], 0, "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_serves_hits_and_follows_every_write() {
    let dev = Dev::start(&["--cache-size", "8"]).await;
    let mut c = dev.client().await;
    let stats = |h: serde_json::Value| (h["cache"]["hits"].as_u64(), h["cache"]["misses"].as_u64());
    assert_eq!(stats(c.health().await.unwrap()), (Some(0), Some(0)));
    c.set(b"c", b"v1").await.unwrap();
    for _ in 0..3 {
        assert_eq!(&c.get(b"c").await.unwrap()[..], b"v1");
    }
    assert_eq!(stats(c.health().await.unwrap()), (Some(2), Some(1)));
    // Overwritten over the binary protocol.
    c.set(b"c", b"v2").await.unwrap();
    assert_eq!(&c.get(b"c").await.unwrap()[..], b"v2");
    assert_eq!(&c.get(b"c").await.unwrap()[..], b"v2");
    // Deleted and written again over HTTP: the same store core invalidates.
    let r = client()
        .delete(format!("{}/c", dev.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(server_error(c.get(b"c").await), "not found");
    let r = client()
        .put(format!("{}/c", dev.http))
        .body("v3 over http")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(&c.get(b"c").await.unwrap()[..], b"v3 over http");
    // Unlinked over HTTP: gone for the binary protocol too.
    let r = client()
        .request(
            reqwest::Method::from_bytes(b"UNLINK").unwrap(),
            format!("{}/c", dev.http),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(server_error(c.get(b"c").await), "not found");
    // Values over --cache-max-value are streamed, never counted.
    let (hits, misses) = stats(c.health().await.unwrap());
    let big = vec![1u8; 100_000];
    c.set(b"big", &big).await.unwrap();
    assert!(c.get(b"big").await.unwrap() == big);
    assert_eq!(stats(c.health().await.unwrap()), (hits, misses));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_open_connections_exits_cleanly() {
    let mut dev = Dev::start(&[]).await;
    let mut idle = dev.client().await;
    idle.set(b"k", b"v").await.unwrap();
    let _also_idle = dev.client().await;
    let proc = &mut dev.proc;
    let clean = tokio::task::block_in_place(|| proc.terminate());
    assert!(
        clean,
        "hoard dev did not exit cleanly:\n{}",
        dev.proc.log_text()
    );
    // The server closed the idle connection.
    assert!(idle.get(b"k").await.is_err());
}
