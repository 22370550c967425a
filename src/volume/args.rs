//! Options of `hoard volume`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Options of `hoard volume`.
#[derive(Debug, Args, Clone)]
pub struct VolumeArgs {
    /// Directory holding the files (created if missing). Nothing outside it is ever
    /// read or written.
    #[arg(long, env = "HOARD_DIR")]
    pub dir: PathBuf,
    /// Port to listen on.
    #[arg(long, env = "HOARD_PORT", default_value_t = 3001)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOARD_BIND", default_value = "0.0.0.0")]
    pub bind: String,
    /// fsync every file (and its directory) before acknowledging a PUT. `--fsync=false`
    /// trades crash safety for speed.
    #[arg(long, env = "HOARD_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
    /// Authentication of writes (and, with `all`, reads: bearer token or signed URL).
    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,
    /// Connections, timeouts and TLS.
    #[command(flatten)]
    pub listen: crate::net::ListenArgs,
    /// Test hook: wait this long between syncing an upload and renaming it into place.
    #[arg(long, hide = true, value_parser = crate::units::parse_duration)]
    pub test_rename_delay: Option<Duration>,
}
