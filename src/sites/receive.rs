//! The receiving end: `/-/sites/apply/<key>`, where another site ships its changes.
//!
//! * `GET` → [`Held`] (JSON): the version of the key's state here, so the shipper can
//!   skip what is already applied; 404 when the key was never seen.
//! * `PUT` with `Hoard-Site-Version` (`ms.n.site`, see [`Hlc::header`]),
//!   `Hoard-Site-State` (`live` or `unlinked`), optional `Hoard-Site-Md5` and
//!   `Hoard-Site-Meta` (the front-end metadata, base64), and the value as body — or
//!   none, with `Hoard-Site-Reuse`, to unlink the live value of that very version.
//! * `DELETE` with `Hoard-Site-Version`.
//!
//! The conflict rule (`index::hlc`: highest version wins, ties by site id) decides in
//! the index, in the transaction that applies the change (`Command::Remote`): a change
//! that loses — retries, crossing writes, a local write that slipped in — changes
//! nothing and is acknowledged (200, `superseded`). A cheap check first spares the
//! upload of a value that would lose. Changes go through the store core
//! (`put_with` with `PutOptions::origin`, `unlink_as`, `delete_as`) and are recorded
//! with their version instead of a feed entry: never shipped on, so two sites
//! replicating to each other make no loop. Authentication is that of writes.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::{META_HEADER, REUSE_HEADER, STATE_HEADER, VERSION_HEADER};
use crate::index::hlc::Hlc;
use crate::index::{Command, Rejection, State};
use crate::store::{PutError, PutOptions, Store, StoreError};

/// Answer of `GET /-/sites/apply/<key>`: what this site holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Held {
    /// The version of the key's state here (its site resolved: never empty).
    pub version: Hlc,
    /// The key is deleted here.
    pub deleted: bool,
    /// md5 of the value held, when known.
    pub md5: Option<String>,
    /// Size of the value held.
    pub size: u64,
}

/// Handles a request under [`super::APPLY_PATH`].
pub async fn handle(store: &Arc<Store>, req: Request) -> Response {
    let raw = req.uri().path()[super::APPLY_PATH.len()..].to_string();
    let key = match crate::key::parse(&raw).map_err(StoreError::from) {
        Ok(k) => k,
        Err(e) => return refuse(req, e).await,
    };
    let outcome = match *req.method() {
        Method::GET => return held(store, &key).await,
        Method::PUT | Method::DELETE => apply(store, key, req).await,
        _ => return StatusCode::METHOD_NOT_ALLOWED.into_response(),
    };
    match outcome {
        Ok(what) => {
            metrics::counter!("hoard_site_received_total", "result" => what).increment(1);
            (StatusCode::OK, what).into_response()
        }
        Err(e) => {
            metrics::counter!("hoard_site_received_total", "result" => "failed").increment(1);
            error(&e)
        }
    }
}

async fn refuse(req: Request, e: StoreError) -> Response {
    let (parts, body) = req.into_parts();
    crate::http::drain_rejected(&parts.headers, body.into_data_stream()).await;
    error(&e)
}

fn error(e: &StoreError) -> Response {
    let status = match e {
        StoreError::Key(_) | StoreError::Invalid(_) | StoreError::Empty => StatusCode::BAD_REQUEST,
        StoreError::NotFound => StatusCode::NOT_FOUND,
        StoreError::Exists | StoreError::Conflict => StatusCode::CONFLICT,
        StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    (status, format!("{e}\n")).into_response()
}

async fn held(store: &Store, key: &[u8]) -> Response {
    let result = async {
        let origin = store.site_origin(key).await?;
        let here = super::site_id(&store.index).await?;
        let record = store.index.get(key)?;
        Ok::<_, StoreError>(origin.map(|o| {
            Held {
                version: o.version.resolved(&here),
                deleted: o.deleted,
                md5: record
                    .as_ref()
                    .filter(|_| !o.deleted)
                    .and_then(|r| r.md5)
                    .map(|m| crate::hex::hex(&m)),
                size: record.map_or(0, |r| r.size),
            }
        }))
    };
    match result.await {
        Ok(Some(h)) => axum::Json(h).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => error(&e),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What a shipped PUT asks for, from its headers.
struct Change {
    version: Hlc,
    unlinked: bool,
    meta: Vec<u8>,
    reuse: bool,
}

fn parse(headers: &HeaderMap, local: &str) -> Result<Change, StoreError> {
    let bad = |m: &str| StoreError::Invalid(m.to_string());
    let version = header(headers, VERSION_HEADER)
        .and_then(Hlc::parse)
        .ok_or_else(|| bad("missing or invalid Hoard-Site-Version (ms.n.site)"))?;
    if version.site == local {
        return Err(bad(
            "a change of this very site: the target points at itself",
        ));
    }
    let unlinked = match header(headers, STATE_HEADER) {
        Some("live") | None => false,
        Some("unlinked") => true,
        Some(_) => return Err(bad("Hoard-Site-State: live or unlinked")),
    };
    let meta = match header(headers, META_HEADER) {
        Some(m) => base64::engine::general_purpose::STANDARD
            .decode(m)
            .map_err(|_| bad("Hoard-Site-Meta: not base64"))?,
        None => Vec::new(),
    };
    if meta.len() > crate::index::MAX_META_LEN {
        return Err(bad("Hoard-Site-Meta too large"));
    }
    Ok(Change {
        version,
        unlinked,
        meta,
        reuse: headers.contains_key(REUSE_HEADER),
    })
}

/// Applies one shipped change; what happened (`applied`, `superseded`).
async fn apply(store: &Arc<Store>, key: Vec<u8>, req: Request) -> Result<&'static str, StoreError> {
    let (parts, body) = req.into_parts();
    let body = body.into_data_stream();
    let local = super::site_id(&store.index).await?;
    let change = match parse(&parts.headers, &local) {
        Ok(c) => c,
        Err(e) => {
            crate::http::drain_rejected(&parts.headers, body).await;
            return Err(e);
        }
    };
    // A first look, to spare uploading what would lose; the index decides.
    let held = store.site_origin(&key).await?;
    let current = held.as_ref().map(|o| o.version.clone().resolved(&local));
    let same_live = current.as_ref() == Some(&change.version) && held.is_some_and(|o| !o.deleted);
    let wins = change.version.wins(current.as_ref()) || (change.unlinked && same_live);
    if !wins {
        crate::http::drain_rejected(&parts.headers, body).await;
        return Ok("superseded");
    }
    if parts.method == Method::DELETE {
        return remote_delete(store, key, change.version).await;
    }
    if change.reuse {
        // Unlink the live value of that very version, held here already.
        if !(change.unlinked && same_live) {
            return Err(StoreError::Conflict);
        }
        return outcome(store.unlink_as(key, Some(change.version)).await);
    }
    let len = header(&parts.headers, "content-length")
        .and_then(|l| l.parse::<u64>().ok())
        .ok_or_else(|| StoreError::Invalid("Content-Length required".into()))?;
    let opts = PutOptions {
        replace: true,
        // A zero-byte value (an S3 empty object) replicates like any other.
        allow_empty: true,
        meta: change.meta,
        origin: Some(change.version.clone()),
        ..Default::default()
    };
    match store.put_with(key.clone(), body, Some(len), opts).await {
        Ok(_) => {}
        Err(PutError {
            error: StoreError::Superseded,
            ..
        }) => return Ok("superseded"),
        Err(PutError { error, unread }) => {
            if let Some(body) = unread {
                crate::http::drain_rejected(&parts.headers, body).await;
            }
            return Err(error);
        }
    }
    if change.unlinked {
        return outcome(store.unlink_as(key, Some(change.version)).await);
    }
    Ok("applied")
}

/// A store change's result as the receiver reports it.
fn outcome(r: Result<(), StoreError>) -> Result<&'static str, StoreError> {
    match r {
        Ok(()) => Ok("applied"),
        Err(StoreError::Superseded) => Ok("superseded"),
        Err(e) => Err(e),
    }
}

/// Another site's delete of version `v`: a delete of the value held here, or a
/// tombstone when there is none (so an older write arriving late cannot revive it).
async fn remote_delete(
    store: &Arc<Store>,
    key: Vec<u8>,
    v: Hlc,
) -> Result<&'static str, StoreError> {
    let record = store.index.get(&key)?;
    if record.is_some_and(|r| matches!(r.state, State::Live | State::Unlinked)) {
        return match store.delete_as(key, Some(v)).await {
            // Deleted meanwhile: already absent here.
            Ok(()) | Err(StoreError::NotFound) => Ok("applied"),
            other => outcome(other),
        };
    }
    let cmd = Command::Remote {
        key,
        origin: v,
        cmd: None,
    };
    match store.index.apply(cmd).await? {
        Ok(_) => Ok("applied"),
        Err(Rejection::Superseded) => Ok("superseded"),
        // Written meanwhile: the shipper retries, as a delete of the value.
        Err(_) => Err(StoreError::Conflict),
    }
}
