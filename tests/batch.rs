//! `POST /-/batch` and range listings (`end`, `reverse`) on the real binary: each batch
//! operation answers what the single request would, through the same store core; bad
//! batches are refused whole with nothing stored and the server keeps serving.

mod common;

use base64::Engine as _;
use common::cluster::{client, get_json, Cluster, Kind};
use md5::{Digest, Md5};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn batch(c: &Cluster, body: impl Into<reqwest::Body>) -> reqwest::Response {
    client()
        .post(format!("{}/-/batch", c.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn batch_ok(c: &Cluster, ops: Value) -> Vec<Value> {
    let resp = batch(c, ops.to_string()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let results: Value = resp.json().await.unwrap();
    results.as_array().unwrap().clone()
}

async fn put(c: &Cluster, key: &str, body: &'static [u8]) {
    let resp = client()
        .put(format!("{}{key}", c.url))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "PUT {key}");
}

async fn list(c: &Cluster, query: &str) -> (StatusCode, Value) {
    let resp = client()
        .get(format!("{}{query}", c.url))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn keys(v: &Value) -> Vec<String> {
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn operations_keep_their_semantics() {
    let c = Cluster::start(Kind::Native, 3, &[]);
    put(&c, "/b/old", b"old value").await;
    let results = batch_ok(
        &c,
        json!([
            {"op": "put", "key": "/b/1", "value": b64(b"hello")},
            {"op": "get", "key": "/b/1"},
            {"op": "put", "key": "/b/1", "value": b64(b"again")},
            {"op": "put", "key": "/b/empty", "value": ""},
            {"op": "put", "key": "no-slash", "value": b64(b"x")},
            {"op": "put", "key": "/-/reserved", "value": b64(b"x")},
            {"op": "get", "key": "/b/missing"},
            {"op": "unlink", "key": "/b/old"},
            {"op": "get", "key": "/b/old"},
            {"op": "unlink", "key": "/b/old"},
            {"op": "delete", "key": "/b/old"},
            {"op": "delete", "key": "/b/old"},
            {"op": "put", "key": "/b/odd key é", "value": b64(b"odd")},
        ]),
    )
    .await;
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [201, 200, 403, 411, 400, 400, 404, 204, 404, 404, 204, 404, 201],
        "{results:#?}"
    );
    assert_eq!(results[0]["key"], "/b/1");
    assert_eq!(results[0]["md5"], md5_hex(b"hello"));
    assert_eq!(results[0]["size"], 5);
    assert_eq!(results[1]["md5"], md5_hex(b"hello"));
    assert_eq!(results[1]["volumes"].as_array().unwrap().len(), 3);
    assert_eq!(results[1]["balanced"], true);
    assert_eq!(results[2]["error"], "key exists: DELETE it first");
    // The URL a get returns serves the value, like GET's redirect.
    let url = results[1]["url"].as_str().unwrap();
    let body = client()
        .get(url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&body[..], b"hello");

    // What the batch did is what single requests see.
    let resp = client().get(format!("{}/b/1", c.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()["content-md5"], md5_hex(b"hello").as_str());
    let resp = client()
        .get(format!("{}/b/old", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let (_, listed) = list(&c, "/b/?list").await;
    assert_eq!(keys(&listed), ["/b/1", "/b/odd key é"]);
    let (_, unlinked) = list(&c, "/b/?unlinked").await;
    assert_eq!(keys(&unlinked), Vec::<String>::new());
    // The reserved key and the empty value left nothing behind.
    let (_, all) = list(&c, "/?list").await;
    assert_eq!(keys(&all), ["/b/1", "/b/odd key é"]);
}

#[tokio::test]
async fn bad_batches_store_nothing_and_the_server_keeps_serving() {
    let c = Cluster::start(Kind::Native, 3, &[]);
    let good = json!({"op": "put", "key": "/x/1", "value": b64(b"v")});
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"op": "get", "key": format!("/x/{i}")}))
        .collect();
    let cases: Vec<(String, StatusCode)> = vec![
        ("not json".into(), StatusCode::BAD_REQUEST),
        ("{}".into(), StatusCode::BAD_REQUEST),
        (
            json!([good, {"op": "frob", "key": "/x/2"}]).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!([good, {"op": "put", "key": "/x/2"}]).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!([good, {"op": "put", "key": "/x/2", "value": "%%%"}]).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!([good, {"op": "get", "key": "/x/2", "extra": 1}]).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (json!(too_many).to_string(), StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (body, want) in cases {
        let resp = batch(&c, body.clone()).await;
        assert_eq!(resp.status(), want, "{body:.80}");
        let text = resp.text().await.unwrap();
        assert!(!text.trim().is_empty(), "an error says why: {body:.80}");
    }
    // A body over the limit, declared or not.
    let big = vec![b' '; 16 << 20 | 1];
    assert_eq!(
        batch(&c, big.clone()).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let chunked = reqwest::Body::wrap_stream(futures_util::stream::iter(
        big.chunks(1 << 20)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    ));
    assert_eq!(
        batch(&c, chunked).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Only POST.
    let resp = client()
        .get(format!("{}/-/batch", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "POST");

    // Nothing was stored, and the server still serves.
    let (_, all) = list(&c, "/?list").await;
    assert_eq!(keys(&all), Vec::<String>::new());
    let results = batch_ok(&c, json!([good])).await;
    assert_eq!(results[0]["status"], 201);
    let health = get_json(format!("{}/-/health", c.url)).await;
    assert_eq!(health["keys"]["live"], 1);
}

#[tokio::test]
async fn batch_is_a_write_for_authentication() {
    let c = Cluster::start(Kind::Native, 3, &["--auth-token", "s3cret"]);
    let ops = json!([{"op": "get", "key": "/a"}]).to_string();
    assert_eq!(
        batch(&c, ops.clone()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let resp = client()
        .post(format!("{}/-/batch", c.url))
        .bearer_auth("s3cret")
        .body(ops)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let results: Value = resp.json().await.unwrap();
    assert_eq!(results[0]["status"], 404);
}

#[tokio::test]
async fn range_listings() {
    let c = Cluster::start(Kind::Native, 3, &[]);
    for key in ["/r/a", "/r/b", "/r/c", "/r/d", "/r/e", "/s/a"] {
        put(&c, key, b"v").await;
    }
    let unlink = client()
        .request(
            reqwest::Method::from_bytes(b"UNLINK").unwrap(),
            format!("{}/r/c", c.url),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(unlink.status(), StatusCode::NO_CONTENT);

    let cases = [
        ("/r/?list&start=/r/b&end=/r/e", vec!["/r/b", "/r/d"]),
        (
            "/r/?list&start=/r/b&end=/r/e&limit=10",
            vec!["/r/b", "/r/d"],
        ),
        ("/r/?list&reverse", vec!["/r/e", "/r/d", "/r/b", "/r/a"]),
        (
            "/r/?list&reverse&limit=100",
            vec!["/r/e", "/r/d", "/r/b", "/r/a"],
        ),
        ("/r/?list&end=/r/d&reverse=1", vec!["/r/b", "/r/a"]),
        ("/r/?list&end=/zzz", vec!["/r/a", "/r/b", "/r/d", "/r/e"]),
        ("/r/?list&start=/r/d&end=/r/b", vec![]),
        ("/r/?unlinked&start=/r/a&end=/r/d&reverse", vec!["/r/c"]),
        ("/r/?unlinked&end=/r/c", vec![]),
    ];
    for (query, want) in cases {
        let (status, body) = list(&c, query).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert_eq!(keys(&body), want, "{query}");
        assert_eq!(body["next"], "", "{query}");
    }
    // Descending pages: next is the following page's end.
    let (_, p1) = list(&c, "/r/?list&reverse&limit=3").await;
    assert_eq!(keys(&p1), ["/r/e", "/r/d", "/r/b"]);
    assert_eq!(p1["next"], "/r/b");
    let (_, p2) = list(&c, "/r/?list&reverse&limit=3&end=/r/b").await;
    assert_eq!(
        (keys(&p2), p2["next"].clone()),
        (vec!["/r/a".to_string()], json!(""))
    );
    // Bad range parameters are refused and the server keeps serving.
    for bad in ["/r/?list&reverse=maybe", "/r/?list&end=/r/e&limit=x"] {
        assert_eq!(list(&c, bad).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(list(&c, "/r/?list").await.0, StatusCode::OK);
}
