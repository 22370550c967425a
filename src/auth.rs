//! Shared-secret authentication, in minivault's modes.
//!
//! * Clients send `Authorization: Bearer <token>`; the index server checks it in
//!   constant time. `--auth-mode writes` protects PUT, DELETE and UNLINK (and any other
//!   non-read method); `all` protects reads too. `/-/health` and `/-/health/ready` are always open (load balancers),
//!   and so is the dashboard page `/-/ui` with its static assets (its data API is not). A refused
//!   request answers 401 with `WWW-Authenticate: Bearer`.
//! * Volumes started with the same token accept PUT and DELETE only with that bearer
//!   token, i.e. only from index servers (whose volume client sends it).
//! * With `all`, a volume also refuses unauthenticated reads, so the index's 302 carries
//!   a short-lived signed URL: `?exp=<unix seconds>&sig=<hex HMAC-SHA256(token,
//!   path "\n" exp)>`, `path` being the request path exactly as in the Location. The
//!   native volume verifies it; nginx volumes cannot (see ARCHITECTURE.md, Security).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::hex::hex;
use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Which requests need the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum AuthMode {
    /// No authentication.
    #[default]
    None,
    /// Writes (PUT, DELETE, UNLINK…) need the token; reads are open.
    Writes,
    /// Every request needs the token (volumes: or a signed URL).
    All,
}

/// Authentication flags shared by `hoard server` and `hoard volume`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// Shared secret: clients (and index servers, towards volumes) send
    /// `Authorization: Bearer <token>`.
    #[arg(long, env = "HOARD_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Read the shared secret from this file (trailing newline ignored).
    #[arg(long, env = "HOARD_AUTH_TOKEN_FILE", conflicts_with = "auth_token")]
    pub auth_token_file: Option<PathBuf>,
    /// What the token protects; default `writes` when a token is given, else `none`.
    #[arg(long, env = "HOARD_AUTH_MODE", value_enum)]
    pub auth_mode: Option<AuthMode>,
}

/// The authentication policy of one server. Cheap to clone.
#[derive(Clone, Default)]
pub struct Auth {
    mode: AuthMode,
    secret: Option<Arc<[u8]>>,
    /// `--native-open`: requests without the token count as the operator's for
    /// tenancy (S3 buckets' contents).
    open: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("mode", &self.mode)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("open", &self.open)
            .finish()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No or a wrong bearer token (and no valid signature).
    #[error("authentication required")]
    Unauthorized,
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut res = (StatusCode::UNAUTHORIZED, format!("{self}\n")).into_response();
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        res
    }
}

impl Auth {
    /// The policy `args` describe; an error when a mode is set without a token, or the
    /// token file cannot be read.
    pub fn from_args(args: &AuthArgs) -> anyhow::Result<Self> {
        let token = match (&args.auth_token, &args.auth_token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let token = token.filter(|t| !t.is_empty());
        let mode = args.auth_mode.unwrap_or(if token.is_some() {
            AuthMode::Writes
        } else {
            AuthMode::None
        });
        anyhow::ensure!(
            mode == AuthMode::None || token.is_some(),
            "--auth-mode {mode:?} needs --auth-token or --auth-token-file"
        );
        Ok(Self::new(mode, token.as_deref()))
    }

    /// A policy with `mode` and the shared secret `token`.
    pub fn new(mode: AuthMode, token: Option<&str>) -> Self {
        Auth {
            mode,
            secret: token.map(|t| Arc::from(t.as_bytes())),
            open: false,
        }
    }

    /// This policy with `--native-open` set to `open`.
    pub fn native_open(self, open: bool) -> Self {
        Auth { open, ..self }
    }

    /// Whether `--native-open` is set.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Whether a native request with `headers` acts as the operator for tenancy: it
    /// carries the token, or the native API is declared open.
    pub fn operator(&self, headers: &HeaderMap) -> bool {
        self.open || self.bearer_ok(headers)
    }

    /// The mode.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The shared secret, to send to volumes.
    pub fn token(&self) -> Option<String> {
        self.secret
            .as_ref()
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }

    /// True when `headers` carry `Authorization: Bearer <the secret>`. Compared in
    /// constant time (for a given length).
    pub fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        let Some(secret) = &self.secret else {
            return false;
        };
        headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .any(|t| ct_eq(t, secret))
    }

    /// True when `token` is the shared secret (compared in constant time for a given
    /// length); false when there is none. For protocols without headers (the binary
    /// protocol's AUTH).
    pub fn token_ok(&self, token: &[u8]) -> bool {
        self.secret.as_ref().is_some_and(|s| ct_eq(token, s))
    }

    /// Whether the index server requires the token for this request (never for
    /// [`is_public`] paths).
    pub fn index_requires(&self, method: &Method, path: &str) -> bool {
        if is_public(path) {
            return false;
        }
        match self.mode {
            AuthMode::None => false,
            AuthMode::Writes => !is_read(method),
            AuthMode::All => true,
        }
    }

    /// True when redirects must carry signed URLs (mode `all`).
    pub fn signs_urls(&self) -> bool {
        self.mode == AuthMode::All && self.secret.is_some()
    }

    /// The query `exp=<unix>&sig=<hex>` granting GET/HEAD of `path` for `ttl`.
    pub fn signed_query(&self, path: &str, ttl: Duration) -> String {
        let exp = unix_now() + ttl.as_secs().max(1);
        format!("exp={exp}&sig={}", hex(&self.mac(path, exp)))
    }

    /// True when `query` holds an unexpired signature of `path`.
    pub fn signature_ok(&self, path: &str, query: Option<&str>) -> bool {
        let (Some(secret), Some(query)) = (&self.secret, query) else {
            return false;
        };
        let (mut exp, mut sig) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("exp", v)) => exp = v.parse::<u64>().ok(),
                Some(("sig", v)) => sig = unhex(v),
                _ => {}
            }
        }
        let (Some(exp), Some(sig)) = (exp, sig) else {
            return false;
        };
        if exp < unix_now() {
            return false;
        }
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return false;
        };
        mac.update(signed_message(path, exp).as_bytes());
        mac.verify_slice(&sig).is_ok()
    }

    fn mac(&self, path: &str, exp: u64) -> Vec<u8> {
        let secret = self.secret.as_deref().unwrap_or_default();
        match Hmac::<Sha256>::new_from_slice(secret) {
            Ok(mut mac) => {
                mac.update(signed_message(path, exp).as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }
}

fn signed_message(path: &str, exp: u64) -> String {
    format!("{path}\n{exp}")
}

fn is_read(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

/// Constant-time equality for equal lengths (a length mismatch returns early: the
/// length of the secret is not treated as secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unix_now() -> u64 {
    crate::clock::now_ms() / 1000
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Index-server middleware: 401 unless the request is allowed by the policy.
pub async fn index_guard(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    if auth.index_requires(req.method(), req.uri().path()) && !auth.bearer_ok(req.headers()) {
        return refuse(req).await;
    }
    next.run(req).await
}

/// 401, after reading (a bounded part of) the body the client may still be sending.
async fn refuse(req: Request) -> Response {
    let (parts, body) = req.into_parts();
    crate::http::drain_rejected(&parts.headers, body.into_data_stream()).await;
    AuthError::Unauthorized.into_response()
}

/// Volume middleware: in modes `writes` and `all`, writes need the bearer token; in
/// mode `all`, reads need the bearer token or a valid signature.
pub async fn volume_guard(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    if auth.mode != AuthMode::None && !auth.bearer_ok(req.headers()) {
        let read = is_read(req.method());
        let allowed = read
            && (auth.mode != AuthMode::All
                || auth.signature_ok(req.uri().path(), req.uri().query()));
        if !allowed {
            return refuse(req).await;
        }
    }
    next.run(req).await
}

/// Paths of the index server anyone may read, whatever the auth mode: the health
/// checks and the dashboard's static page and assets (its data API is not public).
pub fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/-/health" | "/-/health/ready" | "/-/ui" | "/-/ui/" | "/-/ui/app.js" | "/-/ui/app.css"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let auth = Auth::new(AuthMode::Writes, Some("s3cret"));
        let mut h = HeaderMap::new();
        assert!(!auth.bearer_ok(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cre"),
        );
        assert!(!auth.bearer_ok(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(auth.bearer_ok(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert!(!auth.bearer_ok(&h));
        assert!(!Auth::default().bearer_ok(&h));
    }

    #[test]
    fn modes() {
        let w = Auth::new(AuthMode::Writes, Some("t"));
        assert!(!w.index_requires(&Method::GET, "/k"));
        assert!(w.index_requires(&Method::PUT, "/k"));
        assert!(w.index_requires(&Method::from_bytes(b"UNLINK").unwrap(), "/k"));
        let a = Auth::new(AuthMode::All, Some("t"));
        assert!(a.index_requires(&Method::GET, "/k"));
        assert!(!a.index_requires(&Method::GET, "/-/health"));
        assert!(!a.index_requires(&Method::GET, "/-/health/ready"));
        assert!(a.index_requires(&Method::GET, "/-/metrics"));
        assert!(!a.index_requires(&Method::GET, "/-/ui"));
        assert!(!a.index_requires(&Method::GET, "/-/ui/app.js"));
        assert!(a.index_requires(&Method::GET, "/-/ui/api/overview"));
        assert!(w.index_requires(&Method::POST, "/-/ui/api/overview"));
        assert!(w.index_requires(&Method::POST, "/-/admin/verify"));
        assert!(!Auth::default().index_requires(&Method::PUT, "/k"));
    }

    #[test]
    fn signatures() {
        let a = Auth::new(AuthMode::All, Some("key"));
        let q = a.signed_query("/sv01/ab/cd/eA==", Duration::from_secs(60));
        assert!(a.signature_ok("/sv01/ab/cd/eA==", Some(&q)));
        assert!(!a.signature_ok("/sv01/ab/cd/eB==", Some(&q)));
        assert!(!Auth::new(AuthMode::All, Some("other")).signature_ok("/sv01/ab/cd/eA==", Some(&q)));
        let expired = format!("exp=1&sig={}", hex(&a.mac("/p", 1)));
        assert!(!a.signature_ok("/p", Some(&expired)));
        assert!(!a.signature_ok("/p", None));
        assert!(!a.signature_ok("/p", Some("exp=x&sig=zz")));
    }

    /// The signature is HMAC-SHA256(secret, "<path>\n<exp>") in lower-case hex. The
    /// expected values were computed independently (Python's `hmac` module), so a change
    /// of the message layout, the hash or the encoding breaks existing signed URLs and
    /// this test.
    #[test]
    fn signature_known_vectors() {
        let a = Auth::new(AuthMode::All, Some("key"));
        assert_eq!(
            hex(&a.mac("/p", 1)),
            "f07a3ff1d7389ca55e62ebddcd5fd502488576821317c52692d6097d96ea9b84"
        );
        // A URL signed elsewhere with the same secret (expiring in 2100) is accepted.
        let sig = "a7b0e83cacc03304e627563089a09658b3c7a16d752b7b74877af39558ed7ba5";
        assert!(a.signature_ok("/p", Some(&format!("exp=4102444800&sig={sig}"))));
        assert!(!a.signature_ok("/q", Some(&format!("exp=4102444800&sig={sig}"))));
        // RFC 4231 test case 2 through the same HMAC construction: key "Jefe", data
        // "what do ya want for nothing?" (here followed by the "\n<exp>" suffix, whose
        // value was computed like the others; the plain RFC value is checked below).
        let jefe = Auth::new(AuthMode::All, Some("Jefe"));
        assert_eq!(
            hex(&jefe.mac("what do ya want for nothing?", 1)),
            "30c8ac11baf78a95f4bac4da592164d9ea6eb2fa090faec43210fed7bba3c21d"
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn from_args() {
        let args = AuthArgs {
            auth_mode: Some(AuthMode::All),
            ..AuthArgs::default()
        };
        assert!(Auth::from_args(&args).is_err());
        let args = AuthArgs {
            auth_token: Some("x".into()),
            ..AuthArgs::default()
        };
        assert_eq!(Auth::from_args(&args).unwrap().mode(), AuthMode::Writes);
    }
}
