//! Background jobs (rebalance, verify) as the operations API runs them.
//!
//! On a single index server a job runs in the server's [`Worker`], as before. In an
//! index cluster a job runs **once per cluster, on the leader**, and survives a change
//! of leader:
//!
//! * Its record ([`JobRecord`]: kind, options, counters, the last key known done) is
//!   replicated state (`Command::SetJob`), so every member's `GET /-/admin/status`
//!   shows it. The command carries who runs the job (`"{job id}/{node id}"`) and is
//!   applied only if the owner is still the one the proposer expects, so a start, a
//!   takeover and a progress report can never overwrite each other.
//! * Starting or cancelling on a follower is forwarded to the leader (see
//!   `admin_ops`).
//! * The [`supervise`] loop on every member: the leader publishes its job's progress
//!   every [`PUBLISH_EVERY`] and its end; a leader that finds a job still running under
//!   another owner (the old leader died or lost its leadership) takes it over and goes
//!   on from the recorded cursor, with the recorded counters; a member that stops
//!   leading stops its job (the new leader goes on with it).
//!
//! Keys done between the last report and a takeover are done again: rebalance and
//! verify are idempotent per key.

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::App;
use crate::clock::now_ms;
use crate::index::{Command, Rejection};
use crate::ops::fence::Fence;
use crate::ops::worker::{Counts, Job, JobKind, JobState, JobStatus, Rate, Resume, WorkerStatus};
use crate::ops::{rebalance, verify, OpsError};

/// How long old replicas stay after an online move: a reader may have just been
/// redirected to one.
pub const DELETE_DELAY: Duration = Duration::from_secs(5);

/// How often the leader records its job's progress in the replicated index.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(2);
/// How often [`supervise`] looks at leadership and the job record.
const TICK: Duration = Duration::from_millis(250);

/// What a job was asked to do: enough to start it, or go on with it, on any member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobParams {
    /// Speed limit.
    pub max_rate: Option<Rate>,
    /// Keys worked on at once.
    pub concurrency: usize,
    /// verify: fix what can be fixed.
    #[serde(default)]
    pub repair: bool,
    /// verify: read every replica in full.
    #[serde(default)]
    pub deep: bool,
    /// verify: intents and orphans younger than this (seconds) are left alone.
    #[serde(default)]
    pub grace_s: f64,
}

/// The cluster's job, as replicated (`Command::SetJob`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// Job number, counting from 1 over the cluster's life.
    pub id: u64,
    /// What it does.
    pub kind: JobKind,
    /// Its options.
    pub params: JobParams,
    /// Running or how it ended.
    pub state: JobState,
    /// The member running it (or that ran it last).
    pub node: u64,
    /// Unix ms when it started.
    pub started_ms: u64,
    /// Unix ms of the last report.
    pub updated_ms: u64,
    /// Every key up to this one is done.
    pub cursor: Option<Vec<u8>>,
    /// Counters at the last report.
    pub counts: Counts,
    /// Why it failed.
    pub error: Option<String>,
    /// Times another member took it over.
    pub takeovers: u32,
}

impl JobRecord {
    fn status(&self) -> JobStatus {
        let end = if self.state == JobState::Running {
            now_ms()
        } else {
            self.updated_ms
        };
        let secs = (end.saturating_sub(self.started_ms) as f64 / 1000.0).max(1e-3);
        let c = self.counts;
        let keys_per_s = c.scanned as f64 / secs;
        JobStatus {
            id: self.id,
            kind: self.kind,
            params: serde_json::to_value(&self.params).unwrap_or_default(),
            state: self.state,
            started_ms: self.started_ms,
            elapsed_s: secs,
            counts: c,
            keys_per_s,
            bytes_per_s: c.bytes as f64 / secs,
            eta_s: (self.state == JobState::Running && c.total > 0 && keys_per_s > 0.0)
                .then(|| c.total.saturating_sub(c.scanned) as f64 / keys_per_s),
            error: self.error.clone(),
            node: Some(self.node),
        }
    }

    /// This record brought up to date with the local `job`.
    fn with(&self, job: &Job, state: JobState) -> JobRecord {
        let status = job.status();
        JobRecord {
            state,
            updated_ms: now_ms(),
            cursor: job.cursor(),
            counts: status.counts,
            error: status.error,
            ..self.clone()
        }
    }
}

/// Why a job request could not be served here.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// This member does not lead: the request belongs on the leader.
    #[error("not the leader")]
    NotLeader,
    /// The job could not be started or changed.
    #[error(transparent)]
    Ops(#[from] OpsError),
}

/// Starts a job here, in this server's worker, going on from `resume`.
fn launch(
    app: &Arc<App>,
    kind: JobKind,
    params: &JobParams,
    resume: &Resume,
) -> Result<Arc<Job>, OpsError> {
    let ctx = app.store.ctx();
    let shown = serde_json::to_value(params).unwrap_or_default();
    match kind {
        JobKind::Rebalance => {
            let opts = rebalance::Options {
                concurrency: params.concurrency,
                delete_delay: DELETE_DELAY,
            };
            app.jobs
                .start_from(kind, shown, params.max_rate, resume, move |job| {
                    rebalance::run(ctx, job, opts)
                })
        }
        JobKind::Verify => {
            // In an index cluster the job deletes files only while the replicated job
            // record still names this member as its owner (`ops::fence`).
            let fence = match (&app.raft, resume.id) {
                (Some(node), Some(id)) => Fence::owned_as(format!("{id}/{}", node.id)),
                _ => Fence::default(),
            };
            let opts = verify::Options {
                repair: params.repair,
                deep: params.deep,
                grace: Duration::from_secs_f64(params.grace_s.max(0.0)),
                concurrency: params.concurrency,
                fence,
            };
            app.jobs
                .start_from(kind, shown, params.max_rate, resume, move |job| {
                    verify::run(ctx, job, opts)
                })
        }
        JobKind::Rebuild => Err(OpsError::Invalid(
            "rebuild runs offline (`hoard rebuild`)".into(),
        )),
    }
}

/// Starts a job: in this server's worker, or in an index cluster as the cluster's job
/// ([`JobsError::NotLeader`] on a follower).
pub async fn start(
    app: &Arc<App>,
    kind: JobKind,
    params: JobParams,
) -> Result<JobStatus, JobsError> {
    let Some(node) = &app.raft else {
        return Ok(launch(app, kind, &params, &Resume::default())?.status());
    };
    if !node.is_leader() {
        return Err(JobsError::NotLeader);
    }
    // Between publishing the record and launching the job, `supervise` would see a
    // running job of this member that does not run here, and take it over.
    let _starting = app.job_start.lock().await;
    let (record, owner) = app.store.index.job().map_err(OpsError::from)?;
    let previous = record.as_deref().and_then(parse);
    if !owner.is_empty() {
        let running = previous.map_or(JobKind::Verify, |r| r.kind);
        return Err(OpsError::Busy(running.name()).into());
    }
    if let Some(job) = app.jobs.latest().filter(|j| !j.has_ended()) {
        return Err(OpsError::Busy(job.kind().name()).into());
    }
    let now = now_ms();
    let record = JobRecord {
        id: previous.map_or(1, |r| r.id + 1),
        kind,
        params,
        state: JobState::Running,
        node: node.id,
        started_ms: now,
        updated_ms: now,
        cursor: None,
        counts: Counts::default(),
        error: None,
        takeovers: 0,
    };
    publish(app, &record, "").await?;
    let resume = Resume {
        id: Some(record.id),
        started_ms: Some(now),
        ..Resume::default()
    };
    match launch(app, kind, &record.params, &resume) {
        Ok(job) => {
            let mut status = job.status();
            status.node = Some(node.id);
            Ok(status)
        }
        Err(e) => {
            let failed = JobRecord {
                state: JobState::Failed,
                error: Some(e.to_string()),
                ..record.clone()
            };
            let _ = publish(app, &failed, &owner_of(&record)).await;
            Err(e.into())
        }
    }
}

/// Asks the running job to stop: whether one was running.
pub async fn cancel(app: &Arc<App>) -> Result<bool, JobsError> {
    let Some(node) = &app.raft else {
        return Ok(app.jobs.cancel());
    };
    if !node.is_leader() {
        return Err(JobsError::NotLeader);
    }
    let (record, owner) = app.store.index.job().map_err(OpsError::from)?;
    let Some(record) = record
        .as_deref()
        .and_then(parse)
        .filter(|_| !owner.is_empty())
    else {
        return Ok(app.jobs.cancel());
    };
    match app
        .jobs
        .latest()
        .filter(|j| j.id() == record.id && !j.has_ended())
    {
        // Its end is published by `supervise`.
        Some(job) => job.cancel(),
        None => {
            let cancelled = JobRecord {
                state: JobState::Cancelled,
                updated_ms: now_ms(),
                ..record
            };
            publish(app, &cancelled, &owner).await?;
        }
    }
    Ok(true)
}

/// The running and last job: this server's, or in an index cluster the cluster's.
pub fn status(app: &App) -> WorkerStatus {
    let Some(node) = &app.raft else {
        return app.jobs.status();
    };
    let record = match app.store.index.job() {
        Ok((Some(r), _)) => parse(&r),
        _ => None,
    };
    let Some(record) = record else {
        return WorkerStatus {
            running: None,
            last: None,
        };
    };
    // The live counters when the job runs here.
    let status = match app.jobs.latest() {
        Some(job) if job.id() == record.id && !job.has_ended() => {
            let mut s = job.status();
            s.node = Some(node.id);
            s
        }
        _ => record.status(),
    };
    if status.state == JobState::Running {
        WorkerStatus {
            running: Some(status),
            last: None,
        }
    } else {
        WorkerStatus {
            running: None,
            last: Some(status),
        }
    }
}

/// Keeps the cluster's job running on the leader (see the module documentation), until
/// the server is gone.
pub async fn supervise(app: Weak<App>) {
    let mut last_report = tokio::time::Instant::now();
    // Jobs this member stopped because it lost the leadership (not a user's cancel).
    let mut abandoned: Option<u64> = None;
    loop {
        tokio::time::sleep(TICK).await;
        let Some(app) = app.upgrade() else { return };
        let Some(node) = app.raft.clone() else { return };
        // Not while `start` is between publishing a job and launching it.
        let _starting = app.job_start.lock().await;
        let latest = app.jobs.latest();
        if !node.is_leader() {
            if let Some(job) = latest.filter(|j| !j.has_ended()) {
                tracing::info!("no longer leading: stopping job {} here", job.id());
                abandoned = Some(job.id());
                job.cancel();
            }
            continue;
        }
        let (record, owner) = match app.store.index.job() {
            Ok((Some(r), owner)) => (parse(&r), owner),
            Ok((None, _)) => continue,
            Err(e) => {
                tracing::warn!("reading the job record: {e}");
                continue;
            }
        };
        let Some(record) = record.filter(|r| r.state == JobState::Running) else {
            continue;
        };
        let mine = format!("{}/{}", record.id, node.id);
        let result = match latest {
            Some(job) if job.id() == record.id && owner == mine && abandoned != Some(job.id()) => {
                if job.has_ended() {
                    let state = job.status().state;
                    publish(&app, &record.with(&job, state), &mine).await
                } else if last_report.elapsed() >= PUBLISH_EVERY {
                    last_report = tokio::time::Instant::now();
                    publish_as(&app, &record.with(&job, JobState::Running), &mine, &mine).await
                } else {
                    Ok(())
                }
            }
            Some(job) if !job.has_ended() => {
                // Some other job runs here (it lost its record): stop it.
                job.cancel();
                Ok(())
            }
            _ => {
                abandoned = None;
                take_over(&app, &record, &owner, node.id).await
            }
        };
        if let Err(e) = result {
            tracing::warn!("job {}: {e}", record.id);
        }
    }
}

/// Takes the running job `record` over from `owner` and goes on with it here.
async fn take_over(
    app: &Arc<App>,
    record: &JobRecord,
    owner: &str,
    me: u64,
) -> Result<(), JobsError> {
    let taken = JobRecord {
        node: me,
        takeovers: record.takeovers + 1,
        updated_ms: now_ms(),
        ..record.clone()
    };
    let mine = format!("{}/{me}", record.id);
    publish_as(app, &taken, &mine, owner).await?;
    tracing::info!(
        "taking over {} job {} (from {owner:?}) at {} keys scanned",
        record.kind.name(),
        record.id,
        record.counts.scanned
    );
    let resume = Resume {
        id: Some(record.id),
        counts: record.counts,
        started_ms: Some(record.started_ms),
        cursor: record.cursor.clone(),
    };
    if let Err(e) = launch(app, record.kind, &record.params, &resume) {
        let failed = JobRecord {
            state: JobState::Failed,
            error: Some(e.to_string()),
            ..taken
        };
        publish(app, &failed, &mine).await?;
        return Err(e.into());
    }
    Ok(())
}

/// Records `record`: a running job owned as `owner_of(record)` when it runs, no owner
/// once it ended; `expect` is the owner it replaces.
async fn publish(app: &App, record: &JobRecord, expect: &str) -> Result<(), JobsError> {
    let owner = if record.state == JobState::Running {
        owner_of(record)
    } else {
        String::new()
    };
    publish_as(app, record, &owner, expect).await
}

async fn publish_as(
    app: &App,
    record: &JobRecord,
    owner: &str,
    expect: &str,
) -> Result<(), JobsError> {
    let cmd = Command::SetJob {
        record: serde_json::to_string(record).unwrap_or_default(),
        owner: owner.to_string(),
        expect: expect.to_string(),
    };
    match app.store.index.apply(cmd).await.map_err(OpsError::from)? {
        Ok(_) => Ok(()),
        Err(Rejection::Changed) => Err(OpsError::Busy(record.kind.name()).into()),
        Err(other) => Err(OpsError::Invalid(other.to_string()).into()),
    }
}

fn owner_of(record: &JobRecord) -> String {
    format!("{}/{}", record.id, record.node)
}

fn parse(json: &str) -> Option<JobRecord> {
    serde_json::from_str(json)
        .map_err(|e| tracing::warn!("unreadable job record: {e}"))
        .ok()
}
