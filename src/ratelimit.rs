//! The index server's request admission: a global token-bucket rate limit
//! (`--rate-limit N` requests per second, bursts up to N; beyond: 429 with
//! `Retry-After`) and a time limit on handling requests that carry no upload
//! (`--request-timeout`; an upload is bounded by the body idle timeout instead).
//!
//! Exempt from both ([`exempt`]): `/-/health`, and an index cluster's own traffic, so a
//! busy client can neither make the leader miss heartbeats nor cut a membership change
//! half-way. Raft's RPCs and the calls members forward to the leader (`/-/raft/…`)
//! are bounded by the calling member's per-call timeouts; membership changes
//! (`/-/cluster/members…`) by their own limit,
//! [`crate::raft::members::MEMBERSHIP_TIMEOUT`]. Under `--auth-mode` both need the
//! cluster token like any write.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// A token bucket refilled at `rate` tokens per second, holding at most `rate`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket allowing `rate` operations per second.
    pub fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        TokenBucket {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes one token; `Err(wait)` with the time until one is available.
    pub fn take(&self) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }
}

/// Settings of [`admit`].
#[derive(Debug, Clone)]
pub struct Admission {
    /// The rate limit, when on.
    pub bucket: Option<Arc<TokenBucket>>,
    /// Longest time to handle a request without an upload; zero = no limit.
    pub request_timeout: Duration,
}

/// Whether requests to `path` bypass the client rate limit and time limit: the health
/// check and the index cluster's own traffic (see the module documentation).
pub fn exempt(path: &str) -> bool {
    path == "/-/health"
        || path.starts_with("/-/raft/")
        || path == "/-/cluster/members"
        || path.starts_with("/-/cluster/members/")
}

/// Middleware: rate limit, then the request time limit.
pub async fn admit(State(adm): State<Admission>, req: Request, next: Next) -> Response {
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    if let Some(bucket) = &adm.bucket {
        if let Err(wait) = bucket.take() {
            let secs = wait.as_secs().max(1);
            let mut res = (
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded: retry later\n",
            )
                .into_response();
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return res;
        }
    }
    if adm.request_timeout.is_zero() || req.method() == Method::PUT {
        return next.run(req).await;
    }
    match tokio::time::timeout(adm.request_timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "request timed out in the server\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_bursts_then_refuses() {
        let b = TokenBucket::new(5);
        for _ in 0..5 {
            assert!(b.take().is_ok());
        }
        let wait = b.take().unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        std::thread::sleep(Duration::from_millis(250));
        assert!(b.take().is_ok());
    }

    #[test]
    fn cluster_traffic_is_exempt_and_clients_are_not() {
        for path in [
            "/-/health",
            "/-/raft/append",
            "/-/raft/members",
            "/-/cluster/members",
            "/-/cluster/members/4",
        ] {
            assert!(exempt(path), "{path}");
        }
        for path in [
            "/-/cluster",
            "/-/raftx",
            "/-/admin/verify",
            "/k",
            "/-/cluster/membersx",
        ] {
            assert!(!exempt(path), "{path}");
        }
    }
}
