//! minikeyvalue's thrasher: each of N keys goes through PUT → GET (following the
//! redirect — or taking the 200 of a value stored in the index, `--inline-max` —
//! comparing the bytes) → DELETE, with C workers pulling keys from a shared
//! counter. One op is one key's whole triple; the first failure stops the run.
//!
//! With `--volume`, `--url` is a volume server (nginx or `hoard volume`) driven
//! directly: PUT, GET (200), DELETE of file paths laid out as the index lays them out
//! (`/svNN/xx/yy/name`, new directories included) — the volume's share of the work.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use clap::Args;
use reqwest::StatusCode;

use super::report::{emit, latency_cells, rate, Table};
use super::stats::{Histogram, Latency};
use super::{base_url, data, http_client, parse_size, run_id, Output, Target};

/// Options of `hoard bench thrasher`.
#[derive(Debug, Args, Clone)]
pub struct ThrasherArgs {
    /// The store to drive.
    #[command(flatten)]
    pub target: Target,
    /// Keys to write, read back and delete.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub keys: usize,
    /// Concurrent workers (each with its own keep-alive connection).
    #[arg(short = 'c', long, default_value_t = 16)]
    pub concurrency: usize,
    /// Size of each value (e.g. 32, 4KB).
    #[arg(long, default_value = "32", value_parser = parse_size)]
    pub value_size: u64,
    /// `--url` is a volume server: PUT/GET/DELETE files on it directly.
    #[arg(long)]
    pub volume: bool,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

/// Latency of each request type of the thrasher.
#[derive(Debug, Default, Clone)]
struct Hists {
    put: Histogram,
    get_redirect: Histogram,
    get_volume: Histogram,
    delete: Histogram,
}

impl Hists {
    fn merge(&mut self, o: &Hists) {
        self.put.merge(&o.put);
        self.get_redirect.merge(&o.get_redirect);
        self.get_volume.merge(&o.get_volume);
        self.delete.merge(&o.delete);
    }

    fn requests(&self) -> u64 {
        self.put.count() + self.get_redirect.count() + self.get_volume.count() + self.delete.count()
    }
}

/// Latency of each request type, milliseconds.
#[derive(Debug, serde::Serialize)]
struct Latencies {
    put: Latency,
    get_redirect: Latency,
    get_volume: Latency,
    delete: Latency,
}

/// The JSON report of `hoard bench thrasher`.
#[derive(Debug, serde::Serialize)]
struct Report {
    workload: &'static str,
    url: String,
    keys: usize,
    concurrency: usize,
    value_bytes: u64,
    elapsed_s: f64,
    ops: u64,
    ops_per_sec: f64,
    requests: u64,
    requests_per_sec: f64,
    errors: u64,
    first_error: Option<String>,
    latency: Latencies,
}

struct Shared {
    client: reqwest::Client,
    base: String,
    run: String,
    seed: u64,
    keys: usize,
    value_size: usize,
    volume: bool,
    next: AtomicUsize,
    failed: AtomicBool,
}

#[derive(Default)]
struct WorkerResult {
    hists: Hists,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
}

/// `hoard bench thrasher`.
pub async fn run(args: ThrasherArgs) -> anyhow::Result<()> {
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let value_size = usize::try_from(args.value_size).context("--value-size too large")?;
    let shared = Arc::new(Shared {
        client: http_client(args.concurrency)?,
        base: base_url(&args.target.url)?,
        run: run_id(),
        seed: fastrand::u64(..),
        keys: args.keys,
        value_size,
        volume: args.volume,
        next: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
    });
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(worker(Arc::clone(&shared))))
        .collect();
    let mut total = WorkerResult::default();
    for w in workers {
        let r = w.await.context("a thrasher worker panicked")?;
        total.hists.merge(&r.hists);
        total.ops += r.ops;
        total.errors += r.errors;
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = total.hists.requests();
    let h = &total.hists;
    let report = Report {
        workload: "thrasher",
        url: shared.base.clone(),
        keys: args.keys,
        concurrency: args.concurrency,
        value_bytes: args.value_size,
        elapsed_s: elapsed,
        ops: total.ops,
        ops_per_sec: total.ops as f64 / elapsed,
        requests,
        requests_per_sec: requests as f64 / elapsed,
        errors: total.errors,
        first_error: total.first_error.clone(),
        latency: Latencies {
            put: h.put.summary(),
            get_redirect: h.get_redirect.summary(),
            get_volume: h.get_volume.summary(),
            delete: h.delete.summary(),
        },
    };
    emit(&report, &table(&report), args.output.json)?;
    if let Some(first) = total.first_error {
        bail!("thrasher failed ({} errors); first: {first}", total.errors);
    }
    Ok(())
}

fn table(r: &Report) -> Table {
    let mut t = Table::new(
        format!(
            "thrasher: {} keys x (PUT, GET, DELETE), {} workers, {}-byte values -> {}",
            r.keys, r.concurrency, r.value_bytes, r.url
        ),
        &["request", "count", "p50 ms", "p99 ms", "max ms"],
    );
    let l = &r.latency;
    for (name, lat) in [
        ("PUT", &l.put),
        ("GET index (302 or 200)", &l.get_redirect),
        ("GET volume", &l.get_volume),
        ("DELETE", &l.delete),
    ] {
        let mut cells = vec![name.to_string()];
        cells.extend(latency_cells(lat));
        t.row(cells);
    }
    t.note(format!(
        "ops/s {} (one op = one key's PUT+GET+DELETE)   requests/s {} (incl. the volume GET unless inline)   {:.2} s",
        rate(r.ops_per_sec),
        rate(r.requests_per_sec),
        r.elapsed_s
    ));
    t.note(format!("errors {}", r.errors));
    if let Some(e) = &r.first_error {
        t.note(format!("first error: {e}"));
    }
    t
}

async fn worker(s: Arc<Shared>) -> WorkerResult {
    let mut out = WorkerResult::default();
    while !s.failed.load(Ordering::Relaxed) {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= s.keys {
            break;
        }
        match one_key(&s, i, &mut out.hists).await {
            Ok(()) => out.ops += 1,
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
                s.failed.store(true, Ordering::Relaxed);
            }
        }
    }
    out
}

/// PUT, GET through the redirect (compared), DELETE of key number `i`.
async fn one_key(s: &Shared, i: usize, h: &mut Hists) -> anyhow::Result<()> {
    let url = match s.volume {
        false => format!("{}/bench-thrasher-{}-{i}", s.base, s.run),
        true => {
            let h = (s.seed ^ i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let (sv, a, b) = (h % 10, (h >> 8) & 0xff, (h >> 16) & 0xff);
            format!(
                "{}/sv{sv:02X}/{a:02x}/{b:02x}/thrasher-{}-{i}",
                s.base, s.run
            )
        }
    };
    let value = Bytes::from(data::small_value(s.seed ^ i as u64, s.value_size));

    let t = Instant::now();
    let resp = s.client.put(&url).body(value.clone()).send().await;
    let status = finish(resp, "PUT", &url).await?;
    ensure!(status.is_success(), "PUT {url}: {status}");
    h.put.record(t.elapsed());

    let body = match s.volume {
        true => from_volume(s, &url, h).await?,
        false => match redirect(s, &url, h).await? {
            Answer::Redirect(location) => from_volume(s, &location, h).await?,
            Answer::Value(body) => body,
        },
    };
    ensure!(
        body == value,
        "GET {url}: {} bytes that differ from the {} sent",
        body.len(),
        value.len()
    );

    let t = Instant::now();
    let resp = s.client.delete(&url).send().await;
    let status = finish(resp, "DELETE", &url).await?;
    ensure!(status.is_success(), "DELETE {url}: {status}");
    h.delete.record(t.elapsed());
    Ok(())
}

/// GET of `location` (a volume's file): its body.
async fn from_volume(s: &Shared, location: &str, h: &mut Hists) -> anyhow::Result<Bytes> {
    let t = Instant::now();
    let resp = s
        .client
        .get(location)
        .send()
        .await
        .with_context(|| format!("GET {location}"))?;
    ensure!(
        resp.status() == StatusCode::OK,
        "GET {location}: {}",
        resp.status()
    );
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("GET {location}: reading the body"))?;
    h.get_volume.record(t.elapsed());
    Ok(body)
}

/// What a GET on the index answered.
enum Answer {
    /// A 302 to this location.
    Redirect(String),
    /// 200 with the value itself (stored in the index, `--inline-max`).
    Value(Bytes),
}

/// GET of `url` on the index: the Location of its redirect, or the value itself.
async fn redirect(s: &Shared, url: &str, h: &mut Hists) -> anyhow::Result<Answer> {
    let t = Instant::now();
    let resp = s
        .client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if resp.status() == StatusCode::OK {
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("GET {url}: reading the body"))?;
        h.get_redirect.record(t.elapsed());
        return Ok(Answer::Value(body));
    }
    ensure!(
        resp.status().is_redirection(),
        "GET {url}: {} instead of a redirect or a value",
        resp.status()
    );
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .with_context(|| format!("GET {url}: redirect without a Location"))?
        .to_string();
    drop(resp.bytes().await);
    h.get_redirect.record(t.elapsed());
    Ok(Answer::Redirect(location))
}

/// The status of a response whose (small) body is read and discarded, so the
/// connection goes back to the pool.
async fn finish(
    resp: reqwest::Result<reqwest::Response>,
    method: &str,
    url: &str,
) -> anyhow::Result<StatusCode> {
    let resp = resp.with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    resp.bytes()
        .await
        .with_context(|| format!("{method} {url}: reading the response"))?;
    Ok(status)
}
