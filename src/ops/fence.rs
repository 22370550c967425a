//! The condition an online job checks before it deletes files on its own judgement
//! (orphans, intents it rolls back): in an index cluster, a member whose copy of the
//! index is stale — cut off from the others, or deposed while it still believes it
//! leads — must not delete the files of writes committed elsewhere.
//!
//! [`Fence::check`] runs right before each batch of deletes: a read barrier (the
//! leader confirms its leadership with a quorum, and this member's copy catches up to
//! it), then the job record's owner is read from that copy, which is now current. The
//! check fails unless this member still owns the cluster's job (`Command::SetJob`
//! records the owner as `"{job id}/{node id}"`; a takeover by the new leader replaces
//! it), and the job then stops. Every record the batch then re-reads (under its key's
//! lock) reflects every write acknowledged before the check. On a single index server
//! both steps are free: no barrier, no owner.
//!
//! What a crash or a partition at each step leaves:
//!
//! * *Before or during the check:* nothing was deleted; the job fails here (or dies
//!   with its member) and the leader takes it over from the last recorded cursor.
//! * *Cut off after the check, before or while deleting:* the batch deletes only files
//!   that no record referred to when the check passed. A write whose intent commits
//!   after the check may reuse such a location (same key, same volume) and lose its
//!   file; the window is one batch long, and a later verify reports that replica
//!   missing and re-creates it from the others. The next batch's check fails, and the
//!   job stops.
//! * *Killed mid-batch:* some files are gone, others not; records are untouched, and a
//!   later run finds the rest again.

use crate::index::Index;

use super::OpsError;

/// What entitles a running job to delete files (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Fence {
    /// The owner this job runs as in the replicated job record; `None` on a single
    /// index server or offline.
    owner: Option<String>,
}

impl Fence {
    /// The fence of the cluster's job run by this member as `owner`
    /// (`"{job id}/{node id}"`).
    pub fn owned_as(owner: String) -> Self {
        Fence { owner: Some(owner) }
    }

    /// Passes when deleting what a record re-read after it does not refer to is safe:
    /// `index` reflects every write acknowledged before the call, and this member still
    /// owns the job. [`OpsError::Fenced`] when it lost the job.
    pub async fn check(&self, index: &Index) -> Result<(), OpsError> {
        index.read_barrier().await?;
        let Some(owner) = &self.owner else {
            return Ok(());
        };
        let (_, current) = index.job()?;
        if current != *owner {
            return Err(OpsError::Fenced(format!(
                "this member runs the job as {owner:?}, but the cluster's job record names {current:?}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Command;

    #[tokio::test]
    async fn only_the_recorded_owner_passes() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let set = |owner: &str, expect: &str| {
            Some(Command::SetJob {
                record: "{}".into(),
                owner: owner.into(),
                expect: expect.into(),
            })
        };
        index.apply_committed(&[set("1/1", "")], &[]).unwrap();
        assert!(Fence::default().check(&index).await.is_ok());
        assert!(Fence::owned_as("1/1".into()).check(&index).await.is_ok());
        // Taken over by node 2.
        index.apply_committed(&[set("1/2", "1/1")], &[]).unwrap();
        let lost = Fence::owned_as("1/1".into()).check(&index).await;
        assert!(matches!(lost, Err(OpsError::Fenced(_))), "{lost:?}");
    }
}
