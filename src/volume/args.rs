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
    /// Join the index at this URL by itself (kalavara's volumes): register with
    /// `POST /-/admin/volumes` unless already a member, checked every --register-every,
    /// so it re-registers after the index lost its membership. Several URLs (an index
    /// cluster), comma-separated, are tried in turn. Needs --advertise unless --bind is
    /// a specific address.
    #[arg(
        long,
        env = "HOARD_REGISTER",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub register: Vec<String>,
    /// The `host:port` this volume registers as: the address the index servers and
    /// clients (who follow the index's redirects) reach it at.
    #[arg(long, env = "HOARD_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// How often a --register volume checks its membership.
    #[arg(long, env = "HOARD_REGISTER_EVERY", default_value = "10s", value_parser = crate::units::parse_duration)]
    pub register_every: Duration,
    /// Test hook: wait this long between syncing an upload and renaming it into place.
    #[arg(long, hide = true, value_parser = crate::units::parse_duration)]
    pub test_rename_delay: Option<Duration>,
}

impl VolumeArgs {
    /// The registration `--register` asks for, if any.
    pub fn registration(&self) -> anyhow::Result<Option<super::register::Registration>> {
        if self.register.is_empty() {
            return Ok(None);
        }
        let advertise = match &self.advertise {
            Some(a) => a.clone(),
            None if !matches!(self.bind.as_str(), "0.0.0.0" | "::" | "[::]") => {
                format!("{}:{}", self.bind, self.port)
            }
            None => anyhow::bail!(
                "--register needs --advertise HOST:PORT (the address the index and clients reach this volume at) when --bind is {}",
                self.bind
            ),
        };
        let advertise = crate::ops::membership::volume_from_url(&advertise)
            .map_err(|e| anyhow::anyhow!("--advertise: {e}"))?;
        anyhow::ensure!(
            !self.register_every.is_zero(),
            "--register-every must be above 0"
        );
        Ok(Some(super::register::Registration {
            index: self.register.clone(),
            advertise,
            token: crate::auth::Auth::from_args(&self.auth)?.token(),
            every: self.register_every,
        }))
    }
}
