//! The command line: one binary, one subcommand per role. Every option can also be set
//! with an environment variable `HOARD_<NAME>` (the flag wins).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// hoard — a distributed blob store, drop-in compatible with minikeyvalue.
///
/// An index server keeps key → {replica volumes, size, md5, state}; values live as plain
/// files on volume servers (hoard's own, or stock nginx with WebDAV). GET /key answers
/// 302 to a volume holding the value; PUT /key streams the body to every replica and
/// answers 201 once all of them have it.
///
/// Quick start: `hoard dev`, then `hoard put mykey file` and `hoard get mykey`
/// (or `curl -L -T file localhost:3000/mykey` and `curl -L localhost:3000/mykey`).
///
/// Client commands (put, get, rm, unlink, ls, stat, cp) talk to the index server at
/// --url / HOARD_URL (default http://localhost:3000), with --token / HOARD_TOKEN when
/// it requires one. They exit with status 0 only on success and report errors in one
/// line, e.g. `hoard: /x: not found`.
#[derive(Debug, Parser)]
#[command(name = "hoard", version, propagate_version = true)]
pub struct Cli {
    /// Servers: log one line per request (method, key, status, bytes, duration).
    /// `hoard cp`: one line per file (copied or skipped) and a summary.
    #[arg(short, long, global = true, env = "HOARD_VERBOSE")]
    pub verbose: bool,

    /// Log format: `text` or `json` (one object per line).
    #[arg(
        long,
        global = true,
        env = "HOARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: crate::telemetry::LogFormat,

    /// TOML file with option values (see docs/OPERATIONS.md); precedence is command
    /// line, then environment, then this file, then built-in defaults.
    #[arg(long, global = true, env = "HOARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The role to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The roles the binary can run.
// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a complete store in one process: an index server and three local volumes.
    ///
    /// The index listens on --port and the volumes on the next three ports; everything
    /// is kept under --data and survives restarts. Same code paths as a cluster.
    Dev(DevArgs),
    /// Run an index server in front of a set of volume servers.
    Server(Box<ServerArgs>),
    /// Run a native volume server storing files under --dir.
    ///
    /// Speaks the same HTTP as the stock nginx WebDAV volume minikeyvalue uses: PUT
    /// (atomic: temp file, fsync, rename), GET/HEAD with Range, DELETE, and JSON
    /// directory listings for paths ending in `/`.
    Volume(VolumeArgs),
    /// Reconstruct a lost index from the files on the volumes, into a new --db.
    ///
    /// Lists every volume (JSON directory listings), and records each key found with
    /// its locations in placement order and the size from the listing. The md5 stays
    /// unknown unless --md5 is given (`hoard verify --deep` fills it in later).
    /// Unlinked keys come back live: files do not record that state.
    Rebuild(RebuildArgs),
    /// Move every key to its placement for --volumes (after volumes joined or left).
    ///
    /// Offline: the index server must be stopped. A running server does the same with
    /// `POST /-/admin/rebalance`. Safe to interrupt and run again.
    Rebalance(RebalanceArgs),
    /// Check that every replica exists with the right size (--deep: and md5); with
    /// --repair, re-create bad replicas, roll back crashed writes, finish interrupted
    /// deletes and delete orphan files.
    ///
    /// Offline: the index server must be stopped; a running server does the same with
    /// `POST /-/admin/verify?repair=1&deep=1`. Exits with status 1 when problems are
    /// left. Safe to interrupt and run again.
    Verify(VerifyArgs),
    /// Benchmark a running store (started separately) given by --url: thrasher,
    /// get-redirect, large values, and the physical baseline.
    Bench(crate::bench::BenchArgs),
    /// Store a file (or standard input) under a key.
    ///
    /// The value is streamed, never held in memory, to every replica; the command
    /// succeeds once the server answered 201 (all replicas hold it). A key that exists
    /// is refused (`hoard rm` it first). A file is sent again to the next --url if a
    /// server could not be reached; standard input cannot be re-sent. A progress bar
    /// shows for large files when stderr is a terminal.
    ///
    /// Examples: `hoard put /photos/1.jpg 1.jpg`, `tar c dir | hoard put /backups/dir.tar`.
    Put(crate::client::args::PutArgs),
    /// Fetch a key's value to standard output or a file.
    ///
    /// Asks the index where the value is (its 302), reads it from that replica and
    /// checks it against the md5 the index recorded. A failed read is retried from
    /// another replica (from the start, as long as nothing reached standard output).
    /// With -o, the file appears only once complete and checked.
    ///
    /// Examples: `hoard get /photos/1.jpg > 1.jpg`, `hoard get /photos/1.jpg -o 1.jpg`.
    Get(crate::client::args::GetArgs),
    /// Delete a key: its value is removed from every replica.
    ///
    /// With a server started with --protect, only unlinked keys can be deleted.
    Rm(crate::client::args::KeyArgs),
    /// Unlink a key (virtual delete): it disappears from reads and listings (it shows
    /// in `hoard ls --unlinked`); its files stay until `hoard rm`.
    Unlink(crate::client::args::KeyArgs),
    /// List keys, one a line, in bytewise order.
    ///
    /// Reads the listing page by page (10,000 keys each), so any number of keys is
    /// listed in bounded memory.
    ///
    /// Examples: `hoard ls /photos/`, `hoard ls --long`, `hoard ls --unlinked`.
    Ls(crate::client::args::LsArgs),
    /// Show a key's size, md5, replica volumes and balance (whether its replicas are
    /// where the current placement puts them).
    Stat(crate::client::args::KeyArgs),
    /// Copy a directory tree to a key prefix, or a key prefix to a directory.
    ///
    /// If SRC is a local directory, every file under it is stored at DST + its path
    /// relative to SRC (`hoard cp -r photos /backup/photos/` stores photos/a/b.jpg as
    /// /backup/photos/a/b.jpg); otherwise SRC is a key prefix and every key under it is
    /// written to the directory DST (`hoard cp -r /backup/photos/ restored`).
    ///
    /// Several files are copied at once (--jobs). Resumable: a file whose copy already
    /// exists with the same md5 is skipped, so running an interrupted copy again only
    /// copies what is missing or different; a different copy is replaced. Failed files
    /// are reported one a line and make the exit status 1. With -v, one line per file.
    Cp(crate::client::args::CpArgs),
    /// Show or change the members of an index cluster (servers run with --peers).
    ///
    /// `hoard cluster status` lists the members, the leader and how far each member
    /// has the log; `hoard cluster add ID=HOST:PORT` adds a server started with
    /// `--node-id ID --join` once it has caught up; `hoard cluster remove ID` removes a
    /// member (alive or dead) and retires its id. Any member takes the request.
    Cluster(crate::client::cluster::ClusterArgs),
}

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
    #[arg(long, env = "HOARD_VOLTIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub voltimeout: Duration,
    /// Keys worked on at once; for listings, requests in flight per volume.
    #[arg(long, env = "HOARD_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
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
    #[arg(long, env = "HOARD_GRACE", default_value = "1h", value_parser = parse_duration)]
    pub grace: Duration,
    /// Speed limit: keys checked per second (`500`) or bytes read per second (`50MB/s`).
    #[arg(long, env = "HOARD_MAX_RATE")]
    pub max_rate: Option<crate::ops::worker::Rate>,
}

/// Options of `hoard dev`.
#[derive(Debug, Args, Clone)]
pub struct DevArgs {
    /// Directory for the index and the three volumes.
    #[arg(long, env = "HOARD_DATA", default_value = "./hoard-data")]
    pub data: PathBuf,
    /// Port of the index server; the volumes take the next three.
    #[arg(long, env = "HOARD_PORT", default_value_t = 3000)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOARD_BIND", default_value = "127.0.0.1")]
    pub bind: String,
    /// Port of the S3 API (credentials default to hoard / hoardhoard).
    #[arg(long = "s3-port", env = "HOARD_S3_PORT", default_value_t = 9000)]
    pub s3_port: u16,
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
    /// Replicate every committed PUT, DELETE and UNLINK, asynchronously and in commit
    /// order, to these other hoard stores (index server URLs, comma-separated).
    #[arg(long, env = "HOARD_REPLICATE_TO", value_delimiter = ',')]
    pub replicate_to: Vec<String>,
    /// Most changes shipped per second to each --replicate-to target (0: no limit).
    #[arg(long, env = "HOARD_REPLICATE_RATE", default_value_t = 1000)]
    pub replicate_rate: u32,
}

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
    #[arg(long, env = "HOARD_VOLTIMEOUT", default_value = "1s", value_parser = parse_duration)]
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
    /// Serve the S3 API on this port too (off by default; needs S3 credentials).
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
    #[arg(long, hide = true, value_parser = parse_duration)]
    pub test_rename_delay: Option<Duration>,
}

/// Parses `1s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, ""), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 1s or 500ms"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// Parses the command line, with the configuration file's values as defaults.
pub fn parse() -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut cmd = Cli::command();
    if let Some(path) = crate::config::config_path(&args) {
        cmd = match crate::config::apply_file(cmd, &path, &args) {
            Ok(cmd) => cmd,
            Err(e) => {
                return Err(
                    Cli::command().error(clap::error::ErrorKind::InvalidValue, format!("{e:#}"))
                )
            }
        };
    }
    let matches = cmd.try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    crate::telemetry::init_logging(cli.log_format);
    // reqwest is built without a default rustls provider: every client needs this.
    crate::tls::install_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hoard: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let verbose = cli.verbose;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => crate::dev::run(args, verbose).await,
            Command::Server(args) => crate::server::run(*args, verbose).await,
            Command::Volume(args) => crate::volume::run(args, verbose).await,
            Command::Rebuild(args) => crate::ops::offline::rebuild(args).await,
            Command::Rebalance(args) => crate::ops::offline::rebalance(args).await,
            Command::Verify(args) => crate::ops::offline::verify(args).await,
            Command::Bench(args) => crate::bench::run(args).await,
            client => crate::client::run(client, verbose).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hoard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
