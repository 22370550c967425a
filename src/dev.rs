//! `hoard dev`: a complete store in one process — the index server on `--port` and
//! three native volumes on the next three ports, all under `--data`. It uses exactly the
//! cluster code paths: the index talks to its volumes over HTTP on loopback.
//!
//! Every port is derived from `--port` (P) by a fixed offset, so two dev stores whose
//! ports are at least [`PORT_SPAN`] apart never collide:
//!
//! | port | serves | override (0 = off) |
//! |---|---|---|
//! | P | index server (HTTP API, `/-/ui`, `/metrics`) | — |
//! | P+1, P+2, P+3 | the three volumes | — |
//! | P+4 | S3 API | `--s3-port` |
//! | P+5 | minivault binary protocol | `--tcp-port` |
//! | P+6 | minivault JSON interface | `--json-port` |

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Args;
use tokio::sync::watch;

use crate::net::ListenArgs;
use crate::placement::Placement;
use crate::server::ServerConfig;
use crate::volume::VolumeConfig;

/// Options of `hoard dev`.
#[derive(Debug, Args, Clone)]
pub struct DevArgs {
    /// Directory for the index and the three volumes.
    #[arg(long, env = "HOARD_DATA", default_value = "./hoard-data")]
    pub data: PathBuf,
    /// Port of the index server; the volumes take the next three, S3 the one after
    /// (P+4), the binary protocol P+5 and the JSON interface P+6.
    #[arg(long, env = "HOARD_PORT", default_value_t = 3000)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOARD_BIND", default_value = "127.0.0.1")]
    pub bind: String,
    /// Port of the S3 API (credentials default to hoard / hoardhoard); default
    /// --port + 4, 0 switches it off.
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
    /// Replicate every committed PUT, DELETE and UNLINK, asynchronously and in commit
    /// order, to these other hoard stores (index server URLs, comma-separated).
    #[arg(long, env = "HOARD_REPLICATE_TO", value_delimiter = ',')]
    pub replicate_to: Vec<String>,
    /// Most changes shipped per second to each --replicate-to target (0: no limit).
    #[arg(long, env = "HOARD_REPLICATE_RATE", default_value_t = 1000)]
    pub replicate_rate: u32,
}

const VOLUMES: u16 = 3;

/// Offset from `--port` of the S3 API.
pub const S3_OFFSET: u16 = 4;
/// Offset from `--port` of the binary protocol.
pub const TCP_OFFSET: u16 = 5;
/// Offset from `--port` of the JSON interface.
pub const JSON_OFFSET: u16 = 6;
/// Ports a dev store takes by default, from `--port` on.
pub const PORT_SPAN: u16 = JSON_OFFSET + 1;

/// The port of a front-end: the one given (`0`: switched off), else `--port` plus its
/// offset.
pub fn front_end_port(
    port: u16,
    given: Option<u16>,
    offset: u16,
    flag: &str,
) -> anyhow::Result<Option<u16>> {
    match given {
        Some(0) => Ok(None),
        Some(p) => Ok(Some(p)),
        None => port.checked_add(offset).map(Some).with_context(|| {
            format!("--port {port} leaves no room for {flag} (--port + {offset}); give {flag}")
        }),
    }
}

/// Runs the store until SIGINT/SIGTERM: then the index stops first (finishing in-flight
/// writes), the volumes after it, and the index is closed cleanly.
pub async fn run(mut args: DevArgs, verbose: bool) -> anyhow::Result<()> {
    let s3_port = front_end_port(args.port, args.s3_port, S3_OFFSET, "--s3-port")?;
    args.proto.tcp_port = front_end_port(args.port, args.proto.tcp_port, TCP_OFFSET, "--tcp-port")?;
    args.json.json_port =
        front_end_port(args.port, args.json.json_port, JSON_OFFSET, "--json-port")?;
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create data directory {}", args.data.display()))?;
    check_port(&args.data, args.port)?;
    let host = match args.bind.as_str() {
        "0.0.0.0" | "::" => "127.0.0.1",
        other => other,
    };

    let index_listener = crate::http::bind(&args.bind, args.port).await?;
    let s3_listener = match s3_port {
        Some(p) => Some(
            crate::http::bind(&args.bind, p)
                .await
                .context("--s3-port")?,
        ),
        None => None,
    };
    let s3_users = args.s3.users(true)?;
    let (stop_volumes, volumes_stopped) = watch::channel(false);
    let mut names = Vec::new();
    let mut volume_tasks = Vec::new();
    for i in 1..=VOLUMES {
        let port = args
            .port
            .checked_add(i)
            .context("--port leaves no room for three volume ports")?;
        let listener = crate::http::bind(&args.bind, port).await?;
        let router = crate::volume::router(VolumeConfig {
            dir: args.data.join(format!("volume{i}")),
            fsync: true,
            auth: crate::auth::Auth::default(),
            rename_delay: None,
        })?;
        let router = crate::http::observe(router, "volume", verbose);
        let mut stopped = volumes_stopped.clone();
        let stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let options = crate::net::ServeOptions::from_args(&ListenArgs::default())?;
        volume_tasks.push(tokio::spawn(crate::net::serve(
            listener, router, stop, options,
        )));
        names.push(format!("{host}:{port}"));
    }

    let cfg = ServerConfig {
        placement: Placement::new(names.clone(), 3, 10)?,
        fallback: None,
        protect: false,
        md5sum: true,
        voltimeout: std::time::Duration::from_secs(1),
        verbose,
        // A development store: its native API is open (`--native-open` implied), so
        // S3 objects stay readable and writable through it without a token.
        safety: crate::server::SafetyConfig {
            auth: open(),
            ..Default::default()
        },
        cluster: None,
        zone: None,
        sites: crate::sites::SitesConfig::parse(&args.replicate_to, args.replicate_rate, None)?,
        inline_max: args.inline.limit()?,
        scrub: args.scrub.clone(),
    };
    let started = crate::server::start(cfg, &args.data.join("index")).await?;
    eprintln!(
        "hoard dev: ready on http://{host}:{} (volumes {}), data in {}",
        args.port,
        names.join(", "),
        args.data.display()
    );
    if s3_port.is_some() {
        s3_users.seed(&started.app.store).await?;
    }
    let s3_router = crate::s3::router(
        std::sync::Arc::clone(&started.app.store),
        &args.s3,
        None,
        verbose,
    )?;
    if let (Some(port), Some((access, secret))) = (s3_port, s3_users.first()) {
        eprintln!(
            "hoard dev: S3 API on http://{host}:{port} (access key {access}, secret key {secret}); \
             the native API is open (no token) and reaches every bucket"
        );
    }
    let options = crate::net::ServeOptions::from_args(&ListenArgs::default())?;
    let grace = options.grace;
    started.app.store.cache.enable(&args.cache);
    let store = std::sync::Arc::clone(&started.app.store);
    let proto = crate::proto::start(&args.proto, &args.bind, store, open(), None).await?;
    if let Some(p) = &proto {
        eprintln!("hoard dev: binary protocol on {}", p.local_addr());
    }
    let store = std::sync::Arc::clone(&started.app.store);
    let listen = ListenArgs::default();
    let json = crate::jsonapi::start(&args.json, &args.bind, store, open(), None, &listen).await?;
    if let Some(j) = &json {
        eprintln!("hoard dev: JSON interface on http://{}", j.local_addr());
    }
    let (served, s3_served) = tokio::join!(
        crate::net::serve(
            index_listener,
            started.router.clone(),
            crate::http::shutdown_signal(),
            options,
        ),
        async {
            match s3_listener {
                Some(listener) => {
                    crate::s3::serve(
                        listener,
                        s3_router,
                        crate::http::shutdown_signal(),
                        crate::net::ServeOptions::from_args(&ListenArgs::default())?,
                    )
                    .await
                }
                None => Ok(()),
            }
        }
    );
    let served = served.and(s3_served);
    if let Some(p) = proto {
        p.stop(grace).await;
    }
    if let Some(j) = json {
        j.stop(grace).await;
    }
    started.shutdown(grace).await;
    let _ = stop_volumes.send(true);
    for task in volume_tasks {
        task.await.context("volume task panicked")??;
    }
    served
}

/// Volume names (host:port) are part of every record and of placement, so a data
/// directory must always be served on the ports it was created with.
fn check_port(data: &Path, port: u16) -> anyhow::Result<()> {
    let file = data.join("dev-port");
    match std::fs::read_to_string(&file) {
        Ok(s) => {
            let recorded: u16 = s
                .trim()
                .parse()
                .with_context(|| format!("{} is corrupt", file.display()))?;
            if recorded != port {
                bail!(
                    "{} was created with --port {recorded}; volume names depend on it, \
                     so run with --port {recorded} (or use another --data)",
                    data.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&file, format!("{port}\n"))
                .with_context(|| format!("cannot write {}", file.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

/// `hoard dev`'s native authentication: none, declared open (`--native-open`).
fn open() -> crate::auth::Auth {
    crate::auth::Auth::default().native_open(true)
}
