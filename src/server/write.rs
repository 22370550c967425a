//! Write paths: PUT, DELETE, UNLINK.
//!
//! PUT, and what a crash at each step leaves behind:
//!
//! 1. take the key's lock (409 if held) and check it is not live (403);
//! 2. `Begin`: an intent record (state `writing`, target volumes) is committed to the
//!    index — crash after this: a `writing` record, invisible to GET and lists; repair
//!    rolls it back (deletes any replica files, drops the record);
//! 3. stream the body to every replica at once — crash or failure here: volumes hold at
//!    most temp files (discarded) or complete files named by the intent record;
//! 4. `Commit`: the record becomes `live` with size and md5 — only now is the key
//!    visible, and only now is 201 sent.
//!
//! On a failed write the server deletes whatever replicas were written and drops the
//! intent; if that cleanup itself fails, the intent stays for repair.
//!
//! While streaming, a health watch fails the write as soon as the prober sees fewer
//! than the write quorum of its volumes up, so a hung volume costs a PUT at most
//! `--voltimeout` + the probe interval. With `--write-quorum` below the replica count,
//! volumes already down are skipped and replicas failing mid-way are dropped; the key
//! is committed with them recorded as missing (`CommitDegraded`) and queued for the
//! completer.
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

use super::locks::KeyGuard;
use super::{ApiError, App};
use crate::index::{now_ms, Command, Rejection, State};
use crate::key::check_writable;
use crate::placement::server_of;
use crate::replica::{put_quorum, VolumeClient};

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
    let begin = Command::Begin {
        key: key.clone(),
        volumes: volumes.clone(),
        now_ms: now_ms(),
    };
    app.index.apply(begin).await?.map_err(|r| match r {
        Rejection::Exists => ApiError::Forbidden("key exists: DELETE it first"),
        other => ApiError::BadRequest(other.to_string()),
    })?;

    let urls: Vec<String> = volumes.iter().map(|v| VolumeClient::url(v, &key)).collect();
    let stream = futures_util::stream::iter([Ok(first)]).chain(body);
    detached(async move {
        let _guard = guard;
        let hash = app.cfg.md5sum;
        // Volumes already down are not tried: they are missing from the start.
        let (live, skipped): (Vec<usize>, Vec<usize>) =
            (0..urls.len()).partition(|&i| app.health.is_up(server_of(&volumes[i])));
        if live.len() < quorum {
            roll_back(&app, &key, &volumes).await;
            return Err(ApiError::Unavailable(
                "too few replica volumes are up for the write quorum".into(),
            ));
        }
        let targets: Vec<String> = live.iter().map(|&i| urls[i].clone()).collect();
        let stall = app.cfg.stall_limit();
        let health = &app.health;
        let down = |j: usize| !health.is_up(server_of(&volumes[live[j]]));
        let write = put_quorum(
            &app.client,
            &targets,
            stream,
            len,
            hash,
            stall,
            quorum,
            &down,
        );
        let lost = super::safety::quorum_lost(&app.health, &volumes, quorum);
        let result = tokio::select! {
            r = write => r.map_err(ApiError::from),
            () = lost => Err(ApiError::Unavailable(
                "a replica volume stopped answering during the write".into(),
            )),
        };
        match result {
            Ok(written) => {
                let uploaded = written.uploaded;
                let missing: Vec<String> = skipped
                    .iter()
                    .copied()
                    .chain(written.missing.iter().map(|&j| live[j]))
                    .map(|i| volumes[i].clone())
                    .collect();
                let commit = if missing.is_empty() {
                    Command::Commit {
                        key: key.clone(),
                        size: uploaded.size,
                        md5: uploaded.md5,
                        now_ms: now_ms(),
                    }
                } else {
                    tracing::warn!(
                        "degraded write of {}: missing on {}",
                        String::from_utf8_lossy(&key),
                        missing.join(",")
                    );
                    Command::CommitDegraded {
                        key: key.clone(),
                        size: uploaded.size,
                        md5: uploaded.md5,
                        missing,
                        now_ms: now_ms(),
                    }
                };
                let degraded = matches!(commit, Command::CommitDegraded { .. });
                match app.index.apply(commit).await? {
                    Ok(_) => {
                        if degraded {
                            let _ = app.incomplete.send(key.clone());
                        }
                        let mut resp = StatusCode::CREATED.into_response();
                        resp.extensions_mut()
                            .insert(crate::http::BytesReceived(uploaded.size));
                        Ok(resp)
                    }
                    Err(r) => Err(ApiError::Volume(format!("commit rejected: {r}"))),
                }
            }
            Err(e) => {
                roll_back(&app, &key, &volumes).await;
                Err(e)
            }
        }
    })
    .await
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

/// Removes the replica files of a failed write and its intent record. If a volume
/// cannot be cleaned now, the intent stays for repair to finish.
async fn roll_back(app: &App, key: &[u8], locations: &[String]) {
    if let Err(e) = delete_replicas(app, key, locations).await {
        tracing::warn!(
            "could not clean replicas of failed write of {} ({e}); left for repair",
            String::from_utf8_lossy(key)
        );
        return;
    }
    let remove = Command::Remove {
        key: key.to_vec(),
        expect: State::Writing,
    };
    if let Err(e) = app.index.apply(remove).await {
        tracing::warn!("dropping intent of {}: {e}", String::from_utf8_lossy(key));
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
    detached(async move {
        let _guard = guard;
        delete_replicas(&app, &key, &record.volumes).await?;
        let remove = Command::Remove {
            key,
            expect: State::Deleting,
        };
        app.index
            .apply(remove)
            .await?
            .map_err(|r| ApiError::BadRequest(r.to_string()))?;
        Ok(StatusCode::NO_CONTENT.into_response())
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

/// Deletes `key`'s file on every location concurrently (a missing file counts as
/// deleted). Volumes the prober sees down are not tried, and the step gives up as soon
/// as one of the others goes down — a hung volume must not hold the request for the
/// whole delete timeout. Either way the files on reachable volumes are gone, and the
/// caller leaves the record for a retry or for repair to finish.
async fn delete_replicas(app: &App, key: &[u8], locations: &[String]) -> Result<(), ApiError> {
    let (up, down): (Vec<&String>, Vec<&String>) = locations
        .iter()
        .partition(|l| app.health.is_up(server_of(l)));
    let up: Vec<String> = up.into_iter().cloned().collect();
    let deletes = up.iter().map(|l| {
        let url = VolumeClient::url(l, key);
        async move { app.client.delete(&url).await }
    });
    tokio::select! {
        results = futures_util::future::join_all(deletes) => {
            results
                .into_iter()
                .collect::<Result<Vec<()>, _>>()
                .map_err(|e| ApiError::Volume(format!("delete incomplete, retry: {e}")))?;
        }
        () = super::safety::quorum_lost(&app.health, &up, up.len()) => {
            return Err(ApiError::Unavailable(
                "a replica volume went down; delete incomplete, retry".into(),
            ));
        }
    }
    if let Some(d) = down.first() {
        return Err(ApiError::Unavailable(format!(
            "replica volume {} is down; delete incomplete, retry",
            server_of(d)
        )));
    }
    Ok(())
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
