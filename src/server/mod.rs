//! The index server.
use crate::cli::ServerArgs;

/// Runs the index server until SIGINT/SIGTERM.
pub async fn run(_args: ServerArgs, _verbose: bool) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
