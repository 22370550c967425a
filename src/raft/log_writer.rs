//! The Raft log's writer thread: appends (grouped, one fsync per group), votes,
//! truncations and purges, in the order openraft asked for them (see [`super`]).

use std::fs::File;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

use openraft::{LogId, RaftLogId};

use super::super::segments::{self, HEADER};
use super::{io_err, lock, Done, Loc, Op, Shared, SyncOp, ALLOCATE_BYTES};

/// Encoded entries, and what to call once they are durable.
type Append = (Vec<(LogId<u64>, Vec<u8>)>, Done);

/// The segment the writer appends to.
pub(super) struct Segment {
    pub(super) first: u64,
    pub(super) file: Arc<File>,
    /// End of its records.
    pub(super) len: u64,
    /// Length of the file (zeros after `len`).
    pub(super) allocated: u64,
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) current: Option<Segment>,
    /// A segment this long takes no more appends.
    pub(super) segment_bytes: u64,
}

impl Writer {
    /// Runs until every [`LogStore`] is gone. Takes all queued operations at once and
    /// carries them out in order: consecutive appends with one fsync, then each vote,
    /// truncation or purge on its own. Openraft awaits a truncation or a purge before
    /// appending again.
    pub(super) fn run(mut self, rx: &mpsc::Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            let mut ops = vec![first];
            ops.extend(rx.try_iter());
            let mut appends = Vec::new();
            for op in ops {
                match op {
                    Op::Append { entries, done } => appends.push((entries, done)),
                    Op::Sync(op, reply) => {
                        self.flush(std::mem::take(&mut appends));
                        let _ = reply.send(self.sync_op(op).map_err(io_err));
                    }
                }
            }
            self.flush(appends);
        }
    }

    /// Writes `appends` to the current segment (a new one when there is none or it is
    /// full), fsyncs it, and calls back.
    fn flush(&mut self, appends: Vec<Append>) {
        let Some(first) = appends.iter().flat_map(|(e, _)| e).next().map(|e| e.0) else {
            for (_, done) in appends {
                done(Ok(()));
            }
            return;
        };
        let result = self.write(appends.iter().flat_map(|(e, _)| e), first.index);
        // The entries are on disk (fsync) before openraft hears they are.
        for (_, done) in appends {
            done(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string())),
            );
        }
    }

    fn write<'a>(
        &mut self,
        entries: impl Iterator<Item = &'a (LogId<u64>, Vec<u8>)>,
        first: u64,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self
            .current
            .as_ref()
            .is_none_or(|s| s.len >= self.segment_bytes)
        {
            let path = segments::segment_path(&self.dir, first);
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            segments::sync_dir(&self.dir)?;
            let file = Arc::new(file);
            lock(&self.shared).files.insert(first, Arc::clone(&file));
            self.current = Some(Segment {
                first,
                file,
                len: 0,
                allocated: 0,
            });
        }
        let Some(seg) = self.current.as_mut() else {
            return Err(std::io::Error::other("no segment to append to"));
        };
        let mut buf = Vec::new();
        let mut locs = Vec::new();
        for (log_id, bytes) in entries {
            let offset = seg.len + buf.len() as u64 + HEADER;
            segments::encode_record(bytes, &mut buf);
            locs.push(Loc {
                log_id: *log_id,
                segment: seg.first,
                offset,
                len: u32::try_from(bytes.len()).map_err(std::io::Error::other)?,
            });
        }
        let end = seg.len + buf.len() as u64;
        let written = (|| {
            if end > seg.allocated {
                // Zeros ahead (made durable by the same fsync as the records).
                let to = end.next_multiple_of(ALLOCATE_BYTES);
                let zeros = vec![0u8; (to - seg.allocated).min(1 << 20) as usize];
                let mut at = seg.allocated;
                while at < to {
                    let n = (to - at).min(zeros.len() as u64);
                    seg.file.write_all_at(&zeros[..n as usize], at)?;
                    at += n;
                }
                seg.allocated = to;
            }
            seg.file.write_all_at(&buf, seg.len)?;
            seg.file.sync_data()
        })();
        if let Err(e) = written {
            // Nothing of this group counts; cut what may have been written.
            let _ = seg.file.set_len(seg.len);
            seg.allocated = seg.len;
            return Err(e);
        }
        seg.len += buf.len() as u64;
        let mut shared = lock(&self.shared);
        for loc in locs {
            let index = loc.log_id.index;
            shared.locs.insert(index, loc);
            if let Some(c) = shared.mem.get_mut(&index) {
                // Still the entry written (not replaced by a later append).
                if *c.entry.get_log_id() == loc.log_id {
                    c.durable = true;
                }
            }
        }
        shared.evict();
        Ok(())
    }

    fn sync_op(&mut self, op: SyncOp) -> std::io::Result<()> {
        match op {
            SyncOp::Vote(vote) => {
                let meta = {
                    let mut shared = lock(&self.shared);
                    shared.meta.vote = Some(vote);
                    shared.meta.clone()
                };
                segments::write_meta(&self.dir, &meta)
            }
            SyncOp::Truncate(index) => self.truncate(index),
            SyncOp::Purge(log_id) => self.purge(log_id),
        }
    }

    /// Removes entries from `index` on: segments that start there or later are
    /// deleted, newest first (a crash midway leaves a log without gaps), then the
    /// segment holding `index` is cut.
    fn truncate(&mut self, index: u64) -> std::io::Result<()> {
        let (doomed, cut) = {
            let mut shared = lock(&self.shared);
            let cut = shared
                .locs
                .get(&index)
                .map(|l| (l.segment, l.offset - HEADER));
            shared.locs.split_off(&index);
            let removed = shared.mem.split_off(&index);
            shared.mem_bytes -= removed.values().map(|c| c.bytes).sum::<usize>();
            let doomed: Vec<u64> = shared.files.range(index..).map(|(f, _)| *f).collect();
            for f in &doomed {
                shared.files.remove(f);
            }
            (doomed, cut)
        };
        let newest_first: Vec<u64> = doomed.iter().rev().copied().collect();
        self.remove_segments(&newest_first)?;
        if let Some((segment, offset)) = cut.filter(|(s, _)| !doomed.contains(s)) {
            let file = lock(&self.shared).files.get(&segment).cloned();
            if let Some(file) = file {
                file.set_len(offset)?;
                file.sync_all()?;
                // Appends go on right there.
                self.current = Some(Segment {
                    first: segment,
                    file,
                    len: offset,
                    allocated: offset,
                });
            }
        } else if self.current.is_none() {
            // Appends go on in the last segment left, if any.
            let last = lock(&self.shared)
                .files
                .last_key_value()
                .map(|(f, file)| (*f, Arc::clone(file)));
            if let Some((first, file)) = last {
                // Its records end where a scan stops (zeros or a torn append after).
                let (len, torn) = segments::scan(&file, |_| {})?;
                if torn {
                    file.set_len(len)?;
                    file.sync_all()?;
                }
                let allocated = file.metadata()?.len();
                self.current = Some(Segment {
                    first,
                    file,
                    len,
                    allocated,
                });
            }
        }
        Ok(())
    }

    /// Records `log_id` as purged (durably), forgets the entries up to it, and deletes
    /// the segments that hold nothing after it.
    fn purge(&mut self, log_id: LogId<u64>) -> std::io::Result<()> {
        let meta = {
            let mut shared = lock(&self.shared);
            shared.meta.purged = Some(log_id);
            shared.meta.clone()
        };
        segments::write_meta(&self.dir, &meta)?;
        let doomed = {
            let mut shared = lock(&self.shared);
            shared.locs = shared.locs.split_off(&(log_id.index + 1));
            let kept = shared.mem.split_off(&(log_id.index + 1));
            let removed = std::mem::replace(&mut shared.mem, kept);
            shared.mem_bytes -= removed.values().map(|c| c.bytes).sum::<usize>();
            // A segment is needed while an entry after `log_id` may be in it: when it is
            // the last one, or the next one starts after `log_id + 1`.
            let firsts: Vec<u64> = shared.files.keys().copied().collect();
            let mut doomed = Vec::new();
            for (i, first) in firsts.iter().enumerate() {
                let all_purged = match firsts.get(i + 1) {
                    Some(next) => *next <= log_id.index + 1,
                    None => shared.locs.is_empty() && shared.mem.is_empty(),
                };
                if all_purged {
                    shared.files.remove(first);
                    doomed.push(*first);
                }
            }
            doomed
        };
        self.remove_segments(&doomed)?;
        Ok(())
    }

    /// Deletes the segments starting at `doomed`, in that order, makes the deletions
    /// durable, and forgets the current segment if it was one of them.
    fn remove_segments(&mut self, doomed: &[u64]) -> std::io::Result<()> {
        for first in doomed {
            std::fs::remove_file(segments::segment_path(&self.dir, *first))?;
        }
        if !doomed.is_empty() {
            segments::sync_dir(&self.dir)?;
        }
        if self
            .current
            .as_ref()
            .is_some_and(|s| doomed.contains(&s.first))
        {
            self.current = None;
        }
        Ok(())
    }
}
