//! The native HTTP API's side of tenancy: who a request is (the operator with the
//! token or `--native-open`, else nobody in particular) and the store's one access rule
//! ([`crate::store::Store::authorize`]) applied to the key or key range it names.

use axum::http::{HeaderMap, Method};

use super::{ApiError, App};
use crate::store::tenancy::{Access, Principal};

/// The principal of a native request with `headers`.
pub fn principal(app: &App, headers: &HeaderMap) -> Principal {
    if app.cfg.safety.auth.operator(headers) {
        Principal::Operator
    } else {
        Principal::Anonymous
    }
}

/// What a method does to a key: reads for GET and HEAD, writes for anything else.
pub fn access_of(method: &Method) -> Access {
    if *method == Method::GET || *method == Method::HEAD {
        Access::Read
    } else {
        Access::Write
    }
}

/// The rule for `key` by a request with `headers` doing `access`.
pub fn check(app: &App, headers: &HeaderMap, key: &[u8], access: Access) -> Result<(), ApiError> {
    app.store
        .authorize(&principal(app, headers), key, access)
        .map_err(ApiError::from)
}

/// The rule for a listing of `prefix`.
pub async fn check_prefix(app: &App, headers: &HeaderMap, prefix: &[u8]) -> Result<(), ApiError> {
    app.store
        .authorize_prefix(&principal(app, headers), prefix)
        .await
        .map_err(ApiError::from)
}
