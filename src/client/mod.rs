//! The client side of `hoard put|get|rm|unlink|ls|stat|cp`: a small HTTP client for
//! the index server's API that follows redirects itself, fails over between index
//! URLs and retries what is safe to retry.
//!
//! * [`Client`] — requests with failover and retries; one operation per method.
//! * [`copy`] — `cp -r` in both directions: parallel, resumable (md5 compared).
//! * [`args`] — the subcommands' options and help text; [`run`] runs one.
//! * [`transfer`] — streaming files in and out, md5 on the way, progress bars.
//! * [`cluster`] — `hoard cluster status|add|remove` (index cluster membership).
//!
//! Retry policy: a request that failed to connect is tried on the next `--url` (nothing
//! was accepted, so this holds for writes too); reads (GET, HEAD, listings) are also
//! retried, up to [`ATTEMPTS`] times, after timeouts and 502/503/504 answers. Writes are
//! never repeated once a server may have received them.

pub mod args;
pub mod cluster;
pub mod compact;
pub mod copy;
pub mod tenancy;
pub mod transfer;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, AUTHORIZATION, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

pub use args::{run, ClientCommand};

/// Tries of a request that is safe to repeat.
pub const ATTEMPTS: usize = 3;
/// Keys per listing page requested.
const PAGE: usize = 10_000;

/// Why a client operation failed; displayed as one line naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The key (or a listing's prefix) does not exist.
    #[error("{0}: not found")]
    NotFound(String),
    /// The server refused or failed the request.
    #[error("{what}: {message} ({status})")]
    Status {
        /// The key or URL.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The server's explanation (its response body), or the status's reason.
        message: String,
    },
    /// No server could be reached or the transfer broke.
    #[error("{what}: {source}")]
    Http {
        /// The key or URL.
        what: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Anything else: a bad answer, a checksum mismatch, bad arguments.
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    /// A local I/O error on `path`.
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        ClientError::Io {
            path: path.to_string(),
            source,
        }
    }
}

/// A key's value as the index locates it (the 302 of a GET).
#[derive(Debug, Clone)]
pub struct Located {
    /// A replica's URL.
    pub url: String,
    /// The value's md5 (hex), if the index knows it.
    pub md5: Option<String>,
    /// The replica volumes (`Key-Volumes`).
    pub volumes: Vec<String>,
    /// `balanced` or `unbalanced` (`Key-Balance`); `inline` for a value stored in the
    /// index (`url` is then the index server's own).
    pub balance: String,
}

/// Which cluster to talk to: every client command takes these.
#[derive(Debug, clap::Args, Clone)]
pub struct Conn {
    /// Index server URL. Give several (comma separated, or --url more than once) for an
    /// index cluster: they are tried in turn when one cannot be reached.
    #[arg(
        long = "url",
        env = "HOARD_URL",
        value_delimiter = ',',
        default_value = "http://localhost:3000",
        value_name = "URL"
    )]
    pub urls: Vec<String>,
    /// Bearer token for a server started with --auth-token.
    #[arg(
        long,
        env = "HOARD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

impl Conn {
    pub(super) fn client(&self) -> Result<Client, ClientError> {
        Client::new(&self.urls, self.token.clone())
    }
}

/// A client of one hoard cluster: its index URLs and token.
pub struct Client {
    http: reqwest::Client,
    urls: Vec<String>,
    token: Option<String>,
    /// The index URL that answered last; requests start there.
    preferred: AtomicUsize,
}

impl Client {
    /// The bearer token sent to the index servers, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A client of the index servers at `urls` (tried in turn), sending `token` as a
    /// bearer token to them (never to volumes: their URLs are signed when needed).
    pub fn new(urls: &[String], token: Option<String>) -> Result<Client, ClientError> {
        crate::tls::install_provider();
        let urls: Vec<String> = urls
            .iter()
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(ClientError::Other("no --url given".into()));
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| ClientError::Http {
                what: "client".into(),
                source,
            })?;
        Ok(Client {
            http,
            urls,
            token,
            preferred: AtomicUsize::new(0),
        })
    }

    /// The underlying HTTP client (no redirects followed).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a request to the index: `build` makes it from a base URL (it is called
    /// again for each try, so bodies are re-created). On connection failure the next
    /// URL is tried; with `safe`, timeouts and 502/503/504 are retried too.
    pub async fn send<F>(&self, what: &str, safe: bool, build: F) -> Result<Response, ClientError>
    where
        F: Fn(&reqwest::Client, &str) -> Result<RequestBuilder, ClientError>,
    {
        let attempts = if safe { ATTEMPTS } else { 1 };
        let n = self.urls.len();
        let mut last: Option<ClientError> = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let first = self.preferred.load(Ordering::Relaxed);
            for i in 0..n {
                let at = (first + i) % n;
                let mut req = build(&self.http, &self.urls[at])?;
                if let Some(token) = &self.token {
                    req = req.header(AUTHORIZATION, format!("Bearer {token}"));
                }
                match req.send().await {
                    Ok(resp) => {
                        self.preferred.store(at, Ordering::Relaxed);
                        let retry = matches!(
                            resp.status(),
                            StatusCode::BAD_GATEWAY
                                | StatusCode::SERVICE_UNAVAILABLE
                                | StatusCode::GATEWAY_TIMEOUT
                        );
                        if safe && retry && attempt + 1 < attempts {
                            last = Some(status_error(what, resp).await);
                            break;
                        }
                        return Ok(resp);
                    }
                    Err(source) => {
                        let connect = source.is_connect();
                        let timeout = source.is_timeout();
                        last = Some(ClientError::Http {
                            what: what.to_string(),
                            source,
                        });
                        if connect {
                            continue;
                        }
                        if !(safe && timeout) {
                            return Err(last.unwrap_or_else(|| ClientError::Other(what.into())));
                        }
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Other(format!("{what}: no server answered"))))
    }

    /// Where `key`'s value is: `GET /key` without following the 302. `None` if the
    /// key does not exist (404).
    pub async fn locate(&self, key: &str) -> Result<Option<Located>, ClientError> {
        self.locate_avoiding(key, &[]).await
    }

    /// [`Client::locate`], asking for a replica on none of the volume servers `avoid`
    /// (`host:port`) while another is up (the index's `Hoard-Avoid-Volumes`).
    pub async fn locate_avoiding(
        &self,
        key: &str,
        avoid: &[String],
    ) -> Result<Option<Located>, ClientError> {
        let path = key_path(key);
        let avoid = avoid.join(",");
        let resp = self
            .send(key, true, |c, base| {
                let req = c.get(format!("{base}{path}"));
                Ok(match avoid.is_empty() {
                    true => req,
                    false => req.header("hoard-avoid-volumes", avoid.as_str()),
                })
            })
            .await?;
        match resp.status() {
            StatusCode::FOUND => {
                let h = resp.headers();
                let url = header(h, LOCATION.as_str())
                    .ok_or_else(|| ClientError::Other(format!("{key}: 302 without Location")))?;
                Ok(Some(Located {
                    url,
                    md5: header(h, "content-md5"),
                    volumes: header(h, "key-volumes")
                        .map(|v| v.split(',').map(str::to_string).collect())
                        .unwrap_or_default(),
                    balance: header(h, "key-balance").unwrap_or_default(),
                }))
            }
            // A value stored in the index (`--inline-max`): the index server itself
            // serves it.
            StatusCode::OK => Ok(Some(Located {
                url: resp.url().to_string(),
                md5: header(resp.headers(), "content-md5"),
                volumes: Vec::new(),
                balance: "inline".into(),
            })),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(key, resp).await),
        }
    }

    /// `DELETE /key` (`rm`) or `UNLINK /key` (`unlink`).
    pub async fn remove(&self, key: &str, unlink: bool) -> Result<(), ClientError> {
        let method = if unlink {
            Method::from_bytes(b"UNLINK").map_err(|e| ClientError::Other(e.to_string()))?
        } else {
            Method::DELETE
        };
        let path = key_path(key);
        let resp = self
            .send(key, false, |c, base| {
                Ok(c.request(method.clone(), format!("{base}{path}")))
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Err(ClientError::NotFound(key.to_string())),
            _ => Err(status_error(key, resp).await),
        }
    }

    /// One page of `?list` (or `?unlinked`) under `prefix` from `start`: the keys and
    /// where the next page starts (`None` at the end).
    pub async fn list_page(
        &self,
        prefix: &str,
        unlinked: bool,
        start: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), ClientError> {
        let op = if unlinked { "unlinked" } else { "list" };
        let mut query = format!("{op}&limit={PAGE}");
        if let Some(start) = start {
            query.push_str("&start=");
            query.extend(utf8_percent_encode(start, NON_ALPHANUMERIC));
        }
        let path = key_path(prefix);
        let resp = self
            .send(prefix, true, |c, base| {
                Ok(c.get(format!("{base}{path}?{query}")))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(prefix, resp).await);
        }
        #[derive(serde::Deserialize)]
        struct Listing {
            next: String,
            keys: Vec<String>,
        }
        let page: Listing = resp.json().await.map_err(|source| ClientError::Http {
            what: prefix.to_string(),
            source,
        })?;
        Ok((page.keys, (!page.next.is_empty()).then_some(page.next)))
    }

    /// Metadata of many keys at once (`POST /-/batch` of `get`s, at most 1,000): one
    /// JSON result per key, in order (`status`, `size`, `md5`, `volumes`, …).
    pub async fn stat_many(&self, keys: &[String]) -> Result<Vec<serde_json::Value>, ClientError> {
        let ops: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| serde_json::json!({"op": "get", "key": k}))
            .collect();
        let body = serde_json::to_vec(&ops).map_err(|e| ClientError::Other(e.to_string()))?;
        let resp = self
            .send("/-/batch", true, |c, base| {
                Ok(c.post(format!("{base}/-/batch"))
                    .header("content-type", "application/json")
                    .body(body.clone()))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error("/-/batch", resp).await);
        }
        resp.json().await.map_err(|source| ClientError::Http {
            what: "/-/batch".into(),
            source,
        })
    }
}

/// A key as given on the command line: a leading `/` added if missing.
pub fn normalize_key(key: &str) -> String {
    if key.starts_with('/') {
        key.to_string()
    } else {
        format!("/{key}")
    }
}

/// The URL path of `key`, percent-encoded so the server decodes it back to `key`.
pub fn key_path(key: &str) -> String {
    utf8_percent_encode(key, crate::key::URL_PATH).to_string()
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The error for an unexpected answer: its status and the server's one-line message.
pub async fn status_error(what: &str, resp: Response) -> ClientError {
    let status = resp.status();
    if status == StatusCode::NOT_FOUND {
        return ClientError::NotFound(what.to_string());
    }
    let text = resp.text().await.unwrap_or_default();
    let message = text.lines().next().unwrap_or("").trim().to_string();
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        message
    };
    ClientError::Status {
        what: what.to_string(),
        status: status.as_u16(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_paths() {
        for key in ["/a b", "/x?y#z", "/p%20q", "/ünï/\\x", "/[a]^|`{}"] {
            let path = key_path(key);
            assert!(!path.contains([' ', '?', '#', '\\']), "{path}");
            assert_eq!(crate::key::parse(&path).unwrap(), key.as_bytes(), "{key}");
        }
        assert_eq!(normalize_key("a/b"), "/a/b");
        assert_eq!(normalize_key("/a"), "/a");
    }
}
