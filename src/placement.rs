//! Placement: which volumes hold a key, and where inside a volume its file lives.
//!
//! Byte-identical to minikeyvalue, so volumes written by either can be read and
//! rebuilt by the other:
//!
//! * **Replica set** — rendezvous hashing. Each configured volume string `v` scores
//!   `md5(key ‖ v)`; volumes are sorted by score, descending (bytewise, stable) and the
//!   first `replicas` win, in that order.
//! * **Subvolume** — with `subvolumes > 1` the location is `v/svXX`, where `XX` is the
//!   big-endian u32 of score bytes 12..16, modulo `subvolumes`, as two uppercase hex digits.
//! * **File path** — `/%02x/%02x/<base64 std padded of the key>`, the two bytes being
//!   `md5(key)[0..2]`. The base64 may contain `/` (deeper directories) and `+`.
//!
//! **Zones** (failure domains). A volume may be listed as `host:port@zone`; only the
//! `host:port` name is hashed, so labelling volumes never changes their scores. When at
//! least one volume has a zone, the replica set is picked from the same rendezvous
//! order in passes: the first pass takes, in score order, each volume whose zone holds
//! no replica yet; if fewer than `replicas` were found (fewer zones than replicas), the
//! next pass allows a second replica per zone, and so on. The winners are returned in
//! score order. A volume without a zone counts as a zone of its own, so with no zones
//! at all the first pass takes the top `replicas` volumes: exactly minikeyvalue's set.
//! Adding a volume only ever moves replicas *onto* it (it wins its zone's slot, or its
//! zone's slot in the set), which is the least movement any placement can do.

use std::sync::{Arc, RwLock};

use base64::Engine as _;
use md5::{Digest, Md5};

/// The placement policy: the configured volume list and how many copies to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `host:port` names (what placement hashes).
    volumes: Vec<String>,
    /// The zone of each volume, if labelled.
    zones: Vec<Option<String>>,
    /// A dense zone number per volume; an unlabelled volume is a zone of its own.
    zone_ids: Vec<usize>,
    /// How many distinct zones (unlabelled volumes counted one each).
    zone_count: usize,
    replicas: usize,
    subvolumes: u32,
}

/// Why a placement cannot be built from the given settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    /// `--replicas` is zero.
    #[error("--replicas must be at least 1")]
    NoReplicas,
    /// More replicas than an index record can name (255).
    #[error("--replicas must be at most 255, got {0}")]
    TooManyReplicas(usize),
    /// Fewer volumes than replicas.
    #[error("--replicas {replicas} needs at least {replicas} volumes, but {volumes} were given")]
    TooFewVolumes {
        /// Requested replica count.
        replicas: usize,
        /// Configured volume count.
        volumes: usize,
    },
    /// `--subvolumes` is zero or above 256 (the `svXX` name has two hex digits).
    #[error("--subvolumes must be between 1 and 256, got {0}")]
    BadSubvolumes(u32),
    /// The same volume is listed twice.
    #[error("volume {0} is listed twice")]
    DuplicateVolume(String),
    /// A volume string is empty or is not `host:port`.
    #[error("volume {0:?} is not of the form host:port")]
    BadVolume(String),
    /// A zone label (`host:port@zone`) is empty or has characters other than
    /// letters, digits, `.`, `_` and `-`.
    #[error("volume {0:?}: a zone is 1-64 letters, digits, '.', '_' or '-'")]
    BadZone(String),
}

/// Splits a volume spec `host:port[@zone]` into its name and zone.
pub fn split_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('@') {
        Some((name, zone)) => (name, Some(zone)),
        None => (spec, None),
    }
}

/// Joins a volume name and optional zone into the spec `host:port[@zone]`.
pub fn join_spec(name: &str, zone: Option<&str>) -> String {
    match zone {
        Some(z) => format!("{name}@{z}"),
        None => name.to_string(),
    }
}

/// Whether `z` is a valid zone label: 1-64 letters, digits, `.`, `_` or `-`.
pub fn valid_zone(z: &str) -> bool {
    (1..=64).contains(&z.len())
        && z.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Placement {
    /// Builds a placement from volume specs (`host:port` or `host:port@zone`), checking
    /// that it can always produce `replicas` locations.
    pub fn new(
        specs: Vec<String>,
        replicas: usize,
        subvolumes: u32,
    ) -> Result<Self, PlacementError> {
        if replicas == 0 {
            return Err(PlacementError::NoReplicas);
        }
        if replicas > 255 {
            return Err(PlacementError::TooManyReplicas(replicas));
        }
        if !(1..=256).contains(&subvolumes) {
            return Err(PlacementError::BadSubvolumes(subvolumes));
        }
        let mut volumes = Vec::with_capacity(specs.len());
        let mut zones = Vec::with_capacity(specs.len());
        for spec in &specs {
            let (v, zone) = split_spec(spec);
            if !is_host_port(v) {
                return Err(PlacementError::BadVolume(spec.clone()));
            }
            if zone.is_some_and(|z| !valid_zone(z)) {
                return Err(PlacementError::BadZone(spec.clone()));
            }
            if volumes.iter().any(|seen: &String| seen == v) {
                return Err(PlacementError::DuplicateVolume(v.to_string()));
            }
            volumes.push(v.to_string());
            zones.push(zone.map(str::to_string));
        }
        if volumes.len() < replicas {
            return Err(PlacementError::TooFewVolumes {
                replicas,
                volumes: volumes.len(),
            });
        }
        // Dense zone numbers: one per label, and one per unlabelled volume.
        let mut labels: Vec<(&str, usize)> = Vec::new();
        let mut zone_ids = Vec::with_capacity(volumes.len());
        let mut zone_count = 0;
        for zone in &zones {
            let known = zone
                .as_deref()
                .and_then(|z| labels.iter().find(|(l, _)| *l == z).map(|&(_, id)| id));
            let id = known.unwrap_or_else(|| {
                if let Some(z) = zone.as_deref() {
                    labels.push((z, zone_count));
                }
                zone_count += 1;
                zone_count - 1
            });
            zone_ids.push(id);
        }
        Ok(Placement {
            volumes,
            zones,
            zone_ids,
            zone_count,
            replicas,
            subvolumes,
        })
    }

    /// The configured volume servers (`host:port`), in configuration order.
    pub fn volumes(&self) -> &[String] {
        &self.volumes
    }

    /// How many replicas each key gets.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Subvolume directories per volume (1 = none).
    pub fn subvolumes(&self) -> u32 {
        self.subvolumes
    }

    /// The same policy over another volume list (specs; same replicas and subvolumes).
    pub fn with_volumes(&self, volumes: Vec<String>) -> Result<Self, PlacementError> {
        Placement::new(volumes, self.replicas, self.subvolumes)
    }

    /// The volume specs, `host:port` or `host:port@zone`, in configuration order: what
    /// membership records and replicates.
    pub fn specs(&self) -> Vec<String> {
        self.volumes
            .iter()
            .zip(&self.zones)
            .map(|(v, z)| join_spec(v, z.as_deref()))
            .collect()
    }

    /// Whether any volume is labelled with a zone.
    pub fn zoned(&self) -> bool {
        self.zones.iter().any(Option::is_some)
    }

    /// The zone of volume server `server` (`host:port`), if it is in this placement and
    /// labelled.
    pub fn zone_of(&self, server: &str) -> Option<&str> {
        let i = self.volumes.iter().position(|v| v == server)?;
        self.zones[i].as_deref()
    }

    /// The distinct zone labels, sorted.
    pub fn zone_labels(&self) -> Vec<&str> {
        let mut labels: Vec<&str> = self.zones.iter().flatten().map(String::as_str).collect();
        labels.sort_unstable();
        labels.dedup();
        labels
    }

    /// How many distinct zones `locations` (`host:port[/svXX]`) span. A volume without a
    /// zone, or not in this placement, counts as a zone of its own.
    pub fn spread(&self, locations: &[String]) -> usize {
        let mut seen: Vec<Result<usize, &str>> = Vec::with_capacity(locations.len());
        for loc in locations {
            let server = server_of(loc);
            let zone = match self.volumes.iter().position(|v| v == server) {
                Some(i) => Ok(self.zone_ids[i]),
                None => Err(server),
            };
            if !seen.contains(&zone) {
                seen.push(zone);
            }
        }
        seen.len()
    }

    /// The most zones a key's replica set can span: `min(replicas, zones)`.
    pub fn best_spread(&self) -> usize {
        self.replicas.min(self.zone_count)
    }

    /// The replica locations of `key`, best first: `host:port` or `host:port/svXX`.
    pub fn locate(&self, key: &[u8]) -> Vec<String> {
        let mut scored: Vec<([u8; 16], usize)> = self
            .volumes
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut h = Md5::new();
                h.update(key);
                h.update(v.as_bytes());
                (h.finalize().into(), i)
            })
            .collect();
        // Descending by score; `sort_by` is stable, like Go's sort.Stable.
        scored.sort_by_key(|&(score, _)| std::cmp::Reverse(score));
        if self.zone_count < self.volumes.len() {
            scored = self.spread_out(scored);
        } else {
            scored.truncate(self.replicas);
        }
        scored
            .into_iter()
            .map(|(score, i)| {
                let v = &self.volumes[i];
                if self.subvolumes == 1 {
                    v.clone()
                } else {
                    let sv = u32::from_be_bytes([score[12], score[13], score[14], score[15]])
                        % self.subvolumes;
                    format!("{v}/sv{sv:02X}")
                }
            })
            .collect()
    }

    /// Picks `replicas` of the volumes in rendezvous order (`ranked`, best first), at
    /// most one per zone in the first pass, two in the next, …; returns them in
    /// rendezvous order.
    fn spread_out(&self, ranked: Vec<([u8; 16], usize)>) -> Vec<([u8; 16], usize)> {
        let mut per_zone = vec![0usize; self.zone_count];
        let mut taken = vec![false; ranked.len()];
        let mut picked = 0;
        let mut cap = 1;
        while picked < self.replicas {
            for (pos, &(_, i)) in ranked.iter().enumerate() {
                if picked == self.replicas {
                    break;
                }
                let zone = self.zone_ids[i];
                if !taken[pos] && per_zone[zone] < cap {
                    taken[pos] = true;
                    per_zone[zone] += 1;
                    picked += 1;
                }
            }
            cap += 1;
        }
        ranked
            .into_iter()
            .zip(taken)
            .filter_map(|(r, t)| t.then_some(r))
            .collect()
    }
}

/// The placement in force, replaceable at runtime when volumes join or leave.
///
/// Readers take a cheap snapshot ([`SharedPlacement::current`]) and use it for the whole
/// operation; a replacement affects only operations that start afterwards.
#[derive(Debug)]
pub struct SharedPlacement(RwLock<Arc<Placement>>);

impl SharedPlacement {
    /// Starts with `placement`.
    pub fn new(placement: Placement) -> Self {
        SharedPlacement(RwLock::new(Arc::new(placement)))
    }

    /// The placement in force now.
    pub fn current(&self) -> Arc<Placement> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts `placement` in force and returns the previous one.
    pub fn replace(&self, placement: Placement) -> Arc<Placement> {
        let mut slot = self.0.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *slot, Arc::new(placement))
    }
}

/// The path of `key`'s file inside a volume location: `/%02x/%02x/<base64(key)>`.
pub fn key_path(key: &[u8]) -> String {
    let digest: [u8; 16] = Md5::digest(key).into();
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    format!("/{:02x}/{:02x}/{}", digest[0], digest[1], b64)
}

/// Recovers the key from the base64 part of a file path (everything after `/xx/yy/`),
/// checking that the two hash directories match. `None` if the name is not a hoard file.
pub fn key_from_path(path: &str) -> Option<Vec<u8>> {
    let rest = path.strip_prefix('/')?;
    let (d0, rest) = rest.split_once('/')?;
    let (d1, b64) = rest.split_once('/')?;
    let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let digest: [u8; 16] = Md5::digest(&key).into();
    (d0 == format!("{:02x}", digest[0]) && d1 == format!("{:02x}", digest[1])).then_some(key)
}

/// The volume server (`host:port`) part of a location (`host:port/svXX`).
pub fn server_of(location: &str) -> &str {
    location.split_once('/').map_or(location, |(s, _)| s)
}

fn is_host_port(v: &str) -> bool {
    match v.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains('/')
                && !host.chars().any(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn five(subvolumes: u32) -> Placement {
        let volumes = (3001..=3005).map(|p| format!("localhost:{p}")).collect();
        Placement::new(volumes, 3, subvolumes).unwrap()
    }

    /// The vectors from minikeyvalue-compatible placement (issue 2).
    #[test]
    fn known_vectors() {
        let p = five(10);
        let cases: &[(&str, [&str; 3], &str)] = &[
            (
                "/wehave",
                [
                    "localhost:3001/sv07",
                    "localhost:3002/sv04",
                    "localhost:3005/sv01",
                ],
                "/60/08/L3dlaGF2ZQ==",
            ),
            (
                "/a/b c",
                [
                    "localhost:3002/sv07",
                    "localhost:3005/sv09",
                    "localhost:3001/sv00",
                ],
                "/d0/b6/L2EvYiBj",
            ),
            (
                "/hello",
                [
                    "localhost:3004/sv07",
                    "localhost:3003/sv04",
                    "localhost:3005/sv07",
                ],
                "/3e/d1/L2hlbGxv",
            ),
            (
                "/ünï",
                [
                    "localhost:3002/sv09",
                    "localhost:3005/sv08",
                    "localhost:3003/sv01",
                ],
                "/45/7f/L8O8bsOv",
            ),
            (
                "/???>>>",
                [
                    "localhost:3005/sv07",
                    "localhost:3001/sv06",
                    "localhost:3004/sv00",
                ],
                "/84/5b/Lz8/Pz4+Pg==",
            ),
        ];
        for (key, volumes, path) in cases {
            assert_eq!(p.locate(key.as_bytes()), volumes.to_vec(), "{key}");
            assert_eq!(key_path(key.as_bytes()), *path, "{key}");
            assert_eq!(key_from_path(path).as_deref(), Some(key.as_bytes()));
        }
    }

    #[test]
    fn no_subvolumes() {
        assert_eq!(
            five(1).locate(b"/wehave"),
            ["localhost:3001", "localhost:3002", "localhost:3005"]
        );
    }

    #[test]
    fn rejects_bad_settings() {
        let v = |n: u16| (1..=n).map(|p| format!("h:{p}")).collect::<Vec<_>>();
        assert_eq!(
            Placement::new(v(2), 3, 10),
            Err(PlacementError::TooFewVolumes {
                replicas: 3,
                volumes: 2
            })
        );
        assert_eq!(Placement::new(v(3), 0, 10), Err(PlacementError::NoReplicas));
        assert_eq!(
            Placement::new(v(3), 3, 0),
            Err(PlacementError::BadSubvolumes(0))
        );
        assert!(matches!(
            Placement::new(vec!["h:1".into(), "h:1".into()], 1, 1),
            Err(PlacementError::DuplicateVolume(_))
        ));
        for bad in ["", "host", "host:", ":80", "h:0", "h:99999", "a/b:1"] {
            assert!(
                matches!(
                    Placement::new(vec![bad.into()], 1, 1),
                    Err(PlacementError::BadVolume(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn key_from_path_rejects_foreign_files() {
        assert_eq!(key_from_path("/00/00/L2hlbGxv"), None); // wrong hash dirs
        assert_eq!(key_from_path("/3e/d1/not base64!"), None);
        assert_eq!(key_from_path("body_temp"), None);
    }

    #[test]
    fn server_of_strips_subvolume() {
        assert_eq!(server_of("localhost:3001/sv07"), "localhost:3001");
        assert_eq!(server_of("localhost:3001"), "localhost:3001");
    }

    fn zoned(spec: &[(u16, &str)], replicas: usize) -> Placement {
        let volumes = spec
            .iter()
            .map(|(p, z)| join_spec(&format!("localhost:{p}"), (!z.is_empty()).then_some(*z)))
            .collect();
        Placement::new(volumes, replicas, 1).unwrap()
    }

    const SIX: [(u16, &str); 6] = [
        (3001, "a"),
        (3002, "a"),
        (3003, "b"),
        (3004, "b"),
        (3005, "c"),
        (3006, "c"),
    ];

    fn keys(n: usize) -> impl Iterator<Item = Vec<u8>> {
        (0..n).map(|i| format!("/key-{i}").into_bytes())
    }

    #[test]
    fn zone_labels_are_not_hashed() {
        // Every volume in a zone of its own: the same sets as without zones.
        let plain = five(10);
        let labelled = Placement::new(
            (3001..=3005)
                .map(|p| format!("localhost:{p}@z{p}"))
                .collect(),
            3,
            10,
        )
        .unwrap();
        for key in keys(1000) {
            assert_eq!(plain.locate(&key), labelled.locate(&key));
        }
        assert_eq!(labelled.zone_of("localhost:3002"), Some("z3002"));
        assert_eq!(plain.zone_of("localhost:3002"), None);
        assert!(labelled.zoned() && !plain.zoned());
        assert_eq!(labelled.specs()[0], "localhost:3001@z3001");
        assert_eq!(plain.specs(), plain.volumes());
    }

    /// Known vectors with zones. The full rendezvous order of `/wehave` over 3001..3006
    /// is 3001 3002 3006 3005 3004 3003 (see the assertion); with zones a a b b c c the
    /// set takes 3001 (a), skips 3002 (a again), takes 3006 (c), skips 3005 (c), takes
    /// 3004 (b).
    #[test]
    fn zoned_known_vectors() {
        let all = zoned(&SIX.map(|(p, _)| (p, "")), 6);
        let p = zoned(&SIX, 3);
        let cases: &[(&str, [u16; 6], [u16; 3])] = &[
            (
                "/wehave",
                [3001, 3002, 3006, 3005, 3004, 3003],
                [3001, 3006, 3004],
            ),
            (
                "/hello",
                [3004, 3003, 3006, 3005, 3001, 3002],
                [3004, 3006, 3001],
            ),
            (
                "/a/b c",
                [3002, 3005, 3001, 3006, 3004, 3003],
                [3002, 3005, 3004],
            ),
        ];
        let names = |ports: &[u16]| -> Vec<String> {
            ports.iter().map(|p| format!("localhost:{p}")).collect()
        };
        for (key, order, set) in cases {
            assert_eq!(all.locate(key.as_bytes()), names(order), "{key} order");
            assert_eq!(p.locate(key.as_bytes()), names(set), "{key}");
        }
        // Two zones, three replicas: one zone twice, the next in rendezvous order.
        let two = zoned(&[(3001, "a"), (3002, "a"), (3003, "b"), (3004, "b")], 3);
        assert_eq!(
            two.locate(b"/wehave"),
            names(&[3001, 3002, 3004]) // order 3001 3002 3004 3003: a, then b, then a
        );
    }

    #[test]
    fn zoned_sets_span_every_zone_they_can() {
        let p = zoned(&SIX, 3);
        let two = zoned(&SIX[..4], 3);
        let mixed = zoned(
            &[
                (3001, "a"),
                (3002, "a"),
                (3003, "a"),
                (3004, ""),
                (3005, ""),
            ],
            3,
        );
        for key in keys(10_000) {
            let set = p.locate(&key);
            assert_eq!(p.spread(&set), 3, "{set:?}");
            assert_eq!(two.spread(&two.locate(&key)), 2);
            let set = mixed.locate(&key);
            assert_eq!((set.len(), mixed.spread(&set)), (3, 3), "{set:?}");
        }
        assert_eq!((p.best_spread(), two.best_spread()), (3, 2));
        assert_eq!(p.zone_labels(), ["a", "b", "c"]);
    }

    #[test]
    fn zones_spread_keys_evenly() {
        let p = zoned(&SIX, 3);
        let mut per_volume = std::collections::HashMap::<String, usize>::new();
        for key in keys(10_000) {
            for v in p.locate(&key) {
                *per_volume.entry(v).or_default() += 1;
            }
        }
        // Each volume holds one replica of about half the keys (5000 ± 5%).
        for (v, n) in per_volume {
            assert!((4750..5250).contains(&n), "{v}: {n}");
        }
    }

    /// Adding a volume (to a zone, or as a new zone) only moves replicas onto it, and
    /// moves at most one replica of any key.
    #[test]
    fn adding_volumes_moves_only_onto_them() {
        type Volumes<'a> = &'a [(u16, &'a str)];
        let cases: &[(Volumes, Volumes)] = &[
            (&SIX, &[(3007, "a")]),
            (&SIX, &[(3007, "d")]),
            (&SIX[..4], &[(3005, "c"), (3006, "c")]), // a new zone: 2 → 3 zones
            (&SIX[..4], &[(3005, "b")]),
            (&SIX[..3], &[(3004, "b")]),
        ];
        for (before, added) in cases {
            let old = zoned(before, 3);
            let all: Vec<(u16, &str)> = before.iter().chain(added.iter()).copied().collect();
            let new = zoned(&all, 3);
            let new_names: Vec<String> = added
                .iter()
                .map(|(p, _)| format!("localhost:{p}"))
                .collect();
            let mut moved = 0;
            for key in keys(10_000) {
                let (a, b) = (old.locate(&key), new.locate(&key));
                let gained: Vec<&String> = b.iter().filter(|v| !a.contains(v)).collect();
                assert!(
                    gained.iter().all(|v| new_names.contains(v)),
                    "{a:?} → {b:?}"
                );
                moved += gained.len();
            }
            // The replicas the added volumes now hold are exactly the ones that moved.
            let held: usize = keys(10_000)
                .map(|k| {
                    new.locate(&k)
                        .iter()
                        .filter(|v| new_names.contains(v))
                        .count()
                })
                .sum();
            assert_eq!(moved, held, "{added:?}");
            println!("adding {added:?} to {before:?}: {moved} of 30000 replicas moved");
        }
    }

    #[test]
    fn rejects_bad_zones() {
        for bad in ["h:1@", "h:1@a b", "h:1@a/b", "h:1@a@b"] {
            assert!(
                matches!(
                    Placement::new(vec![bad.into()], 1, 1),
                    Err(PlacementError::BadZone(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Placement::new(vec!["h:1@a".into(), "h:1@b".into()], 1, 1),
            Err(PlacementError::DuplicateVolume(_))
        ));
    }
}
