//! `hoard bench baseline`: the physical limits the store's numbers are compared with —
//! PUT/GET of the `large` sizes straight to one volume server (no index, one copy), and
//! the raw disk under `--dir`: sequential writes ended by one fdatasync (what
//! `dd bs=1M conv=fdatasync` measures), small appends each followed by fdatasync, and
//! (with `--small-files N`) raw small-file create / rename / unlink / mkdir rates
//! ([`super::files`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context as _};
use clap::Args;

use super::data::{Prng, BLOCK};
use super::large::{one_size, transfer_cells};
use super::report::{emit, latency_cells, mb_per_s, rate, Table};
use super::stats::{Histogram, Latency};
use super::transfer::Transfer;
use super::{http_client, parse_size, run_id, show_size, Output};

/// Options of `hoard bench baseline`.
#[derive(Debug, Args, Clone)]
pub struct BaselineArgs {
    /// A volume server (`host:port`) to PUT/GET/DELETE directly.
    #[arg(long)]
    pub volume: Option<String>,
    /// Path prefix on the volume for the test files.
    #[arg(long, default_value = "/bench")]
    pub prefix: String,
    /// Value sizes for the volume, comma separated (binary units).
    #[arg(long, value_delimiter = ',', default_value = "256MB,1GB", value_parser = parse_size)]
    pub sizes: Vec<u64>,
    /// A directory on the disk to measure (e.g. where the volumes keep their files).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Bytes written in 1 MiB writes before the single fdatasync.
    #[arg(long, default_value = "256MB", value_parser = parse_size)]
    pub disk_size: u64,
    /// Small appends, each followed by fdatasync.
    #[arg(long, default_value_t = 200)]
    pub fsync_count: u32,
    /// Size of each small append.
    #[arg(long, default_value = "4KB", value_parser = parse_size)]
    pub fsync_size: u64,
    /// Also measure raw small-file create / rename / unlink / mkdir rates under --dir
    /// over this many files (0: skip).
    #[arg(long, default_value_t = 0)]
    pub small_files: u32,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

/// Sequential write bandwidth of the disk.
#[derive(Debug, serde::Serialize)]
struct DiskWrite {
    dir: PathBuf,
    bytes: u64,
    write_size: usize,
    seconds: f64,
    mb_per_sec: f64,
}

/// Small synchronous appends.
#[derive(Debug, serde::Serialize)]
struct FsyncRate {
    count: u32,
    write_bytes: u64,
    per_sec: f64,
    latency: Latency,
}

/// The JSON report of `hoard bench baseline`.
#[derive(Debug, serde::Serialize)]
struct Report {
    workload: &'static str,
    volume: Option<String>,
    transfers: Vec<Transfer>,
    disk: Option<DiskWrite>,
    fsync: Option<FsyncRate>,
    small_files: Option<super::files::SmallFiles>,
    errors: u64,
    first_error: Option<String>,
}

/// `hoard bench baseline`.
pub async fn run(args: BaselineArgs) -> anyhow::Result<()> {
    ensure!(
        args.volume.is_some() || args.dir.is_some(),
        "give --volume host:port, --dir DIR, or both"
    );
    let mut transfers = Vec::new();
    let mut first_error = None;
    if let Some(volume) = &args.volume {
        let client = http_client(1)?;
        let prefix = args.prefix.trim_end_matches('/');
        let run = run_id();
        for &size in &args.sizes {
            let url = format!("http://{volume}{prefix}/baseline-{run}-{}", show_size(size));
            let done = one_size(&client, &url, size, "volume", None, &mut transfers).await;
            if let Err(e) = done {
                first_error = Some(format!("{} value on {volume}: {e:#}", show_size(size)));
                break;
            }
        }
    }
    let (mut disk, mut fsync, mut small_files) = (None, None, None);
    if let (Some(dir), None) = (args.dir.clone(), &first_error) {
        let (size, count, small) = (args.disk_size, args.fsync_count, args.fsync_size);
        let files = args.small_files;
        let measured = tokio::task::spawn_blocking(move || {
            let d = disk_write(&dir, size)?;
            let f = fsync_rate(&dir, count, small)?;
            let s = (files > 0)
                .then(|| super::files::measure(&dir, files))
                .transpose()?;
            anyhow::Ok((d, f, s))
        })
        .await
        .context("the disk measurement panicked")
        .and_then(|r| r);
        match measured {
            Ok((d, f, s)) => (disk, fsync, small_files) = (Some(d), Some(f), s),
            Err(e) => first_error = Some(format!("{e:#}")),
        }
    }
    let report = Report {
        workload: "baseline",
        volume: args.volume.clone(),
        transfers,
        disk,
        fsync,
        small_files,
        errors: u64::from(first_error.is_some()),
        first_error,
    };
    emit(&report, &table(&report), args.output.json)?;
    match report.first_error {
        Some(e) => bail!("baseline failed: {e}"),
        None => Ok(()),
    }
}

/// A scratch file under `dir`, removed when dropped.
struct Scratch {
    path: PathBuf,
    file: std::fs::File,
}

impl Scratch {
    fn create(dir: &Path, what: &str) -> anyhow::Result<Scratch> {
        let path = dir.join(format!(".hoard-bench-{what}-{}", run_id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Scratch { path, file })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `size` bytes in 1 MiB writes, then one fdatasync; the time includes it.
fn disk_write(dir: &Path, size: u64) -> anyhow::Result<DiskWrite> {
    let mut scratch = Scratch::create(dir, "write")?;
    let mut block = vec![0u8; BLOCK];
    Prng::new(fastrand::u64(..)).fill(&mut block);
    let t = Instant::now();
    let mut left = size;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        scratch
            .file
            .write_all(&block[..n])
            .with_context(|| format!("writing {}", scratch.path.display()))?;
        left -= n as u64;
    }
    scratch
        .file
        .sync_data()
        .with_context(|| format!("fdatasync {}", scratch.path.display()))?;
    let seconds = t.elapsed().as_secs_f64();
    Ok(DiskWrite {
        dir: dir.to_path_buf(),
        bytes: size,
        write_size: BLOCK,
        seconds,
        mb_per_sec: mb_per_s(size, seconds),
    })
}

/// `count` appends of `size` bytes, each followed by fdatasync (so each also commits
/// the file's new length, as a volume's first write of a new file does).
fn fsync_rate(dir: &Path, count: u32, size: u64) -> anyhow::Result<FsyncRate> {
    ensure!(count > 0, "--fsync-count must be at least 1");
    let mut scratch = Scratch::create(dir, "fsync")?;
    let mut buf = vec![0u8; usize::try_from(size).context("--fsync-size too large")?];
    Prng::new(fastrand::u64(..)).fill(&mut buf);
    let mut hist = Histogram::default();
    let t = Instant::now();
    for _ in 0..count {
        let one = Instant::now();
        scratch.file.write_all(&buf)?;
        scratch
            .file
            .sync_data()
            .with_context(|| format!("fdatasync {}", scratch.path.display()))?;
        hist.record(one.elapsed());
    }
    let seconds = t.elapsed().as_secs_f64();
    Ok(FsyncRate {
        count,
        write_bytes: size,
        per_sec: f64::from(count) / seconds,
        latency: hist.summary(),
    })
}

fn table(r: &Report) -> Table {
    let mut t = Table::new(
        "baseline: physical limits",
        &["measurement", "MB/s", "seconds", "verified"],
    );
    for x in &r.transfers {
        let mut cells = transfer_cells(x);
        cells.truncate(4);
        t.row(cells);
    }
    if let Some(d) = &r.disk {
        t.row(vec![
            format!("disk write {} + fdatasync", show_size(d.bytes)),
            rate(d.mb_per_sec),
            format!("{:.2}", d.seconds),
        ]);
    }
    if let Some(f) = &r.fsync {
        let l = latency_cells(&f.latency);
        t.note(format!(
            "{} x {} append + fdatasync: {}/s, p50 {} ms, p99 {} ms, max {} ms",
            f.count,
            show_size(f.write_bytes),
            rate(f.per_sec),
            l[1],
            l[2],
            l[3]
        ));
    }
    if let Some(s) = &r.small_files {
        t.note(format!(
            "{} small files, one thread, no fsync: create+write+close {}/s, rename {}/s, \
             unlink {}/s, mkdir {}/s",
            s.count,
            rate(s.create_write_close_per_sec),
            rate(s.rename_per_sec),
            rate(s.unlink_per_sec),
            rate(s.mkdir_per_sec)
        ));
    }
    if let Some(d) = &r.disk {
        t.note(format!("disk: {}", d.dir.display()));
    }
    t.note("MB = 10^6 bytes; sizes are binary (1GB = 2^30 bytes)");
    if let Some(e) = &r.first_error {
        t.note(format!("FAILED: {e}"));
    }
    t
}
