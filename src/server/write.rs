//! Write paths: PUT, DELETE, UNLINK.
//!
//! PUT, and what a crash at each step leaves behind:
//!
//! 1. take the key's lock (409 if held) and check it is not live (403); wait for the
//!    first body bytes (411 if none) — nothing is recorded yet;
//! 2. from here the write runs on its own task, so a client disconnect cannot cut it
//!    short. `Begin`: an intent record (state `writing`, target volumes, and as `stale`
//!    every other location an older record of the key named) is committed to the index
//!    — crash after this: a `writing` record, invisible to GET and lists; repair rolls
//!    it back (deletes every file it names, drops the record);
//! 3. stream the body to every replica at once — crash or failure here: volumes hold at
//!    most temp files (discarded) or complete files named by the intent record;
//! 4. `Commit`: the record becomes `live` with size and md5 — only now is the key
//!    visible, and only now is 201 sent. Stale files, and replicas a degraded write
//!    missed, are then the upkeep worker's (`ops::upkeep`).
//!
//! A failed write is rolled back — its files and stale files deleted, then the intent
//! dropped — only once it is *settled*: every replica request has ended, so no volume
//! can still rename the value into place after the cleanup (see `replica::fanout`). A
//! write that cannot be settled (a volume hung holding the whole value), or whose
//! cleanup fails, leaves its intent for repair. A failed or rejected `Commit` is rolled
//! back the same way, unless a re-read shows it committed after all.
//!
//! While streaming, the fan-out fails the write as soon as the prober sees fewer than
//! the write quorum of its volumes up, so a hung volume costs a PUT at most
//! `--voltimeout` + the probe interval. With `--write-quorum` below the replica count,
//! volumes already down are skipped and replicas failing mid-way are dropped; the key
//! is committed with them recorded as missing and queued for the upkeep worker.
//!
//! DELETE marks the record `deleting` (invisible) before removing files, then drops the
//! record; an interrupted delete is finished by a retry or by repair. UNLINK is one
//! index command.

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::{ApiError, App};
use crate::index::{now_ms, Command, KeyGuard, Record, Rejection, State};
use crate::key::check_writable;
use crate::ops::show;
use crate::ops::upkeep::{needs_upkeep, release};
use crate::placement::server_of;
use crate::replica::{put_quorum, FanoutError, Uploaded, VolumeClient, WriteFailed};

/// PUT /key: stream the body to every replica; 201 once all hold it.
pub async fn put(app: Arc<App>, key: Vec<u8>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let mut body = body.into_data_stream();
    let admitted = match admit(&app, &key, &parts.headers) {
        Ok(admitted) => admitted,
        Err(e) => {
            drain_rejected(&parts.headers, body).await;
            return Err(e);
        }
    };
    let (guard, len) = admitted;

    // Wait for the first bytes before recording anything, so bodiless requests
    // (an empty chunked upload) leave no trace.
    let first = loop {
        match body.next().await {
            None => return Err(ApiError::LengthRequired),
            Some(Err(e)) => return Err(ApiError::BadRequest(format!("reading body: {e}"))),
            Some(Ok(chunk)) if chunk.is_empty() => continue,
            Some(Ok(chunk)) => break chunk,
        }
    };

    let volumes = app.placement.current().locate(&key);
    let quorum = app.cfg.safety.write_quorum.unwrap_or(volumes.len());
    let down: Vec<&String> = volumes
        .iter()
        .filter(|v| !app.health.is_up(server_of(v)))
        .collect();
    if volumes.len() - down.len() < quorum {
        drain_rejected(&parts.headers, body).await;
        let names: Vec<&str> = down.iter().map(|v| server_of(v)).collect();
        return Err(ApiError::Unavailable(format!(
            "replica volume {} is down",
            names.join(",")
        )));
    }
    let stream = futures_util::stream::iter([Ok(first)]).chain(body);
    // From the intent on, the write runs on its own task: a client that disconnects
    // cannot cut it (or its cleanup) short.
    detached(async move {
        let _guard = guard;
        let begin = Command::Begin {
            key: key.clone(),
            volumes: volumes.clone(),
            now_ms: now_ms(),
            owner: app.owner,
        };
        app.index.apply(begin).await?.map_err(|r| match r {
            Rejection::Exists => ApiError::Forbidden("key exists: DELETE it first"),
            Rejection::Busy => ApiError::Conflict,
            other => ApiError::BadRequest(other.to_string()),
        })?;
        match write_replicas(&app, &key, &volumes, quorum, stream, len).await {
            Ok((uploaded, missing)) => commit(&app, &key, uploaded, missing).await,
            Err(WriteFailed { error, settled }) => {
                if settled {
                    roll_back(&app, &key).await;
                } else {
                    tracing::warn!(
                        "write of {} failed and a volume may still store it: intent left for repair",
                        show(&key)
                    );
                }
                Err(error.into())
            }
        }
    })
    .await
}

/// Streams the value to the replica volumes that are up (those already down are
/// missing from the start); the value and the locations that do not hold it.
async fn write_replicas<S, E>(
    app: &App,
    key: &[u8],
    volumes: &[String],
    quorum: usize,
    stream: S,
    len: Option<u64>,
) -> Result<(Uploaded, Vec<String>), WriteFailed>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (live, skipped): (Vec<usize>, Vec<usize>) =
        (0..volumes.len()).partition(|&i| app.health.is_up(server_of(&volumes[i])));
    if live.len() < quorum {
        return Err(WriteFailed {
            error: FanoutError::Down {
                url: "too few replica volumes are up for the write quorum".into(),
            },
            settled: true,
        });
    }
    let targets: Vec<String> = live
        .iter()
        .map(|&i| VolumeClient::url(&volumes[i], key))
        .collect();
    let down = |j: usize| !app.health.is_up(server_of(&volumes[live[j]]));
    let written = put_quorum(
        &app.client,
        &targets,
        stream,
        len,
        app.cfg.md5sum,
        app.cfg.stall_limit(),
        quorum,
        &down,
    )
    .await?;
    let missing: Vec<String> = skipped
        .iter()
        .copied()
        .chain(written.missing.iter().map(|&j| live[j]))
        .map(|i| volumes[i].clone())
        .collect();
    if !missing.is_empty() {
        tracing::warn!(
            "degraded write of {}: missing on {}",
            show(key),
            missing.join(",")
        );
    }
    Ok((written.uploaded, missing))
}

/// Makes a written value live (201). If the commit fails, the write is rolled back —
/// unless it did commit after all (a storage error after the fact), which a re-read
/// tells. Replicas to complete or stale files to delete go to the upkeep worker.
async fn commit(
    app: &App,
    key: &[u8],
    uploaded: Uploaded,
    missing: Vec<String>,
) -> Result<Response, ApiError> {
    let now = now_ms();
    let commit = Command::Commit {
        key: key.to_vec(),
        size: uploaded.size,
        md5: uploaded.md5,
        missing,
        now_ms: now,
        owner: app.owner,
    };
    let failure = match app.index.apply(commit).await {
        Ok(Ok(_)) => None,
        Ok(Err(r)) => Some(ApiError::Volume(format!("commit rejected: {r}"))),
        Err(e) => Some(ApiError::Index(e)),
    };
    let committed = match app.index.get(key) {
        Ok(Some(r)) if r.state == State::Live && r.changed_ms == now => Some(r),
        _ => None,
    };
    match (failure, committed) {
        (_, Some(record)) => {
            if needs_upkeep(&record) {
                let _ = app.upkeep.send(key.to_vec());
            }
            let mut resp = StatusCode::CREATED.into_response();
            resp.extensions_mut()
                .insert(crate::http::BytesReceived(uploaded.size));
            Ok(resp)
        }
        (failure, None) => {
            roll_back(app, key).await;
            Err(failure.unwrap_or_else(|| ApiError::Volume("commit not recorded".into())))
        }
    }
}

/// The checks made before any byte of the body is read: key, length, lock, existence.
fn admit(app: &App, key: &[u8], headers: &HeaderMap) -> Result<(KeyGuard, Option<u64>), ApiError> {
    check_writable(key)?;
    let len = content_length(headers)?;
    if len == Some(0) {
        return Err(ApiError::LengthRequired);
    }
    let guard = app.locks.try_lock(key).ok_or(ApiError::Conflict)?;
    if app.index.get(key)?.is_some_and(|r| r.state == State::Live) {
        return Err(ApiError::Forbidden("key exists: DELETE it first"));
    }
    Ok((guard, len))
}

/// Most of a rejected body read and discarded so the client sees the status.
const DRAIN_LIMIT: u64 = 16 << 20;

/// Reads and discards (a bounded amount of) a rejected upload's body, so that a client
/// still sending it gets the error status instead of a broken pipe — what nginx's
/// lingering close achieves. Clients that sent `Expect: 100-continue` have not sent the
/// body and are answered at once.
async fn drain_rejected<S, E>(headers: &HeaderMap, mut body: S)
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    if headers.contains_key(header::EXPECT) {
        return;
    }
    let drain = async {
        let mut seen = 0u64;
        while let Some(Ok(chunk)) = body.next().await {
            seen += chunk.len() as u64;
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
}

/// Removes the files of a failed write — and any stale files its intent names — and
/// then the intent. If a volume cannot be cleaned now, the intent stays for repair.
/// The caller holds the key's lock, and the write is settled (no replica can still
/// store the value).
async fn roll_back(app: &App, key: &[u8]) {
    let intent = match app.index.get(key) {
        // Only our own intent: another write may have taken the key over.
        Ok(Some(r)) if r.state == State::Writing && r.owner == app.owner => r,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!("rolling back {}: {e}; left for repair", show(key));
            return;
        }
    };
    if let Err(e) = release(&app.ops_ctx(), key, &intent).await {
        tracing::warn!(
            "could not clean up failed write of {} ({e}); left for repair",
            show(key)
        );
    }
}

/// DELETE /key: remove the value everywhere; 204, or 404 if absent.
pub async fn delete(app: Arc<App>, key: Vec<u8>) -> Result<Response, ApiError> {
    check_writable(&key)?;
    let guard = app.locks.try_lock(&key).ok_or(ApiError::Conflict)?;
    let begin = Command::BeginDelete {
        key: key.clone(),
        protect: app.cfg.protect,
        now_ms: now_ms(),
    };
    let record = match app.index.apply(begin).await? {
        Ok(Some(record)) => record,
        Ok(None) | Err(Rejection::NotFound) => return Err(ApiError::NotFound),
        Err(Rejection::Protected) => {
            return Err(ApiError::Forbidden("--protect is on: UNLINK the key first"))
        }
        Err(other) => return Err(ApiError::BadRequest(other.to_string())),
    };
    let deleting = Record {
        state: State::Deleting,
        ..record
    };
    detached(async move {
        let _guard = guard;
        if release(&app.ops_ctx(), &key, &deleting).await? {
            Ok(StatusCode::NO_CONTENT.into_response())
        } else {
            Err(ApiError::Volume(
                "the record changed during the delete".into(),
            ))
        }
    })
    .await
}

/// UNLINK /key: virtual delete; 204, or 404 if absent or already unlinked.
pub async fn unlink(app: &App, key: Vec<u8>) -> Result<Response, ApiError> {
    check_writable(&key)?;
    let _guard = app.locks.try_lock(&key).ok_or(ApiError::Conflict)?;
    let cmd = Command::Unlink {
        key,
        now_ms: now_ms(),
    };
    match app.index.apply(cmd).await? {
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(_) => Err(ApiError::NotFound),
    }
}

/// Runs the rest of a write on its own task, so that a client disconnecting mid-request
/// cannot cancel the cleanup half-way.
async fn detached<F>(work: F) -> Result<Response, ApiError>
where
    F: Future<Output = Result<Response, ApiError>> + Send + 'static,
{
    tokio::spawn(work)
        .await
        .unwrap_or_else(|e| Err(ApiError::Volume(format!("write task failed: {e}"))))
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiError::BadRequest("invalid Content-Length".into()))
        })
        .transpose()
}
