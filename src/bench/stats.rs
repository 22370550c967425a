//! Measurements: a fixed-size latency histogram (so a closed loop can record millions of
//! samples without storing them) and a resident-memory sampler for another process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

/// Sub-buckets per power of two: values are kept to within 1/64 (≈ 1.6 %).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this (in ns) get a bucket each.
const LINEAR: u64 = 2 * SUB;
/// Buckets needed to cover every `u64`.
const BUCKETS: usize = (LINEAR + (64 - SUB_BITS as u64 - 1) * SUB) as usize;

/// A log-linear histogram of durations in nanoseconds, HDR-style: exact below 128 ns,
/// then 64 buckets per power of two. Memory is fixed (≈ 30 KB) whatever the count.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum_ns: u128,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("max_ns", &self.max_ns)
            .finish()
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < LINEAR {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros();
    let mantissa = (ns >> (exp - SUB_BITS)) - SUB;
    (LINEAR + u64::from(exp - SUB_BITS - 1) * SUB + mantissa) as usize
}

/// The middle of bucket `i`, in ns.
fn value_of(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let k = i - LINEAR;
    let shift = k / SUB + 1;
    let low = (SUB + k % SUB) << shift;
    low + (1 << shift) / 2
}

impl Histogram {
    /// Records one sample.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(ns)] += 1;
        self.count += 1;
        self.sum_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0.0–1.0), to within one bucket; zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_nanos(value_of(i).min(self.max_ns));
            }
        }
        Duration::from_nanos(self.max_ns)
    }

    /// Count, mean, p50, p99 and max, in milliseconds.
    pub fn summary(&self) -> Latency {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mean = if self.count == 0 {
            0.0
        } else {
            self.sum_ns as f64 / self.count as f64 / 1e6
        };
        Latency {
            count: self.count,
            mean_ms: mean,
            p50_ms: ms(self.quantile(0.50)),
            p99_ms: ms(self.quantile(0.99)),
            max_ms: self.max_ns as f64 / 1e6,
        }
    }
}

/// Latency of one kind of request, in milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest sample.
    pub max_ms: f64,
}

/// The resident set size (`VmRSS`) of process `pid`, in KiB, from `/proc/PID/status`.
pub fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS line in {path}"))
}

/// The memory of a process during one transfer.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Rss {
    /// VmRSS just before the transfer, KiB.
    pub idle_kb: u64,
    /// Largest VmRSS sampled during the transfer, KiB.
    pub peak_kb: u64,
    /// `peak_kb - idle_kb`.
    pub delta_kb: u64,
    /// How many samples were taken.
    pub samples: u64,
}

/// Samples a process's VmRSS on a background thread until stopped.
pub struct RssSampler {
    idle_kb: u64,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<(u64, u64)>>,
}

/// How often [`RssSampler`] reads `/proc/PID/status`.
pub const RSS_EVERY: Duration = Duration::from_millis(20);

impl RssSampler {
    /// Reads the idle RSS of `pid` now, then samples it every [`RSS_EVERY`].
    pub fn start(pid: u32) -> anyhow::Result<Self> {
        let idle_kb = rss_kb(pid)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("rss-sampler".into())
            .spawn(move || {
                let (mut peak, mut samples) = (0u64, 0u64);
                loop {
                    let last = flag.load(Ordering::Acquire);
                    peak = peak.max(rss_kb(pid)?);
                    samples += 1;
                    if last {
                        return Ok((peak, samples));
                    }
                    std::thread::sleep(RSS_EVERY);
                }
            })
            .context("cannot start the RSS sampler thread")?;
        Ok(RssSampler {
            idle_kb,
            stop,
            thread,
        })
    }

    /// Takes a last sample and returns idle and peak RSS.
    pub fn finish(self) -> anyhow::Result<Rss> {
        self.stop.store(true, Ordering::Release);
        let (peak, samples) = self
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("the RSS sampler thread panicked"))??;
        let peak_kb = peak.max(self.idle_kb);
        Ok(Rss {
            idle_kb: self.idle_kb,
            peak_kb,
            delta_kb: peak_kb - self.idle_kb,
            samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_close() {
        let mut last = 0;
        for ns in (0..200_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let b = bucket_of(ns);
            assert!(b >= last && b <= last + 1 || ns > 200_000, "{ns}");
            assert!(b < BUCKETS);
            last = b;
            let v = value_of(b) as f64;
            assert!(
                (v - ns as f64).abs() <= ns as f64 / 64.0 + 1.0,
                "{ns} -> {v}"
            );
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), Duration::ZERO);
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let near = |d: Duration, us: f64| (d.as_secs_f64() * 1e6 - us).abs() <= us / 50.0;
        assert!(near(h.quantile(0.5), 500.0), "{:?}", h.quantile(0.5));
        assert!(near(h.quantile(0.99), 990.0), "{:?}", h.quantile(0.99));
        assert_eq!(h.quantile(1.0), Duration::from_micros(1000));
        let mut g = Histogram::default();
        g.record(Duration::from_secs(2));
        h.merge(&g);
        assert_eq!(h.count(), 1001);
        assert_eq!(h.summary().max_ms, 2000.0);
    }

    #[test]
    fn own_rss() {
        let kb = rss_kb(std::process::id()).unwrap();
        assert!(kb > 0);
        let s = RssSampler::start(std::process::id()).unwrap();
        let rss = s.finish().unwrap();
        assert!(rss.samples >= 1 && rss.peak_kb >= rss.idle_kb);
    }
}
