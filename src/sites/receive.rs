//! The receiving end: `/-/sites/apply/<key>`, where another site ships its changes.
//!
//! * `GET` → [`Held`] (JSON): the origin of the key's state here, so the shipper can
//!   skip what is already applied; 404 when the key was never seen.
//! * `PUT` with `Hoard-Site`, `Hoard-Site-Time`, `Hoard-Site-State` (`live` or
//!   `unlinked`), optional `Hoard-Site-Md5`, and the value as body (or none, with
//!   `Hoard-Site-Reuse`, when this site holds the same bytes).
//! * `DELETE` with `Hoard-Site` and `Hoard-Site-Time`.
//!
//! A change older than (or the same as) the key's current state by the conflict rule —
//! origin time, then site id — is acknowledged without effect (200, `superseded`): at
//! least once delivery and crossing writes both end here. Otherwise it goes through
//! the store core, announced first by `FeedCommand::Expect` so the index records it as
//! remote (never shipped on). Authentication is that of writes (the router's).

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{MD5_HEADER, REUSE_HEADER, SITE_HEADER, STATE_HEADER, TIME_HEADER};
use crate::index::feed::{FeedCommand, Origin, Version};
use crate::index::{Command, State};
use crate::store::{PutError, PutOptions, Store, StoreError};

/// Answer of `GET /-/sites/apply/<key>`: what this site holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Held {
    /// Origin commit time of the key's state, unix ms.
    pub ms: u64,
    /// Origin site id (this site's own id for local changes).
    pub site: String,
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
        let site = super::site_id(&store.index).await?;
        let record = store.index.get(key)?;
        Ok::<_, StoreError>(origin.map(|o| {
            Held {
                ms: o.ms,
                site: if o.site.is_empty() { site } else { o.site },
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

/// Applies one shipped change; what happened (`applied`, `superseded`).
async fn apply(store: &Arc<Store>, key: Vec<u8>, req: Request) -> Result<&'static str, StoreError> {
    let (parts, body) = req.into_parts();
    let body = body.into_data_stream();
    let bad = |m: &str| StoreError::Invalid(m.to_string());
    let parsed = (|| {
        let site = header(&parts.headers, SITE_HEADER)
            .filter(|s| !s.is_empty() && s.len() <= 64)
            .ok_or_else(|| bad("missing Hoard-Site"))?;
        let ms = header(&parts.headers, TIME_HEADER)
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| bad("missing or invalid Hoard-Site-Time"))?;
        Ok::<_, StoreError>((site.to_string(), ms))
    })();
    let (site, ms) = match parsed {
        Ok(p) => p,
        Err(e) => {
            crate::http::drain_rejected(&parts.headers, body).await;
            return Err(e);
        }
    };
    let index = &store.index;
    let local = super::site_id(index).await?;
    if site == local {
        crate::http::drain_rejected(&parts.headers, body).await;
        return Err(StoreError::Invalid(
            "a change of this very site: --replicate-to points at itself".into(),
        ));
    }
    if !newer(store.site_origin(&key).await?.as_ref(), &local, ms, &site) {
        crate::http::drain_rejected(&parts.headers, body).await;
        return Ok("superseded");
    }
    let version = Version {
        ms,
        site,
        applied_ms: 0,
        pending: false,
    };
    if parts.method == Method::DELETE {
        return remote_delete(store, key, version).await;
    }
    let unlinked = match header(&parts.headers, STATE_HEADER) {
        Some("live") | None => false,
        Some("unlinked") => true,
        Some(_) => return Err(bad("Hoard-Site-State: live or unlinked")),
    };
    let record = index.get(&key)?;
    let present = record
        .as_ref()
        .filter(|r| matches!(r.state, State::Live | State::Unlinked));
    if parts.headers.contains_key(REUSE_HEADER) {
        let md5 = header(&parts.headers, MD5_HEADER);
        let same = present.is_some_and(|r| r.md5.map(|m| crate::hex::hex(&m)).as_deref() == md5);
        let Some(r) = present.filter(|_| same && md5.is_some()) else {
            return Err(StoreError::Conflict);
        };
        return match (r.state, unlinked) {
            (State::Live, true) => expecting(store, &key, &version, unlink(store, &key)).await,
            (State::Unlinked, true) | (State::Live, false) => {
                let set = FeedCommand::SetVersion {
                    key: key.clone(),
                    version: Version {
                        applied_ms: r.changed_ms,
                        ..version
                    },
                };
                feed(store, set).await?;
                Ok("applied")
            }
            // No command makes an unlinked key live again: write it whole.
            _ => Err(StoreError::Conflict),
        };
    }
    let len = header(&parts.headers, "content-length")
        .and_then(|l| l.parse::<u64>().ok())
        .ok_or_else(|| bad("Content-Length required"))?;
    let put = async {
        let opts = PutOptions {
            replace: true,
            // A zero-byte value (an S3 empty object) replicates like any other.
            allow_empty: true,
            ..Default::default()
        };
        match store.put_with(key.clone(), body, Some(len), opts).await {
            Ok(_) => Ok("applied"),
            Err(PutError { error, unread }) => {
                if let Some(body) = unread {
                    crate::http::drain_rejected(&parts.headers, body).await;
                }
                Err(error)
            }
        }
    };
    expecting(store, &key, &version, put).await?;
    if unlinked {
        expecting(store, &key, &version, unlink(store, &key)).await?;
    }
    Ok("applied")
}

/// True when a change from `site` at `ms` is newer than `current` (this site: `local`).
pub fn newer(current: Option<&Origin>, local: &str, ms: u64, site: &str) -> bool {
    current.is_none_or(|c| {
        let held = if c.site.is_empty() { local } else { &c.site };
        (ms, site) > (c.ms, held)
    })
}

async fn unlink(store: &Store, key: &[u8]) -> Result<&'static str, StoreError> {
    store.unlink(key.to_vec()).await.map(|()| "applied")
}

async fn feed(store: &Store, cmd: FeedCommand) -> Result<(), StoreError> {
    let _ = store.index.apply(Command::Feed(cmd)).await?;
    Ok(())
}

/// Runs `op` announced as the change `version` of `key`; the announcement is withdrawn
/// if it fails.
async fn expecting(
    store: &Store,
    key: &[u8],
    version: &Version,
    op: impl std::future::Future<Output = Result<&'static str, StoreError>>,
) -> Result<&'static str, StoreError> {
    let expect = FeedCommand::Expect {
        key: key.to_vec(),
        version: version.clone(),
    };
    feed(store, expect).await?;
    let result = op.await;
    if result.is_err() {
        feed(store, FeedCommand::Unexpect { key: key.to_vec() }).await?;
    }
    result
}

async fn remote_delete(
    store: &Arc<Store>,
    key: Vec<u8>,
    version: Version,
) -> Result<&'static str, StoreError> {
    let record = store.index.get(&key)?;
    let state = record.as_ref().map(|r| r.state);
    if !matches!(state, Some(State::Live | State::Unlinked)) {
        // Nothing to delete: remember the delete, so an older write cannot revive it.
        let set = FeedCommand::SetVersion { key, version };
        feed(store, set).await?;
        return Ok("applied");
    }
    if state == Some(State::Live) && store.cfg.protect {
        expecting(store, &key, &version, unlink(store, &key)).await?;
    }
    let delete = async {
        match store.delete(key.clone()).await {
            Ok(()) | Err(StoreError::NotFound) => Ok("applied"),
            Err(e) => Err(e),
        }
    };
    expecting(store, &key, &version, delete).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_writer_wins_then_larger_site_id() {
        let at = |ms, site: &str, deleted| Origin {
            ms,
            site: site.into(),
            deleted,
        };
        assert!(newer(None, "a", 1, "b"));
        assert!(newer(Some(&at(5, "", false)), "a", 6, "b"));
        assert!(!newer(Some(&at(5, "", false)), "a", 4, "b"));
        // Tie: the larger site id wins, the same change is not newer than itself.
        assert!(newer(Some(&at(5, "", false)), "a", 5, "b"));
        assert!(!newer(Some(&at(5, "", true)), "b", 5, "a"));
        assert!(!newer(Some(&at(5, "c", false)), "a", 5, "c"));
        assert!(newer(Some(&at(5, "c", true)), "a", 7, "c"));
    }
}
