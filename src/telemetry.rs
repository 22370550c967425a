//! Metrics (Prometheus text format) and logging set-up, shared by every role.
//!
//! One recorder per process (in `hoard dev` the index and its three volumes share it);
//! every series carries a `role` label (`index` or `volume`). Metric names:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `hoard_http_requests_total` | counter | role, method, status |
//! | `hoard_http_request_duration_seconds` | histogram | role, method |
//! | `hoard_http_received_bytes_total`, `hoard_http_sent_bytes_total` | counter | role |
//! | `hoard_replica_write_duration_seconds` | histogram | volume |
//! | `hoard_volume_up`, `hoard_volume_last_seen_timestamp_seconds` | gauge | volume |
//! | `hoard_index_operation_duration_seconds` | histogram | op |
//! | `hoard_keys` | gauge | state |
//! | `hoard_stored_bytes`, `hoard_writes_in_flight` | gauge | |
//! | `hoard_disk_free_bytes`, `hoard_disk_total_bytes` | gauge | dir |
//! | `hoard_job_running`, `hoard_job_progress`, `hoard_job_eta_seconds` | gauge | kind, counter |
//! | `hoard_list_records_examined_total` | counter | |
//! | `hoard_list_streams` | gauge | |
//! | `hoard_site_lag_entries`, `hoard_site_lag_seconds` | gauge | target |
//! | `hoard_site_received_total` | counter | result |

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets (seconds) for every histogram: 100 µs to 60 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The latency bucket bounds (seconds) shared by every histogram and [`RequestTally`].
pub fn latency_buckets() -> &'static [f64] {
    BUCKETS
}

/// Totals of the index server's client requests (key operations and listings; not the
/// server's own `/-/` endpoints) since the process started: the same observations as
/// `hoard_http_requests_total` and `hoard_http_request_duration_seconds`, kept as plain
/// atomics so the dashboard's sampler reads them without rendering the exposition.
/// Fixed size: a few counters and one per latency bucket.
#[derive(Debug)]
pub struct RequestTally {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Requests per latency bucket: `buckets[i]` counts durations ≤ `BUCKETS[i]` and
    /// above the previous bound; the last slot counts those above every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
}

/// A copy of a [`RequestTally`] at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TallySnapshot {
    /// Requests answered.
    pub requests: u64,
    /// Of which server errors (5xx).
    pub errors: u64,
    /// Requests per latency bucket (see [`latency_buckets`]; one more slot for
    /// durations above the last bound).
    pub buckets: [u64; BUCKETS.len() + 1],
}

impl RequestTally {
    /// An empty tally.
    pub const fn new() -> Self {
        RequestTally {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
        }
    }

    /// Counts one answered request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// The totals now.
    pub fn snapshot(&self) -> TallySnapshot {
        TallySnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

impl Default for RequestTally {
    fn default() -> Self {
        Self::new()
    }
}

/// The index server's client requests, for the dashboard's charts (one per process: in
/// `hoard dev` only the index counts here, not its volumes).
pub static INDEX_TALLY: RequestTally = RequestTally::new();

/// Installs the process-wide recorder (once; later calls are no-ops).
pub fn init() {
    HANDLE.get_or_init(|| {
        let built = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .and_then(PrometheusBuilder::install_recorder);
        match built {
            Ok(handle) => {
                describe();
                spawn_upkeep(handle.clone());
                Some(handle)
            }
            Err(e) => {
                tracing::warn!("metrics disabled: {e}");
                None
            }
        }
    });
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The exporter buffers every histogram sample until an upkeep folds it into the
/// buckets; `install_recorder` (unlike `install`) does not schedule one, so without a
/// scrape the buffer grows with every request. Measured: ~40 bytes per request, 15 MB
/// per 400k GETs, before this thread existed.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!("metrics upkeep thread not started ({e}); memory grows until scraped");
    }
}

/// HELP texts, so the exposition passes `promtool check metrics`.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "hoard_http_requests_total",
        "HTTP requests answered, by role, method and status"
    );
    describe_histogram!(
        "hoard_http_request_duration_seconds",
        Unit::Seconds,
        "Time to the response head, by role and method"
    );
    describe_counter!(
        "hoard_http_received_bytes_total",
        Unit::Bytes,
        "Request body bytes stored"
    );
    describe_counter!(
        "hoard_http_sent_bytes_total",
        Unit::Bytes,
        "Response body bytes sent"
    );
    describe_histogram!(
        "hoard_replica_write_duration_seconds",
        Unit::Seconds,
        "Time for one replica to acknowledge a PUT, by volume"
    );
    describe_gauge!(
        "hoard_volume_up",
        "1 when the volume server answered its last probe"
    );
    describe_gauge!(
        "hoard_volume_last_seen_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last successful probe"
    );
    describe_histogram!(
        "hoard_index_operation_duration_seconds",
        Unit::Seconds,
        "Index operation latency (get, apply)"
    );
    describe_gauge!("hoard_keys", "Keys in the index, by state");
    describe_counter!(
        "hoard_scrub_objects_total",
        "Replicas the scrubber read and checked"
    );
    describe_counter!(
        "hoard_scrub_corrupt_total",
        "Corrupt or missing replicas the scrubber found"
    );
    describe_counter!(
        "hoard_scrub_repaired_total",
        "Replicas the scrubber re-created from a good copy"
    );
    describe_gauge!(
        "hoard_raft_term",
        "Raft term this index cluster member is in"
    );
    describe_gauge!("hoard_raft_is_leader", "1 while this member leads");
    describe_gauge!(
        "hoard_raft_last_applied",
        "Index of the last log entry applied to this member's index"
    );
    describe_gauge!(
        "hoard_raft_apply_lag",
        "On the leader, per member: log entries it has not yet replicated there"
    );
    describe_counter!(
        "hoard_raft_leader_changes_total",
        "Leaders this member has seen take over (elections won by anyone)"
    );
    describe_gauge!(
        "hoard_stored_bytes",
        Unit::Bytes,
        "Bytes of live and unlinked values (one copy)"
    );
    describe_gauge!(
        "hoard_writes_in_flight",
        "Writes (PUT, DELETE, UNLINK) in progress"
    );
    describe_gauge!(
        "hoard_disk_free_bytes",
        Unit::Bytes,
        "Free bytes on a volume's filesystem"
    );
    describe_gauge!(
        "hoard_disk_total_bytes",
        Unit::Bytes,
        "Size of a volume's filesystem"
    );
    describe_gauge!(
        "hoard_job_running",
        "1 while a background job (rebalance, verify) runs"
    );
    describe_gauge!(
        "hoard_job_progress",
        "Counters of the running or last background job, by kind and counter"
    );
    describe_counter!(
        "hoard_list_records_examined_total",
        "Index records examined by ?list / ?unlinked scans"
    );
    describe_gauge!(
        "hoard_list_streams",
        "Unlimited listings whose body is being streamed"
    );
    describe_gauge!(
        "hoard_job_eta_seconds",
        Unit::Seconds,
        "Estimated time left of the running or last background job"
    );
    describe_gauge!(
        "hoard_site_lag_entries",
        "Changes not yet acknowledged by a --replicate-to target"
    );
    describe_gauge!(
        "hoard_site_lag_seconds",
        Unit::Seconds,
        "Age of the oldest change not yet acknowledged by a --replicate-to target"
    );
    describe_counter!(
        "hoard_volume_corrupt_reads_total",
        "Whole-file GETs whose bytes differed from the checksum stored with the file (refused or cut short)"
    );
    describe_counter!(
        "hoard_corrupt_replicas_total",
        "Replicas a read found differing from the record's md5 (queued for repair)"
    );
    describe_counter!(
        "hoard_corrupt_replicas_repaired_total",
        "Corrupt replicas rewritten from a good replica"
    );
    describe_counter!(
        "hoard_site_received_total",
        "Changes received from other sites: applied, superseded (older or already held), failed"
    );
    describe_counter!(
        "hoard_raft_campaigns_ahead_total",
        "Elections this member started past a candidate whose log was behind its own"
    );
    describe_counter!(
        "hoard_raft_quorum_lost_total",
        "Requests this member failed at once because it led without a quorum (cut off)"
    );
    describe_counter!(
        "hoard_raft_read_index_total",
        "Linearizable reads confirmed by this leader, by how (lease or quorum round)"
    );
    describe_gauge!(
        "hoard_zone_volumes",
        "Volumes of the placement in force, by failure zone"
    );
    describe_gauge!("hoard_zone_volumes_up", "Volumes up, by failure zone");
    describe_counter!(
        "hoard_proto_requests_total",
        "Binary-protocol requests, by op and result (op refused: frames refused before parsing)"
    );
    describe_gauge!(
        "hoard_proto_connections",
        "Open binary-protocol connections"
    );
    describe_counter!(
        "hoard_cache_requests_total",
        "Value-cache lookups of cacheable values, by result (hit or miss)"
    );
    describe_counter!(
        "hoard_volume_syncs_total",
        "Filesystem syncs of a volume with --fsync interval=…, by result (ok or error)"
    );
    describe_gauge!(
        "hoard_cache_bytes",
        Unit::Bytes,
        "Bytes held by the value cache (values, keys and per-entry overhead)"
    );
}

/// The current metrics in Prometheus text format.
pub fn render() -> String {
    match HANDLE.get() {
        Some(Some(handle)) => {
            handle.run_upkeep();
            handle.render()
        }
        _ => String::new(),
    }
}

/// An `axum` response with the metrics and the Prometheus content type.
pub fn response() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(),
    )
        .into_response()
}

/// Records one finished HTTP request.
pub fn record_request(
    role: &'static str,
    method: &str,
    status: u16,
    started: Instant,
    received: u64,
    sent: u64,
) {
    let method = normal_method(method);
    metrics::counter!("hoard_http_requests_total", "role" => role, "method" => method, "status" => status_label(status))
        .increment(1);
    metrics::histogram!("hoard_http_request_duration_seconds", "role" => role, "method" => method)
        .record(started.elapsed().as_secs_f64());
    if received > 0 {
        metrics::counter!("hoard_http_received_bytes_total", "role" => role).increment(received);
    }
    if sent > 0 {
        metrics::counter!("hoard_http_sent_bytes_total", "role" => role).increment(sent);
    }
}

/// The status as a label value, without allocating for the common ones.
fn status_label(status: u16) -> metrics::SharedString {
    let known: &'static str = match status {
        200 => "200",
        201 => "201",
        204 => "204",
        206 => "206",
        301 => "301",
        302 => "302",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        411 => "411",
        413 => "413",
        414 => "414",
        416 => "416",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return other.to_string().into(),
    };
    known.into()
}

/// Keeps label cardinality bounded: unknown methods are one label value.
fn normal_method(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "UNLINK" => "UNLINK",
        "POST" => "POST",
        "REBALANCE" => "REBALANCE",
        _ => "other",
    }
}

/// Records how long an index operation took.
pub fn record_index_op(op: &'static str, started: Instant) {
    metrics::histogram!("hoard_index_operation_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
}

/// Counts the records one listing scan examined.
pub fn record_list_scan(examined: usize) {
    metrics::counter!("hoard_list_records_examined_total").increment(examined as u64);
}

/// A streamed listing in progress: `hoard_list_streams` counts it from
/// [`ListStream::start`] until this is dropped (with the response body).
#[derive(Debug)]
pub struct ListStream(());

impl ListStream {
    /// Counts one more streamed listing.
    pub fn start() -> Self {
        metrics::gauge!("hoard_list_streams").increment(1.0);
        ListStream(())
    }
}

impl Drop for ListStream {
    fn drop(&mut self) {
        metrics::gauge!("hoard_list_streams").decrement(1.0);
    }
}

/// Free and total bytes of the filesystem holding `dir`, via statvfs.
pub fn disk_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of
    // the right type; statvfs fully initialises it when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 on some); widen explicitly.
    #[allow(clippy::unnecessary_cast)]
    let (frsize, bavail, blocks) = (st.f_frsize as u64, st.f_bavail as u64, st.f_blocks as u64);
    Some((bavail * frsize, blocks * frsize))
}

/// Sets the disk gauges for `dir` and returns (free, total).
pub fn observe_disk(dir: &Path) -> Option<(u64, u64)> {
    let (free, total) = disk_space(dir)?;
    let label = dir.display().to_string();
    metrics::gauge!("hoard_disk_free_bytes", "dir" => label.clone()).set(free as f64);
    metrics::gauge!("hoard_disk_total_bytes", "dir" => label).set(total as f64);
    Some((free, total))
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Sets up `tracing`: `HOARD_LOG` (an env-filter directive) or `info` for hoard's own
/// messages; warnings and errors are always shown — except the s3s crate's, which logs
/// every refused client request (bad signature, malformed XML) as an error: those
/// already went back to the client as S3 errors (`HOARD_LOG=…,s3s=debug` shows them).
/// Text logs are coloured only when stderr is a terminal (and `NO_COLOR` is unset):
/// files, pipes and journald get plain text. With `tracer` (trace export on, see
/// [`crate::otel`]) hoard's request spans also go to OpenTelemetry, whatever `HOARD_LOG`
/// says, and JSON log lines logged inside a request carry its `trace_id`.
pub fn init_logging(format: LogFormat, tracer: Option<opentelemetry_sdk::trace::Tracer>) {
    use tracing_subscriber::filter::{EnvFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = EnvFilter::try_from_env("HOARD_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,hoard=info,s3s=off"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(use_colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let traces = tracer.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_filter(Targets::new().with_target("hoard", tracing::Level::INFO))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(traces)
        .try_init();
}

/// Whether text logs carry ANSI colour codes: only on a terminal, and not when
/// `NO_COLOR` is set to anything non-empty (<https://no-color.org>).
fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal() {
        assert!(use_colour(true, None));
        assert!(!use_colour(false, None));
        assert!(!use_colour(true, Some("1".as_ref())));
        assert!(use_colour(true, Some("".as_ref())));
    }

    #[test]
    fn disk_space_of_tmp() {
        let (free, total) = disk_space(&std::env::temp_dir()).unwrap();
        assert!(total > 0 && free <= total);
        assert!(disk_space(Path::new("/definitely/not/here")).is_none());
    }

    #[test]
    fn status_labels() {
        assert_eq!(status_label(302).as_ref(), "302");
        assert_eq!(status_label(418).as_ref(), "418");
    }

    #[test]
    fn tally_buckets() {
        let t = RequestTally::new();
        t.record(200, Duration::from_micros(50));
        t.record(503, Duration::from_millis(3));
        t.record(200, Duration::from_secs(100));
        let s = t.snapshot();
        assert_eq!((s.requests, s.errors), (3, 1));
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[5], 1, "3 ms falls in (2.5 ms, 5 ms]");
        assert_eq!(s.buckets[BUCKETS.len()], 1);
        assert_eq!(s.buckets.iter().sum::<u64>(), 3);
    }

    #[test]
    fn methods_are_bounded() {
        assert_eq!(normal_method("GET"), "GET");
        assert_eq!(normal_method("BREW"), "other");
    }
}
