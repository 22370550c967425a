//! OpenTelemetry traces (issue 30, item 5) on the real binaries: an OTLP/HTTP receiver
//! runs inside the test; `hoard server` and two `hoard volume` processes export to it.
//! A client PUT carrying a W3C `traceparent` must show up as the index's span in the
//! client's trace, with each volume's span a child of it (parent span id links across
//! processes); the spans arrive at the graceful stop (the batch delay is far longer than
//! the test), and the JSON log lines of the request carry the trace id. With the
//! variables unset, or the SDK disabled, nothing is sent.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{client, free_port, hoard_bin, wait_listening, Proc};
use serde_json::Value;

/// One POST the receiver took.
#[derive(Debug, Clone)]
struct Export {
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// A minimal OTLP/HTTP collector: answers every POST with 200 `{}` and keeps it.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Export>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&got);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let keep = Arc::clone(&keep);
                std::thread::spawn(move || serve(conn, &keep));
            }
        });
        Receiver { port, got }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn exports(&self) -> Vec<Export> {
        self.got.lock().unwrap().clone()
    }
}

/// Serves the requests of one keep-alive connection.
fn serve(conn: std::net::TcpStream, keep: &Mutex<Vec<Export>>) {
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let (mut len, mut content_type) = (0usize, String::new());
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap_or((h, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => len = value.trim().parse().unwrap(),
                "content-type" => content_type = value.trim().to_string(),
                "transfer-encoding" => panic!("chunked export not expected: {h}"),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        keep.lock().unwrap().push(Export {
            path,
            content_type,
            body,
        });
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A span as decoded from OTLP/JSON, with its resource's attributes.
#[derive(Debug, Clone)]
struct Span {
    resource: BTreeMap<String, String>,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
}

/// Every span of the http/json exports received.
fn spans(exports: &[Export]) -> Vec<Span> {
    let mut out = Vec::new();
    for e in exports {
        assert_eq!(e.path, "/v1/traces", "export went to {}", e.path);
        assert!(e.content_type.starts_with("application/json"), "{e:?}");
        let v: Value = serde_json::from_slice(&e.body).unwrap();
        for rs in v["resourceSpans"].as_array().unwrap() {
            let resource: BTreeMap<String, String> = rs["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|kv| {
                    let value = &kv["value"]["stringValue"];
                    (
                        kv["key"].as_str().unwrap().to_string(),
                        value.as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    let text = |k: &str| s[k].as_str().unwrap_or("").to_ascii_lowercase();
                    out.push(Span {
                        resource: resource.clone(),
                        trace_id: text("traceId"),
                        span_id: text("spanId"),
                        parent: text("parentSpanId"),
                        name: text("name"),
                    });
                }
            }
        }
    }
    out
}

/// `env VARS… hoard ARGS…` as a command line for [`Proc::spawn`].
fn with_env(vars: &[String], args: &[String]) -> Vec<String> {
    let mut cmd = vec!["env".to_string()];
    cmd.extend(vars.iter().cloned());
    cmd.push(hoard_bin().into());
    cmd.extend(args.iter().cloned());
    cmd
}

/// A `hoard volume` on a free port under `root/name`, with `vars` in its environment
/// and JSON access logs; the process and its address.
fn volume(root: &Path, name: &str, vars: &[String]) -> (Proc, String) {
    let port = free_port();
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let args: Vec<String> = [
        "volume",
        "--dir",
        dir.to_str().unwrap(),
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--log-format",
        "json",
        "-v",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let addr = format!("127.0.0.1:{port}");
    let p = Proc::spawn(with_env(vars, &args), root.join(format!("{name}.log")));
    wait_listening(&addr);
    (p, addr)
}

fn otel_vars(endpoint_var: &str, endpoint: &str, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        format!("{endpoint_var}={endpoint}"),
        // Far longer than the test: what arrives was flushed by the graceful stop.
        "OTEL_BSP_SCHEDULE_DELAY=600000".to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE}-{CLIENT_SPAN}-01")
}

/// Polls until `ok` holds for the receiver's exports, or panics with `what`.
fn wait_exports(rx: &Receiver, what: &str, ok: impl Fn(&[Export]) -> bool) -> Vec<Export> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = rx.exports();
        if ok(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "never {what}; received: {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_trace_spans_the_index_and_its_volumes() {
    let rx = Receiver::start();
    let tmp = tempfile::tempdir().unwrap();
    let base = rx.base();
    let json = "OTEL_EXPORTER_OTLP_PROTOCOL=http/json";
    let vol_vars = |id: &str| {
        otel_vars(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &base,
            &[
                json,
                &format!("OTEL_RESOURCE_ATTRIBUTES=hoard.test.volume={id}"),
            ],
        )
    };
    let (mut v1, a1) = volume(tmp.path(), "v1", &vol_vars("v1"));
    let (mut v2, a2) = volume(tmp.path(), "v2", &vol_vars("v2"));
    let port = free_port();
    let args: Vec<String> = [
        "server",
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--db",
        tmp.path().join("db").to_str().unwrap(),
        "--volumes",
        &format!("{a1},{a2}"),
        "--replicas",
        "2",
        "--log-format",
        "json",
        "-v",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let index_vars = otel_vars("OTEL_EXPORTER_OTLP_ENDPOINT", &base, &[json]);
    let mut index = Proc::spawn(with_env(&index_vars, &args), tmp.path().join("index.log"));
    let url = format!("http://127.0.0.1:{port}");
    wait_listening(&format!("127.0.0.1:{port}"));

    let r = client()
        .put(format!("{url}/traced/key"))
        .header("traceparent", traceparent())
        .body(vec![7u8; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", index.log_text());
    // Nothing yet: the batch delay is 10 minutes.
    assert!(rx.exports().is_empty(), "exported before the stop");

    // The request's JSON log lines carry the client's trace id.
    let logged = |p: &Proc| {
        p.log_text()
            .lines()
            .any(|l| l.contains("PUT /") && l.contains(&format!("\"trace_id\":\"{TRACE}\"")))
    };
    assert!(
        logged(&index),
        "no trace id in the index log:\n{}",
        index.log_text()
    );
    assert!(logged(&v1) && logged(&v2), "no trace id in a volume log");

    // A graceful stop flushes the pending spans.
    assert!(index.terminate(), "index did not stop cleanly");
    assert!(
        v1.terminate() && v2.terminate(),
        "a volume did not stop cleanly"
    );
    let got = wait_exports(&rx, "the spans of the three processes", |e| {
        let s = spans(e);
        ["v1", "v2"].iter().all(|id| {
            s.iter()
                .any(|s| s.resource.get("hoard.test.volume").map(String::as_str) == Some(id))
        }) && s
            .iter()
            .any(|s| s.resource["service.name"] == "hoard-server")
    });
    let all = spans(&got);
    let index_spans: Vec<&Span> = all
        .iter()
        .filter(|s| s.resource["service.name"] == "hoard-server" && s.trace_id == TRACE)
        .collect();
    assert_eq!(index_spans.len(), 1, "{all:#?}");
    let put = index_spans[0];
    assert_eq!(
        put.parent, CLIENT_SPAN,
        "the index span's parent is the client's span"
    );
    assert_eq!(put.name, "index put");
    for id in ["v1", "v2"] {
        let children: Vec<&Span> = all
            .iter()
            .filter(|s| s.resource.get("hoard.test.volume").map(String::as_str) == Some(id))
            .filter(|s| s.trace_id == TRACE && s.parent == put.span_id)
            .collect();
        assert!(
            children.iter().any(|s| s.name == "volume put"),
            "volume {id} has no PUT span under the index's span {}: {all:#?}",
            put.span_id
        );
        assert_eq!(children[0].resource["service.name"], "hoard-volume");
    }
}

/// Starts a volume with `vars`, PUTs one file to it with a `traceparent`, stops it
/// gracefully; its log.
async fn put_to_volume(tmp: &Path, vars: &[String]) -> String {
    let (mut v, addr) = volume(tmp, "v", vars);
    let r = client()
        .put(format!("http://{addr}/a/file"))
        .header("traceparent", traceparent())
        .body("x")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert!(v.terminate(), "volume did not stop cleanly");
    v.log_text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_exported_unless_asked() {
    let rx = Receiver::start();
    // No endpoint: no exporter, no trace ids in the logs.
    let tmp = tempfile::tempdir().unwrap();
    let vars = ["OTEL_EXPORTER_OTLP_PROTOCOL=http/json".to_string()];
    let log = put_to_volume(tmp.path(), &vars).await;
    assert!(log.contains("PUT /a/file"), "{log}");
    assert!(!log.contains("trace_id"), "{log}");
    // An endpoint, but the SDK switched off.
    let tmp = tempfile::tempdir().unwrap();
    let vars = otel_vars(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &rx.base(),
        &["OTEL_SDK_DISABLED=true"],
    );
    let log = put_to_volume(tmp.path(), &vars).await;
    assert!(!log.contains("trace_id"), "{log}");
    assert!(rx.exports().is_empty(), "{:?}", rx.exports());

    // Control: the same with the SDK on does send (so the receiver is reachable).
    let tmp = tempfile::tempdir().unwrap();
    let vars = otel_vars(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &rx.base(),
        &["OTEL_EXPORTER_OTLP_PROTOCOL=http/json"],
    );
    put_to_volume(tmp.path(), &vars).await;
    let got = wait_exports(&rx, "an export", |e| !e.is_empty());
    assert!(spans(&got).iter().any(|s| s.trace_id == TRACE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_traces_endpoint_is_used_as_given_with_protobuf_by_default() {
    let rx = Receiver::start();
    let tmp = tempfile::tempdir().unwrap();
    let vars = otel_vars(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        &format!("{}/custom/traces", rx.base()),
        // The per-signal endpoint wins over the base URL.
        &["OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9"],
    );
    put_to_volume(tmp.path(), &vars).await;
    let got = wait_exports(&rx, "an export", |e| !e.is_empty());
    assert_eq!(got[0].path, "/custom/traces");
    assert_eq!(got[0].content_type, "application/x-protobuf");
    // The trace id's bytes are in the protobuf body.
    let id: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&TRACE[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert!(got[0].body.windows(16).any(|w| w == id.as_slice()));

    // A protocol hoard does not speak is refused at start, naming the variable.
    let vars = [
        format!("OTEL_EXPORTER_OTLP_ENDPOINT={}", rx.base()),
        "OTEL_EXPORTER_OTLP_PROTOCOL=grpc".to_string(),
    ];
    let args = [
        "volume",
        "--dir",
        tmp.path().to_str().unwrap(),
        "--port",
        "0",
    ];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut p = Proc::spawn(with_env(&vars, &args), tmp.path().join("grpc.log"));
    let status = p.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    let err = p.log_text();
    assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"), "{err}");
}
