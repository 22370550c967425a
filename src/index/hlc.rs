//! Hybrid logical clock versions and the one conflict rule between sites (issue 27).
//!
//! Every change of a key that replication compares carries an [`Hlc`]: the physical
//! time in ms, a logical counter, and the site that made it. Versions are ordered by
//! `(ms, n, site)` — **the highest version wins, equal times and counters are won by
//! the larger site id**. Each site keeps one clock (replicated state, see
//! `super::feed`): a local change is stamped with [`tick`] — the proposer's wall clock
//! if it is ahead of everything seen, else the highest version seen with its counter
//! raised — and a change received from another site moves the clock up to its version
//! ([`observe`]). So a change made after another was seen always carries a higher
//! version, whatever the sites' wall clocks say: a site whose clock runs a minute
//! ahead makes the others' clocks jump with its changes, and cannot win against a
//! write that follows its own.

use serde::{Deserialize, Serialize};

/// A version: hybrid logical clock time and the site that made the change. The derived
/// order is the conflict rule (fields compared in order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    /// Physical part, unix ms.
    pub ms: u64,
    /// Logical counter within `ms`.
    pub n: u32,
    /// The site that made the change (16 lower-case hex digits; `""`: this site, before
    /// it had an id).
    pub site: String,
}

impl Hlc {
    /// The version with `""` (this site) replaced by `here`, as it compares with other
    /// sites' versions.
    pub fn resolved(mut self, here: &str) -> Hlc {
        if self.site.is_empty() {
            self.site = here.to_string();
        }
        self
    }

    /// True when a change of version `self` replaces a key whose current version is
    /// `current` (both resolved): strictly higher wins.
    pub fn wins(&self, current: Option<&Hlc>) -> bool {
        current.is_none_or(|c| self > c)
    }

    /// `ms.n.site`, as sent in the `Hoard-Site-Version` header.
    pub fn header(&self) -> String {
        format!("{}.{}.{}", self.ms, self.n, self.site)
    }

    /// Parses [`Hlc::header`]; `None` when malformed (site: 1 to 64 characters of
    /// `[0-9a-z]`).
    pub fn parse(s: &str) -> Option<Hlc> {
        let mut parts = s.splitn(3, '.');
        let ms = parts.next()?.parse().ok()?;
        let n = parts.next()?.parse().ok()?;
        let site = parts.next()?;
        let ok = |c: char| c.is_ascii_digit() || c.is_ascii_lowercase();
        if site.is_empty() || site.len() > 64 || !site.chars().all(ok) {
            return None;
        }
        Some(Hlc {
            ms,
            n,
            site: site.to_string(),
        })
    }
}

/// A site's clock: the highest `(ms, n)` it stamped or saw.
pub type Clock = (u64, u32);

/// The version of a local change proposed at wall-clock `now_ms` by site `here`, given
/// the site's `clock` and the key's current version `floor`; and the clock after it.
/// Above both: the change wins over everything this site has seen.
pub fn tick(clock: Clock, floor: Option<&Hlc>, now_ms: u64, here: &str) -> (Hlc, Clock) {
    let seen = floor.map_or(clock, |f| clock.max((f.ms, f.n)));
    let next = if now_ms > seen.0 {
        (now_ms, 0)
    } else {
        (seen.0, seen.1.saturating_add(1))
    };
    let v = Hlc {
        ms: next.0,
        n: next.1,
        site: here.to_string(),
    };
    (v, next)
}

/// The clock after seeing another site's version `v`.
pub fn observe(clock: Clock, v: &Hlc) -> Clock {
    clock.max((v.ms, v.n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ms: u64, n: u32, site: &str) -> Hlc {
        Hlc {
            ms,
            n,
            site: site.into(),
        }
    }

    #[test]
    fn the_highest_version_wins_then_the_larger_site() {
        assert!(v(5, 0, "a").wins(None));
        assert!(v(6, 0, "a").wins(Some(&v(5, 9, "b"))));
        assert!(v(5, 1, "a").wins(Some(&v(5, 0, "b"))));
        assert!(v(5, 1, "b").wins(Some(&v(5, 1, "a"))));
        assert!(!v(5, 1, "a").wins(Some(&v(5, 1, "b"))));
        // The same change is not newer than itself.
        assert!(!v(5, 1, "a").wins(Some(&v(5, 1, "a"))));
    }

    #[test]
    fn a_local_change_after_a_fast_remote_one_is_higher() {
        // Site B's clock runs 60 s ahead; its change reaches A, whose clock follows.
        let remote = v(160_000, 0, "b");
        let clock = observe((100_000, 3), &remote);
        let (mine, clock) = tick(clock, Some(&remote), 100_500, "a");
        assert!(mine.wins(Some(&remote)));
        assert_eq!(mine, v(160_000, 1, "a"));
        // The wall clock catches up: physical time again.
        let (later, _) = tick(clock, Some(&mine), 170_000, "a");
        assert_eq!(later, v(170_000, 0, "a"));
    }

    #[test]
    fn a_key_version_above_the_clock_is_a_floor() {
        let (mine, _) = tick((10, 0), Some(&v(50, 2, "b")), 20, "a");
        assert_eq!(mine, v(50, 3, "a"));
    }

    #[test]
    fn headers_round_trip_and_bad_ones_are_refused() {
        let x = v(1_700_000_000_000, 7, "00ff12ab34cd56ef");
        assert_eq!(Hlc::parse(&x.header()), Some(x));
        for bad in ["", "1.2", "a.1.b", "1.2.", "1.2.A", "1.-2.ab", "1.2.a b"] {
            assert_eq!(Hlc::parse(bad), None, "{bad:?}");
        }
    }
}
