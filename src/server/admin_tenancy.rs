//! Tenancy administration (what `hoard key …` and `hoard bucket …` call). Every
//! request needs the admin token (`--auth-token`) whatever the auth mode; a server
//! without a token answers them only with `--native-open`.
//!
//! | request | effect |
//! | --- | --- |
//! | `POST /-/admin/keys` `{"name": "…"}` | create an access key: 201 `{"id", "secret", "name"}` (the only time the secret is shown) |
//! | `GET /-/admin/keys` | the access keys (no secrets) |
//! | `DELETE /-/admin/keys/{id}` | delete one: 204, 404 when absent; its id is never valid again |
//! | `GET /-/admin/buckets` | buckets with owner, grants, quota and usage |
//! | `POST /-/admin/buckets/{name}/grants` `{"key", "grant": "read"\|"write"\|"owner", "allow"}` | add or remove a grant: 204, 404 when the bucket or key is absent |
//! | `PUT /-/admin/buckets/{name}/quota` `{"max_bytes", "max_objects"}` (null: no limit) | set the quota: 204 |
//!
//! Changes go through the index's log (`Command::Tenancy`), so any member of an index
//! cluster takes them.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::App;
use crate::store::tenancy::{new_credentials, AccessKey, Grant, Quota, TenancyCommand};
use crate::store::StoreError;

/// Path of the access keys.
pub const KEYS: &str = "/-/admin/keys";
/// Path of the buckets.
pub const BUCKETS: &str = "/-/admin/buckets";

/// Longest request body.
const MAX_BODY: usize = 4 << 10;
/// Most buckets `GET /-/admin/buckets` lists.
const MAX_BUCKETS: usize = 100_000;

/// Whether `path` is one of ours.
pub fn owns(path: &str) -> bool {
    [KEYS, BUCKETS]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

#[derive(serde::Deserialize)]
struct NewKey {
    name: String,
}

#[derive(serde::Deserialize)]
struct GrantChange {
    key: String,
    grant: Grant,
    allow: bool,
}

/// Dispatches a request under [`KEYS`] or [`BUCKETS`].
pub async fn handle(app: &Arc<App>, req: Request) -> Response {
    let auth = &app.cfg.safety.auth;
    let admin = auth.bearer_ok(req.headers()) || (auth.token().is_none() && auth.is_open());
    if !admin {
        return failure(
            StatusCode::UNAUTHORIZED,
            "tenancy administration needs the admin token (--auth-token)",
        )
        .into_response();
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return failure(StatusCode::BAD_REQUEST, &format!("reading body: {e}")).into_response()
        }
    };
    let result = match (method, path.as_str()) {
        (Method::GET, KEYS) => list_keys(app).await,
        (Method::POST, KEYS) => create_key(app, &body).await,
        (Method::DELETE, p) if p.starts_with(KEYS) => delete_key(app, &p[KEYS.len() + 1..]).await,
        (Method::GET, BUCKETS) => list_buckets(app).await,
        (method, p) if p.starts_with(BUCKETS) => {
            bucket_change(app, &method, &p[BUCKETS.len() + 1..], &body).await
        }
        _ => Err(failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        )),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

type Answer = Result<Response, Failure>;

fn parse<'a, T: serde::Deserialize<'a>>(body: &'a [u8], shape: &str) -> Result<T, Failure> {
    serde_json::from_slice(body)
        .map_err(|e| failure(StatusCode::BAD_REQUEST, &format!("expected {shape}: {e}")))
}

async fn create_key(app: &App, body: &[u8]) -> Answer {
    let NewKey { name } = parse(body, r#"{"name": "…"}"#)?;
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            "a key's name is 1-256 printable characters",
        ));
    }
    let (id, secret) = new_credentials()
        .map_err(|e| failure(StatusCode::INTERNAL_SERVER_ERROR, &format!("random: {e}")))?;
    let key = AccessKey {
        name: name.clone(),
        secret: secret.clone(),
        created_ms: crate::clock::now_ms(),
        seeded: false,
        deleted: false,
    };
    let cmd = TenancyCommand::CreateKey {
        id: id.clone(),
        key,
    };
    app.store.tenancy(cmd).await.map_err(store_failure)?;
    tracing::info!("S3 access key {id} ({name}) created");
    let body = json!({ "id": id, "secret": secret, "name": name });
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

async fn list_keys(app: &App) -> Answer {
    let keys = app.store.access_keys().await.map_err(store_failure)?;
    let keys: Vec<_> = keys
        .into_iter()
        .filter(|(_, k)| !k.deleted)
        .map(|(id, k)| json!({ "id": id, "name": k.name, "created_ms": k.created_ms, "seeded": k.seeded }))
        .collect();
    Ok(axum::Json(keys).into_response())
}

async fn delete_key(app: &App, id: &str) -> Answer {
    let cmd = TenancyCommand::DeleteKey { id: id.to_string() };
    app.store.tenancy(cmd).await.map_err(store_failure)?;
    tracing::info!("S3 access key {id} deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_buckets(app: &App) -> Answer {
    let prefix = crate::index::tenancy::BUCKET_ENTRY;
    let entries = app
        .store
        .frontend_range(prefix.to_string(), None, MAX_BUCKETS)
        .await
        .map_err(store_failure)?;
    let mut out = Vec::with_capacity(entries.len());
    for (entry, raw) in entries {
        let (Some(name), Some(b)) = (
            entry.strip_prefix(prefix),
            crate::store::tenancy::Bucket::decode(&raw),
        ) else {
            continue;
        };
        let usage = app.store.bucket_usage(name).map_err(store_failure)?;
        out.push(json!({
            "name": name, "owner": b.owner, "created_ms": b.created_ms,
            "grants": b.grants(), "quota": b.quota,
            "usage": { "objects": usage.keys, "bytes": usage.bytes },
        }));
    }
    Ok(axum::Json(out).into_response())
}

async fn bucket_change(app: &App, method: &Method, rest: &str, body: &[u8]) -> Answer {
    let cmd = match (method, rest.rsplit_once('/')) {
        (&Method::POST, Some((bucket, "grants"))) => {
            let g: GrantChange = parse(
                body,
                r#"{"key": ID, "grant": "read|write|owner", "allow": true}"#,
            )?;
            TenancyCommand::Grant {
                bucket: bucket.to_string(),
                key: g.key,
                grant: g.grant,
                allow: g.allow,
            }
        }
        (&Method::PUT, Some((bucket, "quota"))) => TenancyCommand::SetQuota {
            bucket: bucket.to_string(),
            quota: parse::<Quota>(body, r#"{"max_bytes": N|null, "max_objects": N|null}"#)?,
        },
        _ => return Err(failure(StatusCode::NOT_FOUND, "not found")),
    };
    app.store.tenancy(cmd.clone()).await.map_err(|e| match e {
        StoreError::NotFound => failure(
            StatusCode::NOT_FOUND,
            "no such bucket, or no such access key",
        ),
        other => store_failure(other),
    })?;
    tracing::info!("tenancy change: {cmd:?}");
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn store_failure(e: StoreError) -> Failure {
    let status = match e {
        StoreError::NotFound => StatusCode::NOT_FOUND,
        StoreError::Exists => StatusCode::CONFLICT,
        ref other => super::error::store_status(other),
    };
    failure(status, &e.to_string())
}

/// A refused request: its status and message, answered as `{"error": …}`.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

fn failure(status: StatusCode, message: &str) -> Failure {
    Failure(status, message.to_string())
}
