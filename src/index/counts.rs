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

/// Replicas held per volume server: keys with a replica there that holds the value
/// (live or unlinked, not recorded missing) and their bytes. Kept in the index's `meta`
/// table as `vol:<host:port>` → 16 bytes (keys, bytes; little-endian), changed in the
/// same transaction as the records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct VolumeCounts {
    /// Keys with a replica there.
    pub keys: u64,
    /// Bytes of those replicas.
    pub bytes: u64,
}

impl VolumeCounts {
    /// 16 bytes: keys, bytes.
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.keys.to_le_bytes());
        out[8..].copy_from_slice(&self.bytes.to_le_bytes());
        out
    }

    /// Parses [`VolumeCounts::encode`]'s output; zero if the length is wrong.
    pub fn decode(b: &[u8]) -> Self {
        if b.len() != 16 {
            return Self::default();
        }
        let v = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        VolumeCounts {
            keys: v(0),
            bytes: v(8),
        }
    }
}

/// Changes of [`VolumeCounts`] over a batch, per volume server: (keys, bytes) deltas.
pub type VolumeDeltas = std::collections::BTreeMap<String, (i64, i64)>;

/// Accounts in `deltas` for `old` being replaced by `new` (either may be absent).
///
/// Also the usage of the key's bucket (the first segment of a key `/<bucket>/<rest>`):
/// its live keys and their bytes, kept under the map entry `/<bucket>` (no volume
/// server's name starts with `/`) and stored by the index as `bkt:<bucket>` — what
/// bucket quotas are checked against, exact and read without a scan.
pub fn volume_deltas(
    deltas: &mut VolumeDeltas,
    key: &[u8],
    old: Option<&Record>,
    new: Option<&Record>,
) {
    if let Some(bucket) = bucket_of(key) {
        for (record, sign) in [(old, -1i64), (new, 1i64)] {
            if let Some(r) = record.filter(|r| r.state == State::Live) {
                let d = deltas.entry(format!("/{bucket}")).or_default();
                d.0 += sign;
                d.1 += sign * r.size as i64;
            }
        }
    }
    for (record, sign) in [(old, -1i64), (new, 1i64)] {
        let Some(r) = record.filter(|r| holds_data(r.state)) else {
            continue;
        };
        for holder in r.holders() {
            let d = deltas
                .entry(crate::placement::server_of(holder).to_string())
                .or_default();
            d.0 += sign;
            d.1 += sign * r.size as i64;
        }
    }
}

/// The bucket a key belongs to: its first segment, for keys `/<bucket>/<rest>` with
/// both non-empty; `None` for any other key (and for gen keys, which start with NUL).
pub fn bucket_of(key: &[u8]) -> Option<&str> {
    let rest = key.strip_prefix(b"/")?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    if slash == 0 || slash + 1 == rest.len() {
        return None;
    }
    std::str::from_utf8(&rest[..slash]).ok()
}

/// `current` changed by `delta`, never below zero.
pub fn apply_delta(current: VolumeCounts, delta: (i64, i64)) -> VolumeCounts {
    VolumeCounts {
        keys: current.keys.saturating_add_signed(delta.0),
        bytes: current.bytes.saturating_add_signed(delta.1),
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
            meta: Vec::new(),
            inline: None,
            gen: 0,
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
    fn volume_deltas_follow_holders() {
        let mut live = rec(State::Live, 10);
        live.volumes = vec!["a:1/sv01".into(), "b:2".into(), "c:3".into()];
        live.missing = vec!["c:3".into()];
        let mut d = VolumeDeltas::new();
        volume_deltas(&mut d, b"/k", None, Some(&live));
        assert_eq!(d["a:1"], (1, 10));
        assert_eq!(d["b:2"], (1, 10));
        assert!(!d.contains_key("c:3"), "a missing replica holds nothing");
        let mut deleting = live.clone();
        deleting.state = State::Deleting;
        volume_deltas(&mut d, b"/k", Some(&live), Some(&deleting));
        assert_eq!(d["a:1"], (0, 0));
        let counts = VolumeCounts { keys: 1, bytes: 5 };
        assert_eq!(VolumeCounts::decode(&counts.encode()), counts);
        assert_eq!(apply_delta(counts, (-2, -10)), VolumeCounts::default());
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
