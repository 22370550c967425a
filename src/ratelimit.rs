//! The front-ends' request admission: a per-client token-bucket rate limit
//! (`--rate-limit N`: each client — an IP address, an IPv6 /64 — may make N requests per
//! second, in bursts of up to N) shared by every front-end port of the server (the
//! HTTP API, S3, the binary protocol and the JSON interface: a client's requests count
//! together wherever they arrive), and a time limit on handling HTTP API requests that
//! carry no upload (`--request-timeout`; an upload is bounded by the body idle timeout
//! instead). Beyond the limit each front-end answers in its own terms: 429 with
//! `Retry-After` (HTTP and JSON), S3's `SlowDown` (503, which S3 clients retry with
//! backoff), an error answer on the binary protocol.
//!
//! Memory is bounded: at most [`MAX_CLIENTS`] clients are tracked; a client idle for a
//! second has a full bucket again and is forgotten when room is needed; while all
//! slots are taken by clients active within the last second, new clients are refused.
//!
//! Exempt from both ([`exempt`]): `/-/health`, and an index cluster's own traffic, so a
//! busy client can neither make the leader miss heartbeats nor cut a membership change
//! half-way. Raft's RPCs and the calls members forward to the leader (`/-/raft/…`)
//! are bounded by the calling member's per-call timeouts; membership changes
//! (`/-/cluster/members…`) by their own limit,
//! [`crate::raft::members::MEMBERSHIP_TIMEOUT`]. Under `--auth-mode` both need the
//! cluster token like any write.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Most clients whose buckets are tracked at once.
pub const MAX_CLIENTS: usize = 65_536;

/// Per-client token buckets, each refilled at `rate` tokens per second and holding at
/// most `rate`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    state: Mutex<Clients>,
}

#[derive(Debug)]
struct Clients {
    /// Tokens left and time of the last update, per client.
    buckets: HashMap<IpAddr, (f64, Instant)>,
    /// When idle clients were last forgotten (at most every 100 ms).
    pruned: Instant,
}

impl RateLimiter {
    /// `rate` requests per second per client (at least 1).
    pub fn new(rate: u32) -> Self {
        RateLimiter {
            rate: f64::from(rate.max(1)),
            state: Mutex::new(Clients {
                buckets: HashMap::new(),
                pruned: Instant::now(),
            }),
        }
    }

    /// Takes one token of `client`'s bucket; `Err(wait)` with the time until one is
    /// available.
    pub fn take(&self, client: IpAddr) -> Result<(), Duration> {
        let client = client_of(client);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if state.buckets.len() >= MAX_CLIENTS && !state.buckets.contains_key(&client) {
            // A bucket untouched for a second is full again: forgetting it loses
            // nothing. Scans are spaced so that a flood of new clients costs little.
            if now.duration_since(state.pruned) >= Duration::from_millis(100) {
                state.pruned = now;
                state
                    .buckets
                    .retain(|_, (_, last)| now.duration_since(*last) < Duration::from_secs(1));
            }
            if state.buckets.len() >= MAX_CLIENTS {
                return Err(Duration::from_secs(1));
            }
        }
        let rate = self.rate;
        let (tokens, last) = state.buckets.entry(client).or_insert((rate, now));
        let refilled = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
        *last = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            Err(Duration::from_secs_f64((1.0 - refilled) / rate))
        }
    }
}

/// The client an address counts as: itself, or its /64 for IPv6 (one host usually
/// holds a whole /64); IPv4-mapped IPv6 addresses are IPv4.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The client address of an HTTP request (from the connection); unspecified when
/// unknown (such requests then share one bucket).
pub fn peer_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// Seconds to announce in `Retry-After` for a wait.
pub fn retry_after(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Settings of [`admit`].
#[derive(Debug, Clone)]
pub struct Admission {
    /// The rate limit, when on.
    pub limiter: Option<Arc<RateLimiter>>,
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
    if let Some(limiter) = &adm.limiter {
        if let Err(wait) = limiter.take(peer_ip(&req)) {
            let secs = retry_after(wait);
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
    fn each_client_has_its_bursts_then_is_refused() {
        let l = RateLimiter::new(5);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..5 {
            assert!(l.take(a).is_ok());
        }
        let wait = l.take(a).unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        // Another client is not affected.
        assert!(l.take(b).is_ok());
        std::thread::sleep(Duration::from_millis(250));
        assert!(l.take(a).is_ok());
    }

    #[test]
    fn ipv6_clients_are_their_slash_64() {
        let l = RateLimiter::new(1);
        assert!(l.take("2001:db8:1:2::1".parse().unwrap()).is_ok());
        assert!(l.take("2001:db8:1:2::ffff".parse().unwrap()).is_err());
        assert!(l.take("2001:db8:1:3::1".parse().unwrap()).is_ok());
        // An IPv4-mapped address is its IPv4 address.
        assert!(l.take("192.0.2.7".parse().unwrap()).is_ok());
        assert!(l.take("::ffff:192.0.2.7".parse().unwrap()).is_err());
    }

    #[test]
    fn tracked_clients_are_bounded() {
        let l = RateLimiter::new(1);
        for i in 0..MAX_CLIENTS as u32 {
            assert!(l.take(IpAddr::from((i + 1).to_be_bytes())).is_ok());
        }
        // All active within the last second: a new client waits.
        assert!(l.take("203.0.113.1".parse().unwrap()).is_err());
        assert!(l.state.lock().unwrap().buckets.len() <= MAX_CLIENTS);
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
