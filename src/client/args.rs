//! The client subcommands' options, help text and entry points.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::transfer::{self, Sink, Source};
use super::{copy, normalize_key, ClientError, Conn};

/// Options of `hoard put`.
#[derive(Debug, Args, Clone)]
pub struct PutArgs {
    /// The key to store, e.g. /photos/1.jpg (a leading / is added if missing).
    pub key: String,
    /// The file to store; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
    /// The file to store, minikv's spelling (`put KEY --file F`); same as FILE.
    #[arg(long = "file", value_name = "FILE", conflicts_with = "file")]
    pub file_flag: Option<PathBuf>,
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
    let source = match args.file.or(args.file_flag) {
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

/// The client commands of the binary (`hoard put|get|rm|unlink|ls|stat|cp|cluster`).
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Store a file (or standard input) under a key.
    ///
    /// The value is streamed, never held in memory, to every replica; the command
    /// succeeds once the server answered 201 (all replicas hold it). A key that exists
    /// is refused (`hoard rm` it first). A file is sent again to the next --url if a
    /// server could not be reached; standard input cannot be re-sent. A progress bar
    /// shows for large files when stderr is a terminal.
    ///
    /// Examples: `hoard put /photos/1.jpg 1.jpg` (or minikv's `--file 1.jpg`),
    /// `tar c dir | hoard put /backups/dir.tar`.
    Put(PutArgs),
    /// Fetch a key's value to standard output or a file.
    ///
    /// Asks the index where the value is (its 302), reads it from that replica and
    /// checks it against the md5 the index recorded. A failed read is retried from
    /// another replica (from the start, as long as nothing reached standard output).
    /// With -o, the file appears only once complete and checked.
    ///
    /// Examples: `hoard get /photos/1.jpg > 1.jpg`, `hoard get /photos/1.jpg -o 1.jpg`.
    Get(GetArgs),
    /// Delete a key: its value is removed from every replica.
    ///
    /// With a server started with --protect, only unlinked keys can be deleted.
    /// `hoard delete KEY` is the same (minikv's spelling).
    #[command(visible_alias = "delete")]
    Rm(KeyArgs),
    /// Unlink a key (virtual delete): it disappears from reads and listings (it shows
    /// in `hoard ls --unlinked`); its files stay until `hoard rm`.
    Unlink(KeyArgs),
    /// List keys, one a line, in bytewise order.
    ///
    /// Reads the listing page by page (10,000 keys each), so any number of keys is
    /// listed in bounded memory.
    ///
    /// Examples: `hoard ls /photos/`, `hoard ls --long`, `hoard ls --unlinked`.
    Ls(LsArgs),
    /// Show a key's size, md5, replica volumes and balance (whether its replicas are
    /// where the current placement puts them).
    Stat(KeyArgs),
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
    Cp(CpArgs),
    /// Show or change the members of an index cluster (servers run with --peers).
    ///
    /// `hoard cluster status` lists the members, the leader and how far each member
    /// has the log; `hoard cluster add ID=HOST:PORT` adds a server started with
    /// `--node-id ID --join` once it has caught up; `hoard cluster remove ID` removes a
    /// member (alive or dead) and retires its id. Any member takes the request.
    Cluster(super::cluster::ClusterArgs),
    /// S3 access keys (users): `hoard key create NAME` prints a new key's id and
    /// secret; `list`; `delete ID`. Needs the admin token (--token).
    Key(super::tenancy::KeyCmd),
    /// S3 buckets' owners, grants and quotas: `hoard bucket list`, `allow
    /// --read|--write|--owner BUCKET --key ID`, `deny …`, `quota BUCKET --max-bytes N
    /// --max-objects N`. Needs the admin token (--token).
    Bucket(super::tenancy::BucketCmd),
}

/// Runs a client command.
pub async fn run(cmd: ClientCommand, verbose: bool) -> anyhow::Result<()> {
    use ClientCommand as Command;
    match cmd {
        Command::Put(a) => put(a).await,
        Command::Get(a) => get(a).await,
        Command::Rm(a) => remove(a, false).await,
        Command::Unlink(a) => remove(a, true).await,
        Command::Stat(a) => stat(a).await,
        Command::Ls(a) => ls(a).await,
        Command::Cp(a) => cp(a, verbose).await,
        Command::Cluster(a) => super::cluster::run(a).await,
        Command::Key(a) => super::tenancy::key(a).await,
        Command::Bucket(a) => super::tenancy::bucket(a).await,
    }
}
