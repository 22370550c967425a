//! The HTTP client every component uses to talk to volume servers (native or nginx).

use std::time::Duration;

use crate::placement::file_path;
use crate::volume::DiskSpace;

/// Why a volume request failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Could not connect, or the connection broke.
    #[error("{url}: {source}")]
    Transport {
        /// The request URL.
        url: String,
        /// The client error.
        source: reqwest::Error,
    },
    /// The volume answered with an unexpected status.
    #[error("{url}: volume answered {status}")]
    Status {
        /// The request URL.
        url: String,
        /// The status received.
        status: reqwest::StatusCode,
    },
    /// The volume did not answer in time.
    #[error("{url}: no answer within {0:?}", .timeout)]
    Timeout {
        /// The request URL.
        url: String,
        /// The limit that passed.
        timeout: Duration,
    },
}

impl VolumeError {
    /// True when the volume could not be reached at all (down, refused, timed out).
    pub fn is_unreachable(&self) -> bool {
        match self {
            VolumeError::Transport { source, .. } => source.is_connect() || source.is_timeout(),
            VolumeError::Timeout { .. } => true,
            VolumeError::Status { .. } => false,
        }
    }
}

/// Why a probe of a volume server got no good answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMiss {
    /// No answer within `--voltimeout`: down, or only busy.
    Slow,
    /// Refused, reset, or answered with an error: not serving.
    Failed,
}

impl ProbeMiss {
    fn of(e: &VolumeError) -> ProbeMiss {
        match e {
            VolumeError::Timeout { .. } => ProbeMiss::Slow,
            VolumeError::Transport { source, .. } if source.is_timeout() => ProbeMiss::Slow,
            _ => ProbeMiss::Failed,
        }
    }
}

/// What a successful probe learned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Probe {
    /// Free bytes on the volume's disk, when it reports them.
    pub disk_free: Option<u64>,
    /// Size of the volume's disk, when it reports it.
    pub disk_total: Option<u64>,
}

/// The part of a native volume's `/-/health` the prober reads.
#[derive(Debug, serde::Deserialize)]
struct VolumeHealth {
    disk: DiskSpace,
}

/// A pooled HTTP/1.1 client for volume servers.
#[derive(Clone, Debug)]
pub struct VolumeClient {
    http: reqwest::Client,
    timeout: Duration,
    https: bool,
    token: Option<reqwest::header::HeaderValue>,
}

/// Transport and authentication towards volumes: TLS (`--volume-scheme https`, trusting
/// `--tls-ca`) and the shared secret sent as a bearer token.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Talk HTTPS to volumes. URLs are still built as `http://…` by [`VolumeClient::url`]
    /// (placement names stay `host:port`); the client switches the scheme when sending.
    pub https: bool,
    /// Trust roots for volume certificates (`--tls-ca`); when given, only these.
    pub ca: Vec<reqwest::Certificate>,
    /// Sent as `Authorization: Bearer <token>` on every request.
    pub token: Option<String>,
}

/// Longest wait for a volume to answer a DELETE. Connecting is still bounded by
/// `--voltimeout`; this covers the volume's own work, and unlinking a 1 GB file on a
/// busy disk (ext4 with `discard`) was measured to take over a second. The index server
/// also abandons a DELETE as soon as the prober sees a target volume down.
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for a volume to acknowledge a PUT once the whole body was sent (it
/// fsyncs before answering, which for a large value on a busy disk takes seconds).
pub const PUT_ACK_TIMEOUT: Duration = Duration::from_secs(120);

impl VolumeClient {
    /// A client whose connects and small requests time out after `timeout`
    /// (`--voltimeout`).
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        Self::with_options(timeout, ClientOptions::default())
    }

    /// A client with TLS and authentication settings (see [`ClientOptions`]).
    pub fn with_options(timeout: Duration, opts: ClientOptions) -> anyhow::Result<Self> {
        let token = match opts.token {
            Some(t) => Some(crate::http::bearer(&t)?),
            None => None,
        };
        Ok(VolumeClient {
            http: crate::http::internal_client(timeout, opts.ca)?,
            timeout,
            https: opts.https,
            token,
        })
    }

    /// `url` with the scheme this client uses (`https://` when volumes use TLS).
    pub fn scheme_url(&self, url: &str) -> String {
        match url.strip_prefix("http://") {
            Some(rest) if self.https => format!("https://{rest}"),
            _ => url.to_string(),
        }
    }

    /// A request to `url` (scheme adjusted), carrying the bearer token if configured and
    /// the current trace context (`traceparent`) when traces are exported.
    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let req = crate::otel::inject(self.http.request(method, self.scheme_url(url)));
        match &self.token {
            Some(t) => req.header(reqwest::header::AUTHORIZATION, t.clone()),
            None => req,
        }
    }

    /// The small-request timeout (`--voltimeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// URL of the file of generation `gen` of `key`'s value (`Record::gen`) on
    /// `location` (`host:port` or `host:port/svXX`); see [`file_path`].
    pub fn url(location: &str, key: &[u8], gen: u64) -> String {
        format!("http://{location}{}", file_path(key, gen))
    }

    /// Streams `body` to `url`. Success means the volume answered 201 or 204, i.e. the
    /// file is complete and durable there.
    pub async fn put(&self, url: &str, body: reqwest::Body) -> Result<(), VolumeError> {
        let started = std::time::Instant::now();
        let resp = self
            .request(reqwest::Method::PUT, url)
            .body(body)
            .send()
            .await
            .map_err(|source| transport(url, source))?;
        let server = url
            .strip_prefix("http://")
            .map_or(url, |rest| crate::placement::server_of(rest));
        metrics::histogram!("hoard_replica_write_duration_seconds", "volume" => server.to_string())
            .record(started.elapsed().as_secs_f64());
        expect(url, resp.status(), &[201, 204])
    }

    /// Deletes the file at `url`; a missing file counts as deleted.
    pub async fn delete(&self, url: &str) -> Result<(), VolumeError> {
        let req = self.request(reqwest::Method::DELETE, url);
        let resp = self
            .timed(req, url, DELETE_TIMEOUT.max(self.timeout))
            .await?;
        expect(url, resp.status(), &[200, 204, 404])
    }

    /// Size of the file at `url`, `None` when the volume says it does not exist.
    pub async fn head(&self, url: &str) -> Result<Option<u64>, VolumeError> {
        let resp = self
            .small(self.request(reqwest::Method::HEAD, url), url)
            .await?;
        match resp.status().as_u16() {
            200 => Ok(resp
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())),
            404 => Ok(None),
            _ => Err(VolumeError::Status {
                url: url.to_string(),
                status: resp.status(),
            }),
        }
    }

    /// Probes the volume server `server` (`host:port`). A native volume reports its
    /// disk space on `GET /-/health`; any other server (nginx) counts as up when
    /// `HEAD /` succeeds. The miss says whether the server was only slow (no answer
    /// within `--voltimeout`) or failed (refused, reset, an error status).
    pub async fn probe(&self, server: &str) -> Result<Probe, ProbeMiss> {
        let url = format!("http://{server}/-/health");
        match self
            .small(self.request(reqwest::Method::GET, &url), &url)
            .await
        {
            Ok(resp) if resp.status().is_success() => {
                let body = tokio::time::timeout(self.timeout, resp.json::<VolumeHealth>()).await;
                match body {
                    Ok(Ok(h)) => {
                        return Ok(Probe {
                            disk_free: Some(h.disk.free_bytes),
                            disk_total: Some(h.disk.total_bytes),
                        })
                    }
                    Err(_) => return Err(ProbeMiss::Slow),
                    // Not a native volume's health: try as a plain server below.
                    Ok(Err(_)) => {}
                }
            }
            Ok(_) => {}
            Err(e) => return Err(ProbeMiss::of(&e)),
        }
        let url = format!("http://{server}/");
        match self
            .small(self.request(reqwest::Method::HEAD, &url), &url)
            .await
        {
            Ok(r) if r.status().is_success() => Ok(Probe::default()),
            Ok(_) => Err(ProbeMiss::Failed),
            Err(e) => Err(ProbeMiss::of(&e)),
        }
    }

    /// Starts a streaming GET of `url` (for copies between volumes).
    pub async fn get(&self, url: &str) -> Result<reqwest::Response, VolumeError> {
        let resp = self
            .request(reqwest::Method::GET, url)
            .send()
            .await
            .map_err(|source| transport(url, source))?;
        expect(url, resp.status(), &[200])?;
        Ok(resp)
    }

    /// Starts a streaming GET of the whole file at `url` that the native volume does not
    /// check against the checksum stored with the file (`volume::checksum`): for a
    /// reader that checks the bytes itself against the index's md5, so that it sees a
    /// corrupt replica's bytes (and can report it) rather than a broken transfer.
    pub async fn get_unverified(&self, url: &str) -> Result<reqwest::Response, VolumeError> {
        self.get_range(url, None, true).await
    }

    /// Starts a streaming GET of `url`, of the byte range `range` (an HTTP `Range`
    /// value such as `bytes=0-99`) when given: the volume must then answer 206, so a
    /// volume that ignores ranges is never mistaken for one that honoured it.
    /// `unverified`: see [`VolumeClient::get_unverified`].
    pub async fn get_range(
        &self,
        url: &str,
        range: Option<&str>,
        unverified: bool,
    ) -> Result<reqwest::Response, VolumeError> {
        let mut req = self.request(reqwest::Method::GET, url);
        if let Some(r) = range {
            req = req.header(reqwest::header::RANGE, r);
        }
        if unverified {
            req = req.header(crate::volume::verified::UNVERIFIED, "1");
        }
        let resp = req.send().await.map_err(|source| transport(url, source))?;
        expect(
            url,
            resp.status(),
            if range.is_some() { &[206] } else { &[200] },
        )?;
        Ok(resp)
    }

    /// A request that must be answered within `--voltimeout` (probes, HEAD).
    async fn small(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, VolumeError> {
        self.timed(req, url, self.timeout).await
    }

    async fn timed(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, VolumeError> {
        match tokio::time::timeout(timeout, req.send()).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(source)) => Err(transport(url, source)),
            Err(_) => Err(VolumeError::Timeout {
                url: url.to_string(),
                timeout,
            }),
        }
    }
}

fn transport(url: &str, source: reqwest::Error) -> VolumeError {
    VolumeError::Transport {
        url: url.to_string(),
        source,
    }
}

fn expect(url: &str, status: reqwest::StatusCode, ok: &[u16]) -> Result<(), VolumeError> {
    if ok.contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(VolumeError::Status {
            url: url.to_string(),
            status,
        })
    }
}
