//! `hoard bench get-redirect`: how fast the index server answers GETs, redirects not
//! followed — of an existing key (a 302 to a volume, the common read path) and of a
//! missing key (404, or a 302 to the fallback when one is configured). Each case is a
//! closed loop of `--duration` over `--connections` keep-alive connections.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use clap::{Args, ValueEnum};

use super::closed_loop::{self, Plan};
use super::report::{emit, latency_cells, rate, Table};
use super::stats::Latency;
use super::{base_url, http_client, run_id, Output, Target};

/// Which keys `get-redirect` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Cases {
    /// An existing key, then a missing one.
    Both,
    /// Only an existing key (302).
    Existing,
    /// Only a missing key (404).
    Missing,
}

/// Options of `hoard bench get-redirect`.
#[derive(Debug, Args, Clone)]
pub struct RedirectArgs {
    /// The store to drive.
    #[command(flatten)]
    pub target: Target,
    /// Keep-alive connections, each with one request in flight.
    #[arg(short = 'c', long, default_value_t = 100)]
    pub connections: usize,
    /// OS threads driving the connections (each a single-threaded event loop, as in
    /// `wrk -t`).
    #[arg(short = 't', long, default_value_t = 2)]
    pub threads: usize,
    /// How long each case runs (e.g. 10s, 500ms).
    #[arg(short = 'd', long, default_value = "10s", value_parser = crate::units::parse_duration)]
    pub duration: Duration,
    /// Which cases to run.
    #[arg(long, value_enum, default_value_t = Cases::Both)]
    pub cases: Cases,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

/// The result of one case.
#[derive(Debug, serde::Serialize)]
struct CaseReport {
    case: &'static str,
    path: String,
    requests: u64,
    elapsed_s: f64,
    req_per_sec: f64,
    latency: Latency,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    first_error: Option<String>,
    /// The same load with wrk, for comparison.
    wrk: String,
}

/// The JSON report of `hoard bench get-redirect`.
#[derive(Debug, serde::Serialize)]
struct Report {
    workload: &'static str,
    url: String,
    connections: usize,
    threads: usize,
    duration_s: f64,
    cases: Vec<CaseReport>,
    errors: u64,
}

/// `hoard bench get-redirect`.
pub async fn run(args: RedirectArgs) -> anyhow::Result<()> {
    let base = base_url(&args.target.url)?;
    let authority = base.strip_prefix("http://").unwrap_or(&base).to_string();
    ensure!(
        !authority.contains('/'),
        "--url must be the server root (http://host:port), got {base}"
    );
    let client = http_client(1)?;
    let run = run_id();
    let existing = format!("/bench-redirect-{run}");
    let missing = format!("/bench-missing-{run}");

    let want_existing = args.cases != Cases::Missing;
    let mut todo: Vec<Case> = Vec::new();
    if want_existing {
        put_key(&client, &format!("{base}{existing}")).await?;
        todo.push(("existing", &existing, is_redirect));
    }
    if args.cases != Cases::Existing {
        todo.push(("missing", &missing, is_missing));
    }
    let mut cases = Vec::new();
    let mut failure = None;
    for (case, path, accept) in todo {
        let plan = Plan {
            authority: authority.clone(),
            path: path.clone(),
            connections: args.connections,
            threads: args.threads,
            duration: args.duration,
            accept,
        };
        let outcome = tokio::task::spawn_blocking(move || closed_loop::run(plan)).await;
        match outcome
            .context("the load generator panicked")
            .and_then(|r| r)
        {
            Ok(o) => {
                let secs = o.elapsed.as_secs_f64();
                cases.push(CaseReport {
                    case,
                    path: path.clone(),
                    requests: o.requests,
                    elapsed_s: secs,
                    req_per_sec: if secs > 0.0 {
                        o.requests as f64 / secs
                    } else {
                        0.0
                    },
                    latency: o.latency.summary(),
                    statuses: o.statuses,
                    errors: o.errors,
                    first_error: o.first_error,
                    wrk: format!(
                        "wrk -t{} -c{} -d{}s {base}{path}",
                        args.threads,
                        args.connections,
                        args.duration.as_secs_f64()
                    ),
                });
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if want_existing {
        // Clean up even when a case failed; a failed cleanup only leaves one key.
        let url = format!("{base}{existing}");
        if let Err(e) = client.delete(&url).send().await {
            eprintln!("hoard bench: could not delete {url}: {e}");
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let errors = cases.iter().map(|c| c.errors).sum();
    let report = Report {
        workload: "get-redirect",
        url: base,
        connections: args.connections,
        threads: args.threads,
        duration_s: args.duration.as_secs_f64(),
        cases,
        errors,
    };
    emit(&report, &table(&report), args.output.json)?;
    if errors > 0 {
        let first = report.cases.iter().find_map(|c| c.first_error.clone());
        bail!(
            "get-redirect failed ({errors} errors); first: {}",
            first.unwrap_or_default()
        );
    }
    Ok(())
}

fn is_redirect(status: u16) -> bool {
    (300..400).contains(&status)
}

/// A missing key is a 404, or a redirect when the server has a fallback configured.
fn is_missing(status: u16) -> bool {
    status == 404 || is_redirect(status)
}

/// A case to run: its name, the path to GET, and which statuses are right.
type Case<'a> = (&'static str, &'a String, fn(u16) -> bool);

/// PUTs a small value at `url` and checks that a GET now redirects.
async fn put_key(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let resp = client
        .put(url)
        .body(&b"hoard bench get-redirect"[..])
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    ensure!(resp.status().is_success(), "PUT {url}: {}", resp.status());
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    ensure!(
        resp.status().is_redirection(),
        "GET {url}: {} instead of a redirect",
        resp.status()
    );
    Ok(())
}

fn table(r: &Report) -> Table {
    let mut t = Table::new(
        format!(
            "get-redirect: {} connections on {} threads, {}s per case, redirects not followed -> {}",
            r.connections, r.threads, r.duration_s, r.url
        ),
        &[
            "case", "req/s", "statuses", "count", "p50 ms", "p99 ms", "max ms",
        ],
    );
    for c in &r.cases {
        let statuses: Vec<String> = c.statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
        let mut cells = vec![c.case.to_string(), rate(c.req_per_sec), statuses.join(",")];
        cells.extend(latency_cells(&c.latency));
        t.row(cells);
    }
    t.note(format!("errors {}", r.errors));
    for c in &r.cases {
        t.note(format!("same load with wrk ({}): {}", c.case, c.wrk));
    }
    t
}
