//! Deleting a key's files on its volumes: the one mechanism behind DELETE, the
//! rollback of a failed write, repair, rebalance's removal of old copies and the
//! upkeep worker.

use super::{Health, VolumeClient, VolumeError};
use crate::placement::server_of;

/// Why not every file could be deleted. The files on reachable volumes are gone either
/// way; the caller keeps whatever names the rest, for a retry or repair.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// A volume the prober sees down was not tried, or went down meanwhile.
    #[error("replica volume {server} is down: its copy stays until a retry or repair removes it")]
    Down {
        /// The volume server.
        server: String,
    },
    /// A volume refused or failed the delete.
    #[error("delete incomplete, retry: {0}")]
    Volume(#[from] VolumeError),
}

/// Deletes the file of generation `gen` of `key`'s value (`Record::gen`) at every
/// location concurrently; a missing file counts as
/// deleted. With `health`, volumes the prober sees down are not tried, and the step
/// gives up as soon as one of the others goes down — a hung volume must not hold the
/// caller for the whole delete timeout. Ok only when every location is clean.
pub async fn delete_files(
    client: &VolumeClient,
    health: Option<&Health>,
    key: &[u8],
    gen: u64,
    locations: &[String],
) -> Result<(), DeleteError> {
    let is_up = |l: &&String| health.is_none_or(|h| h.is_up(server_of(l)));
    let (up, down): (Vec<&String>, Vec<&String>) = locations.iter().partition(is_up);
    let deletes = futures_util::future::join_all(up.iter().map(|l| {
        let url = VolumeClient::url(l, key, gen);
        async move { client.delete(&url).await }
    }));
    let results = match health {
        None => deletes.await,
        Some(health) => {
            let up: Vec<String> = up.iter().map(|l| (*l).clone()).collect();
            tokio::select! {
                results = deletes => results,
                server = health.first_down(&up) => return Err(DeleteError::Down { server }),
            }
        }
    };
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    match down.first() {
        Some(d) => Err(DeleteError::Down {
            server: server_of(d).to_string(),
        }),
        None => Ok(()),
    }
}
