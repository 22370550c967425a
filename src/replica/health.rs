//! Which volume servers are up: a background prober, so request paths never wait on a
//! health check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use super::client::{Probe, ProbeMiss, VolumeClient};
use crate::clock::now_ms;
use crate::placement::server_of;

/// How often each volume server is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Slow probes in a row (no answer within `--voltimeout`) after which a volume is down.
pub const SLOW_PROBES_DOWN: u32 = 2;

/// How often a wait on volumes looks at their health ([`Health::first_down`]).
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct ServerState {
    up: AtomicBool,
    /// Probes in a row that got no answer in time.
    slow: AtomicU32,
    last_seen_ms: AtomicU64,
    /// Free / total disk bytes; `u64::MAX` = unknown (nginx volumes do not say).
    disk_free: AtomicU64,
    disk_total: AtomicU64,
}

/// Up/down state of every configured volume server (`host:port`). Servers can be added
/// while running ([`Health::add`]), when volumes join the cluster.
#[derive(Debug)]
pub struct Health {
    servers: RwLock<HashMap<String, Arc<ServerState>>>,
}

fn new_state() -> Arc<ServerState> {
    Arc::new(ServerState {
        up: AtomicBool::new(true),
        slow: AtomicU32::new(0),
        last_seen_ms: AtomicU64::new(0),
        disk_free: AtomicU64::new(u64::MAX),
        disk_total: AtomicU64::new(u64::MAX),
    })
}

/// A snapshot of one volume server's state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerStatus {
    /// `host:port`.
    pub server: String,
    /// Answered its last probe.
    pub up: bool,
    /// Unix ms of the last successful probe (0 = never).
    pub last_seen_ms: u64,
    /// Free disk bytes, when the volume reports them.
    pub disk_free_bytes: Option<u64>,
    /// Disk size, when the volume reports it.
    pub disk_total_bytes: Option<u64>,
}

impl Health {
    /// Tracks `servers`, all assumed up until a probe says otherwise.
    pub fn new(servers: &[String]) -> Self {
        let servers = servers.iter().map(|s| (s.clone(), new_state())).collect();
        Health {
            servers: RwLock::new(servers),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Arc<ServerState>>> {
        self.servers.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts tracking `server` (assumed up until probed); no-op if already tracked.
    /// Servers are never dropped while running: records may still point at a volume
    /// that left the placement until a rebalance has moved its keys.
    pub fn add(&self, server: &str) {
        if self.read().contains_key(server) {
            return;
        }
        let mut servers = self.servers.write().unwrap_or_else(|p| p.into_inner());
        servers.entry(server.to_string()).or_insert_with(new_state);
    }

    /// Whether `server` (`host:port`) is believed up. Unknown servers (e.g. in records
    /// written under an older volume list) are assumed up.
    pub fn is_up(&self, server: &str) -> bool {
        self.read()
            .get(server)
            .is_none_or(|s| s.up.load(Ordering::Relaxed))
    }

    /// Records the outcome of probing `server`. A server that fails a probe is down at
    /// once; one that is only slow (no answer within `--voltimeout`) is down after
    /// [`SLOW_PROBES_DOWN`] slow probes in a row — one late answer on a busy machine is
    /// not an outage, and marking a volume down fails the writes in flight to it.
    pub fn report(&self, server: &str, probe: Result<Probe, ProbeMiss>) {
        let Some(s) = self.read().get(server).cloned() else {
            return;
        };
        let slow = match probe {
            Err(ProbeMiss::Slow) => s.slow.fetch_add(1, Ordering::Relaxed) + 1,
            _ => {
                s.slow.store(0, Ordering::Relaxed);
                0
            }
        };
        let up = match probe {
            Ok(_) => true,
            Err(ProbeMiss::Failed) => false,
            Err(ProbeMiss::Slow) => slow < SLOW_PROBES_DOWN && s.up.load(Ordering::Relaxed),
        };
        let probe = probe.ok();
        let was = s.up.swap(up, Ordering::Relaxed);
        let label = server.to_string();
        metrics::gauge!("hoard_volume_up", "volume" => label.clone()).set(f64::from(u8::from(up)));
        if let Some(p) = probe {
            let now = now_ms();
            s.last_seen_ms.store(now, Ordering::Relaxed);
            s.disk_free
                .store(p.disk_free.unwrap_or(u64::MAX), Ordering::Relaxed);
            s.disk_total
                .store(p.disk_total.unwrap_or(u64::MAX), Ordering::Relaxed);
            metrics::gauge!("hoard_volume_last_seen_timestamp_seconds", "volume" => label)
                .set(now as f64 / 1000.0);
        }
        if was != up {
            if up {
                tracing::info!("volume {server} is up");
            } else {
                tracing::warn!("volume {server} is down");
            }
        }
    }

    /// Completes, naming it, once the server of one of `locations` is seen down
    /// (checked every 100 ms): a caller waiting on those volumes stops waiting on one
    /// that hung, within `--voltimeout` plus the probe interval.
    pub async fn first_down(&self, locations: &[String]) -> String {
        loop {
            if let Some(l) = locations.iter().find(|l| !self.is_up(server_of(l))) {
                return server_of(l).to_string();
            }
            tokio::time::sleep(WATCH_INTERVAL).await;
        }
    }

    /// How many servers are up.
    pub fn up_count(&self) -> usize {
        self.read()
            .values()
            .filter(|s| s.up.load(Ordering::Relaxed))
            .count()
    }

    /// The state of every server, sorted by name.
    pub fn snapshot(&self) -> Vec<ServerStatus> {
        let mut all: Vec<_> = self
            .read()
            .iter()
            .map(|(name, s)| ServerStatus {
                server: name.clone(),
                up: s.up.load(Ordering::Relaxed),
                last_seen_ms: s.last_seen_ms.load(Ordering::Relaxed),
                disk_free_bytes: known(s.disk_free.load(Ordering::Relaxed)),
                disk_total_bytes: known(s.disk_total.load(Ordering::Relaxed)),
            })
            .collect();
        all.sort_by(|a, b| a.server.cmp(&b.server));
        all
    }

    /// Probes every server each [`PROBE_INTERVAL`] until the returned task is aborted.
    pub fn spawn_prober(self: &Arc<Self>, client: VolumeClient) -> tokio::task::JoinHandle<()> {
        let health = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let servers: Vec<String> = health.read().keys().cloned().collect();
                let probes = servers.iter().map(|server| {
                    let client = &client;
                    async move { (server, client.probe(server).await) }
                });
                for (server, up) in futures_util::future::join_all(probes).await {
                    health.report(server, up);
                }
            }
        })
    }
}

fn known(v: u64) -> Option<u64> {
    (v != u64::MAX).then_some(v)
}
