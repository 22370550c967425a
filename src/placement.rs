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

/// The path of `key`'s file inside a volume location: `/%02x/%02x/<base64(key)>`
/// (minikeyvalue's layout). The value of generation 0 has this name; see [`file_path`].
pub fn key_path(key: &[u8]) -> String {
    let digest: [u8; 16] = Md5::digest(key).into();
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    format!("/{:02x}/{:02x}/{}", digest[0], digest[1], b64)
}

/// Separates a generation from the base64 key in a file name (never a base64 character).
const GEN_MARK: char = '~';

/// The path of the files of generation `gen` of `key`'s value (see `Record::gen`):
/// [`key_path`] for generation 0, the first value a key ever had — minikeyvalue's
/// layout, so a store that never overwrites is a minikeyvalue volume — and
/// `key_path~<gen in decimal>` for a later one. Every overwrite writes a new generation
/// under its own name, so the files of the value readers see are never touched by it.
pub fn file_path(key: &[u8], gen: u64) -> String {
    match gen {
        0 => key_path(key),
        g => format!("{}{GEN_MARK}{g}", key_path(key)),
    }
}

/// Recovers the key and the generation from a file path made by [`file_path`],
/// checking that the two hash directories match. `None` if the name is not a hoard
/// file.
pub fn file_from_path(path: &str) -> Option<(Vec<u8>, u64)> {
    let rest = path.strip_prefix('/')?;
    let (d0, rest) = rest.split_once('/')?;
    let (d1, name) = rest.split_once('/')?;
    let (b64, gen) = match name.split_once(GEN_MARK) {
        None => (name, 0),
        // No leading zeros or sign: one generation has exactly one name.
        Some((b64, g)) if !g.starts_with('0') && g.bytes().all(|c| c.is_ascii_digit()) => {
            (b64, g.parse().ok()?)
        }
        Some(_) => return None,
    };
    let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let digest: [u8; 16] = Md5::digest(&key).into();
    (d0 == format!("{:02x}", digest[0]) && d1 == format!("{:02x}", digest[1])).then_some((key, gen))
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

/// A volume URL as kalavara's volumes announce themselves (`http://host:port`, also
/// `https://`, a trailing `/`, or just `host:port`) as the volume name `host:port`.
pub fn volume_from_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let valid = match rest.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(['/', '@', '?', '#', ' '])
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    };
    if valid {
        Ok(rest.to_string())
    } else {
        Err(format!(
            "{url:?} is not a volume URL (http://host:port or host:port)"
        ))
    }
}

#[cfg(test)]
mod tests;
