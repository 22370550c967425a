//! The client subcommands' options, help text and entry points.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::transfer::{self, Sink, Source};
use super::{copy, normalize_key, Client, ClientError};

/// Which cluster to talk to: every client command takes these.
#[derive(Debug, Args, Clone)]
pub struct Conn {
    /// Index server URL. Give several (comma separated, or --url more than once) for an
    /// index cluster: they are tried in turn when one cannot be reached.
    #[arg(
        long = "url",
        env = "HOARD_URL",
        value_delimiter = ',',
        default_value = "http://localhost:3000",
        value_name = "URL"
    )]
    pub urls: Vec<String>,
    /// Bearer token for a server started with --auth-token.
    #[arg(
        long,
        env = "HOARD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

impl Conn {
    pub(super) fn client(&self) -> Result<Client, ClientError> {
        Client::new(&self.urls, self.token.clone())
    }
}

/// Options of `hoard put`.
#[derive(Debug, Args, Clone)]
pub struct PutArgs {
    /// The key to store, e.g. /photos/1.jpg (a leading / is added if missing).
    pub key: String,
    /// The file to store; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
    /// Server URLs and token.
    #[command(flatten)]
    pub conn: Conn,
}

/// Options of `hoard get`.
#[derive(Debug, Args, Clone)]
pub struct GetArgs {
    /// The key to fetch.
    pub key: String,
    /// Write the value to FILE (through a temporary file renamed into place) instead of
    /// standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Server URLs and token.
    #[command(flatten)]
    pub conn: Conn,
}

/// Options of the commands that take one key (`rm`, `unlink`, `stat`).
#[derive(Debug, Args, Clone)]
pub struct KeyArgs {
    /// The key.
    pub key: String,
    /// Server URLs and token.
    #[command(flatten)]
    pub conn: Conn,
}

/// Options of `hoard ls`.
#[derive(Debug, Args, Clone)]
pub struct LsArgs {
    /// List keys starting with PREFIX (default: every key).
    pub prefix: Option<String>,
    /// Also show each key's size and md5 (`size  md5  key`; `-` when unknown). Uses
    /// the batch API, which a server with --auth-token treats as a write: give --token.
    #[arg(short, long)]
    pub long: bool,
    /// List unlinked keys (UNLINKed, not yet deleted) instead of live ones.
    #[arg(long)]
    pub unlinked: bool,
    /// Server URLs and token.
    #[command(flatten)]
    pub conn: Conn,
}

/// Options of `hoard cp`.
#[derive(Debug, Args, Clone)]
pub struct CpArgs {
    /// Copy whole directories / key prefixes (required: cp copies trees).
    #[arg(short, long, required = true)]
    pub recursive: bool,
    /// What to copy: a local directory (uploaded), or else a key prefix (downloaded).
    pub src: String,
    /// Where to: a key prefix when SRC is a local directory, else a local directory
    /// (created if missing).
    pub dst: String,
    /// Files copied at once.
    #[arg(short, long, env = "HOARD_JOBS", default_value_t = 8)]
    pub jobs: usize,
    /// Server URLs and token.
    #[command(flatten)]
    pub conn: Conn,
}

/// `hoard put KEY [FILE|-]`.
pub async fn put(args: PutArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let source = match args.file {
        Some(f) if f.as_os_str() != "-" => Source::File(f),
        _ => Source::Stdin,
    };
    transfer::put(&client, &normalize_key(&args.key), &source, true).await?;
    Ok(())
}

/// `hoard get KEY [-o FILE]`.
pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let sink = match args.output {
        Some(f) if f.as_os_str() != "-" => Sink::File(f),
        _ => Sink::Stdout,
    };
    let key = normalize_key(&args.key);
    match transfer::get(&client, &key, &sink, true).await {
        Err(ClientError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(())
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}

/// `hoard rm KEY` (`unlink`: false) and `hoard unlink KEY` (true).
pub async fn remove(args: KeyArgs, unlink: bool) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    client.remove(&normalize_key(&args.key), unlink).await?;
    Ok(())
}

/// `hoard stat KEY`: size, md5, replicas and balance, one `name value` per line.
pub async fn stat(args: KeyArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let key = normalize_key(&args.key);
    let at = client
        .locate(&key)
        .await?
        .ok_or_else(|| ClientError::NotFound(key.clone()))?;
    let head = client
        .http()
        .head(&at.url)
        .send()
        .await
        .map_err(|source| ClientError::Http {
            what: key.clone(),
            source,
        })?;
    if !head.status().is_success() {
        return Err(super::status_error(&key, head).await.into());
    }
    let size = head
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let text = format!(
        "key       {key}\nsize      {size}\nmd5       {}\nreplicas  {}\nbalance   {}\n",
        at.md5.as_deref().unwrap_or("-"),
        at.volumes.join(","),
        at.balance,
    );
    print_out(text.as_bytes())
}

/// `hoard ls [PREFIX] [--long] [--unlinked]`: every key, one a line, page by page.
pub async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let prefix = normalize_key(args.prefix.as_deref().unwrap_or("/"));
    let mut start: Option<String> = None;
    loop {
        let (keys, next) = client
            .list_page(&prefix, args.unlinked, start.as_deref())
            .await?;
        let mut out = Vec::new();
        if args.long {
            for chunk in keys.chunks(1000) {
                let stats = client.stat_many(chunk).await?;
                for (key, s) in chunk.iter().zip(stats) {
                    let size = s["size"].as_u64().map_or("-".into(), |n| n.to_string());
                    let md5 = s["md5"].as_str().unwrap_or("-");
                    writeln!(out, "{size:>12}  {md5:<32}  {key}")?;
                }
            }
        } else {
            for key in &keys {
                writeln!(out, "{key}")?;
            }
        }
        print_out(&out)?;
        match next {
            Some(n) => start = Some(n),
            None => return Ok(()),
        }
    }
}

/// `hoard cp -r SRC DST`.
pub async fn cp(args: CpArgs, verbose: bool) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let src = PathBuf::from(&args.src);
    let report = if src.is_dir() {
        copy::upload(&client, &src, &normalize_key(&args.dst), args.jobs, verbose).await?
    } else {
        let prefix = normalize_key(&args.src);
        copy::download(
            &client,
            &prefix,
            &PathBuf::from(&args.dst),
            args.jobs,
            verbose,
        )
        .await?
    };
    if std::io::stderr().is_terminal() || verbose {
        eprintln!(
            "copied {}, skipped {} (same md5), failed {}",
            report.copied, report.skipped, report.failed
        );
    }
    if report.failed > 0 {
        anyhow::bail!(
            "{} of {} files failed",
            report.failed,
            report.copied + report.skipped + report.failed
        );
    }
    Ok(())
}

/// Writes to stdout; a reader that went away (`| head`) ends the command quietly.
fn print_out(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other.context("standard output"),
    }
}

/// Runs a client command (for callers outside the binary's dispatch).
pub async fn run(cmd: crate::cli::Command, verbose: bool) -> anyhow::Result<()> {
    use crate::cli::Command;
    match cmd {
        Command::Put(a) => put(a).await,
        Command::Get(a) => get(a).await,
        Command::Rm(a) => remove(a, false).await,
        Command::Unlink(a) => remove(a, true).await,
        Command::Stat(a) => stat(a).await,
        Command::Ls(a) => ls(a).await,
        Command::Cp(a) => cp(a, verbose).await,
        Command::Cluster(a) => super::cluster::run(a).await,
        _ => anyhow::bail!("not a client command"),
    }
}
