//! The index server: keeps `key → record` and answers minikeyvalue's HTTP API.
//!
//! Request paths, top-down: [`dispatch`] decodes the key and picks a handler by method —
//! [`read`] (GET/HEAD redirect, `?list`, `?unlinked`), [`write`] (PUT, DELETE, UNLINK),
//! or [`admin`] for paths under `/-/` (operations: [`admin_ops`], the batch API:
//! [`batch`]). Handlers only translate HTTP to calls on the store core
//! ([`crate::store::Store`]) and its errors to statuses ([`ApiError`]).

mod admin;
mod admin_cluster;
mod admin_ops;
mod admin_tenancy;
mod args;
mod batch;
mod error;
mod jobs;
mod read;
mod safety;
mod tenancy;
pub mod ui;
mod write;

pub use args::ServerArgs;
pub use error::ApiError;
pub use safety::{SafetyArgs, SafetyConfig, Scheme};

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use crate::index::{Index, KeyLocks};
use crate::ops::membership::Membership;
use crate::ops::worker::Worker;
use crate::placement::{Placement, SharedPlacement};
use crate::replica::{Health, VolumeClient};
use crate::store::{Store, StoreConfig};

/// Settings of an index server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Volumes, replica count and subvolumes as configured at startup. The placement in
    /// force, which can change at runtime, is [`App::placement`].
    pub placement: Placement,
    /// `host:port` to redirect GETs of missing keys to.
    pub fallback: Option<String>,
    /// DELETE only after UNLINK.
    pub protect: bool,
    /// Hash values on PUT.
    pub md5sum: bool,
    /// Volume connect / probe timeout.
    pub voltimeout: Duration,
    /// One log line per request.
    pub verbose: bool,
    /// Authentication, rate limit, timeouts, TLS towards volumes, write quorum.
    pub safety: SafetyConfig,
    /// The index cluster this server is a member of; `None`: a single index server.
    pub cluster: Option<crate::raft::ClusterConfig>,
    /// This server's zone (`--zone`): reads prefer replicas there.
    pub zone: Option<String>,
    /// Replication to other sites (`--replicate-to`).
    pub sites: crate::sites::SitesConfig,
    /// Values of at most this many bytes are stored in the index (`--inline-max`).
    pub inline_max: u64,
    /// The scrubber (`--scrub-interval`, `--scrub-max-rate`).
    pub scrub: crate::ops::scrub::ScrubArgs,
}

impl ServerConfig {
    /// The configuration described by `hoard server`'s flags.
    pub fn from_args(args: &ServerArgs, verbose: bool) -> anyhow::Result<Self> {
        let placement = args.placement.build()?;
        let mut safety = SafetyConfig::from_args(&args.safety, args.placement.replicas)?;
        safety.auth = safety.auth.native_open(args.s3.native_open);
        let token = safety.auth.token();
        Ok(ServerConfig {
            placement,
            fallback: args.fallback.clone(),
            protect: args.protect,
            md5sum: args.md5sum,
            voltimeout: args.voltimeout,
            verbose,
            safety,
            cluster: args.cluster.build()?.map(|mut c| {
                // Members talk to each other as clients do: HTTPS when the server
                // serves it, trusting --tls-ca.
                c.https = args.safety.listen.tls_cert.is_some();
                c.tls_ca = args.safety.tls_ca.clone();
                c
            }),
            zone: match &args.zone {
                Some(z) if !crate::placement::valid_zone(z) => {
                    anyhow::bail!("--zone {z:?}: a zone is 1-64 letters, digits, '.', '_' or '-'")
                }
                z => z.clone(),
            },
            sites: crate::sites::SitesConfig::parse(
                &args.replicate_to,
                args.replicate_rate,
                token,
            )?,
            inline_max: args.inline.limit()?,
            scrub: args.scrub.clone(),
        })
    }

    /// How long a replica may accept no data during a PUT before the write fails.
    pub fn stall_limit(&self) -> Duration {
        (self.voltimeout * 10).max(Duration::from_secs(10))
    }

    /// The settings of the store core.
    pub fn store(&self) -> StoreConfig {
        StoreConfig {
            protect: self.protect,
            md5sum: self.md5sum,
            write_quorum: self.safety.write_quorum,
            stall_limit: self.stall_limit(),
            zone: self.zone.clone(),
            inline_max: self.inline_max,
        }
    }
}

/// Shared state of a running index server.
pub struct App {
    /// Settings.
    pub cfg: ServerConfig,
    /// The store core every request goes through: index, volumes, placement, locks.
    pub store: Arc<Store>,
    /// When the server started.
    pub started: Instant,
    /// Runs background operations (rebalance, verify), one at a time.
    pub jobs: Worker,
    /// Held while this member starts the cluster's job or takes one over (see
    /// `jobs::start` and `jobs::supervise`), so the two never both launch it.
    pub job_start: tokio::sync::Mutex<()>,
    /// Records volume registrations.
    pub membership: Membership,
    /// This server's Raft member, when the index is replicated.
    pub raft: Option<Arc<crate::raft::RaftNode>>,
    /// The dashboard's chart samples (bounded ring).
    pub series: ui::series::Series,
    /// Shipping counters per `--replicate-to` target.
    pub sites: Arc<crate::sites::Status>,
}

/// A started index server: its state and its background prober.
pub struct Started {
    /// Shared state (also the router's state).
    pub app: Arc<App>,
    /// The router to serve.
    pub router: axum::Router,
    prober: tokio::task::JoinHandle<()>,
    upkeep: tokio::task::JoinHandle<()>,
    /// The scrubber, unless `--scrub-interval 0`.
    scrub: Option<tokio::task::JoinHandle<()>>,
    sampler: tokio::task::JoinHandle<()>,
    /// In an index cluster: keeps the cluster's job running on the leader.
    supervisor: Option<tokio::task::JoinHandle<()>>,
    /// Ships the change feed to the `--replicate-to` targets.
    shipper: tokio::task::JoinHandle<()>,
}

impl Started {
    /// Stops background work, waits (at most `grace`) for writes still running on their
    /// own tasks, and closes the index durably. Call after serving ended.
    pub async fn shutdown(mut self, grace: Duration) {
        self.prober.abort();
        self.sampler.abort();
        self.shipper.abort();
        let _ = (&mut self.shipper).await;
        if let Some(s) = &self.supervisor {
            s.abort();
        }
        self.app.jobs.abort();
        if let Some(scrub) = &mut self.scrub {
            scrub.abort();
            let _ = scrub.await;
        }
        self.upkeep.abort();
        // The worker holds an index handle: it must be gone before the index closes.
        let _ = (&mut self.upkeep).await;
        let Started { app, router, .. } = self;
        drop(router);
        // Writes running on their own tasks hold the store.
        let deadline = Instant::now() + grace;
        while (Arc::strong_count(&app) > 1 || Arc::strong_count(&app.store) > 1)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A cluster member stops Raft (if serving did not already): its state machine
        // and the node itself hold index handles.
        if let Some(node) = &app.raft {
            node.stop().await;
        }
        if Arc::strong_count(&app) > 1 || Arc::strong_count(&app.store) > 1 {
            // Writes are still running and the index stays open: make what it applied
            // so far durable anyway (commits that could skip their fsync, such as the
            // intents of these very writes, which repair must find).
            let index = app.store.index.clone();
            match tokio::task::spawn_blocking(move || index.sync()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("syncing the index at shutdown: {e}"),
                Err(e) => tracing::warn!("syncing the index at shutdown: {e}"),
            }
        }
        match Arc::try_unwrap(app).map(|app| Arc::try_unwrap(app.store)) {
            Ok(Ok(store)) => store.index.close(),
            _ => tracing::warn!(
                "writes still in flight after {grace:?}; their intents are left for repair"
            ),
        }
    }
}

/// Opens the index in `db` (and joins the index cluster, if configured) and builds the
/// server.
pub async fn start(cfg: ServerConfig, db: &std::path::Path) -> anyhow::Result<Started> {
    let index = Index::open(db)?;
    let cfg_node = cfg.cluster.as_ref().map_or(0, |c| c.node_id);
    let raft = match &cfg.cluster {
        Some(cluster) => {
            let token = cfg.safety.auth.token();
            Some(crate::raft::RaftNode::start(cluster, db, index.clone(), token).await?)
        }
        None => None,
    };
    let client = VolumeClient::with_options(cfg.voltimeout, cfg.safety.client_options()?)?;
    let configured = &cfg.placement.specs();
    // In an index cluster the volume list is replicated state; `--volumes` seeds it.
    let replicated = raft.as_ref().and_then(|_| index.volumes().borrow().clone());
    let placement = cfg.placement.with_volumes(match replicated {
        Some(list) => list,
        None => crate::ops::membership::resolve(db, configured),
    })?;
    if let Some(zone) = cfg.zone.as_deref() {
        if !placement.zone_labels().contains(&zone) {
            tracing::warn!("--zone {zone}: no volume is in this zone; reads use any zone");
        }
    }
    let membership = Membership::new(db, configured);
    let health = Arc::new(Health::new(placement.volumes()));
    let prober = health.spawn_prober(client.clone());
    let verbose = cfg.verbose;
    let safety = cfg.safety.clone();
    let (upkeep, upkeep_rx) = crate::ops::upkeep::queue();
    let store = Arc::new(Store {
        cfg: cfg.store(),
        index,
        client,
        health,
        locks: KeyLocks::default(),
        placement: Arc::new(SharedPlacement::new(placement)),
        upkeep,
        owner: (cfg_node << 32) | u64::from(fastrand::u32(1..)),
        cache: Default::default(),
    });
    let upkeep = crate::ops::upkeep::spawn(store.ctx(), upkeep_rx);
    // The scrubber runs on a single index server, or on the cluster's leader.
    let leader = raft.clone();
    let scrub = crate::ops::scrub::spawn(store.ctx(), cfg.scrub.clone(), move || {
        leader.as_ref().is_none_or(|r| r.is_leader())
    });
    if raft.is_some() {
        crate::ops::membership::seed(store.index.clone(), configured.to_vec());
        crate::ops::membership::follow(
            &store.index,
            Arc::clone(&store.placement),
            Arc::clone(&store.health),
        );
    }
    let app = Arc::new(App {
        cfg,
        store,
        started: Instant::now(),
        jobs: Worker::default(),
        job_start: tokio::sync::Mutex::new(()),
        membership,
        raft,
        series: ui::series::Series::default(),
        sites: Arc::default(),
    });
    let shipper = crate::sites::start(
        Arc::clone(&app.store),
        app.raft.clone(),
        app.cfg.sites.clone(),
        Arc::clone(&app.sites),
    )
    .await?;
    let sampler = ui::series::spawn(Arc::downgrade(&app));
    let supervisor = app
        .raft
        .is_some()
        .then(|| tokio::spawn(jobs::supervise(Arc::downgrade(&app))));
    let router = crate::http::observe(
        safety.layers(
            axum::Router::new()
                .fallback(dispatch)
                .with_state(Arc::clone(&app)),
        ),
        "index",
        verbose,
    );
    Ok(Started {
        app,
        router,
        prober,
        upkeep,
        scrub,
        sampler,
        supervisor,
        shipper,
    })
}

/// `hoard server`: serve until SIGINT/SIGTERM, then close the index cleanly.
pub async fn run(args: ServerArgs, verbose: bool) -> anyhow::Result<()> {
    let cfg = ServerConfig::from_args(&args, verbose)?;
    let listener = crate::http::bind(&args.bind, args.port).await?;
    let serve_options = safety::serve_options(&args.safety)?;
    // The S3 API (`--s3-port`): checked and bound before anything starts.
    let s3 = match args.s3_port {
        Some(port) => Some((
            crate::http::bind(&args.bind, port).await?,
            args.s3.users(false)?,
        )),
        None => None,
    };
    let started = start(cfg, &args.db).await?;
    refuse_open_tenants(&started.app, args.s3_port.is_some())?;
    tracing::info!(
        "index server on {} with volumes {}",
        listener.local_addr()?,
        args.placement.volumes.join(",")
    );
    let grace = serve_options.grace;
    let auth = started.app.cfg.safety.auth.clone();
    started.app.store.cache.enable(&args.cache);
    let limiter = started.app.cfg.safety.limiter.clone();
    let proto = crate::proto::start(
        &args.proto,
        &args.bind,
        Arc::clone(&started.app.store),
        auth,
        limiter.clone(),
    )
    .await?;
    let json = crate::jsonapi::start(
        &args.json,
        &args.bind,
        Arc::clone(&started.app.store),
        started.app.cfg.safety.auth.clone(),
        limiter,
        &args.safety.listen,
    )
    .await?;
    let s3_served = async {
        let Some((listener, users)) = s3 else {
            return Ok(());
        };
        // Through the log: in an index cluster, once a leader is elected (the native
        // port, which carries Raft, is served meanwhile).
        seed_users(&started.app.store, &users).await?;
        let router = crate::s3::router(
            Arc::clone(&started.app.store),
            &args.s3,
            started.app.cfg.safety.limiter.clone(),
            verbose,
        )?;
        tracing::info!("S3 API on {}", listener.local_addr()?);
        let options = safety::serve_options(&args.safety)?;
        crate::s3::serve(listener, router, crate::http::shutdown_signal(), options).await
    };
    // A cluster member stops Raft as soon as it is told to stop, before draining:
    // peers' Raft calls would otherwise keep its connections busy for the whole grace.
    let raft = started.app.raft.clone();
    let shutdown = async move {
        crate::http::shutdown_signal().await;
        if let Some(node) = raft {
            node.stop().await;
        }
    };
    let (served, s3_served) = tokio::join!(
        crate::net::serve(listener, started.router.clone(), shutdown, serve_options),
        s3_served
    );
    let served = served.and(s3_served);
    if let Some(p) = proto {
        p.stop(grace).await;
    }
    if let Some(j) = json {
        j.stop(grace).await;
    }
    started.shutdown(grace).await;
    tracing::info!("index closed; bye");
    served
}

/// No bypass (issue 26): a server whose data has tenants (S3 users: `--s3-port`, or
/// access keys in its index) refuses to serve a native API without authentication
/// unless the operator declared it open (`--native-open`).
fn refuse_open_tenants(app: &App, s3: bool) -> anyhow::Result<()> {
    let auth = &app.cfg.safety.auth;
    if auth.mode() != crate::auth::AuthMode::None || auth.is_open() {
        return Ok(());
    }
    if s3 || app.store.has_tenants()? {
        anyhow::bail!(
            "this server has S3 users, and its native API (--auth-mode none) would let anyone \
             read and write their buckets: set --auth-token (the native API then needs it for \
             bucket contents), or pass --native-open to declare the native API open"
        );
    }
    Ok(())
}

/// Creates the flags' S3 users in the index, retrying while the index cluster has no
/// leader yet.
async fn seed_users(store: &crate::store::Store, users: &crate::s3::Users) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match users.seed(store).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!("seeding S3 users: {e:#}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Routes one request: server endpoints under `/-/`, otherwise a key operation chosen
/// by method.
async fn dispatch(State(app): State<Arc<App>>, req: Request) -> Response {
    let path = req.uri().path();
    if path == batch::PATH {
        return batch::handle(&app, req).await;
    }
    if path.starts_with(crate::key::RESERVED_PREFIX) {
        return admin::handle(&app, req).await;
    }
    let key = match crate::key::parse(path) {
        Ok(key) => key,
        Err(e) => return ApiError::from(e).into_response(),
    };
    // Tenancy: S3 buckets' contents and the S3 API's own keys (issue 26).
    let allowed = match (req.method(), req.uri().query()) {
        (&Method::GET, Some(_)) => tenancy::check_prefix(&app, req.headers(), &key).await,
        (method, _) => tenancy::check(&app, req.headers(), &key, tenancy::access_of(method)),
    };
    if let Err(e) = allowed {
        let (parts, body) = req.into_parts();
        crate::http::drain_rejected(&parts.headers, body.into_data_stream()).await;
        return e.into_response();
    }
    let result = match (req.method().clone(), req.uri().query()) {
        (Method::GET, Some(query)) => read::list(&app, key, query).await,
        (Method::GET, None) | (Method::HEAD, _) => read::redirect(&app, &key, req).await,
        (Method::PUT, _) => write::put(&app, key, req).await,
        (Method::DELETE, _) => write::delete(&app, key).await,
        (m, _) if m.as_str() == "UNLINK" => write::unlink(&app, key).await,
        (m, _) if m.as_str() == "REBALANCE" => admin_ops::rebalance_key(&app, &key).await,
        _ => Err(ApiError::MethodNotAllowed),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}
