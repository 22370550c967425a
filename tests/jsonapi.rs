//! minivault's JSON interface (`--json-port`) on the real binary.

mod common;

use common::cluster::{
    client, free_port, free_port_run, hoard_bin, wait_http, Cluster, Kind, Proc,
};
use serde_json::{json, Value};

/// `hoard dev` with the JSON interface on; its HTTP and JSON base URLs.
fn dev(extra: &[&str]) -> (Proc, String, String, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port_run(7);
    let json_port = free_port();
    let mut cmd: Vec<String> = vec![
        hoard_bin().into(),
        "dev".into(),
        "--data".into(),
        tmp.path().join("data").display().to_string(),
        "--port".into(),
        port.to_string(),
        "--json-port".into(),
        json_port.to_string(),
        // Any free port (dev would otherwise derive it from --port: P+4).
        "--s3-port".into(),
        common::free_port().to_string(),
    ];
    cmd.extend(extra.iter().map(|s| s.to_string()));
    let proc = Proc::spawn(cmd, tmp.path().join("dev.log"));
    let json = format!("http://127.0.0.1:{json_port}");
    wait_http(&format!("{json}/health"));
    (proc, format!("http://127.0.0.1:{port}"), json, tmp)
}

/// Polls `GET /health` until the volumes are up.
async fn wait_volumes(json: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, h) = call(client().get(format!("{json}/health"))).await;
        if h["data"]["volumes_up"].as_u64() >= Some(3) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "volumes not up: {h}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Sends `req`; status and JSON body (every answer of the interface is JSON).
async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {status} {text:?}"));
    (status, body)
}

async fn put(json: &str, key: &str, body: String) -> (u16, Value) {
    call(client().put(format!("{json}/{key}")).body(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete_any_json() {
    let (_p, http, json, _t) = dev(&[]);
    wait_volumes(&json).await;
    for (i, value) in [
        json!({"name": "hoard", "tags": ["a", "b"], "n": 1.5}),
        json!([1, 2, 3]),
        json!("a string"),
        json!(42),
        json!(true),
        json!(null),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("doc{i}");
        let (status, body) = put(&json, &key, json!({"value": value}).to_string()).await;
        assert_eq!((status, &body), (200, &json!({"success": true})));
        let (status, body) = call(client().get(format!("{json}/{key}"))).await;
        assert_eq!(status, 200);
        assert_eq!(body, json!({"success": true, "data": value}));
        // An ordinary hoard value: the JSON text, served over HTTP as usual.
        let r = client().get(format!("{http}/{key}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 302);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let text = client()
            .get(loc)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }
    // PUT overwrites.
    let (status, _) = put(&json, "doc0", r#"{"value": {"v": 2}}"#.into()).await;
    assert_eq!(status, 200);
    let (_, body) = call(client().get(format!("{json}/doc0"))).await;
    assert_eq!(body["data"], json!({"v": 2}));
    // DELETE, then the key is gone.
    let (status, body) = call(client().delete(format!("{json}/doc0"))).await;
    assert_eq!((status, body), (200, json!({"success": true})));
    let (status, body) = call(client().get(format!("{json}/doc0"))).await;
    assert_eq!(
        (status, body),
        (404, json!({"success": false, "error": "not found"}))
    );
    let (status, body) = call(client().delete(format!("{json}/doc0"))).await;
    assert_eq!((status, body["success"].clone()), (404, json!(false)));
    // Values written over HTTP: text comes back as a string, bytes as an error.
    let r = client()
        .put(format!("{http}/text"))
        .body("plain words")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let (_, body) = call(client().get(format!("{json}/text"))).await;
    assert_eq!(body["data"], "plain words");
    let r = client()
        .put(format!("{http}/bin"))
        .body(vec![0xFFu8, 0xFE, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let (status, body) = call(client().get(format!("{json}/bin"))).await;
    assert_eq!((status, body["success"].clone()), (422, json!(false)));
    // Health.
    let (status, body) = call(client().get(format!("{json}/health"))).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_json_errors_and_store_nothing() {
    let (_p, _http, json, _t) = dev(&["--json-max-body", "1000"]);
    wait_volumes(&json).await;
    let cases: [(&str, String, u16); 5] = [
        ("notjson", "{not json".into(), 400),
        ("novalue", r#"{"valeu": 1}"#.into(), 400),
        ("array", "[1,2]".into(), 400),
        ("empty", String::new(), 400),
        ("big", json!({"value": "x".repeat(2000)}).to_string(), 413),
    ];
    for (key, body, want) in cases {
        let (status, answer) = put(&json, key, body).await;
        assert_eq!(status, want, "{key}: {answer}");
        assert_eq!(answer["success"], false, "{key}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()));
        let (status, _) = call(client().get(format!("{json}/{key}"))).await;
        assert_eq!(status, 404, "{key} was stored");
    }
    // A value that fits once, then a GET of one too large to return.
    let (status, _) = put(&json, "fits", json!({"value": "y".repeat(900)}).to_string()).await;
    assert_eq!(status, 200);
    // Keys hoard refuses, and methods the interface does not have.
    let (status, body) = put(&json, "a%01b", r#"{"value": 1}"#.into()).await;
    assert_eq!((status, body["success"].clone()), (400, json!(false)));
    let (status, body) = call(client().post(format!("{json}/k"))).await;
    assert_eq!((status, body["success"].clone()), (405, json!(false)));
    let (status, _) = call(
        client()
            .put(format!("{json}/health"))
            .body(r#"{"value":1}"#),
    )
    .await;
    assert_eq!(status, 400, "/health is reserved here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_as_on_http() {
    let json_port = free_port();
    let port = json_port.to_string();
    for (mode, reads_need_token) in [("writes", false), ("all", true)] {
        let c = Cluster::start(
            Kind::Native,
            3,
            &[
                "--auth-token",
                "tok",
                "--auth-mode",
                mode,
                "--json-port",
                &port,
            ],
        );
        let json = format!("http://127.0.0.1:{json_port}");
        wait_http(&format!("{json}/health"));
        let (status, _) = call(client().get(format!("{json}/health"))).await;
        assert_eq!(status, 200, "/health is open ({mode})");
        wait_volumes(&json).await;
        let r = client()
            .put(format!("{json}/k"))
            .body(r#"{"value":1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{mode}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["success"], false);
        let (status, _) = call(
            client()
                .put(format!("{json}/k"))
                .bearer_auth("wrong")
                .body(r#"{"value":1}"#),
        )
        .await;
        assert_eq!(status, 401);
        let (status, _) = call(
            client()
                .put(format!("{json}/k"))
                .bearer_auth("tok")
                .body(r#"{"value":1}"#),
        )
        .await;
        assert_eq!(status, 200, "{mode}");
        let (status, _) = call(client().get(format!("{json}/k"))).await;
        assert_eq!(status == 401, reads_need_token, "{mode}");
        let (status, body) = call(client().get(format!("{json}/k")).bearer_auth("tok")).await;
        assert_eq!((status, body["data"].clone()), (200, json!(1)));
        let (status, _) = call(client().delete(format!("{json}/k"))).await;
        assert_eq!(status, 401);
        drop(c);
    }
}
