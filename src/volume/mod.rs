//! The native volume server: values as plain files under one directory, speaking the
//! HTTP dialect of the stock nginx WebDAV volume minikeyvalue uses
//! (`dav_methods PUT DELETE; create_full_put_path on; autoindex on;
//! autoindex_format json`).
//!
//! | request | answer |
//! | --- | --- |
//! | `PUT /p` | 201 created, 204 replaced; atomic ([`write`]); 409 for a path ending in `/`, a directory, or under a file |
//! | `GET`/`HEAD /p` | 200 / 206 (one range) / 416 / 304 / 412 for a file, 404 if missing; a whole-file GET is checked against the md5 stored with the file ([`checksum`]): 500 or cut short on a mismatch |
//! | `GET /d/` | JSON listing ([`listing`]); `GET /d` → 301 to `/d/` |
//! | `GET /-/walk/d/` | every file below `/d/`, streamed ([`walk`]) |
//! | `DELETE /p` | 204, 404 if missing, 409 for a directory |
//! | other methods | 405 |
//! | unsafe path ([`path`]) | 400; a symlink leading outside the root ([`root`]) → 403 |

mod args;
pub mod beneath;
pub mod checksum;
pub mod delete;
pub mod error;
pub mod inflight;
pub mod listing;
pub mod path;
pub mod read;
pub mod register;
pub mod root;
pub mod temp;
pub mod verified;
pub mod walk;
pub mod write;

pub use args::{FsyncPolicy, VolumeArgs};

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::BytesReceived;
use error::VolumeServerError;
use path::VolumePath;
use root::Root;

/// Settings of a native volume server.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    /// Root directory; nothing outside it is ever read or written.
    pub dir: PathBuf,
    /// fsync files and directories before acknowledging writes.
    pub fsync: bool,
    /// Who may write (and, in mode `all`, read).
    pub auth: crate::auth::Auth,
    /// Test hook: pause every upload before its rename.
    pub rename_delay: Option<std::time::Duration>,
}

/// What every request handler shares.
#[derive(Debug)]
struct Volume {
    root: Root,
    fsync: bool,
    started: std::time::Instant,
}

/// Builds the volume server's router: prepares `dir` (creating it, clearing leftover
/// temp files) and returns the service.
pub fn router(cfg: VolumeConfig) -> anyhow::Result<axum::Router> {
    let volume = Volume {
        root: Root::prepare(&cfg.dir)?.with_rename_delay(cfg.rename_delay),
        fsync: cfg.fsync,
        started: std::time::Instant::now(),
    };
    Ok(axum::Router::new()
        .fallback(handle)
        .with_state(Arc::new(volume))
        .layer(axum::middleware::from_fn_with_state(
            cfg.auth,
            crate::auth::volume_guard,
        )))
}

/// `hoard volume`: serve `args.dir` until SIGINT/SIGTERM.
pub async fn run(args: VolumeArgs, verbose: bool) -> anyhow::Result<()> {
    let app = router(VolumeConfig {
        dir: args.dir.clone(),
        fsync: args.fsync.per_write(),
        auth: crate::auth::Auth::from_args(&args.auth)?,
        rename_delay: args.test_rename_delay,
    })?;
    let serve_options = crate::net::ServeOptions::from_args(&args.listen)?;
    let app = crate::http::observe(app, "volume", verbose);
    let registration = args.registration()?;
    let listener = crate::http::bind(&args.bind, args.port).await?;
    tracing::info!(
        "volume serving {} on {}",
        args.dir.display(),
        listener.local_addr()?
    );
    // Registers once the port accepts connections (the index probes it at once).
    let registering = registration.map(|r| tokio::spawn(r.run()));
    let syncing = match args.fsync {
        FsyncPolicy::Interval(every) => Some(tokio::spawn(sync_every(args.dir.clone(), every))),
        _ => None,
    };
    let served =
        crate::net::serve(listener, app, crate::http::shutdown_signal(), serve_options).await;
    if let Some(task) = registering {
        task.abort();
    }
    if let Some(task) = syncing {
        task.abort();
        // A clean stop loses nothing: the writes of the last interval are synced now.
        let dir = args.dir.clone();
        match tokio::task::spawn_blocking(move || syncfs(&dir)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("final sync of {} failed: {e}", args.dir.display()),
            Err(e) => tracing::error!("final sync task failed: {e}"),
        }
    }
    served
}

/// `--fsync interval=…`: syncs the volume's filesystem every `every`, counting each in
/// `hoard_volume_syncs_total{result}`.
async fn sync_every(dir: std::path::PathBuf, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let d = dir.clone();
        let result = match tokio::task::spawn_blocking(move || syncfs(&d)).await {
            Ok(Ok(())) => "ok",
            Ok(Err(e)) => {
                tracing::error!("sync of {} failed: {e}", dir.display());
                "error"
            }
            Err(_) => "error",
        };
        metrics::counter!("hoard_volume_syncs_total", "result" => result).increment(1);
    }
}

/// syncfs(2) on the filesystem holding `dir`: every dirty page and inode of it reaches
/// the disk. Blocking.
fn syncfs(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let f = std::fs::File::open(dir)?;
    // SAFETY: syncfs only reads the descriptor, which `f` keeps open for the call.
    match unsafe { libc::syncfs(f.as_raw_fd()) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Dispatches on the method; every failure becomes its status via [`VolumeServerError`].
async fn handle(State(volume): State<Arc<Volume>>, req: Request) -> Response {
    dispatch(&volume, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn dispatch(volume: &Volume, req: Request) -> Result<Response, VolumeServerError> {
    let method = req.method().clone();
    if ![Method::GET, Method::HEAD, Method::PUT, Method::DELETE].contains(&method) {
        return Err(VolumeServerError::MethodNotAllowed);
    }
    if let Some(endpoint) = req.uri().path().strip_prefix("/-/") {
        if let Some(dir) = endpoint.strip_prefix("walk/") {
            if method != Method::GET {
                return Err(VolumeServerError::MethodNotAllowed);
            }
            return walk::walk(&volume.root, &VolumePath::parse(&format!("/{dir}"))?).await;
        }
        return own_endpoint(volume, &method, endpoint);
    }
    let path = VolumePath::parse(req.uri().path())?;
    match method {
        Method::PUT => {
            let outcome = write::put(&volume.root, volume.fsync, &path, req.into_body()).await?;
            let status = match outcome.created {
                true => StatusCode::CREATED,
                false => StatusCode::NO_CONTENT,
            };
            let mut res = status.into_response();
            res.extensions_mut().insert(BytesReceived(outcome.bytes));
            Ok(res)
        }
        Method::DELETE => {
            delete::delete(&volume.root, volume.fsync, &path).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => read::get(&volume.root, &path, req).await,
    }
}

/// Disk space as reported by `/-/health` (and read by the index's prober,
/// `crate::replica`).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct DiskSpace {
    /// Bytes available to the volume.
    pub free_bytes: u64,
    /// Size of the filesystem.
    pub total_bytes: u64,
}

/// Body of a volume's `GET /-/health`.
#[derive(serde::Serialize)]
struct VolumeHealth {
    status: &'static str,
    version: &'static str,
    role: &'static str,
    uptime_seconds: u64,
    disk: Option<DiskSpace>,
}

/// The volume's own endpoints, `/-/health` and `/-/metrics` (and `/-/walk/`, see
/// [`walk`]). hoard never stores files
/// under `/-/` (a key's file path starts with a subvolume or a hex directory), so the
/// prefix is free on the native volume.
fn own_endpoint(
    volume: &Volume,
    method: &Method,
    endpoint: &str,
) -> Result<Response, VolumeServerError> {
    if ![Method::GET, Method::HEAD].contains(method) {
        return Err(VolumeServerError::MethodNotAllowed);
    }
    let disk = crate::telemetry::observe_disk(volume.root.path()).map(|(free, total)| DiskSpace {
        free_bytes: free,
        total_bytes: total,
    });
    match endpoint {
        "health" => Ok(axum::Json(VolumeHealth {
            status: "ok",
            version: env!("CARGO_PKG_VERSION"),
            role: "volume",
            uptime_seconds: volume.started.elapsed().as_secs(),
            disk,
        })
        .into_response()),
        "metrics" => Ok(crate::telemetry::response()),
        _ => Ok(StatusCode::NOT_FOUND.into_response()),
    }
}
