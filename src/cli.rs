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
/// Quick start: `hoard dev`, then `curl -L -T file localhost:3000/mykey` and
/// `curl -L localhost:3000/mykey`.
#[derive(Debug, Parser)]
#[command(name = "hoard", version, propagate_version = true)]
pub struct Cli {
    /// Log one line per request (method, key, status, bytes, duration).
    #[arg(short, long, global = true, env = "HOARD_VERBOSE")]
    pub verbose: bool,

    /// The role to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The roles the binary can run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a complete store in one process: an index server and three local volumes.
    ///
    /// The index listens on --port and the volumes on the next three ports; everything
    /// is kept under --data and survives restarts. Same code paths as a cluster.
    Dev(DevArgs),
    /// Run an index server in front of a set of volume servers.
    Server(ServerArgs),
    /// Run a native volume server storing files under --dir.
    ///
    /// Speaks the same HTTP as the stock nginx WebDAV volume minikeyvalue uses: PUT
    /// (atomic: temp file, fsync, rename), GET/HEAD with Range, DELETE, and JSON
    /// directory listings for paths ending in `/`.
    Volume(VolumeArgs),
    /// Benchmark a running store (started separately) given by --url: thrasher,
    /// get-redirect, large values, and the physical baseline.
    Bench(crate::bench::BenchArgs),
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
    /// Volume servers, comma separated host:port. Their names take part in placement:
    /// list them exactly as before (order does not matter).
    #[arg(long, env = "HOARD_VOLUMES", value_delimiter = ',', required = true)]
    pub volumes: Vec<String>,
    /// Copies of each value.
    #[arg(long, env = "HOARD_REPLICAS", default_value_t = 3)]
    pub replicas: usize,
    /// Subvolume directories per volume (1 = none), as in minikeyvalue.
    #[arg(long, env = "HOARD_SUBVOLUMES", default_value_t = 10)]
    pub subvolumes: u32,
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
}

/// Parses `1s`, `500ms`, `2m`, or a bare number of seconds.
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
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
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
            Command::Server(args) => crate::server::run(args, verbose).await,
            Command::Volume(args) => crate::volume::run(args, verbose).await,
            Command::Bench(args) => crate::bench::run(args).await,
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

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("HOARD_LOG").unwrap_or_else(|_| EnvFilter::new("hoard=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
