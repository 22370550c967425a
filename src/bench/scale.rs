//! `hoard bench index-scale`: fills a new index with N synthetic records through the
//! bulk-load path ([`BulkLoad`], what rebuild uses — not N HTTP PUTs) and measures the
//! index itself at that size: bytes per key on disk, open time, point-lookup latency,
//! a full listing scan (the scans `?list` pages through), and the HA snapshot (export
//! size and time, and optionally the install — import — a new member does).
//!
//! The records look like real ones: keys of `--key-len` bytes in one sorted range,
//! `--replicas` locations `host:port/svXX` chosen by the real placement over
//! `--volumes`, a size and an md5. The index directory is left for the HTTP half of the
//! scale benchmark (`scripts/bench-scale.sh`: start-up, GET redirects, listings over
//! HTTP); delete it afterwards.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context as _};
use clap::Args;
use md5::{Digest, Md5};

use super::report::{emit, ms, rate, Table};
use super::stats::{Histogram, Latency};
use super::Output;
use crate::index::{BulkLoad, Index, KeyRange, Record, State, MAX_PAGE_KEYS, PAGE_BUDGET};
use crate::placement::Placement;

/// Options of `hoard bench index-scale`.
#[derive(Debug, Args, Clone)]
pub struct IndexScaleArgs {
    /// Directory of the new index (must not hold one).
    #[arg(long)]
    pub db: PathBuf,
    /// Records to write.
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Length of each key in bytes (at least 24).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(24..=1000))]
    pub key_len: u64,
    /// Volume servers the records point at (`host:port`, comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10.0.0.11:3001,10.0.0.12:3001,10.0.0.13:3001"
    )]
    pub volumes: Vec<String>,
    /// Replicas per record.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Subvolumes per volume.
    #[arg(long, default_value_t = 10)]
    pub subvolumes: u32,
    /// Point lookups timed.
    #[arg(long, default_value_t = 100_000)]
    pub lookups: u64,
    /// Also install the snapshot into a second new index (as a joining HA member
    /// does), timed; needs as much disk again.
    #[arg(long)]
    pub import: bool,
    /// Write the records in the legacy encoding (versions 1–5, before compact records)
    /// to compare; the index is left for `hoard server` to migrate.
    #[arg(long)]
    pub legacy_format: bool,
    /// With `--legacy-format`: at the end, migrate the index to the compact encoding
    /// in-process (the batches `hoard server` runs in the background, without their
    /// pauses), timed, and measure the file again; then open it once more (the open
    /// after a migration compacts the file), timed, and measure it again.
    #[arg(long, requires = "legacy_format")]
    pub migrate: bool,
    /// Output format.
    #[command(flatten)]
    pub output: Output,
}

/// The report of `hoard bench index-scale`.
#[derive(Debug, serde::Serialize)]
struct Report {
    workload: &'static str,
    keys: u64,
    key_len: u64,
    replicas: usize,
    /// `compact` or `legacy`.
    record_format: &'static str,
    fill_s: f64,
    fill_keys_per_s: f64,
    file_bytes: u64,
    bytes_per_key: f64,
    open_s: f64,
    lookup: Latency,
    lookups_per_s: f64,
    scan_s: f64,
    scan_keys_per_s: f64,
    snapshot_bytes: u64,
    snapshot_export_s: f64,
    snapshot_import_s: Option<f64>,
    /// `--migrate`: seconds to migrate every record, and the file's bytes per key after.
    migrate_s: Option<f64>,
    bytes_per_key_migrated: Option<f64>,
    /// `--migrate`: the longest migration batch (one write transaction, which holds
    /// the index writer), the last one (the swap) included.
    migrate_longest_batch_ms: Option<f64>,
    /// `--migrate`: seconds the next open took (it compacts the file once), and the
    /// file's bytes per key after it.
    reopen_after_migration_s: Option<f64>,
    bytes_per_key_after_reopen: Option<f64>,
    /// A key that exists, for the HTTP half of the benchmark.
    sample_key: String,
}

/// Key number `i`, `len` bytes, sorting in number order.
fn key_of(i: u64, len: usize) -> Vec<u8> {
    let mut k = format!("/bench/scale/{i:010}/").into_bytes();
    k.resize(len.max(k.len()), b'x');
    k
}

/// `hoard bench index-scale`.
pub async fn run(args: IndexScaleArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || measure(&args))
        .await
        .context("the benchmark panicked")?
}

fn measure(args: &IndexScaleArgs) -> anyhow::Result<()> {
    ensure!(args.keys > 0, "--keys must be at least 1");
    let placement = Placement::new(args.volumes.clone(), args.replicas, args.subvolumes)?;
    let len = args.key_len as usize;
    let now = crate::clock::now_ms();

    let started = Instant::now();
    let mut bulk = BulkLoad::create(&args.db, 64 << 20)?;
    if args.legacy_format {
        bulk = bulk.legacy()?;
    }
    let mut batch = Vec::with_capacity(50_000);
    for i in 0..args.keys {
        let key = key_of(i, len);
        let record = Record {
            state: State::Live,
            volumes: placement.locate(&key),
            size: 1024 + i % 4096,
            md5: Some(Md5::digest(&key).into()),
            changed_ms: now,
            missing: Vec::new(),
            stale: Vec::new(),
            owner: 0,
            meta: Vec::new(),
            inline: None,
            gen: 0,
        };
        batch.push((key, record));
        if batch.len() == batch.capacity() {
            bulk.append(&batch)?;
            batch.clear();
        }
    }
    bulk.append(&batch)?;
    drop(batch);
    bulk.finish()?;
    let fill_s = started.elapsed().as_secs_f64();
    let file_bytes = std::fs::metadata(args.db.join("index.redb"))?.len();

    let started = Instant::now();
    let index = Index::open_with(&args.db, !args.legacy_format)?;
    let open_s = started.elapsed().as_secs_f64();

    // Point lookups of keys spread over the whole range (a fixed LCG walk).
    let mut hist = Histogram::default();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let started = Instant::now();
    for _ in 0..args.lookups {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let key = key_of((x >> 11) % args.keys, len);
        let t = Instant::now();
        let found = index.get(&key)?;
        hist.record(t.elapsed());
        ensure!(
            found.is_some(),
            "key {} missing",
            String::from_utf8_lossy(&key)
        );
    }
    let lookup_s = started.elapsed().as_secs_f64();

    // The whole index in listing pages, as `?list` pages through it.
    let started = Instant::now();
    let mut range = KeyRange::prefix(b"", None);
    let mut listed = 0u64;
    loop {
        let page = index.scan_range(&range, State::Live, MAX_PAGE_KEYS, PAGE_BUDGET)?;
        listed += page.keys.len() as u64;
        match page.next {
            Some(next) => range.resume(next),
            None => break,
        }
    }
    let scan_s = started.elapsed().as_secs_f64();
    ensure!(listed == args.keys, "listed {listed} of {} keys", args.keys);

    // The HA snapshot: export (what the leader streams), then optionally install it.
    let snapshot = args.db.with_extension("snapshot");
    let started = Instant::now();
    let mut out = std::io::BufWriter::new(std::fs::File::create(&snapshot)?);
    index.export(&mut out, &[])?;
    out.flush()?;
    drop(out);
    let snapshot_export_s = started.elapsed().as_secs_f64();
    let snapshot_bytes = std::fs::metadata(&snapshot)?.len();
    let snapshot_import_s = if args.import {
        let dir = args.db.with_extension("imported");
        let started = Instant::now();
        let fresh = Index::open(&dir)?;
        let mut input = std::io::BufReader::new(std::fs::File::open(&snapshot)?);
        let n = fresh.import(&mut input, &[])?;
        fresh.close();
        let s = started.elapsed().as_secs_f64();
        std::fs::remove_dir_all(&dir)?;
        ensure!(n == args.keys, "imported {n} of {} keys", args.keys);
        Some(s)
    } else {
        None
    };
    std::fs::remove_file(&snapshot)?;
    let mut longest_batch = 0.0f64;
    let (migrate_s, bytes_per_key_migrated) = if args.migrate {
        let started = Instant::now();
        loop {
            let batch = Instant::now();
            let done = index.migrate_batch(crate::index::MIGRATION_BATCH)?;
            longest_batch = longest_batch.max(batch.elapsed().as_secs_f64());
            if done {
                break;
            }
        }
        let s = started.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(args.db.join("index.redb"))?.len();
        (Some(s), Some(bytes as f64 / args.keys as f64))
    } else {
        (None, None)
    };
    index.close();
    // The next open after a migration compacts the file (what a restarted server does).
    let (reopen_s, bytes_per_key_reopened) = if args.migrate {
        let started = Instant::now();
        Index::open_with(&args.db, false)?.close();
        let s = started.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(args.db.join("index.redb"))?.len();
        (Some(s), Some(bytes as f64 / args.keys as f64))
    } else {
        (None, None)
    };

    let per_s = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    let report = Report {
        workload: "index-scale",
        keys: args.keys,
        key_len: args.key_len,
        replicas: args.replicas,
        record_format: if args.legacy_format {
            "legacy"
        } else {
            "compact"
        },
        fill_s,
        fill_keys_per_s: per_s(args.keys, fill_s),
        file_bytes,
        bytes_per_key: file_bytes as f64 / args.keys as f64,
        open_s,
        lookup: hist.summary(),
        lookups_per_s: per_s(args.lookups, lookup_s),
        scan_s,
        scan_keys_per_s: per_s(args.keys, scan_s),
        snapshot_bytes,
        snapshot_export_s,
        snapshot_import_s,
        migrate_s,
        bytes_per_key_migrated,
        migrate_longest_batch_ms: args.migrate.then_some(longest_batch * 1000.0),
        reopen_after_migration_s: reopen_s,
        bytes_per_key_after_reopen: bytes_per_key_reopened,
        sample_key: String::from_utf8_lossy(&key_of(args.keys / 2, len)).into_owned(),
    };
    emit(&report, &table(&report), args.output.json)
}

fn table(r: &Report) -> Table {
    let mut t = Table::new(
        format!(
            "index at {} keys ({}-byte keys, {} replicas, {} records)",
            r.keys, r.key_len, r.replicas, r.record_format
        ),
        &["measure", "value"],
    );
    let mut row = |a: &str, b: String| t.row(vec![a.into(), b]);
    row("bulk fill keys/s", rate(r.fill_keys_per_s));
    row("bytes per key on disk", format!("{:.1}", r.bytes_per_key));
    row("open s", format!("{:.3}", r.open_s));
    row("lookup p50 ms", ms(r.lookup.p50_ms));
    row("lookup p99 ms", ms(r.lookup.p99_ms));
    row("lookups/s (1 thread)", rate(r.lookups_per_s));
    row("full listing scan keys/s", rate(r.scan_keys_per_s));
    row(
        "snapshot MB",
        format!("{:.1}", r.snapshot_bytes as f64 / 1e6),
    );
    row("snapshot export s", format!("{:.2}", r.snapshot_export_s));
    if let Some(s) = r.snapshot_import_s {
        row("snapshot import s", format!("{s:.2}"));
    }
    if let (Some(s), Some(b)) = (r.migrate_s, r.bytes_per_key_migrated) {
        row("migration to compact s", format!("{s:.2}"));
        if let Some(ms) = r.migrate_longest_batch_ms {
            row("longest migration batch ms", format!("{ms:.1}"));
        }
        row("bytes per key on disk after migration", format!("{b:.1}"));
    }
    if let (Some(s), Some(b)) = (r.reopen_after_migration_s, r.bytes_per_key_after_reopen) {
        row("next open (compacts the file) s", format!("{s:.2}"));
        row("bytes per key on disk after that open", format!("{b:.1}"));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::key_of;

    #[test]
    fn keys_sort_in_number_order_at_the_asked_length() {
        assert_eq!(key_of(7, 30), b"/bench/scale/0000000007/xxxxxx".to_vec());
        assert!(key_of(9, 50) < key_of(10, 50));
        assert!(key_of(999, 24) < key_of(1000, 24));
        assert_eq!(
            key_of(1, 10).len(),
            24,
            "never shorter than the numbered prefix"
        );
    }
}
