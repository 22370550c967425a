//! The command line: one binary, one subcommand per role. Every option can also be set
//! with an environment variable `HOARD_<NAME>` (the flag wins).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::dev::DevArgs;
use crate::ops::args::{CompactArgs, RebalanceArgs, RebuildArgs, VerifyArgs};
use crate::server::ServerArgs;
use crate::volume::VolumeArgs;

/// `hoard --version`: the crate version and the git commit it was built from
/// (`unknown` outside a git checkout unless the build set `HOARD_GIT_COMMIT`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HOARD_GIT_COMMIT"),
    ")"
);

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
#[command(name = "hoard", version = VERSION, propagate_version = true)]
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

    /// Worker threads of the async runtime (default: one per CPU core). Blocking file
    /// work (fsync, large writes) runs on a separate pool either way. One thread spares
    /// the hand-offs between workers: `hoard volume --runtime-threads 1` is the
    /// counterpart of nginx's `worker_processes 1` (docs/BENCHMARKS.md measures both).
    #[arg(long, global = true, env = "HOARD_RUNTIME_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub runtime_threads: Option<u16>,

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
    /// (atomic: temp file, fsync, then linked into place), GET/HEAD with Range, DELETE, and JSON
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
    /// Compact the index database: return the file's free pages (left by deletes and
    /// overwrites) to the file system.
    ///
    /// Offline with --db: the index server must be stopped (the file is locked while it
    /// runs). Online with --url: the running server compacts its own file, holding
    /// reads and writes back for the compaction itself (POST /-/admin/compact).
    /// Records are not changed. Prints the file size before and after as JSON.
    Compact(CompactArgs),
    /// Benchmark a running store (started separately) given by --url: thrasher,
    /// get-redirect, large values, and the physical baseline.
    Bench(crate::bench::BenchArgs),
    /// The client commands: put, get, rm, unlink, ls, stat, cp, cluster.
    #[command(flatten)]
    Client(crate::client::ClientCommand),
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
    // reqwest is built without a default rustls provider: every client needs this.
    crate::tls::install_provider();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.runtime_threads {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hoard: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let traces = match service_name(&cli.command) {
        Some(name) => {
            let _in_runtime = runtime.enter();
            match crate::otel::start(name) {
                Ok(exporter) => exporter,
                Err(e) => {
                    eprintln!("hoard: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    crate::telemetry::init_logging(cli.log_format, traces.as_ref().map(|t| t.tracer()));
    let verbose = cli.verbose;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => crate::dev::run(args, verbose).await,
            Command::Server(args) => crate::server::run(*args, verbose).await,
            Command::Volume(args) => crate::volume::run(args, verbose).await,
            Command::Rebuild(args) => crate::ops::offline::rebuild(args).await,
            Command::Rebalance(args) => crate::ops::offline::rebalance(args).await,
            Command::Verify(args) => crate::ops::offline::verify(args).await,
            Command::Compact(args) => match args.url {
                Some(url) => crate::client::compact::run(&url, args.token).await,
                None => crate::ops::offline::compact(args).await,
            },
            Command::Bench(args) => crate::bench::run(args).await,
            Command::Client(cmd) => crate::client::run(cmd, verbose).await,
        }
    });
    // Serving has ended (a graceful stop, or an error): the last spans go out now.
    if let Some(traces) = traces {
        traces.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hoard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The default OpenTelemetry service name of the serving commands (`None`: the command
/// exports no traces).
fn service_name(command: &Command) -> Option<&'static str> {
    match command {
        Command::Server(_) => Some("hoard-server"),
        Command::Volume(_) => Some("hoard-volume"),
        Command::Dev(_) => Some("hoard-dev"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn runtime_threads_must_be_positive() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        let ok = parse(&["hoard", "volume", "--dir", "d", "--runtime-threads", "1"]).unwrap();
        assert_eq!(ok.runtime_threads, Some(1));
        assert!(parse(&["hoard", "--runtime-threads", "0", "volume", "--dir", "d"]).is_err());
        let default = parse(&["hoard", "volume", "--dir", "d"]).unwrap();
        assert_eq!(default.runtime_threads, None);
        // `hoard bench` keeps its own `--threads` (load generator threads).
        let bench = [
            "hoard",
            "bench",
            "get-redirect",
            "--url",
            "http://x",
            "--threads",
            "4",
        ];
        assert_eq!(parse(&bench).unwrap().runtime_threads, None);
    }
}
