//! The leader's read lease: how long after a quorum confirmed its leadership the leader
//! may answer linearizable reads from its own log without asking the quorum again.
//!
//! The lease rests on our own read-index rounds, not on openraft's metrics: a round
//! takes the instant *before* it calls `Raft::get_read_log_id` ([`Lease::round`]).
//! That call sends a heartbeat to every voter and returns only once a quorum
//! acknowledged it, so when it succeeds every acknowledging follower received a
//! heartbeat sent after that instant, and from its receipt refuses to vote for anyone
//! else for `election_timeout_max`. No other leader can therefore exist (and commit)
//! until `election_timeout_max` after the instant; the lease runs for a shorter
//! [`super::LEASE_READ`] from it, in the term the round began in, and a change of term
//! ends it. (openraft's `millis_since_quorum_ack` measures the same kind of instant,
//! but as seen whenever its metrics were last published, so the age it gives is stale
//! by however long ago that was.)

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The instant and term of the latest read-index round a quorum confirmed.
#[derive(Debug, Default)]
pub struct Lease {
    confirmed: Mutex<Option<(Instant, u64)>>,
}

/// A read-index round under way: taken before asking the quorum.
#[derive(Debug, Clone, Copy)]
#[must_use = "a round extends the lease only once confirmed"]
pub struct Round {
    sent: Instant,
    term: u64,
}

impl Lease {
    /// Starts a round in `term` (the leader's term before it asks the quorum).
    pub fn round(term: u64) -> Round {
        Round {
            sent: Instant::now(),
            term,
        }
    }

    /// A quorum acknowledged `round`: the lease runs from its start (never moves back).
    pub fn confirm(&self, round: Round) {
        let mut c = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        match *c {
            Some((at, term)) if term == round.term && at >= round.sent => {}
            Some((_, term)) if term > round.term => {}
            _ => *c = Some((round.sent, round.term)),
        }
    }

    /// Whether the lease holds at `now` for a leader in `term`, lasting `length`.
    pub fn holds(&self, term: u64, now: Instant, length: Duration) -> bool {
        let c = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        c.is_some_and(|(at, t)| t == term && now.saturating_duration_since(at) < length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LENGTH: Duration = Duration::from_millis(400);

    #[test]
    fn no_lease_before_a_confirmed_round() {
        let lease = Lease::default();
        let _unconfirmed = Lease::round(3);
        assert!(!lease.holds(3, Instant::now(), LENGTH));
    }

    #[test]
    fn the_lease_runs_from_before_the_round_and_expires() {
        let lease = Lease::default();
        let round = Lease::round(3);
        // The quorum's acknowledgement comes after the round began.
        let acked = Instant::now();
        assert!(round.sent <= acked);
        lease.confirm(round);
        assert!(lease.holds(3, round.sent, LENGTH));
        assert!(lease.holds(3, round.sent + LENGTH - Duration::from_millis(1), LENGTH));
        assert!(!lease.holds(3, round.sent + LENGTH, LENGTH));
    }

    #[test]
    fn another_term_ends_the_lease() {
        let lease = Lease::default();
        let round = Lease::round(3);
        lease.confirm(round);
        assert!(!lease.holds(4, round.sent, LENGTH));
        assert!(!lease.holds(2, round.sent, LENGTH));
    }

    #[test]
    fn an_older_round_never_moves_the_lease_back() {
        let lease = Lease::default();
        let base = Instant::now();
        let round = |ms: u64, term: u64| Round {
            sent: base + Duration::from_millis(ms),
            term,
        };
        let late_end = base + Duration::from_millis(100) + LENGTH - Duration::from_millis(1);
        lease.confirm(round(100, 3));
        lease.confirm(round(0, 3));
        assert!(lease.holds(3, late_end, LENGTH));
        // Nor does a round of an earlier term replace a later one.
        lease.confirm(round(200, 2));
        assert!(lease.holds(3, late_end, LENGTH));
        assert!(!lease.holds(2, late_end, LENGTH));
        // A round of a later term does.
        lease.confirm(round(50, 4));
        assert!(lease.holds(4, base + Duration::from_millis(50), LENGTH));
        assert!(!lease.holds(3, late_end, LENGTH));
    }
}
