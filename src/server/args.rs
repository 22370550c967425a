//! Options of `hoard server`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::ops::args::PlacementArgs;

/// Options of `hoard server`.
#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// Port to listen on.
    #[arg(long, env = "HOARD_PORT", default_value_t = 3000)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOARD_BIND", default_value = "0.0.0.0")]
    pub bind: String,
    /// Directory of the index database (created if missing).
    #[arg(long, env = "HOARD_DB")]
    pub db: PathBuf,
    /// Volumes, replicas and subvolumes.
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// host:port to redirect GETs of missing keys to, instead of answering 404.
    #[arg(long, env = "HOARD_FALLBACK")]
    pub fallback: Option<String>,
    /// Refuse DELETE of keys that were not UNLINKed first (403).
    #[arg(long, env = "HOARD_PROTECT")]
    pub protect: bool,
    /// Compute the md5 of every value on PUT and return it as Content-Md5.
    #[arg(long, env = "HOARD_MD5SUM", default_value_t = true, action = clap::ArgAction::Set)]
    pub md5sum: bool,
    /// Timeout for connecting to and probing a volume server (e.g. 1s, 500ms).
    #[arg(long, env = "HOARD_VOLTIMEOUT", default_value = "1s", value_parser = crate::units::parse_duration)]
    pub voltimeout: Duration,
    /// This index server's zone: GETs redirect to a replica in this zone when one is
    /// up, else to any other.
    #[arg(long, env = "HOARD_ZONE")]
    pub zone: Option<String>,
    /// Replicate every committed PUT, DELETE and UNLINK, asynchronously and in commit
    /// order, to these other hoard stores (index server URLs, comma-separated).
    #[arg(long, env = "HOARD_REPLICATE_TO", value_delimiter = ',')]
    pub replicate_to: Vec<String>,
    /// Most changes shipped per second to each --replicate-to target (0: no limit).
    #[arg(long, env = "HOARD_REPLICATE_RATE", default_value_t = 1000)]
    pub replicate_rate: u32,
    /// Safety: write quorum, auth, TLS, rate limit, timeouts.
    #[command(flatten)]
    pub safety: crate::server::SafetyArgs,
    /// Index cluster: node id, peers, read consistency.
    #[command(flatten)]
    pub cluster: crate::raft::ClusterArgs,
    /// Serve the S3 API on this port too (off by default). Its users are the access
    /// keys of the index (`hoard key create`), seeded from --s3-access-key/--s3-keys-file.
    #[arg(long = "s3-port", env = "HOARD_S3_PORT")]
    pub s3_port: Option<u16>,
    /// S3 credentials and domain.
    #[command(flatten)]
    pub s3: crate::s3::S3Args,
    /// minivault's binary protocol (`--tcp-port`).
    #[command(flatten)]
    pub proto: crate::proto::ProtoArgs,
    /// minivault's JSON interface (`--json-port`).
    #[command(flatten)]
    pub json: crate::jsonapi::JsonArgs,
    /// The value cache (`--cache-size`).
    #[command(flatten)]
    pub cache: crate::store::CacheArgs,
    /// Small values stored in the index (`--inline-max`).
    #[command(flatten)]
    pub inline: crate::store::InlineArgs,
    /// The continuous scrubber (`--scrub-interval`, `--scrub-max-rate`).
    #[command(flatten)]
    pub scrub: crate::ops::scrub::ScrubArgs,
}
