//! `hoard bench large`: PUT then GET of large values through the index server. The PUT
//! is streamed to every replica by the index; the GET is a redirect followed by a read
//! from one volume. Values are generated on the fly and checked byte for byte; with
//! `--server-pid`, the index server's VmRSS is sampled every 20 ms during each transfer.

use anyhow::bail;
use clap::Args;

use super::report::{emit, mib, rate, Table};
use super::transfer::{self, Transfer, Value};
use super::{base_url, http_client, parse_size, run_id, show_size, Output, Target};

/// Options of `hoard bench large`.
#[derive(Debug, Args, Clone)]
pub struct LargeArgs {
    /// The store to drive.
    #[command(flatten)]
    pub target: Target,
    /// Value sizes, comma separated (binary units: 1MB = 2^20 bytes).
    #[arg(long, value_delimiter = ',', default_value = "256MB,1GB", value_parser = parse_size)]
    pub sizes: Vec<u64>,
    /// Process id of the index server, to sample its resident memory (`VmRSS`).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

/// The JSON report of `hoard bench large`.
#[derive(Debug, serde::Serialize)]
struct Report {
    workload: &'static str,
    url: String,
    server_pid: Option<u32>,
    transfers: Vec<Transfer>,
    errors: u64,
    first_error: Option<String>,
}

/// `hoard bench large`.
pub async fn run(args: LargeArgs) -> anyhow::Result<()> {
    let base = base_url(&args.target.url)?;
    let client = http_client(1)?;
    let run = run_id();
    let mut transfers = Vec::new();
    let mut first_error = None;
    for &size in &args.sizes {
        let url = format!("{base}/bench-large-{run}-{}", show_size(size));
        if let Err(e) = one_size(
            &client,
            &url,
            size,
            "index",
            args.server_pid,
            &mut transfers,
        )
        .await
        {
            first_error = Some(format!("{} value: {e:#}", show_size(size)));
            break;
        }
    }
    let report = Report {
        workload: "large",
        url: base,
        server_pid: args.server_pid,
        transfers,
        errors: u64::from(first_error.is_some()),
        first_error,
    };
    emit(&report, &table(&report), args.output.json)?;
    match report.first_error {
        Some(e) => bail!("large failed: {e}"),
        None => Ok(()),
    }
}

/// PUT, GET and DELETE of one `size`-byte value at `url` (`via` the index or a volume),
/// sampling the RSS of `pid`. The DELETE is tried even if the rest failed, and its
/// failure is an error too.
pub async fn one_size(
    client: &reqwest::Client,
    url: &str,
    size: u64,
    via: &'static str,
    pid: Option<u32>,
    transfers: &mut Vec<Transfer>,
) -> anyhow::Result<()> {
    let value = Value::generate(size).await?;
    let result = async {
        transfers.push(transfer::put(client, url, &value, via, pid).await?);
        transfers.push(transfer::get(client, url, &value, via, pid).await?);
        anyhow::Ok(())
    }
    .await;
    let cleanup = transfer::delete(client, url).await;
    result?;
    cleanup
}

fn table(r: &Report) -> Table {
    let mut t = Table::new(
        format!("large: PUT then GET through the index -> {}", r.url),
        &[
            "transfer",
            "MB/s",
            "seconds",
            "verified",
            "idle MiB",
            "peak MiB",
            "delta MiB",
        ],
    );
    for x in &r.transfers {
        t.row(transfer_cells(x));
    }
    match r.server_pid {
        Some(pid) => t.note(format!("RSS of pid {pid}, sampled every 20 ms")),
        None => t.note("no --server-pid: RSS not sampled"),
    }
    t.note("MB = 10^6 bytes; sizes are binary (1GB = 2^30 bytes)");
    if let Some(e) = &r.first_error {
        t.note(format!("FAILED: {e}"));
    }
    t
}

/// The table cells of one transfer: name, MB/s, seconds, verified, RSS.
pub fn transfer_cells(x: &Transfer) -> Vec<String> {
    let mut cells = vec![
        format!("{} {} {}", x.op.to_uppercase(), x.size, x.via),
        rate(x.mb_per_sec),
        format!("{:.2}", x.seconds),
        match x.verified {
            Some(true) => "bytes+md5".into(),
            Some(false) => "NO".into(),
            None => "-".into(),
        },
    ];
    match &x.rss {
        Some(rss) => cells.extend([mib(rss.idle_kb), mib(rss.peak_kb), mib(rss.delta_kb)]),
        None => cells.extend(["-".to_string(), "-".into(), "-".into()]),
    }
    cells
}
