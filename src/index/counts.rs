//! Running totals of the index — keys per state and bytes of stored values — kept in
//! the same write transaction as the records they count, so they are exact after any
//! crash and cost nothing to read (no scan over billions of keys).

use super::record::{Record, State};

/// Keys per state and the bytes of values still on disk (live + unlinked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Keys being written (intents).
    pub writing: u64,
    /// Visible keys.
    pub live: u64,
    /// Virtually deleted keys.
    pub unlinked: u64,
    /// Keys whose delete is in progress.
    pub deleting: u64,
    /// Sum of the sizes of live and unlinked values (one copy each).
    pub bytes: u64,
}

impl Counts {
    /// Accounts for `old` being replaced by `new` (either may be absent).
    pub fn replace(&mut self, old: Option<&Record>, new: Option<&Record>) {
        if let Some(r) = old {
            *self.slot(r.state) = self.slot(r.state).saturating_sub(1);
            if holds_data(r.state) {
                self.bytes = self.bytes.saturating_sub(r.size);
            }
        }
        if let Some(r) = new {
            *self.slot(r.state) += 1;
            if holds_data(r.state) {
                self.bytes += r.size;
            }
        }
    }

    fn slot(&mut self, state: State) -> &mut u64 {
        match state {
            State::Writing => &mut self.writing,
            State::Live => &mut self.live,
            State::Unlinked => &mut self.unlinked,
            State::Deleting => &mut self.deleting,
        }
    }

    /// 40 bytes: the five counters, little-endian, in field order.
    pub fn encode(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        for (i, v) in [
            self.writing,
            self.live,
            self.unlinked,
            self.deleting,
            self.bytes,
        ]
        .into_iter()
        .enumerate()
        {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses [`Counts::encode`]'s output; `None` if the length is wrong.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != 40 {
            return None;
        }
        let v = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Some(Counts {
            writing: v(0),
            live: v(1),
            unlinked: v(2),
            deleting: v(3),
            bytes: v(4),
        })
    }
}

fn holds_data(state: State) -> bool {
    matches!(state, State::Live | State::Unlinked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(state: State, size: u64) -> Record {
        Record {
            state,
            volumes: vec![],
            size,
            md5: None,
            changed_ms: 0,
            missing: Vec::new(),
            stale: Vec::new(),
            owner: 0,
        }
    }

    #[test]
    fn follows_a_life_cycle() {
        let mut c = Counts::default();
        c.replace(None, Some(&rec(State::Writing, 0)));
        c.replace(Some(&rec(State::Writing, 0)), Some(&rec(State::Live, 10)));
        assert_eq!((c.writing, c.live, c.bytes), (0, 1, 10));
        c.replace(Some(&rec(State::Live, 10)), Some(&rec(State::Unlinked, 10)));
        assert_eq!((c.live, c.unlinked, c.bytes), (0, 1, 10));
        c.replace(
            Some(&rec(State::Unlinked, 10)),
            Some(&rec(State::Deleting, 10)),
        );
        assert_eq!((c.unlinked, c.deleting, c.bytes), (0, 1, 0));
        c.replace(Some(&rec(State::Deleting, 10)), None);
        assert_eq!(c, Counts::default());
    }

    #[test]
    fn known_encoding() {
        let c = Counts {
            writing: 1,
            live: 2,
            unlinked: 3,
            deleting: 4,
            bytes: 0x0102,
        };
        let e = c.encode();
        assert_eq!(&e[..9], &[1, 0, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(&e[32..34], &[2, 1]);
        assert_eq!(Counts::decode(&e), Some(c));
        assert_eq!(Counts::decode(&e[..39]), None);
    }
}
