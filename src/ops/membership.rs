//! Volume membership of a running index server: volumes join or leave by configuration
//! (`--volumes`, read at startup) or by registration (`POST /-/admin/volumes`), and a
//! rebalance then moves keys to the new placement.
//!
//! Registrations survive restarts: the index directory keeps `volumes.json` with the
//! configured list and the list in force. At startup, when `--volumes` is the same set
//! as the recorded configured list, the recorded list in force is used (so volumes
//! registered at runtime stay); when `--volumes` changed, the new configuration wins.
//!
//! In an index cluster the volume list is part of the replicated state instead
//! (`Command::SetVolumes`), so every index server places keys alike: a member's
//! `--volumes` seeds it once, when the cluster has none yet ([`seed`]); registrations
//! are proposed through the log ([`Membership::change_replicated`]); and each member
//! puts whatever list the log applies in force ([`follow`]).
//!
//! Lists are of volume specs, `host:port` or `host:port@zone` (see
//! [`crate::placement`]), in both `volumes.json` and the replicated list, so lists
//! recorded before zones existed read as volumes without a zone. Changes match volumes
//! by `host:port`: adding `h:1@b` when `h:1@a` is listed moves it to zone `b`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize};

use super::OpsError;
use crate::placement::{split_spec, volume_from_url, Placement, SharedPlacement};
use crate::replica::Health;

/// Name of the membership file inside the index directory.
pub const FILE: &str = "volumes.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    configured: Vec<String>,
    current: Vec<String>,
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// The volume list to start with, given the configured one (see the module docs).
pub fn resolve(db: &Path, configured: &[String]) -> Vec<String> {
    let path = db.join(FILE);
    let stored = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<Stored>(&bytes) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!("ignoring {}: {e}", path.display());
                return configured.to_vec();
            }
        },
        Err(_) => return configured.to_vec(),
    };
    if sorted(&stored.configured) == sorted(configured) {
        if sorted(&stored.current) != sorted(configured) {
            tracing::info!(
                "using registered volumes {} (from {})",
                stored.current.join(","),
                path.display()
            );
        }
        stored.current
    } else {
        tracing::info!("--volumes changed since the last registration; using --volumes");
        configured.to_vec()
    }
}

fn store(path: &Path, stored: &Stored) -> Result<(), OpsError> {
    let file_err = |source| OpsError::File {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(stored).map_err(|e| file_err(e.into()))?;
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp).map_err(file_err)?;
        f.write_all(&text).map_err(file_err)?;
        f.sync_all().map_err(file_err)?;
    }
    std::fs::rename(&tmp, path).map_err(file_err)
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Body of `POST /-/admin/volumes`: replace the list, and/or add or remove volumes.
///
/// `{"volumes": ["h:1","h:2","h:3"]}`, `{"add": "h:4"}`, `{"remove": ["h:2"]}`; with
/// `"rebalance": true` a rebalance starts right after. Volumes may carry a zone
/// (`"h:4@rack2"`); adding a listed volume with a zone relabels it; removing matches
/// by `host:port`. kalavara's registration is accepted too: `{"url": "http://h:4"}`,
/// or the URL alone as a plain-text body (see [`Change::parse`]); both add the volume.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// The new complete list.
    #[serde(default)]
    pub volumes: Option<Vec<String>>,
    /// Volumes to add.
    #[serde(default, deserialize_with = "one_or_many")]
    pub add: Vec<String>,
    /// Volumes to remove.
    #[serde(default, deserialize_with = "one_or_many")]
    pub remove: Vec<String>,
    /// Start an online rebalance afterwards.
    #[serde(default)]
    pub rebalance: bool,
    /// kalavara's spelling of an addition: the volume's URL (`http://host:port`).
    #[serde(default)]
    pub url: Option<String>,
}

impl Change {
    /// A `POST /-/admin/volumes` body: a JSON [`Change`] (whose `url`, if any, becomes an
    /// addition), or kalavara's plain-text volume URL.
    pub fn parse(body: &[u8]) -> Result<Change, String> {
        let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
        let text = text.trim();
        let mut change = if text.starts_with('{') {
            serde_json::from_str::<Change>(text).map_err(|e| e.to_string())?
        } else {
            Change {
                url: Some(text.to_string()),
                ..Change::default()
            }
        };
        if let Some(url) = change.url.take() {
            change.add.push(volume_from_url(&url)?);
        }
        Ok(change)
    }

    /// The list that results from applying the change to `current`.
    pub fn apply(&self, current: &[String]) -> Vec<String> {
        let name = |spec: &str| split_spec(spec).0.to_string();
        let mut list = self.volumes.clone().unwrap_or_else(|| current.to_vec());
        for v in &self.add {
            match list.iter_mut().find(|s| name(s) == name(v)) {
                Some(listed) if split_spec(v).1.is_some() => *listed = v.clone(),
                Some(_) => {}
                None => list.push(v.clone()),
            }
        }
        list.retain(|v| !self.remove.iter().any(|r| name(r) == name(v)));
        list
    }
}

/// The membership of a running server: where it is recorded and what was configured.
#[derive(Debug)]
pub struct Membership {
    path: PathBuf,
    configured: Vec<String>,
    lock: Mutex<()>,
}

impl Membership {
    /// Membership recorded in index directory `db`, configured with `configured`.
    pub fn new(db: &Path, configured: &[String]) -> Self {
        Membership {
            path: db.join(FILE),
            configured: configured.to_vec(),
            lock: Mutex::new(()),
        }
    }

    /// Applies `change`: checks the new placement, records it, puts it in force and
    /// starts probing new volumes. Returns the placement now in force.
    pub fn change(
        &self,
        placement: &SharedPlacement,
        health: &Health,
        change: &Change,
    ) -> Result<Arc<Placement>, OpsError> {
        let _serial = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = placement.current();
        let next = current.with_volumes(change.apply(&current.specs()))?;
        if next.specs() != current.specs() {
            store(
                &self.path,
                &Stored {
                    configured: self.configured.clone(),
                    current: next.specs(),
                },
            )?;
            for v in next.volumes() {
                health.add(v);
            }
            tracing::info!("volumes now {}", next.specs().join(","));
            placement.replace(next);
        }
        Ok(placement.current())
    }
}

/// Proposes `configured` as the cluster's volume list unless one is set already;
/// retried until the cluster can take it (it has no leader yet while forming).
pub fn seed(index: crate::index::Index, configured: Vec<String>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let cmd = crate::index::Command::SetVolumes {
            volumes: configured,
            if_unset: true,
        };
        loop {
            match index.apply(cmd.clone()).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::info!("volume list not seeded yet: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    })
}

/// Puts every volume list the index applies in force: placement and health probes.
pub fn follow(
    index: &crate::index::Index,
    placement: Arc<SharedPlacement>,
    health: Arc<Health>,
) -> tokio::task::JoinHandle<()> {
    let mut volumes = index.volumes();
    tokio::spawn(async move {
        loop {
            let list = volumes.borrow_and_update().clone();
            if let Some(list) = list {
                let current = placement.current();
                if current.specs() != list {
                    match current.with_volumes(list) {
                        Ok(next) => {
                            for v in next.volumes() {
                                health.add(v);
                            }
                            tracing::info!("volumes now {}", next.specs().join(","));
                            placement.replace(next);
                        }
                        Err(e) => tracing::error!("replicated volume list refused: {e}"),
                    }
                }
            }
            if volumes.changed().await.is_err() {
                return;
            }
        }
    })
}

impl Membership {
    /// In an index cluster: checks `change` against the placement in force and proposes
    /// the resulting list through the replicated log; every member then puts it in force
    /// ([`follow`]). Returns the new list (`host:port` names).
    pub async fn change_replicated(
        &self,
        index: &crate::index::Index,
        placement: &SharedPlacement,
        health: &Health,
        change: &Change,
    ) -> Result<Vec<String>, OpsError> {
        let current = placement.current();
        let next = current.with_volumes(change.apply(&current.specs()))?;
        let cmd = crate::index::Command::SetVolumes {
            volumes: next.specs(),
            if_unset: false,
        };
        index
            .apply(cmd)
            .await?
            .map_err(|r| OpsError::Invalid(r.to_string()))?;
        // In force here at once (a rebalance may follow); `follow` does it elsewhere.
        let list = next.volumes().to_vec();
        for v in &list {
            health.add(v);
        }
        placement.replace(next);
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn changes() {
        let c: Change = serde_json::from_str(r#"{"add": "h:4"}"#).unwrap();
        assert_eq!(c.apply(&v(&["h:1", "h:2"])), v(&["h:1", "h:2", "h:4"]));
        let c: Change = serde_json::from_str(r#"{"remove": ["h:1"], "rebalance": true}"#).unwrap();
        assert!(c.rebalance);
        assert_eq!(c.apply(&v(&["h:1", "h:2"])), v(&["h:2"]));
        let c: Change = serde_json::from_str(r#"{"volumes": ["h:7"]}"#).unwrap();
        assert_eq!(c.apply(&v(&["h:1"])), v(&["h:7"]));
        assert!(serde_json::from_str::<Change>(r#"{"nope": 1}"#).is_err());
        // Zones: adding with a zone relabels, without one keeps it; remove by name.
        let c: Change = serde_json::from_str(r#"{"add": ["h:1@b", "h:3@c"]}"#).unwrap();
        assert_eq!(
            c.apply(&v(&["h:1@a", "h:2@a"])),
            v(&["h:1@b", "h:2@a", "h:3@c"])
        );
        let c: Change = serde_json::from_str(r#"{"add": "h:1", "remove": "h:2"}"#).unwrap();
        assert_eq!(c.apply(&v(&["h:1@a", "h:2@a"])), v(&["h:1@a"]));
    }

    #[test]
    fn kalavara_registrations_parse() {
        let add = |body: &str| Change::parse(body.as_bytes()).map(|c| c.add);
        assert_eq!(add("http://h:4"), Ok(v(&["h:4"])));
        assert_eq!(add("http://h:4/\n"), Ok(v(&["h:4"])));
        assert_eq!(add("h:4"), Ok(v(&["h:4"])));
        assert_eq!(
            add(r#"{"url": "https://10.0.0.9:3001"}"#),
            Ok(v(&["10.0.0.9:3001"]))
        );
        assert_eq!(add(r#"{"add": "h:4"}"#), Ok(v(&["h:4"])));
        for bad in [
            "",
            "http://h",
            "http://h:0",
            "http://h:4/x",
            "h:port",
            r#"{"url": "ftp//"}"#,
            r#"{"nope": 1}"#,
        ] {
            assert!(add(bad).is_err(), "{bad:?}");
        }
        let both = Change::parse(br#"{"url": "http://h:5", "rebalance": true}"#).unwrap();
        assert_eq!((both.add, both.rebalance), (v(&["h:5"]), true));
    }

    #[test]
    fn zones_are_recorded_and_old_files_read() {
        let dir = tempfile::tempdir().unwrap();
        // A file written before zones: plain names.
        std::fs::write(
            dir.path().join(FILE),
            r#"{"configured":["h:1","h:2","h:3"],"current":["h:1","h:2","h:3","h:4"]}"#,
        )
        .unwrap();
        let configured = v(&["h:1", "h:2", "h:3"]);
        let current = resolve(dir.path(), &configured);
        assert_eq!(current, v(&["h:1", "h:2", "h:3", "h:4"]));
        let placement = SharedPlacement::new(Placement::new(current.clone(), 3, 1).unwrap());
        let health = Health::new(&current);
        let m = Membership::new(dir.path(), &configured);
        let change: Change = serde_json::from_str(r#"{"add": ["h:4@b", "h:1@a"]}"#).unwrap();
        let now = m.change(&placement, &health, &change).unwrap();
        assert_eq!(now.zone_of("h:4"), Some("b"));
        assert_eq!(now.volumes(), v(&["h:1", "h:2", "h:3", "h:4"]).as_slice());
        assert_eq!(
            resolve(dir.path(), &configured),
            v(&["h:1@a", "h:2", "h:3", "h:4@b"])
        );
    }

    #[test]
    fn registrations_survive_restarts_until_config_changes() {
        let dir = tempfile::tempdir().unwrap();
        let configured = v(&["h:1", "h:2", "h:3"]);
        assert_eq!(resolve(dir.path(), &configured), configured);
        let m = Membership::new(dir.path(), &configured);
        let placement = SharedPlacement::new(Placement::new(configured.clone(), 3, 1).unwrap());
        let health = Health::new(&configured);
        let change = Change {
            add: v(&["h:4"]),
            ..Change::default()
        };
        m.change(&placement, &health, &change).unwrap();
        assert_eq!(placement.current().volumes().len(), 4);
        assert_eq!(health.snapshot().len(), 4);
        // Same configuration (any order): the registration stays.
        let again = v(&["h:3", "h:1", "h:2"]);
        assert_eq!(
            resolve(dir.path(), &again),
            v(&["h:1", "h:2", "h:3", "h:4"])
        );
        // New configuration wins.
        assert_eq!(resolve(dir.path(), &v(&["h:1", "h:2", "h:5"])).len(), 3);
        // Too few volumes for the replicas: refused, nothing changes.
        let shrink = Change {
            volumes: Some(v(&["h:1"])),
            ..Change::default()
        };
        assert!(m.change(&placement, &health, &shrink).is_err());
        assert_eq!(placement.current().volumes().len(), 4);
    }
}
