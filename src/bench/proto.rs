//! `hoard bench proto`: the binary protocol beside HTTP, on the same store, in one run.
//!
//! Each phase takes N keys through SET/PUT → GET (compared) → DELETE with C workers,
//! one connection each:
//!
//! * `http` — minikeyvalue's API: PUT, GET following the 302 to a volume, DELETE;
//! * `binary` — the binary protocol ([`crate::proto::client`]): SET, GET, DELETE (the
//!   value streamed through the index server);
//! * `binary-zstd` (with `--zstd`) — the same with zstd-compressed SETs;
//! * `binary-pipelined` — one SET+GET+DELETE per key sent before reading the answers
//!   (three requests in flight per connection);
//! * `volume` (with `--volume`) — the physical limit of the same work: PUT, GET, DELETE
//!   straight to one volume server (no index, one copy).
//!
//! One op is one key's whole triple. With `--gets N`, two read-heavy phases follow (or,
//! with `--only-gets`, replace them): `--hot-keys` keys are written once, then N GETs
//! spread over them, compared — `http-get` (302 + volume GET) and `binary-get` (which a
//! server with `--cache-size` answers from memory). One op is one GET there.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use clap::Args;

use super::report::{emit, latency_cells, rate, Table};
use super::stats::{Histogram, Latency};
use super::{base_url, data, http_client, parse_size, run_id, Output, Target};
use crate::proto::client::{Client, Value};
use crate::proto::frame::{Compression, Op};

/// Options of `hoard bench proto`.
#[derive(Debug, Args, Clone)]
pub struct ProtoBenchArgs {
    /// The store's HTTP API.
    #[command(flatten)]
    pub target: Target,
    /// The store's binary protocol (`host:port` of `--tcp-port`).
    #[arg(long, default_value = "127.0.0.1:4000")]
    pub tcp: String,
    /// Token for AUTH when the server requires one.
    #[arg(long, env = "HOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Also measure PUT/GET/DELETE straight to this volume server (`host:port`).
    #[arg(long)]
    pub volume: Option<String>,
    /// Also run a phase with zstd-compressed SETs.
    #[arg(long)]
    pub zstd: bool,
    /// Keys per phase.
    #[arg(short = 'n', long, default_value_t = 5_000)]
    pub keys: usize,
    /// Concurrent workers (one connection each).
    #[arg(short = 'c', long, default_value_t = 16)]
    pub concurrency: usize,
    /// Size of each value (e.g. 32, 4KB).
    #[arg(long, default_value = "32", value_parser = parse_size)]
    pub value_size: u64,
    /// GETs per read-heavy phase (0 = none).
    #[arg(long, default_value_t = 0)]
    pub gets: usize,
    /// Keys the read-heavy phases read.
    #[arg(long, default_value_t = 100)]
    pub hot_keys: usize,
    /// Run only the read-heavy phases.
    #[arg(long, requires = "gets")]
    pub only_gets: bool,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Phase {
    Http,
    Binary,
    BinaryZstd,
    BinaryPipelined,
    Volume,
    HttpGet,
    BinaryGet,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Http => "http",
            Phase::Binary => "binary",
            Phase::BinaryZstd => "binary-zstd",
            Phase::BinaryPipelined => "binary-pipelined",
            Phase::Volume => "volume",
            Phase::HttpGet => "http-get",
            Phase::BinaryGet => "binary-get",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Hists {
    set: Histogram,
    get: Histogram,
    delete: Histogram,
}

/// One phase's result.
#[derive(Debug, serde::Serialize)]
struct PhaseReport {
    phase: Phase,
    ops: u64,
    elapsed_s: f64,
    ops_per_sec: f64,
    errors: u64,
    first_error: Option<String>,
    set: Latency,
    get: Latency,
    delete: Latency,
}

/// The JSON report of `hoard bench proto`.
#[derive(Debug, serde::Serialize)]
struct Report {
    workload: &'static str,
    url: String,
    tcp: String,
    keys: usize,
    concurrency: usize,
    value_bytes: u64,
    phases: Vec<PhaseReport>,
}

struct Shared {
    args: ProtoBenchArgs,
    base: String,
    run: String,
    seed: u64,
    next: AtomicUsize,
    failed: AtomicBool,
}

/// A worker's connection for its phase.
enum Conn {
    Http(reqwest::Client),
    Tcp(Client),
}

/// `hoard bench proto`.
pub async fn run(args: ProtoBenchArgs) -> anyhow::Result<()> {
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    ensure!(
        args.value_size <= 64 << 20,
        "--value-size is at most 64MB here"
    );
    let mut phases = Vec::new();
    if !args.only_gets {
        phases.extend([Phase::Http, Phase::Binary]);
        if args.zstd {
            phases.push(Phase::BinaryZstd);
        }
        phases.push(Phase::BinaryPipelined);
        if args.volume.is_some() {
            phases.push(Phase::Volume);
        }
    }
    if args.gets > 0 {
        ensure!(args.hot_keys > 0, "--hot-keys must be at least 1");
        phases.extend([Phase::HttpGet, Phase::BinaryGet]);
    }
    // The read-heavy phases read the same keys, written once.
    let hot = (run_id(), fastrand::u64(..));
    if args.gets > 0 {
        preload(&args, &hot).await?;
    }
    let base = base_url(&args.target.url)?;
    let mut report = Report {
        workload: "proto",
        url: base.clone(),
        tcp: args.tcp.clone(),
        keys: args.keys,
        concurrency: args.concurrency,
        value_bytes: args.value_size,
        phases: Vec::new(),
    };
    for phase in phases {
        let (run, seed) = match phase {
            Phase::HttpGet | Phase::BinaryGet => hot.clone(),
            _ => (run_id(), fastrand::u64(..)),
        };
        let shared = Arc::new(Shared {
            args: args.clone(),
            base: base.clone(),
            run,
            seed,
            next: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
        });
        report.phases.push(run_phase(shared, phase).await?);
    }
    if args.gets > 0 {
        clean_up(&args, &hot.0).await?;
    }
    emit(&report, &table(&report), args.output.json)?;
    if let Some(p) = report.phases.iter().find(|p| p.errors > 0) {
        bail!(
            "phase {} failed ({} errors); first: {}",
            p.phase.name(),
            p.errors,
            p.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

async fn run_phase(s: Arc<Shared>, phase: Phase) -> anyhow::Result<PhaseReport> {
    let mut conns = Vec::new();
    for _ in 0..s.args.concurrency {
        conns.push(match phase {
            Phase::Http | Phase::Volume | Phase::HttpGet => Conn::Http(http_client(1)?),
            _ => Conn::Tcp(tcp_client(&s.args).await?),
        });
    }
    let started = Instant::now();
    let workers: Vec<_> = conns
        .into_iter()
        .map(|conn| tokio::spawn(worker(Arc::clone(&s), phase, conn)))
        .collect();
    let (mut hists, mut ops, mut errors, mut first_error) = (Hists::default(), 0, 0, None);
    for w in workers {
        let (h, o, e, f) = w.await.context("a bench worker panicked")?;
        hists.set.merge(&h.set);
        hists.get.merge(&h.get);
        hists.delete.merge(&h.delete);
        ops += o;
        errors += e;
        first_error = first_error.or(f);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(PhaseReport {
        phase,
        ops,
        elapsed_s: elapsed,
        ops_per_sec: ops as f64 / elapsed,
        errors,
        first_error,
        set: hists.set.summary(),
        get: hists.get.summary(),
        delete: hists.delete.summary(),
    })
}

async fn worker(s: Arc<Shared>, phase: Phase, mut conn: Conn) -> (Hists, u64, u64, Option<String>) {
    let (mut h, mut ops, mut errors, mut first) = (Hists::default(), 0, 0, None);
    while !s.failed.load(Ordering::Relaxed) {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        let reads = matches!(phase, Phase::HttpGet | Phase::BinaryGet);
        if i >= if reads { s.args.gets } else { s.args.keys } {
            break;
        }
        // Read-heavy phases: GET number i reads hot key i % hot_keys.
        let i = if reads { i % s.args.hot_keys } else { i };
        let value = Bytes::from(data::small_value(
            s.seed ^ i as u64,
            s.args.value_size as usize,
        ));
        let r = match (&mut conn, phase) {
            (Conn::Http(c), Phase::HttpGet) => {
                let url = format!("{}/bench-proto-{}-{i}", s.base, s.run);
                http_get(c, &url, &value, &mut h).await
            }
            (Conn::Tcp(c), Phase::BinaryGet) => {
                let key = format!("bench-proto-{}-{i}", s.run);
                let t = Instant::now();
                match c.get(key.as_bytes()).await {
                    Ok(got) if got == value => {
                        h.get.record(t.elapsed());
                        Ok(())
                    }
                    Ok(_) => Err(anyhow::anyhow!("GET {key}: value differs")),
                    Err(e) => Err(e.into()),
                }
            }
            (Conn::Http(c), Phase::Volume) => {
                let vol = s.args.volume.as_deref().unwrap_or_default();
                let url = format!("http://{vol}/bench-proto/{}-{i}", s.run);
                http_key(c, &url, false, value, &mut h).await
            }
            (Conn::Http(c), _) => {
                let url = format!("{}/bench-proto-{}-{i}", s.base, s.run);
                http_key(c, &url, true, value, &mut h).await
            }
            (Conn::Tcp(c), Phase::BinaryPipelined) => {
                pipelined_key(c, &s.run, i, value, &mut h).await
            }
            (Conn::Tcp(c), _) => {
                let zstd = phase == Phase::BinaryZstd;
                tcp_key(c, &s.run, i, value, zstd, &mut h).await
            }
        };
        match r {
            Ok(()) => ops += 1,
            Err(e) => {
                errors += 1;
                first.get_or_insert_with(|| format!("{e:#}"));
                s.failed.store(true, Ordering::Relaxed);
            }
        }
    }
    (h, ops, errors, first)
}

/// PUT, GET (following the redirect when `redirect`), DELETE over HTTP.
async fn http_key(
    c: &reqwest::Client,
    url: &str,
    redirect: bool,
    value: Bytes,
    h: &mut Hists,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let r = c.put(url).body(value.clone()).send().await?;
    let status = r.status();
    r.bytes().await?;
    ensure!(status.is_success(), "PUT {url}: {status}");
    h.set.record(t.elapsed());

    let t = Instant::now();
    let mut r = c.get(url).send().await?;
    if redirect {
        ensure!(r.status().is_redirection(), "GET {url}: {}", r.status());
        let loc = r
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .context("redirect without a Location")?
            .to_string();
        r.bytes().await?;
        r = c.get(&loc).send().await?;
    }
    ensure!(r.status().is_success(), "GET {url}: {}", r.status());
    let body = r.bytes().await?;
    h.get.record(t.elapsed());
    ensure!(body == value, "GET {url}: value differs");

    let t = Instant::now();
    let r = c.delete(url).send().await?;
    let status = r.status();
    r.bytes().await?;
    ensure!(status.is_success(), "DELETE {url}: {status}");
    h.delete.record(t.elapsed());
    Ok(())
}

/// GET through the 302, compared.
async fn http_get(
    c: &reqwest::Client,
    url: &str,
    value: &Bytes,
    h: &mut Hists,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let r = c.get(url).send().await?;
    ensure!(r.status().is_redirection(), "GET {url}: {}", r.status());
    let loc = r
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .context("redirect without a Location")?
        .to_string();
    r.bytes().await?;
    let r = c.get(&loc).send().await?;
    ensure!(r.status().is_success(), "GET {loc}: {}", r.status());
    let body = r.bytes().await?;
    h.get.record(t.elapsed());
    ensure!(body == *value, "GET {url}: value differs");
    Ok(())
}

/// Writes the read-heavy phases' keys (over the binary protocol).
async fn preload(args: &ProtoBenchArgs, (run, seed): &(String, u64)) -> anyhow::Result<()> {
    let mut c = tcp_client(args).await?;
    for i in 0..args.hot_keys {
        let value = data::small_value(seed ^ i as u64, args.value_size as usize);
        let key = format!("bench-proto-{run}-{i}");
        c.set(key.as_bytes(), &value)
            .await
            .with_context(|| format!("preloading {key}"))?;
    }
    Ok(())
}

/// Deletes the read-heavy phases' keys.
async fn clean_up(args: &ProtoBenchArgs, run: &str) -> anyhow::Result<()> {
    let mut c = tcp_client(args).await?;
    for i in 0..args.hot_keys {
        let key = format!("bench-proto-{run}-{i}");
        c.delete(key.as_bytes())
            .await
            .with_context(|| format!("deleting {key}"))?;
    }
    Ok(())
}

async fn tcp_client(args: &ProtoBenchArgs) -> anyhow::Result<Client> {
    let mut c = Client::connect(&args.tcp, Duration::from_secs(30))
        .await
        .with_context(|| format!("connecting to {}", args.tcp))?;
    if let Some(t) = &args.token {
        c.auth(t).await.context("AUTH")?;
    }
    Ok(c)
}

/// SET, GET, DELETE over the binary protocol, one request at a time.
async fn tcp_key(
    c: &mut Client,
    run: &str,
    i: usize,
    value: Bytes,
    zstd: bool,
    h: &mut Hists,
) -> anyhow::Result<()> {
    let key = format!("bench-proto-{run}-{i}");
    let t = Instant::now();
    if zstd {
        c.set_zstd(key.as_bytes(), &value, 3).await?;
    } else {
        c.set(key.as_bytes(), &value).await?;
    }
    h.set.record(t.elapsed());
    let t = Instant::now();
    let got = c.get(key.as_bytes()).await?;
    h.get.record(t.elapsed());
    ensure!(got == value, "GET {key}: value differs");
    let t = Instant::now();
    c.delete(key.as_bytes()).await?;
    h.delete.record(t.elapsed());
    Ok(())
}

/// SET, GET and DELETE of one key sent at once, then the three answers read; each
/// answer's latency is measured from the send.
async fn pipelined_key(
    c: &mut Client,
    run: &str,
    i: usize,
    value: Bytes,
    h: &mut Hists,
) -> anyhow::Result<()> {
    let key = format!("bench-proto-{run}-{i}");
    let t = Instant::now();
    let v = Value {
        bytes: &value,
        compression: Compression::None,
    };
    c.send(Op::Set, key.as_bytes(), Some(v)).await?;
    c.send(Op::Get, key.as_bytes(), None).await?;
    c.send(Op::Delete, key.as_bytes(), None).await?;
    c.flush().await?;
    c.recv().await.context("SET")?;
    h.set.record(t.elapsed());
    let got = c.recv().await.context("GET")?;
    h.get.record(t.elapsed());
    c.recv().await.context("DELETE")?;
    h.delete.record(t.elapsed());
    ensure!(got == value, "GET {key}: value differs");
    Ok(())
}

fn table(r: &Report) -> Table {
    let mut t = Table::new(
        format!(
            "proto: {} keys x (SET/PUT, GET, DELETE) per phase, {} workers, {}-byte values -> {} and {}",
            r.keys, r.concurrency, r.value_bytes, r.url, r.tcp
        ),
        &["phase", "ops/s", "request", "count", "p50 ms", "p99 ms", "max ms"],
    );
    for p in &r.phases {
        for (i, (name, lat)) in [("SET", &p.set), ("GET", &p.get), ("DELETE", &p.delete)]
            .into_iter()
            .filter(|(_, l)| l.count > 0)
            .enumerate()
        {
            let (phase, ops) = if i == 0 {
                (p.phase.name().to_string(), rate(p.ops_per_sec))
            } else {
                (String::new(), String::new())
            };
            let mut cells = vec![phase, ops, name.to_string()];
            cells.extend(latency_cells(lat));
            t.row(cells);
        }
    }
    t.note(
        "one op = one key's SET/PUT + GET + DELETE (*-get phases: one GET); http GET = 302 + volume GET"
            .to_string(),
    );
    for p in r.phases.iter().filter(|p| p.errors > 0) {
        t.note(format!(
            "{}: {} errors, first: {}",
            p.phase.name(),
            p.errors,
            p.first_error.as_deref().unwrap_or("?")
        ));
    }
    t
}
