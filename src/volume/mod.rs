//! The native volume server: values as plain files under one directory, speaking the
//! HTTP dialect of the stock nginx WebDAV volume minikeyvalue uses.

use std::path::PathBuf;

use crate::cli::VolumeArgs;

/// Settings of a native volume server.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    /// Root directory; nothing outside it is ever read or written.
    pub dir: PathBuf,
    /// fsync files and directories before acknowledging writes.
    pub fsync: bool,
}

/// Builds the volume server's router: prepares `dir` (creating it, clearing leftover
/// temp files) and returns the service.
pub fn router(_cfg: VolumeConfig) -> anyhow::Result<axum::Router> {
    anyhow::bail!("volume server not implemented yet")
}

/// `hoard volume`: serve `args.dir` until SIGINT/SIGTERM.
pub async fn run(args: VolumeArgs, _verbose: bool) -> anyhow::Result<()> {
    let app = router(VolumeConfig {
        dir: args.dir.clone(),
        fsync: args.fsync,
    })?;
    let listener = crate::http::bind(&args.bind, args.port).await?;
    tracing::info!(
        "volume serving {} on {}",
        args.dir.display(),
        listener.local_addr()?
    );
    crate::http::serve(listener, app, crate::http::shutdown_signal()).await
}
