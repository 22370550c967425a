//! The JSON interface's handlers: translate requests into store calls and store errors
//! into `{"success": false, "error": …}`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::auth::{Auth, AuthMode};
use crate::index::IndexError;
use crate::store::{PutOptions, Store, StoreError};

/// What the handlers share.
#[derive(Clone)]
pub(super) struct JsonState {
    pub(super) store: Arc<Store>,
    pub(super) auth: Auth,
    pub(super) max_body: usize,
    /// `--rate-limit`, shared with the other front-ends.
    pub(super) limiter: Option<Arc<crate::ratelimit::RateLimiter>>,
}

/// The JSON interface's router.
pub(super) fn router(state: JsonState) -> axum::Router {
    axum::Router::new()
        .fallback(dispatch)
        .with_state(Arc::new(state))
}

/// A failure, answered as `{"success": false, "error": …}`.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"success": false, "error": self.1});
        let mut res = (self.0, axum::Json(body)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::Key(_) | StoreError::Invalid(_) | StoreError::ClientBody(_) => {
                StatusCode::BAD_REQUEST
            }
            StoreError::NotFound => StatusCode::NOT_FOUND,
            StoreError::Exists
            | StoreError::Protected
            | StoreError::Forbidden(_)
            | StoreError::QuotaExceeded(_) => StatusCode::FORBIDDEN,
            StoreError::Conflict | StoreError::Superseded => StatusCode::CONFLICT,
            StoreError::Empty => StatusCode::BAD_REQUEST,
            // No leader, or a leader without its quorum: another member (or a
            // moment later) can serve; the message says whether it was applied.
            StoreError::Index(IndexError::Replication(_)) => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Index(_) => StatusCode::INTERNAL_SERVER_ERROR,
            StoreError::Volume(_) => StatusCode::BAD_GATEWAY,
            StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Failure(status, e.to_string())
    }
}

fn success(data: Option<serde_json::Value>) -> Response {
    let body = match data {
        Some(data) => serde_json::json!({"success": true, "data": data}),
        None => serde_json::json!({"success": true}),
    };
    axum::Json(body).into_response()
}

/// Whether `req` needs the bearer token under `auth`'s mode.
fn requires_token(auth: &Auth, method: &Method, path: &str) -> bool {
    match auth.mode() {
        AuthMode::None => false,
        AuthMode::Writes => !matches!(*method, Method::GET | Method::HEAD),
        AuthMode::All => path != "/health",
    }
}

async fn dispatch(State(s): State<Arc<JsonState>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if let Some(limiter) = s.limiter.as_ref().filter(|_| path != "/health") {
        if let Err(wait) = limiter.take(crate::ratelimit::peer_ip(&req)) {
            let mut res = Failure(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded: retry later".into(),
            )
            .into_response();
            res.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::ratelimit::retry_after(wait)),
            );
            return res;
        }
    }
    if requires_token(&s.auth, req.method(), &path) && !s.auth.bearer_ok(req.headers()) {
        return Failure(StatusCode::UNAUTHORIZED, "authentication required".into()).into_response();
    }
    let result = match (req.method().clone(), path.as_str()) {
        (Method::GET, "/health") => Ok(health(&s.store)),
        (_, "/health") => Err(Failure(
            StatusCode::BAD_REQUEST,
            "/health is the health endpoint here, not a key".into(),
        )),
        (method, _) => match crate::key::parse(&path) {
            Err(e) => Err(Failure::from(StoreError::Key(e))),
            Ok(key) => match allowed(&s, req.headers(), &method, &key).map(|()| method) {
                Err(refused) => Err(refused),
                Ok(Method::GET) => get(&s, &key).await,
                Ok(Method::PUT) => put(&s, key, req.into_body()).await,
                Ok(Method::DELETE) => s
                    .store
                    .delete(key)
                    .await
                    .map(|()| success(None))
                    .map_err(Failure::from),
                _ => Err(Failure(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use GET, PUT or DELETE".into(),
                )),
            },
        },
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The store's access rule for `key` (tenancy: S3 buckets' contents, the S3 API's own
/// keys): the operator is who sent the token, or anyone with `--native-open`.
fn allowed(s: &JsonState, headers: &HeaderMap, method: &Method, key: &[u8]) -> Result<(), Failure> {
    use crate::store::tenancy::{Access, Principal};
    let who = if s.auth.operator(headers) {
        Principal::Operator
    } else {
        Principal::Anonymous
    };
    let access = if *method == Method::GET {
        Access::Read
    } else {
        Access::Write
    };
    s.store.authorize(&who, key, access).map_err(Failure::from)
}

fn health(store: &Store) -> Response {
    success(Some(store.summary()))
}

/// `GET /:key`: the value, parsed as JSON (or as a string when it is other UTF-8 text).
async fn get(s: &JsonState, key: &[u8]) -> Result<Response, Failure> {
    let opened = s.store.open(key, None).await?;
    if opened.record.size > s.max_body as u64 {
        return Err(Failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "value of {} bytes is larger than the JSON interface returns (--json-max-body {})",
                opened.record.size, s.max_body
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(opened.record.size as usize);
    let mut body = opened.body;
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk?);
        if bytes.len() > s.max_body {
            return Err(Failure(
                StatusCode::BAD_GATEWAY,
                "replica sent more than the value's size".into(),
            ));
        }
    }
    let data = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => v,
        Err(_) => match String::from_utf8(bytes) {
            Ok(text) => serde_json::Value::String(text),
            Err(_) => {
                return Err(Failure(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "the value is neither JSON nor UTF-8 text (read it over HTTP)".into(),
                ))
            }
        },
    };
    Ok(success(Some(data)))
}

/// The body of `PUT /:key`.
#[derive(serde::Deserialize)]
struct PutBody {
    value: serde_json::Value,
}

/// `PUT /:key` with `{"value": …}`: stores the JSON text of `value`, replacing.
async fn put(s: &JsonState, key: Vec<u8>, body: Body) -> Result<Response, Failure> {
    use http_body_util::BodyExt as _;
    let bytes = http_body_util::Limited::new(body, s.max_body)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Failure(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body over --json-max-body ({} bytes)", s.max_body),
                )
            } else {
                Failure(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
            }
        })?
        .to_bytes();
    let parsed: PutBody = serde_json::from_slice(&bytes).map_err(|e| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("the body must be {{\"value\": <any JSON>}}: {e}"),
        )
    })?;
    let text = serde_json::to_vec(&parsed.value)
        .map_err(|e| Failure(StatusCode::BAD_REQUEST, e.to_string()))?;
    let len = text.len() as u64;
    let stream = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(text))]);
    s.store
        .put_with(
            key,
            stream,
            Some(len),
            PutOptions {
                replace: true,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Failure::from(e.error))?;
    Ok(success(None))
}
