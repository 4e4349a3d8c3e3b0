//! The writer thread: the only code that writes the file after open. It
//! takes every pending append, writes them with one call, syncs once (group
//! commit), indexes the records and answers; after a failed write it cuts
//! the file back and probes until writing works again.

use super::error::{IndexError, WriteError};
use super::*;

/// Most append calls the writer commits with one sync.
pub(super) const MAX_GROUP_CALLS: usize = 1024;
/// Bytes after which the writer stops growing a group.
pub(super) const MAX_GROUP_BYTES: usize = 8 << 20;
/// A group buffer grown above this is released after use.
pub(super) const KEEP_BUFFER_BYTES: usize = 16 << 20;

/// A message to the writer thread.
pub(super) enum Cmd {
    Append(AppendReq),
    /// Check whether writing works again after a failed write.
    Probe,
    /// Rebuild a game's index from the log: a read found it wrong.
    Reindex(GameId, oneshot::Sender<Result<(), IndexError>>),
    Close(oneshot::Sender<()>),
}

/// One `append` call, already encoded.
pub(super) struct AppendReq {
    pub(super) bytes: Vec<u8>,
    pub(super) records: usize,
    pub(super) placed: Vec<PendingRecord>,
    pub(super) reply: oneshot::Sender<Result<(), StoreError>>,
}

impl AppendReq {
    /// Encodes `records` into one request, and where its answer arrives.
    pub(super) fn new(
        records: &[Record],
    ) -> Result<(AppendReq, oneshot::Receiver<Result<(), StoreError>>), StoreError> {
        let (bytes, placed) = encode(records)?;
        let (reply, answer) = oneshot::channel();
        let req = AppendReq {
            bytes,
            records: records.len(),
            placed,
            reply,
        };
        Ok((req, answer))
    }
}

/// The writer thread's state: the only code that writes the file after open.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) file: Arc<File>,
    /// Length of the file up to the last acknowledged record.
    pub(super) len: u64,
    /// A failed write could not be truncated away; retry before writing again.
    pub(super) dirty_tail: bool,
    /// Bytes of the last failed write, until a write or probe succeeds.
    pub(super) failed_bytes: Option<usize>,
    pub(super) fsync: bool,
    /// Reused buffer holding one group's bytes.
    pub(super) buf: Vec<u8>,
    /// Writes the index entries of each group.
    pub(super) index: IndexWriter,
}

impl Writer {
    /// Commits groups until closed or every sender is gone.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut group = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            let mut bytes = 0;
            let mut close = None;
            let mut probe = false;
            let mut reindex = Vec::new();
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Append(req) => {
                        bytes += req.bytes.len();
                        group.push(req);
                    }
                    Cmd::Probe => probe = true,
                    Cmd::Reindex(game, reply) => reindex.push((game, reply)),
                    Cmd::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
                if group.len() >= MAX_GROUP_CALLS || bytes >= MAX_GROUP_BYTES {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if !group.is_empty() {
                self.commit(&mut group);
            }
            if probe {
                self.probe();
            }
            for (game, reply) in reindex {
                let _ = reply.send(self.reindex(game));
            }
            if let Some(done) = close {
                rx.close();
                while let Ok(cmd) = rx.try_recv() {
                    match cmd {
                        Cmd::Append(req) => {
                            let _ = req.reply.send(Err(closed()));
                        }
                        Cmd::Probe => {}
                        Cmd::Reindex(_, reply) => {
                            let _ = reply.send(Err(IndexError::Closed));
                        }
                        Cmd::Close(done) => {
                            let _ = done.send(());
                        }
                    }
                }
                self.shutdown();
                let _ = done.send(());
                return;
            }
        }
        self.shutdown();
    }

    /// Answers and removes each request whose records would break their
    /// game's sequence (one creation, then seqs 1, 2, 3...): the index places
    /// records by seq, and replay would refuse such a log. The game actors
    /// never ask for that; this keeps a bug from writing a log that cannot
    /// be opened again.
    pub(super) fn refuse_out_of_sequence(&self, group: &mut Vec<AppendReq>) {
        let tails = self
            .shared
            .games
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut pending: HashMap<GameId, Tail> = HashMap::new();
        group.retain_mut(|req| {
            let mut staged: Vec<(&GameId, Tail)> = Vec::new();
            for r in &req.placed {
                let now = staged
                    .iter()
                    .rev()
                    .find(|(g, _)| **g == r.game)
                    .map(|&(_, t)| t)
                    .or_else(|| pending.get(&r.game).copied())
                    .or_else(|| tails.get(&r.game).copied())
                    .unwrap_or_default();
                let next = match r.seq {
                    0 if !now.created && now.last_seq == 0 => Tail {
                        created: true,
                        last_seq: 0,
                    },
                    seq if seq > 0 && seq == now.last_seq + 1 => Tail {
                        created: now.created,
                        last_seq: seq,
                    },
                    seq => {
                        let why = if seq == 0 {
                            format!("game {} is already created", r.game)
                        } else {
                            format!(
                                "game {}: seq {seq} does not follow seq {}",
                                r.game, now.last_seq
                            )
                        };
                        tracing::error!(reason = %why, "refusing an append that would break a game's sequence in the event log");
                        let reply = std::mem::replace(&mut req.reply, oneshot::channel().0);
                        let _ = reply.send(Err(StoreError::Unavailable(format!(
                            "refusing records out of sequence: {why}"
                        ))));
                        return false;
                    }
                };
                staged.push((&r.game, next));
            }
            for (game, tail) in staged {
                pending.insert(game.clone(), tail);
            }
            true
        });
    }

    /// Writes and syncs one group, then answers every caller in it.
    pub(super) fn commit(&mut self, group: &mut Vec<AppendReq>) {
        self.refuse_out_of_sequence(group);
        if group.is_empty() {
            return;
        }
        let records: usize = group.iter().map(|r| r.records).sum();
        metrics::histogram!("scorehub_log_group_records").record(records as f64);
        match self.write_group(group) {
            Ok(()) => {
                {
                    let mut games = self
                        .shared
                        .games
                        .write()
                        .unwrap_or_else(PoisonError::into_inner);
                    for r in group.iter().flat_map(|req| &req.placed) {
                        let tail = match games.get_mut(&r.game) {
                            Some(t) => t,
                            None => games.entry(r.game.clone()).or_default(),
                        };
                        if r.seq == 0 {
                            tail.created = true;
                        }
                        tail.last_seq = tail.last_seq.max(r.seq);
                    }
                }
                self.len += self.buf.len() as u64;
                self.failed_bytes = None;
                self.shared.set_health(None);
                for req in group.drain(..) {
                    let _ = req.reply.send(Ok(()));
                }
            }
            Err(e) => {
                let reason = e.to_string();
                metrics::counter!("scorehub_log_errors_total").increment(1);
                tracing::error!(file = %self.shared.path.display(), records, %reason, "event log write failed; the group was refused");
                self.failed_bytes = Some(group.iter().map(|r| r.bytes.len()).sum());
                self.shared.set_health(Some(reason.clone()));
                for req in group.drain(..) {
                    let _ = req.reply.send(Err(StoreError::Unavailable(reason.clone())));
                }
            }
        }
        if self.buf.capacity() > KEEP_BUFFER_BYTES {
            self.buf = Vec::new();
        }
    }

    /// Cuts off what an earlier failed write left after the last good record.
    pub(super) fn clean_tail(&mut self) -> Result<(), WriteError> {
        if self.dirty_tail {
            self.cut_back().map_err(|source| WriteError::CutBack {
                path: self.shared.path.clone(),
                len: self.len,
                after: "an earlier failed write",
                source,
            })?;
            self.dirty_tail = false;
        }
        Ok(())
    }

    /// Writes the group at the end of the log with one call and syncs it once,
    /// after its index entries. On failure the file is cut back to its
    /// previous length (entries past a game's last seq are never read).
    pub(super) fn write_group(&mut self, group: &[AppendReq]) -> Result<(), WriteError> {
        self.clean_tail()?;
        self.write_index(group)?;
        self.buf.clear();
        for req in group {
            self.buf.extend_from_slice(&req.bytes);
        }
        let started = Instant::now();
        let result = self.file.write_all_at(&self.buf, self.len).and_then(|()| {
            if self.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        metrics::histogram!("scorehub_log_sync_seconds").record(started.elapsed().as_secs_f64());
        if let Err(source) = result {
            if let Err(te) = self.cut_back() {
                tracing::warn!(file = %self.shared.path.display(), len = self.len, error = %te, "cannot cut the failed write off the event log yet; will retry before the next write");
                self.dirty_tail = true;
            }
            return Err(WriteError::Log {
                path: self.shared.path.clone(),
                source,
            });
        }
        Ok(())
    }

    /// Writes the index entries of a group about to be written at `self.len`:
    /// one positional write per run of consecutive seqs of a game.
    pub(super) fn write_index(&mut self, group: &[AppendReq]) -> Result<(), WriteError> {
        let mut placed = Vec::with_capacity(group.iter().map(|r| r.placed.len()).sum());
        let mut rel = self.len;
        for req in group {
            for r in &req.placed {
                let entry = Entry {
                    offset: rel + r.rel,
                    len: r.len,
                    crc: r.crc,
                };
                placed.push((&r.game, r.seq, entry));
            }
            rel += req.bytes.len() as u64;
        }
        // Stable: a seq written twice in a group keeps its later entry.
        placed.sort_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)));
        let mut run = Vec::new();
        let mut rest = placed.as_slice();
        while let Some(&(game, first, _)) = rest.first() {
            let n = rest
                .iter()
                .zip(first..)
                .take_while(|((g, seq, _), want)| *g == game && *seq == *want)
                .count();
            run.clear();
            run.extend(rest[..n].iter().map(|&(_, _, entry)| entry));
            self.index
                .write(game, first, &run)
                .map_err(|source| WriteError::Index {
                    log: self.shared.path.clone(),
                    index: self.index.dir().path_of(game),
                    source,
                })?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Rebuilds `game`'s index from the log as written so far.
    pub(super) fn reindex(&mut self, game: GameId) -> Result<(), IndexError> {
        self.index.forget(&game);
        let games = HashSet::from([game]);
        rebuild_index(&self.shared.file, self.len, self.index.dir(), &games)
    }

    /// After a failed write, checks whether one of the same size (at most
    /// [`MAX_GROUP_BYTES`]) would work now; clears the health reason if so.
    pub(super) fn probe(&mut self) {
        self.shared.probe_queued.store(false, Ordering::Release);
        let Some(bytes) = self.failed_bytes else {
            return;
        };
        match self.try_probe(bytes.min(MAX_GROUP_BYTES)) {
            Ok(()) => {
                tracing::info!(file = %self.shared.path.display(), "the event log is writable again");
                self.failed_bytes = None;
                self.shared.set_health(None);
            }
            Err(e) => self.shared.set_health(Some(e.to_string())),
        }
    }

    /// Writes `bytes` zero bytes after the last good record, syncs them, and
    /// cuts them off again.
    pub(super) fn try_probe(&mut self, bytes: usize) -> Result<(), WriteError> {
        self.clean_tail()?;
        self.buf.clear();
        self.buf.resize(bytes, 0);
        let written = self.file.write_all_at(&self.buf, self.len).and_then(|()| {
            if self.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        let cut = self.cut_back();
        if cut.is_err() {
            self.dirty_tail = true;
        }
        written.map_err(|source| WriteError::Log {
            path: self.shared.path.clone(),
            source,
        })?;
        cut.map_err(|source| WriteError::CutBack {
            path: self.shared.path.clone(),
            len: self.len,
            after: "checking that it is writable",
            source,
        })
    }

    /// Cuts the file back to the last acknowledged record, durably.
    pub(super) fn cut_back(&self) -> io::Result<()> {
        self.file.set_len(self.len)?;
        if self.fsync {
            self.file.sync_all()?;
        }
        Ok(())
    }

    /// Before the thread ends: cuts off what a failed write left (those
    /// records were refused, so the next start must not replay them), then
    /// syncs.
    pub(super) fn shutdown(&mut self) {
        if let Err(reason) = self.clean_tail() {
            tracing::error!(file = %self.shared.path.display(), %reason, "stopping with a failed write still at the end of the event log; its records were refused but the next start will replay them");
        }
        if let Err(e) = self.file.sync_all() {
            tracing::error!(file = %self.shared.path.display(), error = %e, "final sync of the event log failed");
        }
    }
}
