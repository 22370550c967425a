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

use std::sync::{Arc, RwLock};

use base64::Engine as _;
use md5::{Digest, Md5};

/// The placement policy: the configured volume list and how many copies to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    volumes: Vec<String>,
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
}

impl Placement {
    /// Builds a placement, checking that it can always produce `replicas` locations.
    pub fn new(
        volumes: Vec<String>,
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
        for (i, v) in volumes.iter().enumerate() {
            if !is_host_port(v) {
                return Err(PlacementError::BadVolume(v.clone()));
            }
            if volumes[..i].contains(v) {
                return Err(PlacementError::DuplicateVolume(v.clone()));
            }
        }
        if volumes.len() < replicas {
            return Err(PlacementError::TooFewVolumes {
                replicas,
                volumes: volumes.len(),
            });
        }
        Ok(Placement {
            volumes,
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

    /// The same policy over another volume list (same replicas and subvolumes).
    pub fn with_volumes(&self, volumes: Vec<String>) -> Result<Self, PlacementError> {
        Placement::new(volumes, self.replicas, self.subvolumes)
    }

    /// The replica locations of `key`, best first: `host:port` or `host:port/svXX`.
    pub fn locate(&self, key: &[u8]) -> Vec<String> {
        let mut scored: Vec<([u8; 16], &str)> = self
            .volumes
            .iter()
            .map(|v| {
                let mut h = Md5::new();
                h.update(key);
                h.update(v.as_bytes());
                (h.finalize().into(), v.as_str())
            })
            .collect();
        // Descending by score; `sort_by` is stable, like Go's sort.Stable.
        scored.sort_by_key(|&(score, _)| std::cmp::Reverse(score));
        scored
            .into_iter()
            .take(self.replicas)
            .map(|(score, v)| {
                if self.subvolumes == 1 {
                    v.to_string()
                } else {
                    let sv = u32::from_be_bytes([score[12], score[13], score[14], score[15]])
                        % self.subvolumes;
                    format!("{v}/sv{sv:02X}")
                }
            })
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
}
