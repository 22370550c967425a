//! The index's redb database behind a gate that lets an online compaction have it to
//! itself for a moment.
//!
//! redb's `Database::compact` needs `&mut Database` and no transaction open. Every
//! transaction of the index begins through [`Db::begin_read`] / [`Db::begin_write`],
//! which hold the gate's shared side only while beginning (a transaction does not
//! borrow the database). [`Db::compact`] takes the exclusive side: new transactions
//! wait at the gate, and those already open — a write batch being applied, a read of a
//! request, one chunk of a listing — finish. An open transaction's owner may need to
//! begin another before it can finish (a write batch reads `meta` in a read
//! transaction), so the compaction holds the gate at most [`HOLD_SLICE`] while waiting,
//! then opens it again for [`YIELD`] and retries, until `wait` has passed: then it
//! gives up with [`CompactError::Busy`], having changed nothing. Once no transaction is
//! open it compacts with the gate held: reads and writes pause for the compaction
//! itself (measured in docs/OPERATIONS.md) and then go on.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use redb::{
    CompactionError, Database, ReadTransaction, ReadableDatabase as _, TransactionError,
    WriteTransaction,
};

/// Longest the gate stays closed while open transactions are still finishing.
const HOLD_SLICE: Duration = Duration::from_millis(50);

/// How long the gate opens between two attempts.
const YIELD: Duration = Duration::from_millis(10);

/// How often a closed gate checks whether the open transactions have finished.
const POLL: Duration = Duration::from_millis(1);

/// The database and its gate.
#[derive(Debug)]
pub struct Db {
    inner: RwLock<Database>,
}

/// Why an online compaction did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// Transactions stayed open for the whole wait (a long listing or snapshot
    /// export): nothing was done; try again.
    #[error("transactions stayed open for {0:?}; nothing was compacted, try again")]
    Busy(Duration),
    /// redb failed.
    #[error("compaction failed: {0}")]
    Store(#[from] redb::Error),
}

impl Db {
    /// Wraps an open database.
    pub fn new(db: Database) -> Db {
        Db {
            inner: RwLock::new(db),
        }
    }

    fn shared(&self) -> std::sync::RwLockReadGuard<'_, Database> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Begins a read transaction (waiting while a compaction runs).
    pub fn begin_read(&self) -> Result<ReadTransaction, TransactionError> {
        self.shared().begin_read()
    }

    /// Begins a write transaction (waiting while a compaction runs).
    pub fn begin_write(&self) -> Result<WriteTransaction, TransactionError> {
        self.shared().begin_write()
    }

    /// Compacts the file once no transaction is open, waiting at most `wait` for that
    /// (see the module docs). True if pages were moved; the time reads and writes were
    /// held at the gate during the compaction itself.
    pub fn compact(&self, wait: Duration) -> Result<(bool, Duration), CompactError> {
        let deadline = Instant::now() + wait;
        loop {
            let slice_end = (Instant::now() + HOLD_SLICE).min(deadline);
            let mut db = self.inner.write().unwrap_or_else(|p| p.into_inner());
            loop {
                let started = Instant::now();
                match db.compact() {
                    Ok(moved) => return Ok((moved, started.elapsed())),
                    Err(CompactionError::TransactionInProgress) => {}
                    Err(e) => return Err(CompactError::Store(e.into())),
                }
                if Instant::now() >= slice_end {
                    break;
                }
                std::thread::sleep(POLL);
            }
            drop(db);
            if Instant::now() >= deadline {
                return Err(CompactError::Busy(wait));
            }
            std::thread::sleep(YIELD);
        }
    }
}
