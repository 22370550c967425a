//! Completing degraded writes (`--write-quorum` below `--replicas`): a background task
//! copies the value of every key with missing replicas from a replica that holds it to
//! each missing one, once that volume is up, then records the replica as complete
//! (`Completed`). Keys are queued by the write path and, at start, by one walk of the
//! index. A key is completed under its write lock, so a concurrent DELETE or PUT can
//! never leave an orphaned copy behind.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::App;
use crate::index::{Command, State};
use crate::placement::server_of;
use crate::replica::VolumeClient;

/// How often queued keys are retried.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// The queue of keys that may have missing replicas.
pub type Queue = mpsc::UnboundedSender<Vec<u8>>;

/// A new queue and its receiving end (for [`spawn`]).
pub fn queue() -> (Queue, mpsc::UnboundedReceiver<Vec<u8>>) {
    mpsc::unbounded_channel()
}

/// Runs the completer until aborted: first queues every record the index already
/// lists with missing replicas, then completes queued keys, retrying those whose
/// volumes are still down.
pub fn spawn(
    app: Arc<App>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) -> tokio::task::JoinHandle<()> {
    // Only a weak reference between rounds, so the server can close its index at
    // shutdown while this task is idle.
    let weak = Arc::downgrade(&app);
    drop(app);
    tokio::spawn(async move {
        let mut pending: BTreeSet<Vec<u8>> = match weak.upgrade() {
            Some(app) => existing(&app).await.unwrap_or_else(|e| {
                tracing::warn!("cannot list degraded keys at start: {e}");
                BTreeSet::new()
            }),
            None => return,
        };
        loop {
            while let Ok(key) = rx.try_recv() {
                pending.insert(key);
            }
            if !pending.is_empty() {
                let Some(app) = weak.upgrade() else { return };
                let keys: Vec<Vec<u8>> = pending.iter().cloned().collect();
                for key in keys {
                    if complete(&app, &key).await {
                        pending.remove(&key);
                    }
                }
            }
            tokio::select! {
                key = rx.recv() => match key {
                    Some(key) => { pending.insert(key); }
                    None => return,
                },
                () = tokio::time::sleep(RETRY_INTERVAL), if !pending.is_empty() => {}
            }
        }
    })
}

/// Keys of records with missing replicas.
async fn existing(app: &App) -> Result<BTreeSet<Vec<u8>>, crate::index::IndexError> {
    let index = app.index.clone();
    tokio::task::spawn_blocking(move || {
        let mut keys = BTreeSet::new();
        index.walk(None, |k, r| {
            if !r.missing.is_empty() {
                keys.insert(k.to_vec());
            }
            true
        })?;
        Ok(keys)
    })
    .await
    .unwrap_or_else(|_| Ok(BTreeSet::new()))
}

/// Tries to complete `key`; true when nothing is left to do for it.
async fn complete(app: &App, key: &[u8]) -> bool {
    let Some(_guard) = app.locks.try_lock(key) else {
        return false; // a write of the key is in flight: later
    };
    let record = match app.index.get(key) {
        Ok(Some(r)) if matches!(r.state, State::Live | State::Unlinked) => r,
        Ok(_) => return true, // gone or being rewritten: nothing to complete
        Err(e) => {
            tracing::warn!("completing {}: {e}", String::from_utf8_lossy(key));
            return false;
        }
    };
    let Some(source) = record.holders().find(|h| app.health.is_up(server_of(h))) else {
        return record.missing.is_empty();
    };
    let source = VolumeClient::url(source, key);
    let mut done = true;
    for target in &record.missing {
        if !app.health.is_up(server_of(target)) {
            done = false;
            continue;
        }
        let url = VolumeClient::url(target, key);
        let copied = async {
            let resp = app.client.get(&source).await?;
            let body = reqwest::Body::wrap_stream(resp.bytes_stream());
            app.client.put(&url, body).await
        }
        .await;
        if let Err(e) = copied {
            tracing::warn!("completing {url}: {e}");
            done = false;
            continue;
        }
        let cmd = Command::Completed {
            key: key.to_vec(),
            location: target.clone(),
        };
        match app.index.apply(cmd).await {
            Ok(Ok(_)) => tracing::info!("completed replica {url}"),
            Ok(Err(r)) => tracing::warn!("completing {url}: {r}"),
            Err(e) => {
                tracing::warn!("completing {url}: {e}");
                done = false;
            }
        }
    }
    done
}
