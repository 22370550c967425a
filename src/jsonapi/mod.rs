//! minivault's JSON interface (`--json-port`), a front-end on the store core.
//!
//! * `PUT /:key` with `{"value": <any JSON>}` stores the JSON text of `value` as an
//!   ordinary hoard value under the key `/:key` (overwriting, as minivault does);
//! * `GET /:key` answers `{"success": true, "data": <the value>}`;
//! * `DELETE /:key` deletes it;
//! * `GET /health` answers the server's health.
//!
//! Every error is `{"success": false, "error": "..."}` with a fitting status (400 bad
//! JSON, 401 authentication, 404 not found, 413 too large, 409 a concurrent write, 503
//! volumes down). Keys are percent-decoded paths like on the HTTP API, so the JSON key
//! `/a` is the HTTP key `/a` and the binary protocol's key `a`; `/health` itself cannot
//! be read here (it is the health endpoint).
//!
//! A value read here that is not JSON (written by another front-end) comes back as a
//! JSON string when it is UTF-8 text, and as an error otherwise. Request bodies and the
//! values GET returns are bounded by `--json-max-body`: the interface buffers them (it
//! parses and produces JSON), so the bound is what keeps its memory bounded.
//!
//! `--rate-limit` applies per client (shared with the server's other front-ends):
//! beyond it, 429 with `Retry-After` and `{"success": false, …}`; `/health` is exempt.
//!
//! Authentication follows hoard's modes (see [`crate::auth`]): with `--auth-mode
//! writes` (the default with a token) PUT and DELETE need `Authorization: Bearer
//! <token>`, with `all` every request but `/health` does.

mod api;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::auth::Auth;
use crate::store::Store;

/// `--json-*` flags of `hoard server` and `hoard dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct JsonArgs {
    /// Serve minivault's JSON interface on this port (`hoard server`: off by default;
    /// `hoard dev`: --port + 6, 0 switches it off).
    #[arg(long, env = "HOARD_JSON_PORT")]
    pub json_port: Option<u16>,
    /// Largest request body of the JSON interface, and largest value its GET returns,
    /// in bytes.
    #[arg(long, env = "HOARD_JSON_MAX_BODY", default_value_t = 1 << 20)]
    pub json_max_body: usize,
}

impl Default for JsonArgs {
    fn default() -> Self {
        JsonArgs {
            json_port: None,
            json_max_body: 1 << 20,
        }
    }
}

/// A running JSON interface.
pub struct Running {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// The address it listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops accepting and waits (at most `grace`) for requests in flight. Call before
    /// the store is shut down.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(grace + Duration::from_secs(1), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// Binds `bind:--json-port` and serves the JSON interface on `store`, if the port is
/// set; `None` otherwise. `listen` gives the connection limits and timeouts (those of
/// the HTTP API).
pub async fn start(
    args: &JsonArgs,
    bind: &str,
    store: Arc<Store>,
    auth: Auth,
    limiter: Option<Arc<crate::ratelimit::RateLimiter>>,
    listen: &crate::net::ListenArgs,
) -> anyhow::Result<Option<Running>> {
    let Some(port) = args.json_port else {
        return Ok(None);
    };
    let listener = crate::http::bind(bind, port).await.context("--json-port")?;
    let addr = listener.local_addr()?;
    let mut options = crate::net::ServeOptions::from_args(listen)?;
    options.tls = None;
    let router = api::router(api::JsonState {
        store,
        auth,
        max_body: args.json_max_body,
        limiter,
    });
    let router = crate::http::observe(router, "json", false);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crate::net::serve(
        listener,
        router,
        async move {
            let _ = stopped.await;
        },
        options,
    ));
    tracing::info!("JSON interface on {addr}");
    Ok(Some(Running { addr, stop, task }))
}
