//! Options of the offline operations (`hoard rebuild`, `rebalance`, `verify`) and the
//! placement options every command that computes placement shares.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Where keys live: the options every command that computes placement shares.
#[derive(Debug, Args, Clone)]
pub struct PlacementArgs {
    /// Volume servers, comma separated host:port, each optionally with a failure zone
    /// (host:port@zone): a key's replicas then go to distinct zones. The host:port
    /// names take part in placement: list them exactly as before (order does not
    /// matter); zone labels do not.
    #[arg(long, env = "HOARD_VOLUMES", value_delimiter = ',', required = true)]
    pub volumes: Vec<String>,
    /// Copies of each value.
    #[arg(long, env = "HOARD_REPLICAS", default_value_t = 3)]
    pub replicas: usize,
    /// Subvolume directories per volume (1 = none), as in minikeyvalue.
    #[arg(long, env = "HOARD_SUBVOLUMES", default_value_t = 10)]
    pub subvolumes: u32,
}

impl PlacementArgs {
    /// The placement these options describe.
    pub fn build(&self) -> anyhow::Result<crate::placement::Placement> {
        use anyhow::Context as _;
        crate::placement::Placement::new(self.volumes.clone(), self.replicas, self.subvolumes)
            .context("invalid --volumes / --replicas / --subvolumes")
    }
}

/// The cluster an offline operation works on.
#[derive(Debug, Args, Clone)]
pub struct ClusterArgs {
    /// Directory of the index database.
    #[arg(long, env = "HOARD_DB")]
    pub db: PathBuf,
    /// Volumes, replicas and subvolumes: the placement to use.
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// Timeout for connecting to a volume server and for small requests.
    #[arg(long, env = "HOARD_VOLTIMEOUT", default_value = "1s", value_parser = crate::units::parse_duration)]
    pub voltimeout: Duration,
    /// Keys worked on at once (rebalance: keys copying at once); for listings, requests
    /// in flight per volume.
    #[arg(long, env = "HOARD_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Shared secret of volumes started with --auth-token: sent to them as
    /// `Authorization: Bearer <token>` (as a running index server does).
    #[arg(long, env = "HOARD_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Read the volumes' shared secret from this file (trailing newline ignored).
    #[arg(long, env = "HOARD_AUTH_TOKEN_FILE", conflicts_with = "auth_token")]
    pub auth_token_file: Option<PathBuf>,
}

impl ClusterArgs {
    /// The client towards the volumes, with the shared secret when one was given.
    pub fn volume_client(&self) -> anyhow::Result<crate::replica::VolumeClient> {
        let auth = crate::auth::Auth::from_args(&crate::auth::AuthArgs {
            auth_token: self.auth_token.clone(),
            auth_token_file: self.auth_token_file.clone(),
            auth_mode: None,
        })?;
        let opts = crate::replica::ClientOptions {
            token: auth.token(),
            ..Default::default()
        };
        crate::replica::VolumeClient::with_options(self.voltimeout, opts)
    }
}

/// Options of `hoard rebuild`.
#[derive(Debug, Args, Clone)]
pub struct RebuildArgs {
    /// Volumes and the new index directory (must not hold an index yet).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Also read one replica of every key to record its md5 (slower: reads all data).
    #[arg(long)]
    pub md5: bool,
    /// Memory budget in MiB for the rebuild's caches and batches (it stays within it
    /// at any key count; the process needs a few tens of MiB more of its own).
    #[arg(long, env = "HOARD_REBUILD_MEMORY_MB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(4..))]
    pub memory_mb: u64,
}

/// Options of `hoard rebalance`.
#[derive(Debug, Args, Clone)]
pub struct RebalanceArgs {
    /// Index and the volume list to balance for.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Speed limit: keys moved per second (`200`) or bytes copied per second (`50MB/s`).
    #[arg(long, env = "HOARD_MAX_RATE")]
    pub max_rate: Option<crate::ops::worker::Rate>,
}

/// Options of `hoard verify`.
#[derive(Debug, Args, Clone)]
pub struct VerifyArgs {
    /// Index and volumes.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Fix what is found (otherwise only report).
    #[arg(long)]
    pub repair: bool,
    /// Read every replica in full and check its md5 (records unknown md5s).
    #[arg(long)]
    pub deep: bool,
    /// Write intents and orphan files younger than this are left alone.
    #[arg(long, env = "HOARD_GRACE", default_value = "1h", value_parser = crate::units::parse_duration)]
    pub grace: Duration,
    /// Speed limit: keys checked per second (`500`) or bytes read per second (`50MB/s`).
    #[arg(long, env = "HOARD_MAX_RATE")]
    pub max_rate: Option<crate::ops::worker::Rate>,
}

/// Options of `hoard compact`: offline with `--db`, online with `--url`.
#[derive(Debug, Args, Clone)]
pub struct CompactArgs {
    /// Directory of the index database, compacted offline (the server using it must be
    /// stopped).
    #[arg(long, env = "HOARD_DB")]
    pub db: Option<PathBuf>,
    /// A running index server whose database to compact online (`POST
    /// /-/admin/compact`); in an index cluster, the member to compact (each has its own
    /// file). Wins over --db.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Bearer token for a server started with --auth-token (with --url).
    #[arg(
        long,
        env = "HOARD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}
