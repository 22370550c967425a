//! `hoard dev`: one command, a working store, data kept across restarts.

mod common;

use std::process::{Command, Stdio};
use std::time::Instant;

use common::cluster::{client, free_port_run, hoard_bin, wait_http, Proc};
use reqwest::StatusCode;

fn dev(data: &std::path::Path, port: u16) -> Proc {
    Proc::spawn(
        vec![
            hoard_bin().into(),
            "dev".into(),
            "--data".into(),
            data.display().to_string(),
            "--port".into(),
            port.to_string(),
            // Any free port (dev would otherwise derive it from --port: P+4).
            "--s3-port".into(),
            common::free_port().to_string(),
        ],
        data.with_extension("log"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_and_keeps_data() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("hoard-data");
    let port = free_port_run(7);
    let url = format!("http://127.0.0.1:{port}");

    let started = Instant::now();
    let mut proc = dev(&data, port);
    wait_http(&format!("{url}/-/health"));
    eprintln!("hoard dev ready after {:?}", started.elapsed());

    let body = b"hello from dev".to_vec();
    let resp = client()
        .put(format!("{url}/greeting"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = client()
        .get(format!("{url}/greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let port_of_volume: u16 = location
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (port + 1..=port + 3).contains(&port_of_volume),
        "{location}"
    );
    assert_eq!(
        client()
            .get(&location)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        body
    );

    // SIGTERM: clean exit; the data survives into the next run.
    assert!(
        proc.terminate(),
        "hoard dev did not exit cleanly:\n{}",
        proc.log_text()
    );
    let mut proc = dev(&data, port);
    wait_http(&format!("{url}/-/health"));
    hoard::tls::install_provider();
    let resp = reqwest::get(format!("{url}/greeting")).await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), body);
    let files = walk(&data);
    assert_eq!(
        files.iter().filter(|f| f.contains("volume")).count(),
        3,
        "{files:?}"
    );
    proc.kill();

    // The data directory remembers its port: volume names depend on it.
    let out = Command::new(hoard_bin())
        .args(["dev", "--data"])
        .arg(&data)
        .args(["--port", &(port + 10).to_string()])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("--port {port}")), "{err}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if !e.file_name().to_string_lossy().starts_with('.') {
                    stack.push(p);
                }
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}
