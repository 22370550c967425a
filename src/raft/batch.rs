//! Proposals grouped into log entries.
//!
//! openraft 0.9's core appends one client write at a time and waits for the log's
//! fsync before it takes the next one, so a leader fed one command per entry does one
//! fsync per command however many writers wait. [`Batcher`] puts the commands that
//! arrive while earlier entries are in flight into one entry ([`Proposal::Many`]):
//! they are applied in order, in one index transaction, and each caller gets its own
//! command's outcome. Commands that wait together are concurrent, so any order among
//! them is a valid one; a caller's own commands are never in flight together.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::TypeConfig;
use crate::index::{Applied, Command, IndexError};

/// What one log entry proposes. In JSON (the log) untagged, so entries written before
/// batching existed (a bare command) still read as [`Proposal::One`]; in binary
/// formats (AppendEntries, see `super::wire`), which cannot tell variants apart by
/// their shape, tagged.
#[derive(Debug, Clone)]
pub enum Proposal {
    /// One command.
    One(Command),
    /// Commands applied in this order, in one index transaction.
    Many(Vec<Command>),
}

/// [`Proposal`] as JSON writes it.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Untagged<C, M> {
    One(C),
    Many(M),
}

/// [`Proposal`] as binary formats write it.
#[derive(serde::Serialize, serde::Deserialize)]
enum Tagged<C, M> {
    One(C),
    Many(M),
}

impl serde::Serialize for Proposal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self, s.is_human_readable()) {
            (Proposal::One(c), true) => Untagged::<_, &[Command]>::One(c).serialize(s),
            (Proposal::Many(m), true) => Untagged::<&Command, _>::Many(m).serialize(s),
            (Proposal::One(c), false) => Tagged::<_, &[Command]>::One(c).serialize(s),
            (Proposal::Many(m), false) => Tagged::<&Command, _>::Many(m).serialize(s),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Proposal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(if d.is_human_readable() {
            match Untagged::<Command, Vec<Command>>::deserialize(d)? {
                Untagged::One(c) => Proposal::One(c),
                Untagged::Many(m) => Proposal::Many(m),
            }
        } else {
            match Tagged::<Command, Vec<Command>>::deserialize(d)? {
                Tagged::One(c) => Proposal::One(c),
                Tagged::Many(m) => Proposal::Many(m),
            }
        })
    }
}

impl Proposal {
    /// The commands, in order.
    pub fn into_commands(self) -> Vec<Command> {
        match self {
            Proposal::One(cmd) => vec![cmd],
            Proposal::Many(cmds) => cmds,
        }
    }
}

/// Entries in flight at once: commands arriving meanwhile wait and go in one entry.
const IN_FLIGHT: usize = 2;
/// Most commands in one entry.
const MAX_COMMANDS: usize = 64;
/// An entry takes more commands only while their JSON is smaller than this (a command
/// alone may be larger: an inline value and metadata of 64 KiB each), so that
/// `super::MAX_PAYLOAD_ENTRIES` entries fit in one AppendEntries body.
const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// What a proposal comes back with: the command's outcome and the entry's log index,
/// or `None` when this node does not lead (nothing was appended).
pub type Answer = Result<Option<(Applied, u64)>, IndexError>;

type Waiting = (Command, oneshot::Sender<Answer>);

/// Hands commands to Raft, grouped (see the module documentation).
pub struct Batcher {
    tx: mpsc::UnboundedSender<Waiting>,
}

/// Reads the replicated lease clock ([`crate::index::LEASE_CLOCK_META`]) from
/// this member's index; `None` when absent (a new cluster) or unreadable.
pub type LeaseSeed = Box<dyn Fn() -> Option<u64> + Send + Sync>;

/// The one clock the cluster's write and delete leases are measured on, kept by the
/// leader: from the replicated value when this node began to lead (its term), advanced
/// by this node's monotonic clock, never below a value it handed out. Stamped into
/// every `Begin` and `BeginDelete` the leader appends, so no member's wall clock, fast
/// or slow, shortens another member's lease.
struct LeaseClock {
    seed: LeaseSeed,
    /// The term it was seeded in, when, and the value then.
    base: Option<(u64, std::time::Instant, u64)>,
    /// The highest value handed out.
    last: u64,
}

impl LeaseClock {
    /// The lease time now, for an entry appended in `term`.
    fn now(&mut self, term: u64) -> u64 {
        let (at, base) = match self.base {
            Some((t, at, base)) if t == term => (at, base),
            _ => {
                // A new term: continue from the replicated value (or, in a new
                // cluster, this node's wall clock).
                let base = (self.seed)()
                    .unwrap_or_else(crate::clock::now_ms)
                    .max(self.last);
                let at = std::time::Instant::now();
                self.base = Some((term, at, base));
                (at, base)
            }
        };
        let now = base.saturating_add(at.elapsed().as_millis() as u64);
        self.last = self.last.max(now);
        self.last
    }
}

impl Batcher {
    /// Starts the task that feeds `raft`; it ends when the batcher is dropped. `seed`
    /// reads the replicated lease clock when this node begins to lead.
    pub fn start(raft: Raft<TypeConfig>, seed: LeaseSeed) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let clock = LeaseClock {
            seed,
            base: None,
            last: 0,
        };
        tokio::spawn(run(raft, rx, clock));
        Batcher { tx }
    }

    /// Proposes `cmd` (see [`Answer`]).
    pub async fn propose(&self, cmd: Command) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((cmd, reply))
            .map_err(|_| IndexError::Replication("Raft is stopping".into()))?;
        answer
            .await
            .map_err(|_| IndexError::Replication("Raft is stopping".into()))?
    }
}

async fn run(
    raft: Raft<TypeConfig>,
    mut rx: mpsc::UnboundedReceiver<Waiting>,
    mut clock: LeaseClock,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // A command that did not fit in the previous entry.
    let mut carried: Option<Waiting> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        // Wait for a slot first: what arrives meanwhile joins this entry.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut bytes = json_len(&first.0);
        let mut group = vec![first];
        while group.len() < MAX_COMMANDS {
            let Ok(next) = rx.try_recv() else { break };
            bytes += json_len(&next.0);
            if bytes > MAX_ENTRY_BYTES {
                carried = Some(next);
                break;
            }
            group.push(next);
        }
        // Intents take the leader's lease time (see `LeaseClock`). On a member that
        // does not lead nothing is appended, so the stamp is never used.
        let term = raft.metrics().borrow().current_term;
        for (cmd, _) in &mut group {
            if let Some(ms) = cmd.lease_ms_mut() {
                *ms = clock.now(term);
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            submit(&raft, group).await;
            drop(slot);
        });
    }
}

/// Appends `group` as one entry and answers each waiting caller.
async fn submit(raft: &Raft<TypeConfig>, group: Vec<Waiting>) {
    let (cmds, replies): (Vec<Command>, Vec<oneshot::Sender<Answer>>) = group.into_iter().unzip();
    let n = cmds.len();
    let proposal = match <[Command; 1]>::try_from(cmds) {
        Ok([one]) => Proposal::One(one),
        Err(cmds) => Proposal::Many(cmds),
    };
    match raft.client_write(proposal).await {
        Ok(resp) if resp.data.0.len() == n => {
            let index = resp.log_id.index;
            for (applied, reply) in resp.data.0.into_iter().zip(replies) {
                let _ = reply.send(Ok(Some((applied, index))));
            }
        }
        Ok(resp) => {
            let e = format!("{} outcomes for {n} commands", resp.data.0.len());
            for reply in replies {
                let _ = reply.send(Err(IndexError::Replication(e.clone())));
            }
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            for reply in replies {
                let _ = reply.send(Ok(None));
            }
        }
        Err(e) => {
            let e = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(IndexError::Replication(e.clone())));
            }
        }
    }
}

/// The length of `cmd` in JSON, as the log and the network write it.
fn json_len(cmd: &Command) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, cmd) {
        Ok(()) => count.0,
        // Not serializable: it fails on its own in an entry of its own.
        Err(_) => MAX_ENTRY_BYTES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unlink(key: &str) -> Command {
        Command::Unlink {
            key: key.as_bytes().to_vec(),
            now_ms: 7,
        }
    }

    #[test]
    fn a_bare_command_reads_as_one_and_groups_round_trip() {
        // An entry written before batching: the command itself.
        let old = serde_json::to_vec(&unlink("/a")).unwrap();
        match serde_json::from_slice::<Proposal>(&old).unwrap() {
            Proposal::One(cmd) => assert_eq!(cmd, unlink("/a")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            serde_json::to_vec(&Proposal::One(unlink("/a"))).unwrap(),
            old
        );
        let many = Proposal::Many(vec![unlink("/a"), unlink("/b")]);
        let back: Proposal = serde_json::from_slice(&serde_json::to_vec(&many).unwrap()).unwrap();
        assert_eq!(back.into_commands(), vec![unlink("/a"), unlink("/b")]);
    }

    fn clock(seed: Option<u64>) -> LeaseClock {
        LeaseClock {
            seed: Box::new(move || seed),
            base: None,
            last: 0,
        }
    }

    #[test]
    fn the_lease_clock_continues_the_replicated_value_not_the_wall_clock() {
        // A leader whose wall clock is far ahead (or behind) of the stamps already
        // in the index continues from those, so intents it finds keep their age.
        let replicated = 1_000_000;
        let mut c = clock(Some(replicated));
        let first = c.now(7);
        assert!((replicated..replicated + 1_000).contains(&first), "{first}");
        assert!(c.now(7) >= first);
        // A new term re-reads the seed but never goes back.
        let mut behind = clock(Some(10));
        let a = behind.now(1);
        assert!(a < 1_000, "{a}");
        behind.seed = Box::new(|| Some(5));
        assert!(behind.now(2) >= a);
        // Without a replicated value (a new cluster) it starts at the wall clock.
        let mut fresh = clock(None);
        let now = crate::clock::now_ms();
        assert!(fresh.now(1).abs_diff(now) < 60_000);
    }

    #[test]
    fn intents_are_stamped_by_the_lease_clock_only() {
        let mut begin = Command::Begin {
            key: b"/k".to_vec(),
            volumes: vec![],
            now_ms: 5,
            owner: 1,
            replace: false,
        };
        *begin.lease_ms_mut().unwrap() = 9;
        assert!(matches!(begin, Command::Begin { now_ms: 9, .. }));
        assert!(unlink("/a").lease_ms_mut().is_none());
    }

    #[test]
    fn json_len_is_the_serialized_length() {
        let cmd = unlink("/some/key");
        assert_eq!(json_len(&cmd), serde_json::to_vec(&cmd).unwrap().len());
    }
}
