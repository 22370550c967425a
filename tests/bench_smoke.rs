//! `hoard bench` against a real cluster (index server + 3 nginx volumes): every
//! workload runs as a real process with `--json`, and the reports must be sane — work
//! done, no errors, bytes verified, nothing left behind. Timing is never asserted.

mod common;

use std::process::Command;

use common::cluster::{free_port, hoard_bin, Cluster, Kind};
use serde_json::Value;

/// Runs `hoard bench ARGS --json`; its exit status and parsed stdout.
fn bench(args: &[&str]) -> (bool, Value) {
    let out = Command::new(hoard_bin())
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("cannot run hoard");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "hoard bench {args:?}: stdout is not JSON ({e}): {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.success(), json)
}

/// Like [`bench`], asserting success.
fn bench_ok(args: &[&str]) -> Value {
    let (ok, json) = bench(args);
    assert!(ok, "hoard bench {args:?} failed: {json:#}");
    json
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Latency summaries must be ordered and, when there are samples, positive.
fn check_latency(l: &Value, count: u64) {
    assert_eq!(l["count"], count, "{l}");
    let (p50, p99, max) = (num(&l["p50_ms"]), num(&l["p99_ms"]), num(&l["max_ms"]));
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max * 1.02, "{l}");
}

/// A GET transfer: right size, positive rate, verified, md5 as announced by the server.
fn check_transfers(transfers: &Value, size: u64, via: &str) {
    let t = transfers.as_array().expect("transfers");
    assert_eq!(t.len(), 2, "{transfers:#}");
    for (x, op) in t.iter().zip(["put", "get"]) {
        assert_eq!(x["op"], op);
        assert_eq!(x["via"], via);
        assert_eq!(x["size_bytes"], size);
        assert!(num(&x["mb_per_sec"]) > 0.0, "{x}");
        assert_eq!(x["md5"].as_str().map(str::len), Some(32));
    }
    assert_eq!(t[1]["verified"], true);
}

#[test]
fn every_workload_runs_against_a_real_cluster() {
    let c = Cluster::start(Kind::Nginx, 3, &[]);
    let url = c.url.as_str();

    let j = bench_ok(&["thrasher", "--url", url, "-n", "200", "-c", "4"]);
    assert_eq!(j["workload"], "thrasher");
    assert_eq!(j["ops"], 200);
    assert_eq!(j["requests"], 800);
    assert_eq!(j["errors"], 0);
    assert!(num(&j["ops_per_sec"]) > 0.0);
    for kind in ["put", "get_redirect", "get_volume", "delete"] {
        check_latency(&j["latency"][kind], 200);
    }

    let j = bench_ok(&["get-redirect", "--url", url, "--duration", "1s"]);
    assert_eq!(j["errors"], 0);
    let cases = j["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 2);
    for (case, status) in cases.iter().zip(["302", "404"]) {
        let n = case["requests"].as_u64().unwrap();
        assert!(n > 0, "{case}");
        assert_eq!(case["statuses"][status], n, "{case}");
        assert!(num(&case["req_per_sec"]) > 0.0);
        check_latency(&case["latency"], n);
        assert!(case["wrk"]
            .as_str()
            .unwrap()
            .starts_with("wrk -t2 -c100 -d1s http://"));
    }

    let pid = c.index.pid().expect("index running").to_string();
    let j = bench_ok(&[
        "large",
        "--url",
        url,
        "--sizes",
        "8MB",
        "--server-pid",
        &pid,
    ]);
    check_transfers(&j["transfers"], 8 << 20, "index");
    for x in j["transfers"].as_array().unwrap() {
        let rss = &x["rss"];
        assert!(rss["idle_kb"].as_u64().unwrap() > 0, "{x}");
        assert!(rss["peak_kb"].as_u64() >= rss["idle_kb"].as_u64(), "{x}");
        assert!(rss["samples"].as_u64().unwrap() >= 1, "{x}");
    }
    // The index server hashes every PUT; the redirect announced the same md5.
    assert_eq!(j["transfers"][1]["server_md5"], j["transfers"][1]["md5"]);

    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_str().unwrap();
    let j = bench_ok(&[
        "baseline",
        "--volume",
        &c.volumes[0].addr,
        "--dir",
        dir,
        "--sizes",
        "8MB",
        "--disk-size",
        "8MB",
        "--fsync-count",
        "20",
    ]);
    check_transfers(&j["transfers"], 8 << 20, "volume");
    assert_eq!(j["disk"]["bytes"], 8 << 20);
    assert!(num(&j["disk"]["mb_per_sec"]) > 0.0);
    assert_eq!(j["fsync"]["count"], 20);
    check_latency(&j["fsync"]["latency"], 20);
    let left: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().collect();
    assert!(left.is_empty(), "baseline left files behind: {left:?}");

    // Every workload cleaned up its keys.
    let host = url.trim_start_matches("http://");
    let list = common::raw_request(
        host,
        format!("GET /?list HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let body = String::from_utf8_lossy(&list.body);
    assert!(body.contains(r#""keys":[]"#), "keys left behind: {body}");
    assert!(
        c.all_files().is_empty(),
        "files left behind: {:?}",
        c.all_files()
    );
}

#[test]
fn errors_fail_the_run() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (ok, j) = bench(&["thrasher", "--url", &dead, "-n", "5", "-c", "2"]);
    assert!(!ok, "{j:#}");
    assert!(j["errors"].as_u64().unwrap() > 0);
    assert!(j["first_error"].as_str().unwrap().contains("PUT"));
}
