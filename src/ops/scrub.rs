//! The scrubber: a background worker that reads every replica of every value, again and
//! again, at a throttled rate, and repairs what it finds corrupt or missing.
//!
//! Each *pass* walks the index in key order, a chunk of records at a time; every live
//! or unlinked value on the volumes gets what `verify --deep --repair` does to one key
//! ([`super::verify::scrub_one`]): every replica that should hold it is read in full and
//! hashed; an unknown md5 is learned when a strict majority of replicas agree (and
//! recorded); a replica that is missing, of the wrong size or whose md5 differs is
//! re-created from a good one (a checked copy, see [`super::copy`]). Reading is paced
//! by `--scrub-max-rate` (bytes per second, the job throttle), and a new pass starts
//! `--scrub-interval` after the previous one started (`0` = off).
//!
//! **Where it runs.** On a single index server, there; in an index cluster, only on
//! the leader (checked before every chunk). Its state — the pass's cursor (the last
//! key done), when the pass started, when the last one ended, the counts of the pass —
//! is replicated cluster state ([`crate::index::SCRUB_META`], written by
//! `Command::SetScrub` after every chunk), so a restart or a new leader resumes the
//! pass where it was, not from the start.
//!
//! **What a crash leaves.** At most one chunk is checked twice; a repair in flight is
//! a checked copy onto a location the record already names (see verify). The
//! scrubber deletes nothing: intents and interrupted deletes are verify's and the
//! upkeep worker's, zone spread is rebalance's.
//!
//! Metrics: `hoard_scrub_objects_total` (replicas read), `hoard_scrub_corrupt_total`
//! (corrupt or missing replicas found), `hoard_scrub_repaired_total` (replicas
//! re-created); `/-/health` shows the pass (`scrub`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::verify;
use super::worker::{Job, JobKind, Rate};
use super::{blocking, next_chunk, show, Ctx};
use crate::clock::now_ms;
use crate::index::{is_gen_key, Command, Index, State, SCRUB_META};

/// Records read from the index per step (and per state update).
const CHUNK: usize = 64;
/// How often a member that does not run the scrubber looks again.
const IDLE: Duration = Duration::from_secs(1);
/// Longest sleep between passes before the state is looked at again (a new leader,
/// a changed interval).
const NAP: Duration = Duration::from_secs(10);

/// `--scrub-*` flags of `hoard server` and `hoard dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScrubArgs {
    /// Time from the start of one scrub pass (every replica of every value read and
    /// checked, corrupt or missing ones repaired) to the start of the next; 0 = off.
    #[arg(long, env = "HOARD_SCRUB_INTERVAL", default_value = "30d", value_parser = crate::units::parse_duration)]
    pub scrub_interval: Duration,
    /// Most bytes the scrubber reads per second (e.g. 32MiB/s).
    #[arg(long, env = "HOARD_SCRUB_MAX_RATE", default_value = "32MiB/s", value_parser = parse_byte_rate)]
    pub scrub_max_rate: Rate,
}

impl Default for ScrubArgs {
    fn default() -> Self {
        ScrubArgs {
            scrub_interval: Duration::from_secs(30 * 86_400),
            scrub_max_rate: Rate::BytesPerSec(32.0 * 1024.0 * 1024.0),
        }
    }
}

/// A rate in bytes per second (the scrubber paces reads, not keys).
fn parse_byte_rate(s: &str) -> Result<Rate, String> {
    match s.parse()? {
        Rate::BytesPerSec(b) => Ok(Rate::BytesPerSec(b)),
        Rate::KeysPerSec(_) => Err(format!("{s:?}: give bytes per second, like 32MiB/s")),
    }
}

/// The scrubber's replicated state ([`SCRUB_META`], JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubState {
    /// The last key of the pass in progress that was checked, base64 (`""`: the pass
    /// has just started); `None` between passes.
    pub cursor: Option<String>,
    /// When the pass in progress (or the last one) started, unix ms.
    pub pass_started_ms: u64,
    /// When the last complete pass ended, unix ms (0: none yet).
    pub last_pass_ms: u64,
    /// Complete passes.
    pub passes: u64,
    /// Replicas read in the pass in progress (or the last one).
    pub objects: u64,
    /// Corrupt or missing replicas found in it.
    pub corrupt: u64,
    /// Replicas repaired in it.
    pub repaired: u64,
}

impl ScrubState {
    /// The state recorded in `index` (the default when none).
    pub fn load(index: &Index) -> ScrubState {
        index
            .meta(SCRUB_META)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    async fn save(&self, index: &Index) -> Result<(), super::OpsError> {
        let record = serde_json::to_string(self).unwrap_or_default();
        index
            .apply(Command::SetScrub { record })
            .await?
            .map(|_| ())
            .map_err(|r| super::OpsError::Invalid(format!("scrub state refused: {r}")))
    }
}

/// Runs the scrubber until aborted. `runs_here` says whether this member runs it now
/// (always on a single index server; the leader in a cluster).
pub fn spawn(
    ctx: Ctx,
    args: ScrubArgs,
    runs_here: impl Fn() -> bool + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    if args.scrub_interval.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        let job = Job::new(
            0,
            JobKind::Verify,
            serde_json::Value::Null,
            Some(args.scrub_max_rate),
        );
        let opts = verify::Options {
            repair: true,
            deep: true,
            grace: Duration::from_secs(3600),
            concurrency: 1,
            fence: Default::default(),
        };
        loop {
            if !runs_here() {
                tokio::time::sleep(IDLE).await;
                continue;
            }
            match step(&ctx, &job, &opts, args.scrub_interval).await {
                Ok(Some(wait)) => tokio::time::sleep(wait).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("scrub: {e}");
                    tokio::time::sleep(IDLE).await;
                }
            }
        }
    }))
}

/// One step: starts a pass when one is due, or checks the next chunk of the pass in
/// progress. `Some(wait)` when nothing is due before `wait`.
async fn step(
    ctx: &Ctx,
    job: &Arc<Job>,
    opts: &verify::Options,
    interval: Duration,
) -> Result<Option<Duration>, super::OpsError> {
    let mut state = ScrubState::load(&ctx.index);
    let now = now_ms();
    let Some(cursor) = state.cursor.clone() else {
        let due = state.pass_started_ms + interval.as_millis() as u64;
        if state.passes > 0 && now < due {
            return Ok(Some(Duration::from_millis(due - now).min(NAP)));
        }
        state = ScrubState {
            cursor: Some(String::new()),
            pass_started_ms: now,
            ..state
        };
        tracing::info!("scrub: pass {} starts", state.passes + 1);
        state.objects = 0;
        state.corrupt = 0;
        state.repaired = 0;
        state.save(&ctx.index).await?;
        return Ok(None);
    };
    let after = decode_cursor(&cursor);
    let (index, from) = (ctx.index.clone(), after.clone());
    let chunk =
        blocking(move || next_chunk(&index, (!from.is_empty()).then_some(from.as_slice()), CHUNK))
            .await?;
    let Some((last, _)) = chunk.last() else {
        state.cursor = None;
        state.last_pass_ms = now_ms();
        state.passes += 1;
        tracing::info!(
            "scrub: pass {} done: {} replicas read, {} corrupt or missing, {} repaired",
            state.passes,
            state.objects,
            state.corrupt,
            state.repaired
        );
        state.save(&ctx.index).await?;
        return Ok(None);
    };
    let last = last.clone();
    let p = &job.progress;
    for (key, record) in chunk {
        if is_gen_key(&key)
            || !matches!(record.state, State::Live | State::Unlinked)
            || record.inline.is_some()
        {
            continue;
        }
        let holders = record.holders().count() as u64;
        let before = (
            p.corrupt.load(Relaxed) + p.missing.load(Relaxed),
            p.repaired.load(Relaxed),
        );
        if let Err(e) = verify::scrub_one(ctx, job, opts, &key, record).await {
            tracing::warn!("scrub of {}: {e}", show(&key));
        }
        let corrupt = p.corrupt.load(Relaxed) + p.missing.load(Relaxed) - before.0;
        let repaired = p.repaired.load(Relaxed) - before.1;
        state.objects += holders;
        state.corrupt += corrupt;
        state.repaired += repaired;
        metrics::counter!("hoard_scrub_objects_total").increment(holders);
        metrics::counter!("hoard_scrub_corrupt_total").increment(corrupt);
        metrics::counter!("hoard_scrub_repaired_total").increment(repaired);
    }
    state.cursor = Some(encode_cursor(&last));
    state.save(&ctx.index).await?;
    Ok(None)
}

/// The cursor as stored: base64 of the key.
fn encode_cursor(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A stored cursor; an unreadable one restarts the pass from the start.
fn decode_cursor(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_rates_are_bytes() {
        let key = b"/a\x00\xff key".to_vec();
        assert_eq!(decode_cursor(&encode_cursor(&key)), key);
        assert_eq!(decode_cursor(""), Vec::<u8>::new());
        assert_eq!(
            parse_byte_rate("1MiB/s"),
            Ok(Rate::BytesPerSec(1024.0 * 1024.0))
        );
        assert!(parse_byte_rate("200").is_err());
    }
}
