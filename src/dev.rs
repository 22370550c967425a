//! `hoard dev`: a complete store in one process.
use crate::cli::DevArgs;

/// Runs the index server and three volumes until SIGINT/SIGTERM.
pub async fn run(_args: DevArgs, _verbose: bool) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
