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

impl Batcher {
    /// Starts the task that feeds `raft`; it ends when the batcher is dropped.
    pub fn start(raft: Raft<TypeConfig>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
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

async fn run(raft: Raft<TypeConfig>, mut rx: mpsc::UnboundedReceiver<Waiting>) {
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

    #[test]
    fn json_len_is_the_serialized_length() {
        let cmd = unlink("/some/key");
        assert_eq!(json_len(&cmd), serde_json::to_vec(&cmd).unwrap().len());
    }
}
