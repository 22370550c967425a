//! Options of `hoard volume`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// `--fsync`: when a volume's writes are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync every file and directory before acknowledging.
    Always,
    /// Never (the page cache writes back).
    Never,
    /// syncfs the volume's filesystem on a timer.
    Interval(Duration),
}

impl FsyncPolicy {
    /// Parses `always`, `never`, `true`, `false` or `interval=DURATION`.
    pub fn parse(s: &str) -> Result<FsyncPolicy, String> {
        match s.trim() {
            "always" | "true" => Ok(FsyncPolicy::Always),
            "never" | "false" => Ok(FsyncPolicy::Never),
            other => match other.strip_prefix("interval=") {
                Some(d) => match crate::units::parse_duration(d) {
                    Ok(d) if !d.is_zero() => Ok(FsyncPolicy::Interval(d)),
                    Ok(_) => Err("the interval must be above 0".into()),
                    Err(e) => Err(e.to_string()),
                },
                None => {
                    Err("expected always, never or interval=DURATION (true/false also work)".into())
                }
            },
        }
    }

    /// Whether each write is fsynced before it is acknowledged.
    pub fn per_write(self) -> bool {
        self == FsyncPolicy::Always
    }
}

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
    /// When writes reach the disk (minikv's policies). `always` (or `true`): every file
    /// and its directory are fsynced before a PUT or DELETE is acknowledged. `never` (or
    /// `false`): the operating system writes back when it likes. `interval=DURATION`
    /// (e.g. `interval=1s`): acknowledged at once, the whole filesystem synced in one
    /// go (syncfs) every DURATION and at a clean stop — a crash loses at most the writes
    /// of the last interval.
    #[arg(long, env = "HOARD_FSYNC", default_value = "always", value_parser = FsyncPolicy::parse)]
    pub fsync: FsyncPolicy,
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
        let advertise = crate::placement::volume_from_url(&advertise)
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

#[cfg(test)]
mod tests {
    use super::FsyncPolicy;
    use std::time::Duration;

    #[test]
    fn fsync_policies_parse() {
        assert_eq!(FsyncPolicy::parse("always"), Ok(FsyncPolicy::Always));
        assert_eq!(FsyncPolicy::parse("true"), Ok(FsyncPolicy::Always));
        assert_eq!(FsyncPolicy::parse("never"), Ok(FsyncPolicy::Never));
        assert_eq!(FsyncPolicy::parse("false"), Ok(FsyncPolicy::Never));
        assert_eq!(
            FsyncPolicy::parse("interval=250ms"),
            Ok(FsyncPolicy::Interval(Duration::from_millis(250)))
        );
        for bad in ["interval=0s", "interval=", "interval=soon", "sometimes", ""] {
            assert!(FsyncPolicy::parse(bad).is_err(), "{bad}");
        }
    }
}
