//! openraft's own storage test suite (append, read back, truncate, purge, vote,
//! committed, apply, snapshots) against the log store and the index's state machine.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

use super::LogStore;
use crate::index::Index;
use crate::raft::state_machine::StateMachine;
use crate::raft::TypeConfig;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let err = |e: anyhow::Error| {
            StorageError::from(openraft::StorageIOError::write_logs(
                openraft::AnyError::error(e),
            ))
        };
        let dir = tempfile::tempdir().map_err(|e| err(e.into()))?;
        let log = LogStore::open(&dir.path().join("raft-log.redb")).map_err(err)?;
        let index = Index::open(&dir.path().join("index")).map_err(|e| err(e.into()))?;
        let sm = StateMachine::new(index, &dir.path().join("snapshots")).map_err(err)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}
