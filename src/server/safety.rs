//! The index server's protections: flags, and the layers wrapped around the router
//! (authentication, rate limit, request time limit), plus the health watch that fails
//! writes to a volume that stopped answering.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Auth, AuthArgs};
use crate::net::{ListenArgs, ServeOptions};
use crate::ratelimit::{Admission, RateLimiter};
use crate::replica::ClientOptions;

/// How the index server reaches volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTPS (volumes started with --tls-cert / --tls-key).
    Https,
}

/// `hoard server` flags for safety under faults and hostile clients.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SafetyArgs {
    /// Replicas that must hold a value before PUT answers 201 (default: --replicas,
    /// minikeyvalue's behaviour). Below --replicas, the missing copies are recorded,
    /// never served, and copied in the background once their volumes are up.
    #[arg(long, env = "HOARD_WRITE_QUORUM")]
    pub write_quorum: Option<usize>,
    /// Most requests per second per client IP address (IPv6: per /64), bursts of as
    /// many, counted together over every front-end port (HTTP, S3, binary protocol,
    /// JSON); 0 = unlimited. Beyond: 429 with Retry-After (S3: SlowDown).
    #[arg(long, env = "HOARD_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,
    /// Longest time to handle a request without an upload (0 = unlimited).
    #[arg(long, env = "HOARD_REQUEST_TIMEOUT", default_value = "60s", value_parser = crate::units::parse_duration)]
    pub request_timeout: Duration,
    /// Scheme of the volume servers (their names in --volumes stay host:port).
    #[arg(long, env = "HOARD_VOLUME_SCHEME", value_enum, default_value = "http")]
    pub volume_scheme: Scheme,
    /// PEM file of the CA that signed the volumes' certificates.
    #[arg(long, env = "HOARD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Lifetime of signed volume URLs in redirects (--auth-mode all).
    #[arg(long, env = "HOARD_SIGNED_URL_TTL", default_value = "60s", value_parser = crate::units::parse_duration)]
    pub signed_url_ttl: Duration,
    /// Authentication.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Connections, timeouts and TLS of the server itself.
    #[command(flatten)]
    pub listen: ListenArgs,
}

/// The resolved protections of an index server.
#[derive(Debug, Clone)]
pub struct SafetyConfig {
    /// Replicas that must acknowledge a PUT (`1..=replicas`); `None` = all.
    pub write_quorum: Option<usize>,
    /// Requests per second per client (0 = off).
    pub rate_limit: u32,
    /// The per-client rate limit every front-end shares, when on.
    pub limiter: Option<Arc<RateLimiter>>,
    /// Time limit of requests without an upload.
    pub request_timeout: Duration,
    /// Who may do what.
    pub auth: Auth,
    /// Lifetime of signed redirect URLs.
    pub signed_url_ttl: Duration,
    /// Talk HTTPS to volumes.
    pub volume_https: bool,
    /// Trust roots for volume certificates.
    pub tls_ca: Option<PathBuf>,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig {
            write_quorum: None,
            rate_limit: 0,
            limiter: None,
            request_timeout: Duration::ZERO,
            auth: Auth::default(),
            signed_url_ttl: Duration::from_secs(60),
            volume_https: false,
            tls_ca: None,
        }
    }
}

impl SafetyConfig {
    /// The configuration `args` describe.
    pub fn from_args(args: &SafetyArgs, replicas: usize) -> anyhow::Result<Self> {
        if let Some(w) = args.write_quorum {
            anyhow::ensure!(
                (1..=replicas).contains(&w),
                "--write-quorum must be between 1 and --replicas ({replicas})"
            );
        }
        Ok(SafetyConfig {
            write_quorum: args.write_quorum.filter(|&w| w < replicas),
            rate_limit: args.rate_limit,
            limiter: (args.rate_limit > 0).then(|| Arc::new(RateLimiter::new(args.rate_limit))),
            request_timeout: args.request_timeout,
            auth: Auth::from_args(&args.auth)?,
            signed_url_ttl: args.signed_url_ttl,
            volume_https: args.volume_scheme == Scheme::Https,
            tls_ca: args.tls_ca.clone(),
        })
    }

    /// Settings of the volume client.
    pub fn client_options(&self) -> anyhow::Result<ClientOptions> {
        Ok(ClientOptions {
            https: self.volume_https,
            ca: match &self.tls_ca {
                Some(ca) => crate::tls::ca_certificates(ca)?,
                None => Vec::new(),
            },
            token: self.auth.token(),
        })
    }

    /// Wraps the router: authentication outside, then admission (rate limit, time
    /// limit), then the handlers.
    pub fn layers(&self, router: axum::Router) -> axum::Router {
        let admission = Admission {
            limiter: self.limiter.clone(),
            request_timeout: self.request_timeout,
        };
        router
            .layer(axum::middleware::from_fn_with_state(
                admission,
                crate::ratelimit::admit,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.auth.clone(),
                crate::auth::index_guard,
            ))
    }
}

/// How the server listens, from `hoard server`'s flags.
pub fn serve_options(args: &SafetyArgs) -> anyhow::Result<ServeOptions> {
    ServeOptions::from_args(&args.listen)
}
