//! `hoard bench`: load generators that drive an already running store over HTTP.
//!
//! Nothing is started here: every workload is pointed at a store with `--url` (an index
//! server, `hoard server` or `hoard dev`, or any minikeyvalue-compatible store) and, for
//! the baseline, at one volume server and a directory. Each prints a table, or one JSON
//! object with `--json`, and exits non-zero if any request failed or any value came back
//! different from what was sent.
//!
//! * [`thrasher`] — minikeyvalue's thrasher: PUT → GET → DELETE of many small keys.
//! * [`redirect`] — closed-loop GETs answered by a redirect (existing key) or a 404.
//! * [`large`] — PUT and GET of large values, with the index server's RSS sampled.
//! * [`baseline`] — the physical limits: one volume directly, and the raw disk.
//! * [`proto`] — the binary protocol (`--tcp-port`) beside HTTP, on the same store.
//! * [`scale`] — the index itself at N keys, filled through its bulk-load path.

pub mod baseline;
pub mod closed_loop;
pub mod data;
pub mod files;
pub mod large;
pub mod proto;
pub mod redirect;
pub mod report;
pub mod scale;
pub mod stats;
pub mod thrasher;
pub mod transfer;

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

/// Options of `hoard bench`.
#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// The workload to run.
    #[command(subcommand)]
    pub workload: Workload,
}

/// The workloads of `hoard bench`.
#[derive(Debug, Subcommand, Clone)]
pub enum Workload {
    /// minikeyvalue's thrasher: each of N keys is PUT, read back through the redirect
    /// and compared, then DELETEd, by C concurrent workers.
    Thrasher(thrasher::ThrasherArgs),
    /// Closed-loop GETs of an existing key (302) and of a missing key (404), redirects
    /// not followed, over many keep-alive connections for a fixed duration.
    GetRedirect(redirect::RedirectArgs),
    /// PUT then GET of large values through the index server, verified, with the
    /// index server's resident memory sampled during each transfer (--server-pid).
    Large(large::LargeArgs),
    /// The physical limits: PUT/GET of the same sizes straight to one volume server,
    /// and the raw disk's fdatasync write bandwidth and small-write fsync rate.
    Baseline(baseline::BaselineArgs),
    /// The binary protocol beside HTTP: N keys through SET/PUT, GET, DELETE over each
    /// (and pipelined, zstd, straight to a volume), ops/s and latencies per phase.
    Proto(proto::ProtoBenchArgs),
    /// The index at N keys, filled through the bulk-load path (no server): bytes per
    /// key, open time, lookups, a full listing scan, HA snapshot export/import.
    IndexScale(scale::IndexScaleArgs),
}

/// Options every workload that talks to the index server shares.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// Base URL of the store's index server.
    #[arg(long, env = "HOARD_BENCH_URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,
}

/// Output options shared by every workload.
#[derive(Debug, Args, Clone)]
pub struct Output {
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `hoard bench`: runs one workload and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.workload {
        Workload::Thrasher(a) => thrasher::run(a).await,
        Workload::GetRedirect(a) => redirect::run(a).await,
        Workload::Large(a) => large::run(a).await,
        Workload::Baseline(a) => baseline::run(a).await,
        Workload::Proto(a) => proto::run(a).await,
        Workload::IndexScale(a) => scale::run(a).await,
    }
}

/// The HTTP client of the request/response workloads: keep-alive pool, no redirects
/// followed (workloads follow `Location` themselves), no proxy.
pub fn http_client(pool: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tcp_nodelay(true)
        .http1_only()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(pool.max(1))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .context("cannot build the HTTP client")
}

/// `url` without a trailing `/`, checked to be `http://…`.
pub fn base_url(url: &str) -> anyhow::Result<String> {
    let base = url.trim_end_matches('/');
    anyhow::ensure!(
        base.starts_with("http://"),
        "--url must look like http://host:port (got {url:?})"
    );
    Ok(base.to_string())
}

/// A random tag that keeps this run's keys apart from any other run's.
pub fn run_id() -> String {
    format!("{:08x}", fastrand::u32(..))
}

/// Parses a size such as `256MB`, `1GB`, `64KiB` or `4096`. Units are binary:
/// `KB` = `KiB` = 1024 bytes, `MB` = 2^20, `GB` = 2^30.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 256MB or 1GB"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use KB, MB or GB)")),
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("{s:?}: size must be between 1 byte and 16 EiB")),
        Some(v) => Ok(v),
    }
}

/// A size for humans: `256MB`, `1GB`, `1500B`.
pub fn show_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB")];
    for (mult, unit) in UNITS {
        if bytes >= mult && bytes.is_multiple_of(mult) {
            return format!("{}{unit}", bytes / mult);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MB"), Ok(256 << 20));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("1gib"), Ok(1 << 30));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0MB").is_err());
        assert!(parse_size("big").is_err());
        assert!(parse_size("1TB").is_err());
        assert!(parse_size("99999999999GB").is_err());
        assert_eq!(show_size(256 << 20), "256MB");
        assert_eq!(show_size(1 << 30), "1GB");
        assert_eq!(show_size(1500), "1500B");
    }

    #[test]
    fn urls() {
        assert_eq!(
            base_url("http://127.0.0.1:3000/").unwrap(),
            "http://127.0.0.1:3000"
        );
        assert!(base_url("127.0.0.1:3000").is_err());
    }
}
