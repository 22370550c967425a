//! The server's own endpoints under `/-/`: health, readiness, metrics; operations,
//! index cluster membership and the dashboard are routed on to [`super::admin_ops`],
//! [`super::admin_cluster`] and [`super::ui`].

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{ApiError, App};
use crate::index::Counts;
use crate::replica::health::ServerStatus;

/// Body of `GET /-/health`.
#[derive(serde::Serialize)]
struct HealthReport {
    status: &'static str,
    version: &'static str,
    role: &'static str,
    uptime_seconds: u64,
    /// The index was not closed cleanly last time and was repaired at start.
    index_recovered: bool,
    /// The index's record encoding: compact, or legacy records being migrated.
    index_format: crate::index::MigrationStatus,
    keys: Counts,
    writes_in_flight: usize,
    replicas: usize,
    volumes: Vec<VolumeHealth>,
    /// This index server's zone (`--zone`).
    #[serde(skip_serializing_if = "Option::is_none")]
    zone: Option<String>,
    /// Per zone, when volumes have zones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    zones: Vec<ZoneHealth>,
    /// This member's Raft state, in an index cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    raft: Option<crate::raft::RaftStatus>,
    /// Replication to other sites, per `--replicate-to` target.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sites: Vec<SiteHealth>,
    /// The value cache (`--cache-size`): the same figures as the binary protocol's
    /// HEALTH and the JSON interface's `/health`; `bytes` is `hoard_cache_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    cache: Option<crate::store::CacheStats>,
    /// The scrubber: its pass in progress or last one (`None`: `--scrub-interval 0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    scrub: Option<ScrubHealth>,
}

/// The scrubber in `GET /-/health`: the replicated state, and its interval.
#[derive(serde::Serialize)]
struct ScrubHealth {
    /// `--scrub-interval`, seconds.
    interval_seconds: u64,
    /// A pass is under way.
    running: bool,
    #[serde(flatten)]
    state: crate::ops::scrub::ScrubState,
}

/// One `--replicate-to` target in `GET /-/health`.
#[derive(serde::Serialize)]
struct SiteHealth {
    target: String,
    lag: crate::sites::Lag,
    #[serde(flatten)]
    status: crate::sites::TargetStatus,
}

/// One volume server in `GET /-/health`.
#[derive(serde::Serialize)]
struct VolumeHealth {
    #[serde(flatten)]
    status: ServerStatus,
    /// Its zone in the placement in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    zone: Option<String>,
}

/// One zone in `GET /-/health`.
#[derive(serde::Serialize)]
struct ZoneHealth {
    zone: String,
    /// Volumes of the placement in this zone.
    volumes: usize,
    /// Of which up.
    up: usize,
}

/// Body of `GET /-/health/ready`.
#[derive(serde::Serialize)]
struct Readiness {
    ready: bool,
    volumes_up: usize,
    replicas: usize,
}

/// Dispatches a request under `/-/`.
pub async fn handle(app: &Arc<App>, req: Request) -> Response {
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    match (read, req.uri().path()) {
        (true, "/-/health") => health(app),
        (true, "/-/health/ready") => ready(app),
        (true, "/-/metrics") => metrics(app),
        (_, path) if path.starts_with(crate::sites::APPLY_PATH) => {
            crate::sites::receive::handle(&app.store, req).await
        }
        (false, path) if path.starts_with("/-/raft/") => match &app.raft {
            Some(node) => {
                let name = path.trim_start_matches("/-/raft/").to_string();
                let (parts, body) = req.into_parts();
                crate::raft::api::handle(node, &name, &parts.headers, body).await
            }
            None => ApiError::NotFound.into_response(),
        },
        (_, path) if super::admin_tenancy::owns(path) => {
            super::admin_tenancy::handle(app, req).await
        }
        (_, path) if super::admin_cluster::owns(path) => {
            super::admin_cluster::handle(app, req).await
        }
        (_, path) if super::ui::owns(path) => super::ui::handle(app, &req),
        (_, path) if path.starts_with(super::admin_ops::PREFIX) => {
            super::admin_ops::handle(app, req).await
        }
        (true, _) => ApiError::NotFound.into_response(),
        (false, _) => {
            // Read (a bounded part of) the upload first, so the client sees the 400.
            let (parts, body) = req.into_parts();
            crate::http::drain_rejected(&parts.headers, body.into_data_stream()).await;
            ApiError::Key(crate::key::KeyError::Reserved).into_response()
        }
    }
}

fn health(app: &App) -> Response {
    let placement = app.store.placement.current();
    let volumes: Vec<VolumeHealth> = app
        .store
        .health
        .snapshot()
        .into_iter()
        .map(|status| VolumeHealth {
            zone: placement.zone_of(&status.server).map(str::to_string),
            status,
        })
        .collect();
    let zones = placement
        .zone_labels()
        .into_iter()
        .map(|zone| {
            let members = volumes.iter().filter(|v| v.zone.as_deref() == Some(zone));
            ZoneHealth {
                zone: zone.to_string(),
                volumes: members.clone().count(),
                up: members.filter(|v| v.status.up).count(),
            }
        })
        .collect();
    axum::Json(HealthReport {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        role: "index",
        uptime_seconds: app.started.elapsed().as_secs(),
        index_recovered: app.store.index.recovered(),
        index_format: app.store.index.migration(),
        keys: app.store.index.counts(),
        writes_in_flight: app.store.locks.len(),
        replicas: placement.replicas(),
        volumes,
        zone: app.cfg.zone.clone(),
        zones,
        raft: app.raft.as_ref().map(|r| r.status()),
        scrub: (!app.cfg.scrub.scrub_interval.is_zero()).then(|| {
            let state = crate::ops::scrub::ScrubState::load(&app.store.index);
            ScrubHealth {
                interval_seconds: app.cfg.scrub.scrub_interval.as_secs(),
                running: state.cursor.is_some(),
                state,
            }
        }),
        sites: crate::sites::targets(&app.store.index, &app.cfg.sites.targets)
            .iter()
            .map(|t| SiteHealth {
                target: t.clone(),
                lag: crate::sites::lag(&app.store.index, t).unwrap_or_default(),
                status: app.sites.get(t),
            })
            .collect(),
        cache: app.store.cache.stats(),
    })
    .into_response()
}

/// Ready for traffic when at least `replicas` volume servers are up (so reads work and writes can succeed).
fn ready(app: &App) -> Response {
    let replicas = app.store.placement.current().replicas();
    let volumes_up = app.store.health.up_count();
    let ready = volumes_up >= replicas;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready,
        volumes_up,
        replicas,
    };
    (status, axum::Json(body)).into_response()
}

fn metrics(app: &App) -> Response {
    let counts = app.store.index.counts();
    for (state, n) in [
        ("writing", counts.writing),
        ("live", counts.live),
        ("unlinked", counts.unlinked),
        ("deleting", counts.deleting),
    ] {
        metrics::gauge!("hoard_keys", "state" => state).set(n as f64);
    }
    metrics::gauge!("hoard_stored_bytes").set(counts.bytes as f64);
    metrics::gauge!("hoard_writes_in_flight").set(app.store.locks.len() as f64);
    app.store.cache.observe();
    zone_metrics(app);
    job_metrics(app);
    let targets = crate::sites::targets(&app.store.index, &app.cfg.sites.targets);
    crate::sites::observe(&app.store.index, &targets);
    crate::telemetry::response()
}

/// Per zone of the placement in force: `hoard_zone_volumes{zone}` and
/// `hoard_zone_volumes_up{zone}`.
fn zone_metrics(app: &App) {
    let placement = app.store.placement.current();
    for zone in placement.zone_labels() {
        let members = placement
            .volumes()
            .iter()
            .filter(|v| placement.zone_of(v) == Some(zone));
        let up = members
            .clone()
            .filter(|v| app.store.health.is_up(v))
            .count();
        let label = zone.to_string();
        metrics::gauge!("hoard_zone_volumes", "zone" => label.clone()).set(members.count() as f64);
        metrics::gauge!("hoard_zone_volumes_up", "zone" => label).set(up as f64);
    }
}

/// Progress of the running background job, or of the last one: every counter of
/// `GET /-/admin/status` as `hoard_job_progress{kind, counter}`.
fn job_metrics(app: &App) {
    let status = app.jobs.status();
    metrics::gauge!("hoard_job_running").set(f64::from(u8::from(status.running.is_some())));
    let Some(job) = status.running.or(status.last) else {
        return;
    };
    let kind = job.kind.name();
    if let Ok(serde_json::Value::Object(counts)) = serde_json::to_value(job.counts) {
        for (counter, value) in counts {
            if let Some(v) = value.as_u64() {
                metrics::gauge!("hoard_job_progress", "kind" => kind, "counter" => counter)
                    .set(v as f64);
            }
        }
    }
    metrics::gauge!("hoard_job_eta_seconds", "kind" => kind).set(job.eta_s.unwrap_or(0.0));
}
