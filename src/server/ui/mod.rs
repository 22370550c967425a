//! The dashboard at `/-/ui`: one hand-written page (HTML, CSS and JavaScript embedded in
//! the binary with `include_str!`; no build step, nothing fetched at run time) and the
//! JSON it polls.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /-/ui`, `/-/ui/`, `/-/ui/app.js`, `/-/ui/app.css` | the page and its assets, open even with authentication (they hold no data) |
//! | `GET /-/ui/api/overview` | cluster, keys, volumes, jobs, upkeep: what the page polls every 1.5 s |
//! | `GET /-/ui/api/cluster` | the index nodes ([`ClusterView`]) |
//! | `GET /-/ui/api/series` | the chart samples ([`series`]) |
//! | `GET /-/ui/api/key?path=/raw%20key` | one key's record, in any state, with its balance |
//!
//! The API answers follow `--auth-mode` like every other read (mode `all`: bearer token
//! needed); the page asks for the token on a 401 and sends it with every request. Every
//! answer is built from in-memory state or one index read: no request scans the index.

pub mod series;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{ApiError, App};
use crate::auth::AuthMode;
use crate::index::{Counts, State};
use crate::ops::worker::WorkerStatus;
use crate::placement::server_of;
use crate::replica::health::ServerStatus;

/// Paths handled here: `/-/ui` and everything under `/-/ui/`.
pub const PATH: &str = "/-/ui";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The page only talks to its own origin and runs only its own script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// True for the page and its static assets: served without authentication.
pub fn is_public(path: &str) -> bool {
    owns(path) && crate::auth::is_public(path)
}

/// True when `path` belongs to the dashboard.
pub fn owns(path: &str) -> bool {
    path == PATH || path.starts_with("/-/ui/")
}

/// Answers a request under [`PATH`].
pub fn handle(app: &App, req: &Request) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return ApiError::MethodNotAllowed.into_response();
    }
    match req.uri().path() {
        "/-/ui" | "/-/ui/" => asset(INDEX_HTML, "text/html; charset=utf-8"),
        "/-/ui/app.js" => asset(APP_JS, "text/javascript; charset=utf-8"),
        "/-/ui/app.css" => asset(APP_CSS, "text/css; charset=utf-8"),
        "/-/ui/api/overview" => json(&overview(app, req)),
        "/-/ui/api/cluster" => json(&cluster(app, req)),
        "/-/ui/api/series" => json(&serde_json::json!({
            "interval_s": series::INTERVAL.as_secs(),
            "capacity": series::CAPACITY,
            "samples": app.series.samples(),
        })),
        "/-/ui/api/key" => {
            key(app, req).map_or_else(IntoResponse::into_response, |view| json(&view))
        }
        _ => ApiError::NotFound.into_response(),
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

fn json<T: Serialize>(body: &T) -> Response {
    let mut res = axum::Json(body).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The index nodes. A single server is one node, role `single`, its own leader; the
/// replicated index will fill in `mode: "raft"`, the term, every member with its role,
/// `last_applied` and its lag behind the leader.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    /// `single` (one index server) or, later, `raft`.
    pub mode: &'static str,
    /// This node's id.
    pub node_id: String,
    /// The leader's id, when one is known.
    pub leader: Option<String>,
    /// Current term (0 for a single server).
    pub term: u64,
    /// Every member, this node included.
    pub nodes: Vec<NodeView>,
}

/// One index node.
#[derive(Debug, Serialize)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Where it serves clients (as this request reached it, for this node).
    pub addr: String,
    /// `single`, or later `leader`, `follower`, `candidate`, `learner`.
    pub role: &'static str,
    /// The node that answered this request.
    pub is_self: bool,
    /// It is the leader.
    pub leader: bool,
    /// Its current term.
    pub term: u64,
    /// Index of the last applied log entry; `None` while there is no replicated log.
    pub last_applied: Option<u64>,
    /// Log entries it is behind the leader (0 for the leader).
    pub lag: Option<u64>,
    /// Answered its last heartbeat (always true for this node).
    pub reachable: bool,
    /// Its version, when known.
    pub version: Option<&'static str>,
    /// Seconds since it started, when known.
    pub uptime_s: Option<u64>,
}

fn cluster(app: &App, req: &Request) -> ClusterView {
    if let Some(node) = &app.raft {
        return raft_cluster(app, node);
    }
    let addr = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let id = addr.clone();
    ClusterView {
        mode: "single",
        node_id: id.clone(),
        leader: Some(id.clone()),
        term: 0,
        nodes: vec![NodeView {
            id,
            addr,
            role: "single",
            is_self: true,
            leader: true,
            term: 0,
            last_applied: None,
            lag: Some(0),
            reachable: true,
            version: Some(env!("CARGO_PKG_VERSION")),
            uptime_s: Some(app.started.elapsed().as_secs()),
        }],
    }
}

/// The index cluster as this member sees it: every member's role from the leader it
/// knows; last applied index and lag for itself, and for every member when it leads
/// (from its replication progress).
fn raft_cluster(app: &App, node: &crate::raft::RaftNode) -> ClusterView {
    let me = node.status();
    let progress = node.replication();
    let nodes = me
        .members
        .iter()
        .map(|&id| {
            let is_self = id == me.node_id;
            let leader = me.leader_id == Some(id);
            let matched = progress
                .as_ref()
                .and_then(|p| p.get(&id).copied().flatten());
            let last_applied = if is_self {
                Some(me.last_applied)
            } else {
                matched
            };
            NodeView {
                id: id.to_string(),
                addr: node.peers.get(&id).cloned().unwrap_or_default(),
                role: match (is_self, leader) {
                    (true, _) => me.role,
                    (false, true) => "leader",
                    (false, false) => "follower",
                },
                is_self,
                leader,
                term: me.term,
                last_applied,
                lag: match (&progress, is_self) {
                    (_, true) if leader => Some(0),
                    (Some(_), _) => Some(me.last_log.saturating_sub(matched.unwrap_or(0))),
                    (None, _) => None,
                },
                reachable: is_self || progress.is_none() || matched.is_some(),
                version: is_self.then_some(env!("CARGO_PKG_VERSION")),
                uptime_s: is_self.then(|| app.started.elapsed().as_secs()),
            }
        })
        .collect();
    ClusterView {
        mode: "raft",
        node_id: me.node_id.to_string(),
        leader: me.leader_id.map(|l| l.to_string()),
        term: me.term,
        nodes,
    }
}

/// One volume server as the page shows it.
#[derive(Debug, Serialize)]
struct VolumeView {
    #[serde(flatten)]
    status: ServerStatus,
    /// In the placement in force (a volume that left stays listed until rebalanced).
    in_placement: bool,
    /// Failure zone (`host:port@zone`); `None`: not labelled.
    zone: Option<String>,
    /// Keys with a replica here (kept exactly by the index); `None`: unreadable.
    keys: Option<u64>,
    /// Bytes of those replicas.
    bytes: Option<u64>,
}

/// The upkeep worker (completes degraded writes, deletes stale files).
#[derive(Debug, Serialize)]
struct UpkeepView {
    /// Its task is alive.
    running: bool,
    /// Keys waiting; `None`: the queue does not report its length yet.
    queued: Option<u64>,
}

/// Body of `GET /-/ui/api/overview`.
#[derive(Debug, Serialize)]
struct Overview {
    version: &'static str,
    uptime_s: u64,
    now_ms: u64,
    auth_mode: &'static str,
    cluster: ClusterView,
    keys: Counts,
    writes_in_flight: usize,
    replicas: usize,
    volumes: Vec<VolumeView>,
    jobs: WorkerStatus,
    upkeep: UpkeepView,
    /// The scrubber's replicated state; `None` when off (`--scrub-interval 0`).
    scrub: Option<crate::ops::scrub::ScrubState>,
}

fn overview(app: &App, req: &Request) -> Overview {
    let placement = app.store.placement.current();
    let held = app.store.index.volume_counts().unwrap_or_default();
    let volumes = app
        .store
        .health
        .snapshot()
        .into_iter()
        .map(|status| {
            let held = held.get(&status.server).copied();
            VolumeView {
                in_placement: placement.volumes().contains(&status.server),
                zone: placement.zone_of(&status.server).map(str::to_string),
                status,
                keys: held.map(|h| h.keys),
                bytes: held.map(|h| h.bytes),
            }
        })
        .collect();
    Overview {
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: app.started.elapsed().as_secs(),
        now_ms: crate::clock::now_ms(),
        auth_mode: match app.cfg.safety.auth.mode() {
            AuthMode::None => "none",
            AuthMode::Writes => "writes",
            AuthMode::All => "all",
        },
        cluster: cluster(app, req),
        keys: app.store.index.counts(),
        writes_in_flight: app.store.locks.len(),
        replicas: placement.replicas(),
        volumes,
        jobs: crate::server::jobs::status(app),
        upkeep: UpkeepView {
            running: !app.store.upkeep.is_closed(),
            queued: None,
        },
        scrub: (!app.cfg.scrub.scrub_interval.is_zero())
            .then(|| crate::ops::scrub::ScrubState::load(&app.store.index)),
    }
}

/// One replica location of a key.
#[derive(Debug, Serialize)]
struct ReplicaView {
    /// `host:port[/svXX]` as recorded.
    location: String,
    /// Its volume server is up.
    up: bool,
    /// It holds the value (not recorded as missing after a degraded write).
    holds: bool,
}

/// Body of `GET /-/ui/api/key`.
#[derive(Debug, Serialize)]
struct KeyView {
    key: String,
    state: &'static str,
    size: u64,
    md5: Option<String>,
    changed_ms: u64,
    replicas: Vec<ReplicaView>,
    stale: Vec<String>,
    balance: &'static str,
    placement: Vec<String>,
    /// Where to download it: the key's path on this server, or (`--auth-mode all`) a
    /// signed volume URL; `None` unless live with a replica up.
    download: Option<String>,
}

fn key(app: &App, req: &Request) -> Result<KeyView, ApiError> {
    let query = req.uri().query().unwrap_or_default();
    let raw = query
        .split('&')
        .find_map(|p| p.strip_prefix("path="))
        .ok_or_else(|| ApiError::BadRequest("missing ?path=/key".into()))?;
    let key = crate::key::parse(raw)?;
    // A bucket's object and its S3 metadata: the same rule as reading it.
    let who = if app.cfg.safety.auth.operator(req.headers()) {
        crate::store::tenancy::Principal::Operator
    } else {
        crate::store::tenancy::Principal::Anonymous
    };
    app.store
        .authorize(&who, &key, crate::store::tenancy::Access::Read)?;
    let record = app.store.index.get(&key)?.ok_or(ApiError::NotFound)?;
    let placement = app.store.placement.current().locate(&key);
    let live = record.state == State::Live;
    let download = if !live {
        None
    } else if app.cfg.safety.auth.signs_urls() {
        app.store
            .locate_local(&key)
            .ok()
            .flatten()
            .map(|at| super::read::public_url(app, &at))
    } else {
        Some(raw.to_owned())
    };
    Ok(KeyView {
        key: String::from_utf8_lossy(&key).into_owned(),
        state: record.state.name(),
        size: record.size,
        md5: record.md5_hex(),
        changed_ms: record.changed_ms,
        replicas: record
            .volumes
            .iter()
            .map(|l| ReplicaView {
                location: l.clone(),
                up: app.store.health.is_up(server_of(l)),
                holds: !record.missing.contains(l),
            })
            .collect(),
        stale: record.stale.clone(),
        balance: if record.inline.is_some() {
            "inline"
        } else if placement == record.volumes {
            "balanced"
        } else {
            "unbalanced"
        },
        placement,
        download,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_page_and_its_assets_are_public() {
        for p in ["/-/ui", "/-/ui/", "/-/ui/app.js", "/-/ui/app.css"] {
            assert!(is_public(p) && owns(p), "{p}");
        }
        for p in [
            "/-/ui/api/overview",
            "/-/ui/api/key",
            "/-/uix",
            "/-/admin/status",
        ] {
            assert!(!is_public(p), "{p}");
        }
        assert!(owns("/-/ui/api/key") && !owns("/-/uix") && !owns("/-/health"));
    }

    #[test]
    fn assets_reference_each_other() {
        assert!(INDEX_HTML.contains("/-/ui/app.js") && INDEX_HTML.contains("/-/ui/app.css"));
        assert!(APP_JS.contains("/-/ui/api/overview"));
    }
}
