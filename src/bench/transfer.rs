//! Moving one large generated value in each direction, timed, in constant memory —
//! shared by `large` (through the index server) and `baseline` (straight to a volume).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use futures_util::StreamExt;
use reqwest::header::{CONTENT_LENGTH, LOCATION};

use super::data::{PrngBody, Verifier};
use super::report::mb_per_s;
use super::stats::{Rss, RssSampler};
use crate::hex::hex;

/// Redirects followed at most on a GET.
const MAX_HOPS: usize = 3;

/// One timed transfer, as reported.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Transfer {
    /// `put` or `get`.
    pub op: &'static str,
    /// Where it went: `index` or `volume`.
    pub via: &'static str,
    /// Value size, bytes.
    pub size_bytes: u64,
    /// Value size for humans (`256MB`).
    pub size: String,
    /// Wall time of the request, from sending the first byte (PUT) or the request (GET)
    /// to the answer (PUT) or the last body byte (GET).
    pub seconds: f64,
    /// Decimal megabytes (10^6) per second.
    pub mb_per_sec: f64,
    /// md5 of the value sent.
    pub md5: String,
    /// For a GET: every byte matched the value sent, and the md5 the server announced
    /// (`Content-Md5` on the redirect, when present) matched too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// The md5 the server announced on the redirect, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_md5: Option<String>,
    /// Memory of the sampled process (`--server-pid`) during the transfer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss: Option<Rss>,
}

/// The value to move: a PRNG stream.
#[derive(Debug, Clone, Copy)]
pub struct Value {
    /// PRNG seed.
    pub seed: u64,
    /// Bytes.
    pub size: u64,
    /// Its md5, computed beforehand (outside the timed part).
    pub md5: [u8; 16],
}

impl Value {
    /// A new random value of `size` bytes; hashes it first (≈ 2 s per GB).
    pub async fn generate(size: u64) -> anyhow::Result<Value> {
        let seed = fastrand::u64(..);
        let md5 = tokio::task::spawn_blocking(move || super::data::md5_of(seed, size))
            .await
            .context("hashing the value panicked")?;
        Ok(Value { seed, size, md5 })
    }

    fn row(&self, op: &'static str, via: &'static str, took: Duration) -> Transfer {
        let seconds = took.as_secs_f64();
        Transfer {
            op,
            via,
            size_bytes: self.size,
            size: super::show_size(self.size),
            seconds,
            mb_per_sec: mb_per_s(self.size, seconds),
            md5: hex(&self.md5),
            verified: None,
            server_md5: None,
            rss: None,
        }
    }
}

/// Runs `work` while sampling the RSS of `pid` (when given).
async fn sampled<T>(
    pid: Option<u32>,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, Option<Rss>)> {
    let sampler = pid.map(RssSampler::start).transpose()?;
    let result = work.await;
    let rss = sampler.map(RssSampler::finish).transpose()?;
    Ok((result?, rss))
}

/// PUTs `value` at `url` with a Content-Length, streaming it; expects a 2xx answer.
pub async fn put(
    client: &reqwest::Client,
    url: &str,
    value: &Value,
    via: &'static str,
    pid: Option<u32>,
) -> anyhow::Result<Transfer> {
    let work = async {
        let t = Instant::now();
        let resp = client
            .put(url)
            .header(CONTENT_LENGTH, value.size)
            .body(reqwest::Body::wrap(PrngBody::new(value.seed, value.size)))
            .send()
            .await
            .with_context(|| format!("PUT {url}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        ensure!(status.is_success(), "PUT {url}: {status} {}", text.trim());
        Ok(t.elapsed())
    };
    let (took, rss) = sampled(pid, work).await?;
    let mut row = value.row("put", via, took);
    row.rss = rss;
    Ok(row)
}

/// GETs `url`, following redirects, and checks the body against `value` byte by byte
/// as it streams in; also checks any `Content-Md5` a redirect announced.
pub async fn get(
    client: &reqwest::Client,
    url: &str,
    value: &Value,
    via: &'static str,
    pid: Option<u32>,
) -> anyhow::Result<Transfer> {
    let work = async {
        let t = Instant::now();
        let mut url = url.to_string();
        let mut server_md5 = None;
        let mut hops = 0;
        let resp = loop {
            let resp = client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            if !resp.status().is_redirection() {
                break resp;
            }
            hops += 1;
            ensure!(
                hops <= MAX_HOPS,
                "GET {url}: more than {MAX_HOPS} redirects"
            );
            let header = |name: &str| {
                let v = resp.headers().get(name)?.to_str().ok()?;
                Some(v.to_string())
            };
            server_md5 = header("content-md5").or(server_md5);
            url = header(LOCATION.as_str())
                .with_context(|| format!("GET {url}: redirect without a Location"))?;
        };
        ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
        let mut verifier = Verifier::new(value.seed, value.size);
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            verifier.feed(&chunk.with_context(|| format!("GET {url}: reading the body"))?);
        }
        let took = t.elapsed();
        verifier
            .finish()
            .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
        if let Some(m) = &server_md5 {
            ensure!(
                m.eq_ignore_ascii_case(&hex(&value.md5)),
                "GET {url}: server announced Content-Md5 {m}, sent {}",
                hex(&value.md5)
            );
        }
        Ok((took, server_md5))
    };
    let ((took, server_md5), rss) = sampled(pid, work).await?;
    let mut row = value.row("get", via, took);
    row.verified = Some(true);
    row.server_md5 = server_md5;
    row.rss = rss;
    Ok(row)
}

/// DELETEs `url`; a missing value is fine.
pub async fn delete(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let resp = client
        .delete(url)
        .send()
        .await
        .with_context(|| format!("DELETE {url}"))?;
    let status = resp.status();
    ensure!(
        status.is_success() || status.as_u16() == 404,
        "DELETE {url}: {status}"
    );
    Ok(())
}
