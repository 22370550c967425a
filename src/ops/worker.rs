//! The background-job mechanism shared by rebalance, verify (and later the scrubber):
//! live progress counters, a throttle, cancellation, and at most one job at a time per
//! server ([`Worker`]). Offline CLI runs use the same [`Job`] without a [`Worker`].

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::OpsError;
use crate::clock::now_ms;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Reconstruct the index from the volumes' listings.
    Rebuild,
    /// Move every key to its placement.
    Rebalance,
    /// Check (and repair) every replica, intent and orphan.
    Verify,
}

impl JobKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Rebuild => "rebuild",
            JobKind::Rebalance => "rebalance",
            JobKind::Verify => "verify",
        }
    }
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters of a job, updated concurrently by its tasks.
        #[derive(Debug, Default)]
        pub struct Progress {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of [`Progress`] at one instant.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct Counts {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Progress {
            /// Reads every counter.
            pub fn snapshot(&self) -> Counts {
                Counts { $($name: self.$name.load(Relaxed),)* }
            }

            /// Counters that start from `c` (a job resumed elsewhere).
            pub fn from_counts(c: &Counts) -> Progress {
                Progress { $($name: AtomicU64::new(c.$name),)* }
            }
        }
    };
}

counters! {
    /// Keys in the index when the job started (0 = unknown), for the ETA.
    total,
    /// Keys examined.
    scanned,
    /// Keys found in order (balanced, all replicas good).
    ok,
    /// Keys left alone: a write or delete intent (verify handles those).
    skipped,
    /// Keys moved to their placement (rebalance).
    moved,
    /// Replicas re-created from a good copy (verify --repair).
    repaired,
    /// Keys whose move or repair failed; see the log.
    failed,
    /// Keys skipped because a request held their lock, even after retries.
    busy,
    /// Replicas or volumes that could not be reached, so were not checked.
    unreachable,
    /// Bytes copied, hashed or listed.
    bytes,
    /// Replicas missing.
    missing,
    /// Replicas with the wrong size, or the wrong md5 (`--deep`).
    corrupt,
    /// Keys whose replicas disagree with no majority: nothing was repaired.
    conflicts,
    /// Unknown md5s recorded (`--deep`).
    md5_filled,
    /// `writing` intents older than the grace period (left by a crash).
    stale_intents,
    /// Stale intents rolled back: replica files deleted, record dropped.
    intents_rolled_back,
    /// `deleting` records (interrupted deletes).
    stale_deletes,
    /// Interrupted deletes finished.
    deletes_finished,
    /// Value files seen in volume listings.
    files_listed,
    /// Files on volumes that no record refers to, older than the grace period.
    orphans,
    /// Orphans deleted.
    orphans_deleted,
    /// Old replicas a rebalance could not delete (left as orphans for verify).
    cleanup_failed,
    /// Keys whose replicas span fewer zones than the placement allows (verify; with
    /// `--repair` they are moved to their placement, counted in `moved`).
    unspread,
}

/// Adds one to `counter`.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// A speed limit: keys per second or bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rate {
    /// Keys worked on (moved, verified) per second.
    KeysPerSec(f64),
    /// Bytes copied or read per second.
    BytesPerSec(f64),
}

impl FromStr for Rate {
    type Err = String;

    /// `200` or `200/s` (keys per second); `50MB/s`, `20MiB/s`, `1GB/s`, `800KB/s`,
    /// `4096B/s` (bytes per second).
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let t = t.strip_suffix("/s").unwrap_or(t);
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a rate like 200 (keys/s) or 50MB/s"))?;
        if !(n.is_finite() && n > 0.0) {
            return Err(format!("{s:?}: the rate must be positive"));
        }
        let scale = match unit.trim() {
            "" | "keys" => return Ok(Rate::KeysPerSec(n)),
            "B" => 1.0,
            "KB" | "kB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            other => return Err(format!("{s:?}: unknown unit {other:?}")),
        };
        Ok(Rate::BytesPerSec(n * scale))
    }
}

/// Paces a job to a [`Rate`]: each unit of work is charged, and the caller sleeps until
/// the total charged is back on schedule since the job started.
#[derive(Debug)]
pub struct Throttle {
    rate: Option<Rate>,
    start: Instant,
    charged: AtomicU64,
}

impl Throttle {
    /// A throttle for `rate`; `None` never waits.
    pub fn new(rate: Option<Rate>) -> Self {
        Throttle {
            rate,
            start: Instant::now(),
            charged: AtomicU64::new(0),
        }
    }

    /// Charges `n` keys; waits if the limit is in keys per second.
    pub async fn keys(&self, n: u64) {
        if let Some(Rate::KeysPerSec(r)) = self.rate {
            self.charge(n, r).await;
        }
    }

    /// Charges `n` bytes; waits if the limit is in bytes per second.
    pub async fn bytes(&self, n: u64) {
        if let Some(Rate::BytesPerSec(r)) = self.rate {
            self.charge(n, r).await;
        }
    }

    async fn charge(&self, n: u64, rate: f64) {
        let total = self.charged.fetch_add(n, Relaxed) + n;
        let due = self.start + Duration::from_secs_f64(total as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
    }
}

/// How a job ended, or that it is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Still working.
    Running,
    /// Finished; see the counters for what it found.
    Done,
    /// Stopped by [`Worker::cancel`].
    Cancelled,
    /// Stopped by an error (in `error`).
    Failed,
}

/// A snapshot of one job, as served by `GET /-/admin/status` and printed by the CLI.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// Job number, counting from 1 since the server started.
    pub id: u64,
    /// What it does.
    pub kind: JobKind,
    /// Its options, as given.
    pub params: serde_json::Value,
    /// Running or how it ended.
    pub state: JobState,
    /// Unix ms when it started.
    pub started_ms: u64,
    /// Seconds since it started (until it ended).
    pub elapsed_s: f64,
    /// The counters.
    pub counts: Counts,
    /// Keys scanned per second so far.
    pub keys_per_s: f64,
    /// Bytes per second so far.
    pub bytes_per_s: f64,
    /// Estimated seconds left, when the key count is known.
    pub eta_s: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    /// In an index cluster: the member running it (the leader).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
}

/// One running (or finished) job: its counters, throttle and cancel flag.
#[derive(Debug)]
pub struct Job {
    id: u64,
    kind: JobKind,
    params: serde_json::Value,
    /// Live counters.
    pub progress: Progress,
    /// Speed limit.
    pub throttle: Throttle,
    cancel: AtomicBool,
    started: Instant,
    started_ms: u64,
    end: Mutex<Option<(JobState, Duration, Option<String>)>>,
    /// Every key up to this one (inclusive) is done: where a resumed job goes on.
    cursor: Mutex<Option<Vec<u8>>>,
}

impl Job {
    /// A new job, not yet started anywhere.
    pub fn new(id: u64, kind: JobKind, params: serde_json::Value, rate: Option<Rate>) -> Arc<Job> {
        Self::resumed(id, kind, params, rate, &Resume::default())
    }

    /// A job that goes on from `resume` (counters, start time, cursor).
    fn resumed(
        id: u64,
        kind: JobKind,
        params: serde_json::Value,
        rate: Option<Rate>,
        resume: &Resume,
    ) -> Arc<Job> {
        let now = now_ms();
        let started_ms = resume.started_ms.unwrap_or(now);
        let before = Duration::from_millis(now.saturating_sub(started_ms));
        Arc::new(Job {
            id,
            kind,
            params,
            progress: Progress::from_counts(&resume.counts),
            throttle: Throttle::new(rate),
            cancel: AtomicBool::new(false),
            started: Instant::now()
                .checked_sub(before)
                .unwrap_or_else(Instant::now),
            started_ms,
            end: Mutex::new(None),
            cursor: Mutex::new(resume.cursor.clone()),
        })
    }

    /// The job's number.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Records that every key up to `key` (inclusive) is done.
    pub fn set_cursor(&self, key: &[u8]) {
        *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.to_vec());
    }

    /// The last key known done, if any.
    pub fn cursor(&self) -> Option<Vec<u8>> {
        self.cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the job has ended.
    pub fn has_ended(&self) -> bool {
        self.end.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// What the job does.
    pub fn kind(&self) -> JobKind {
        self.kind
    }

    /// Asks the job to stop at the next key.
    pub fn cancel(&self) {
        self.cancel.store(true, Relaxed);
    }

    /// True once cancelled; workers check it between keys.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Relaxed)
    }

    /// Records how the job ended.
    pub fn finish(&self, result: &Result<(), OpsError>) {
        let (state, error) = match result {
            Ok(()) if self.is_cancelled() => (JobState::Cancelled, None),
            Ok(()) => (JobState::Done, None),
            Err(e) => (JobState::Failed, Some(e.to_string())),
        };
        let mut end = self.end.lock().unwrap_or_else(|p| p.into_inner());
        *end = Some((state, self.started.elapsed(), error));
    }

    /// The job's state and counters now.
    pub fn status(&self) -> JobStatus {
        let end = self.end.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (state, elapsed, error) =
            end.unwrap_or((JobState::Running, self.started.elapsed(), None));
        let counts = self.progress.snapshot();
        let secs = elapsed.as_secs_f64().max(1e-3);
        let keys_per_s = counts.scanned as f64 / secs;
        let eta_s = (state == JobState::Running && counts.total > 0 && keys_per_s > 0.0)
            .then(|| counts.total.saturating_sub(counts.scanned) as f64 / keys_per_s);
        JobStatus {
            id: self.id,
            kind: self.kind,
            params: self.params.clone(),
            state,
            started_ms: self.started_ms,
            elapsed_s: elapsed.as_secs_f64(),
            counts,
            keys_per_s,
            bytes_per_s: counts.bytes as f64 / secs,
            eta_s,
            error,
            node: None,
        }
    }
}

/// Where a job taken over from another server goes on from (see `server::jobs`).
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// The cluster-wide job number to keep.
    pub id: Option<u64>,
    /// Counters so far.
    pub counts: Counts,
    /// When it first started (unix ms).
    pub started_ms: Option<u64>,
    /// Every key up to this one is done.
    pub cursor: Option<Vec<u8>>,
}

/// What `GET /-/admin/status` reports about jobs.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    /// The job in progress, if any.
    pub running: Option<JobStatus>,
    /// The last job that ended.
    pub last: Option<JobStatus>,
}

#[derive(Default)]
struct Slots {
    current: Option<(Arc<Job>, tokio::task::JoinHandle<()>)>,
    last: Option<Arc<Job>>,
    next_id: u64,
}

impl Slots {
    /// Moves a finished current job to `last`.
    fn settle(&mut self) {
        if self.current.as_ref().is_some_and(|(_, h)| h.is_finished()) {
            self.last = self.current.take().map(|(job, _)| job);
        }
    }
}

/// Runs at most one background job at a time.
#[derive(Default)]
pub struct Worker {
    slots: Mutex<Slots>,
}

impl Worker {
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `work` as a new job, unless one is running ([`OpsError::Busy`]).
    pub fn start<F, Fut>(
        &self,
        kind: JobKind,
        params: serde_json::Value,
        rate: Option<Rate>,
        work: F,
    ) -> Result<Arc<Job>, OpsError>
    where
        F: FnOnce(Arc<Job>) -> Fut,
        Fut: std::future::Future<Output = Result<(), OpsError>> + Send + 'static,
    {
        self.start_from(kind, params, rate, &Resume::default(), work)
    }

    /// Like [`Worker::start`], going on from `resume` (its id, counters, cursor).
    pub fn start_from<F, Fut>(
        &self,
        kind: JobKind,
        params: serde_json::Value,
        rate: Option<Rate>,
        resume: &Resume,
        work: F,
    ) -> Result<Arc<Job>, OpsError>
    where
        F: FnOnce(Arc<Job>) -> Fut,
        Fut: std::future::Future<Output = Result<(), OpsError>> + Send + 'static,
    {
        let mut slots = self.slots();
        slots.settle();
        if let Some((job, _)) = &slots.current {
            return Err(OpsError::Busy(job.kind().name()));
        }
        let id = match resume.id {
            Some(id) => id,
            None => slots.next_id + 1,
        };
        slots.next_id = slots.next_id.max(id);
        let job = Job::resumed(id, kind, params, rate, resume);
        let fut = work(Arc::clone(&job));
        let running = Arc::clone(&job);
        let handle = tokio::spawn(async move {
            let result = fut.await;
            if let Err(e) = &result {
                tracing::warn!("{} job failed: {e}", running.kind().name());
            }
            running.finish(&result);
            tracing::info!(
                "{} job ended: {}",
                running.kind().name(),
                serde_json::to_string(&running.status().counts).unwrap_or_default()
            );
        });
        slots.current = Some((Arc::clone(&job), handle));
        Ok(job)
    }

    /// Asks the running job to stop; false if none is running.
    pub fn cancel(&self) -> bool {
        let mut slots = self.slots();
        slots.settle();
        match &slots.current {
            Some((job, _)) => {
                job.cancel();
                true
            }
            None => false,
        }
    }

    /// Stops the running job at once (server shutdown).
    pub fn abort(&self) {
        if let Some((job, handle)) = self.slots().current.take() {
            job.cancel();
            handle.abort();
        }
    }

    /// The running job, or else the last one.
    pub fn latest(&self) -> Option<Arc<Job>> {
        let mut slots = self.slots();
        slots.settle();
        match &slots.current {
            Some((job, _)) => Some(Arc::clone(job)),
            None => slots.last.clone(),
        }
    }

    /// The running and the last job.
    pub fn status(&self) -> WorkerStatus {
        let mut slots = self.slots();
        slots.settle();
        WorkerStatus {
            running: slots.current.as_ref().map(|(job, _)| job.status()),
            last: slots.last.as_ref().map(|job| job.status()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!("200".parse(), Ok(Rate::KeysPerSec(200.0)));
        assert_eq!("200/s".parse(), Ok(Rate::KeysPerSec(200.0)));
        assert_eq!("50MB/s".parse(), Ok(Rate::BytesPerSec(50e6)));
        assert_eq!("1MiB/s".parse(), Ok(Rate::BytesPerSec(1048576.0)));
        assert_eq!("10B/s".parse(), Ok(Rate::BytesPerSec(10.0)));
        for bad in ["", "fast", "0", "-3", "5 parsecs", "1TB/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn throttle_paces_keys() {
        let t = Throttle::new(Some(Rate::KeysPerSec(100.0)));
        let start = Instant::now();
        for _ in 0..10 {
            t.keys(1).await;
            t.bytes(1 << 30).await; // not limited in bytes
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(95), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn one_job_at_a_time() {
        let worker = Worker::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let job = worker
            .start(
                JobKind::Verify,
                serde_json::json!({}),
                None,
                |job| async move {
                    job.progress.scanned.fetch_add(3, Relaxed);
                    let _ = rx.await;
                    Ok(())
                },
            )
            .unwrap();
        assert!(matches!(
            worker.start(JobKind::Rebalance, serde_json::json!({}), None, |_| async {
                Ok(())
            }),
            Err(OpsError::Busy("verify"))
        ));
        assert!(worker.cancel());
        tx.send(()).unwrap();
        while worker.status().running.is_some() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let last = worker.status().last.unwrap();
        assert_eq!(
            (last.id, last.state),
            (job.status().id, JobState::Cancelled)
        );
        assert_eq!(last.counts.scanned, 3);
        assert!(worker
            .start(JobKind::Rebalance, serde_json::json!({}), None, |_| async {
                Ok(())
            })
            .is_ok());
    }
}
