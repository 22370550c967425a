//! `hoard volume --register URL --advertise HOST:PORT`: the volume joins an index by
//! itself, as kalavara's volumes do. Every `--register-every` it asks the index
//! (`GET /-/admin/volumes`) whether it is a member, and if not registers
//! (`POST /-/admin/volumes` with `{"url": "http://HOST:PORT"}`), so it also comes back
//! after the index lost its membership (a new index directory) or restarted without it.
//! Asking first keeps a steady state free of writes: a registration is a membership
//! change, which an index cluster replicates through its log.
//!
//! Several index URLs (an index cluster) are tried in turn until one answers. The
//! volume's own `--auth-token` is sent as the bearer token (an index with the same
//! token treats membership changes as writes). Only changes are logged: registered,
//! already a member after a failure, or failing (once, until it works again).

use std::time::Duration;

use anyhow::Context as _;

/// What to register where.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Index server base URLs.
    pub index: Vec<String>,
    /// This volume's name (`host:port`) as the index and clients reach it.
    pub advertise: String,
    /// Bearer token for the index, if any.
    pub token: Option<String>,
    /// How often to check.
    pub every: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Member,
    Registered,
    Failed,
}

impl Registration {
    /// Checks and registers until the task is dropped.
    pub async fn run(self) {
        let http = match reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("volume registration disabled: no HTTP client: {e}");
                return;
            }
        };
        let mut last = None;
        loop {
            let mut outcome = Outcome::Failed;
            let mut errors = Vec::new();
            for url in &self.index {
                match self.once(&http, url).await {
                    Ok(o) => {
                        outcome = o;
                        if o == Outcome::Registered {
                            tracing::info!("registered as {} with {url}", self.advertise);
                        }
                        break;
                    }
                    Err(e) => errors.push(format!("{url}: {e:#}")),
                }
            }
            match (last, outcome) {
                (Some(Outcome::Failed), Outcome::Member) => {
                    tracing::info!("volume {} is a member of the index", self.advertise)
                }
                (prev, Outcome::Failed) if prev != Some(Outcome::Failed) => tracing::warn!(
                    "cannot register volume {} (retrying every {:?}): {}",
                    self.advertise,
                    self.every,
                    errors.join("; ")
                ),
                _ => {}
            }
            last = Some(outcome);
            tokio::time::sleep(self.every).await;
        }
    }

    /// One check against the index at `url`, registering when not a member.
    async fn once(&self, http: &reqwest::Client, url: &str) -> anyhow::Result<Outcome> {
        let base = url.trim_end_matches('/');
        let auth = |req: reqwest::RequestBuilder| match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = auth(http.get(format!("{base}/-/admin/volumes")))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "GET /-/admin/volumes answered {}",
            resp.status()
        );
        let listed: serde_json::Value = resp.json().await.context("GET /-/admin/volumes")?;
        let member = listed["volumes"].as_array().is_some_and(|vs| {
            vs.iter()
                .filter_map(|v| v.as_str())
                .any(|v| crate::placement::split_spec(v).0 == self.advertise)
        });
        if member {
            return Ok(Outcome::Member);
        }
        let body = serde_json::json!({ "url": format!("http://{}", self.advertise) });
        let resp = auth(http.post(format!("{base}/-/admin/volumes")).json(&body))
            .send()
            .await?;
        let status = resp.status();
        anyhow::ensure!(
            status.is_success(),
            "POST /-/admin/volumes answered {status}: {}",
            resp.text().await.unwrap_or_default().trim()
        );
        Ok(Outcome::Registered)
    }
}
