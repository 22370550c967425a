//! The dashboard's charts: one sample every [`INTERVAL`] of request rate, error rate,
//! latency percentiles, keys and bytes, the last [`CAPACITY`] of them kept in memory
//! (15 minutes, a few kilobytes). Fed from [`crate::telemetry::INDEX_TALLY`] — the same
//! observations as the Prometheus series — and the index's counters; nothing is
//! scanned.

use std::collections::VecDeque;
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::clock::now_ms;
use crate::server::App;
use crate::telemetry::{latency_buckets, TallySnapshot, INDEX_TALLY};

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Samples kept: 15 minutes at [`INTERVAL`].
pub const CAPACITY: usize = 180;

/// What the server looked like over one interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Unix ms at the end of the interval.
    pub t_ms: u64,
    /// Client requests answered per second (paths outside `/-/`).
    pub req_per_s: f64,
    /// Of which server errors (5xx) per second.
    pub err_per_s: f64,
    /// Median time to the response head, ms; `None` without requests.
    pub p50_ms: Option<f64>,
    /// 95th percentile, ms.
    pub p95_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Live keys at the end of the interval.
    pub live: u64,
    /// Bytes stored (live + unlinked, one copy).
    pub bytes: u64,
    /// Volume servers up.
    pub volumes_up: usize,
}

/// The ring of samples and the totals the next one is measured from.
#[derive(Debug, Default)]
pub struct Series {
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    samples: VecDeque<Sample>,
    last: Option<(Instant, TallySnapshot)>,
}

/// The index-side numbers of a sample, read at the same instant as the tally.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Live keys.
    pub live: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Volume servers up.
    pub volumes_up: usize,
}

impl Series {
    /// Adds a sample measured from the previous call to this one (the first call only
    /// sets the baseline). Keeps at most [`CAPACITY`] samples.
    pub fn record(&self, at: Instant, t_ms: u64, tally: TallySnapshot, gauges: Gauges) {
        let mut ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((then, before)) = ring.last {
            let secs = at.saturating_duration_since(then).as_secs_f64().max(1e-3);
            let requests = tally.requests.saturating_sub(before.requests);
            let errors = tally.errors.saturating_sub(before.errors);
            let delta: Vec<u64> = tally
                .buckets
                .iter()
                .zip(before.buckets.iter())
                .map(|(now, was)| now.saturating_sub(*was))
                .collect();
            let ms = |q: f64| quantile(&delta, q).map(|s| s * 1000.0);
            if ring.samples.len() == CAPACITY {
                ring.samples.pop_front();
            }
            ring.samples.push_back(Sample {
                t_ms,
                req_per_s: requests as f64 / secs,
                err_per_s: errors as f64 / secs,
                p50_ms: ms(0.50),
                p95_ms: ms(0.95),
                p99_ms: ms(0.99),
                live: gauges.live,
                bytes: gauges.bytes,
                volumes_up: gauges.volumes_up,
            });
        }
        ring.last = Some((at, tally));
    }

    /// Every sample kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ring.samples.iter().copied().collect()
    }
}

/// The `q` quantile (seconds) of requests counted per latency bucket, interpolated
/// linearly inside the bucket it falls in (as Prometheus' `histogram_quantile`);
/// `None` when there are none. Requests above the last bound count as that bound.
pub fn quantile(per_bucket: &[u64], q: f64) -> Option<f64> {
    let bounds = latency_buckets();
    let total: u64 = per_bucket.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &n) in per_bucket.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&upper) = bounds.get(i) else {
                return bounds.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some(lower + (upper - lower) * within);
        }
        below += n;
    }
    bounds.last().copied()
}

/// Samples every [`INTERVAL`] until the server is gone (it holds only a weak
/// reference) or the task is aborted.
pub fn spawn(app: Weak<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(app) = app.upgrade() else {
                return;
            };
            let counts = app.store.index.counts();
            let gauges = Gauges {
                live: counts.live,
                bytes: counts.bytes,
                volumes_up: app.store.health.up_count(),
            };
            app.series
                .record(Instant::now(), now_ms(), INDEX_TALLY.snapshot(), gauges);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(requests: u64, errors: u64, fill: &[(usize, u64)]) -> TallySnapshot {
        let mut s = INDEX_TALLY.snapshot();
        s.requests = requests;
        s.errors = errors;
        s.buckets.iter_mut().for_each(|b| *b = 0);
        for &(i, n) in fill {
            s.buckets[i] = n;
        }
        s
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let b = latency_buckets();
        let slots = b.len() + 1;
        assert_eq!(quantile(&vec![0; slots], 0.5), None);
        // 100 requests all in (1 ms, 2.5 ms]: the median is halfway.
        let mut per = vec![0u64; slots];
        per[4] = 100;
        let p50 = quantile(&per, 0.5).unwrap();
        assert!((p50 - (b[3] + b[4]) / 2.0).abs() < 1e-9, "{p50}");
        // 99 fast, 1 beyond every bound: p99 stays fast, p100 is the last bound.
        let mut per = vec![0u64; slots];
        per[0] = 99;
        per[slots - 1] = 1;
        assert!(quantile(&per, 0.99).unwrap() <= b[0]);
        assert_eq!(quantile(&per, 1.0), Some(b[b.len() - 1]));
    }

    #[test]
    fn samples_are_rates_over_the_interval_and_bounded() {
        let series = Series::default();
        let t0 = Instant::now();
        series.record(t0, 0, tally(10, 0, &[(2, 10)]), Gauges::default());
        assert!(
            series.samples().is_empty(),
            "the first call is the baseline"
        );
        let t1 = t0 + Duration::from_secs(5);
        let g = Gauges {
            live: 7,
            bytes: 70,
            volumes_up: 3,
        };
        series.record(t1, 5000, tally(60, 5, &[(2, 60)]), g);
        let s = series.samples()[0];
        assert!((s.req_per_s - 10.0).abs() < 1e-9 && (s.err_per_s - 1.0).abs() < 1e-9);
        let p50 = s.p50_ms.unwrap();
        assert!(p50 > 0.25 && p50 <= 0.5, "{p50}");
        assert_eq!((s.live, s.bytes, s.volumes_up), (7, 70, 3));
        for i in 0..CAPACITY + 20 {
            let at = t1 + Duration::from_secs(5 * (i as u64 + 1));
            series.record(at, i as u64, tally(60, 5, &[(2, 60)]), g);
        }
        let all = series.samples();
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[CAPACITY - 1].t_ms, (CAPACITY + 19) as u64);
        assert_eq!(all[0].p50_ms, None, "no requests in that interval");
    }
}
