//! Reading a replica in full to learn its size and md5 (verify, rebuild, and the
//! store's background check of replicas a client found wrong).

use std::time::Duration;

use futures_util::StreamExt;
use md5::{Digest, Md5};

use super::{VolumeClient, VolumeError};

/// Why [`hash`] failed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The volume request failed.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// Reading the value failed midway, or took too long.
    #[error("reading {url}: {reason}")]
    Read {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// A deadline for moving `size` bytes between volumes: generous, but a stalled volume
/// cannot hang a job forever.
pub fn copy_timeout(size: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_secs(size / (1 << 20))
}

/// The size and md5 of the file at `url`, read in full; `None` if it does not exist.
/// Read without the native volume's own check, so a corrupt file shows as a wrong md5
/// (which verify repairs) rather than as a broken read.
pub async fn hash(client: &VolumeClient, url: &str) -> Result<Option<(u64, [u8; 16])>, HashError> {
    let resp = match client.get_unverified(url).await {
        Ok(resp) => resp,
        Err(VolumeError::Status { status, .. }) if status.as_u16() == 404 => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let limit = copy_timeout(resp.content_length().unwrap_or(0));
    let work = async {
        let mut stream = resp.bytes_stream();
        let mut md5 = Md5::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| HashError::Read {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
            size += chunk.len() as u64;
            md5.update(&chunk);
        }
        Ok(Some((size, md5.finalize().into())))
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| HashError::Read {
            url: url.to_string(),
            reason: "timed out".into(),
        })?
}
