//! The HTTP client every component uses to talk to volume servers (native or nginx).

use std::time::Duration;

use crate::placement::key_path;

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

/// Disk space as reported by `/-/health`.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct DiskSpace {
    /// Bytes available to the volume.
    pub free_bytes: u64,
    /// Size of the filesystem.
    pub total_bytes: u64,
}

/// A pooled HTTP/1.1 client for volume servers.
#[derive(Clone, Debug)]
pub struct VolumeClient {
    http: reqwest::Client,
    timeout: Duration,
}

/// Longest wait for a volume to acknowledge a PUT once the whole body was sent (it
/// fsyncs before answering, which for a large value on a busy disk takes seconds).
pub const PUT_ACK_TIMEOUT: Duration = Duration::from_secs(120);

impl VolumeClient {
    /// A client whose connects and small requests time out after `timeout`
    /// (`--voltimeout`).
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .http1_only()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(VolumeClient { http, timeout })
    }

    /// The small-request timeout (`--voltimeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// URL of `key`'s file on `location` (`host:port` or `host:port/svXX`).
    pub fn url(location: &str, key: &[u8]) -> String {
        format!("http://{location}{}", key_path(key))
    }

    /// Streams `body` to `url`. Success means the volume answered 201 or 204, i.e. the
    /// file is complete and durable there.
    pub async fn put(&self, url: &str, body: reqwest::Body) -> Result<(), VolumeError> {
        let started = std::time::Instant::now();
        let resp = self
            .http
            .put(url)
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
        let resp = self.small(self.http.delete(url), url).await?;
        expect(url, resp.status(), &[200, 204, 404])
    }

    /// Size of the file at `url`, `None` when the volume says it does not exist.
    pub async fn head(&self, url: &str) -> Result<Option<u64>, VolumeError> {
        let resp = self.small(self.http.head(url), url).await?;
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

    /// Probes the volume server `server` (`host:port`): `None` when it does not answer
    /// in time. A native volume reports its disk space on `GET /-/health`; any other
    /// server (nginx) counts as up when `HEAD /` succeeds.
    pub async fn probe(&self, server: &str) -> Option<Probe> {
        let url = format!("http://{server}/-/health");
        let resp = self.small(self.http.get(&url), &url).await.ok()?;
        if resp.status().is_success() {
            let body = tokio::time::timeout(self.timeout, resp.json::<VolumeHealth>()).await;
            if let Ok(Ok(h)) = body {
                return Some(Probe {
                    disk_free: Some(h.disk.free_bytes),
                    disk_total: Some(h.disk.total_bytes),
                });
            }
        }
        let url = format!("http://{server}/");
        match self.small(self.http.head(&url), &url).await {
            Ok(r) if r.status().is_success() => Some(Probe::default()),
            _ => None,
        }
    }

    /// Starts a streaming GET of `url` (for copies between volumes).
    pub async fn get(&self, url: &str) -> Result<reqwest::Response, VolumeError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|source| transport(url, source))?;
        expect(url, resp.status(), &[200])?;
        Ok(resp)
    }

    async fn small(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, VolumeError> {
        match tokio::time::timeout(self.timeout, req.send()).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(source)) => Err(transport(url, source)),
            Err(_) => Err(VolumeError::Timeout {
                url: url.to_string(),
                timeout: self.timeout,
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
