//! A history of client requests and a linearizability checker for it.
//!
//! **Recording.** [`History`] is shared by every client of a test (it is `Sync`). Each
//! request is [`History::begin`]-ed just before it is sent and [`Pending::end`]-ed with
//! what the client saw: [`Outcome::Ok`] (the server answered, and the answer says what
//! happened), [`Outcome::Failed`] (definitely not applied: refused before anything
//! happened, e.g. connection refused or 409) or [`Outcome::Unknown`] (timeout, 5xx,
//! broken connection: it may or may not have taken effect, now or later). A `Pending`
//! dropped without `end` records `Unknown`.
//!
//! **Model.** Every key is an independent register, initially absent, with hoard's
//! semantics: `Put(v)` on an absent key stores `v` (201, [`Ret::Created`]) and on a
//! present key changes nothing (403, [`Ret::Exists`]); `Delete` removes a present value
//! (204, [`Ret::Deleted`]) or answers 404 ([`Ret::NotFound`]); `Get` returns the value
//! ([`Ret::Value`]) or [`Ret::Absent`]. Value ids are unique per PUT, so a read names the
//! write it saw.
//!
//! **Checking** ([`check`]). Linearizability is compositional (Herlihy & Wing's
//! locality, "P-compositionality" in Porcupine), so each key is checked alone. Per key,
//! a Wing & Gong search as in Porcupine: repeatedly pick an operation that may take
//! effect next — not yet linearized, and invoked no later than the earliest response
//! among the operations not yet linearized — apply it to the model, require the model's
//! answer to equal the one recorded, and backtrack on a mismatch; configurations
//! already explored, (set of linearized operations, register value), are memoized.
//! `Unknown` operations have no response time (infinity) and accept any answer, so the
//! search may linearize them anywhere after their invocation or last (which is the same
//! as never). `Failed` operations and `Unknown` reads constrain nothing and are left
//! out. Each key's search has a step budget: exhausting it is an error, never a pass.
//!
//! Three prunings keep the search small: an operation whose recorded answer leaves the
//! register unchanged (a read, a 403, a 404) is linearized as soon as it may be and
//! matches, without branching (moving it earlier loses no solution); an unknown
//! operation is never linearized where it would change nothing; and of the unknown
//! DELETEs that may take effect, only the earliest-invoked one is tried (they are
//! interchangeable). Unknown PUTs still multiply the search (each carries its own
//! value), so tests keep their number per key small.
//!
//! On a violation the report names the key and a small set of its operations that
//! cannot be linearized (see [`explain`]): the history is cut at the first answer that
//! cannot be explained, everything before the latest quiescent point is summarized by
//! the value(s) the key must have held then, and operations not needed for the
//! contradiction are dropped.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A value id: unique per PUT of a test.
pub type ValueId = u64;

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// PUT of the value with this id.
    Put(ValueId),
    /// GET (or HEAD).
    Get,
    /// DELETE.
    Delete,
    /// An overwriting PUT of the value with this id (S3): stores it whatever the key
    /// held, answering [`Ret::Created`].
    Set(ValueId),
    /// An idempotent DELETE (S3): removes any value, answering [`Ret::Deleted`] even
    /// on an absent key.
    Remove,
}

impl Op {
    /// The value a write stores.
    pub fn value(self) -> Option<ValueId> {
        match self {
            Op::Put(v) | Op::Set(v) => Some(v),
            _ => None,
        }
    }
}

/// What a request that took effect answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    /// PUT: 201.
    Created,
    /// PUT: 403, the key is present.
    Exists,
    /// DELETE: 204.
    Deleted,
    /// DELETE: 404.
    NotFound,
    /// GET: the value with this id.
    Value(ValueId),
    /// GET: 404.
    Absent,
}

/// What the client saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// An answer that tells what happened.
    Ok(Ret),
    /// Definitely not applied (refused before anything happened).
    Failed,
    /// May or may not have been applied, at any time after the invocation.
    Unknown,
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The client that sent it.
    pub client: usize,
    /// The server it was sent to (for reports; not used by the checker).
    pub node: u64,
    /// The key.
    pub key: String,
    /// What it asked for.
    pub op: Op,
    /// When it was sent.
    pub invoked: Instant,
    /// When the answer came; `None` for `Unknown` (and never for `Ok`).
    pub returned: Option<Instant>,
    /// What the client saw.
    pub outcome: Outcome,
}

/// A thread-safe recorder of operations.
#[derive(Debug, Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Operation>>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history; times in reports are relative to now.
    pub fn new() -> Self {
        History {
            start: Instant::now(),
            ops: Arc::default(),
        }
    }

    /// An empty history whose times count from `start` (a recording made elsewhere,
    /// all of whose operations came after `start`).
    pub fn starting_at(start: Instant) -> Self {
        History {
            start,
            ops: Arc::default(),
        }
    }

    /// The instant reports count from.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Records the invocation of `op` on `key` by `client` at `node`, now.
    pub fn begin(&self, client: usize, node: u64, key: &str, op: Op) -> Pending {
        Pending {
            history: self.clone(),
            op: Some(Operation {
                client,
                node,
                key: key.to_owned(),
                op,
                invoked: Instant::now(),
                returned: None,
                outcome: Outcome::Unknown,
            }),
        }
    }

    /// Adds a complete operation (for tests of the checker).
    pub fn push(&self, op: Operation) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// A copy of every operation recorded so far (pending ones are not included).
    pub fn operations(&self) -> Vec<Operation> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Writes every operation as one JSON line (client, node, key, op, value id,
    /// invoked and returned in ms since the history began, outcome), for the record.
    pub fn write_jsonl(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for o in self.operations() {
            let ms = |t: Instant| t.saturating_duration_since(self.start).as_secs_f64() * 1e3;
            let (op, value) = match o.op {
                Op::Put(v) => ("put", Some(v)),
                Op::Get => ("get", None),
                Op::Delete => ("delete", None),
                Op::Set(v) => ("set", Some(v)),
                Op::Remove => ("remove", None),
            };
            let outcome = match o.outcome {
                Outcome::Ok(r) => format!("{r:?}"),
                Outcome::Failed => "failed".into(),
                Outcome::Unknown => "unknown".into(),
            };
            let line = serde_json::json!({
                "client": o.client, "node": o.node, "key": o.key, "op": op, "value": value,
                "invoked_ms": ms(o.invoked), "returned_ms": o.returned.map(ms), "outcome": outcome,
            });
            writeln!(out, "{line}")?;
        }
        out.flush()
    }

    /// Reads a history written by [`History::write_jsonl`] (times relative to a new
    /// start), for checking a recorded run again.
    pub fn read_jsonl(path: &std::path::Path) -> std::io::Result<History> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        let history = History::new();
        let at = |ms: f64| history.start + std::time::Duration::from_secs_f64(ms / 1e3);
        for line in std::fs::read_to_string(path)?.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
            let (op, outcome) = parse_line(&v).ok_or_else(|| bad(&format!("bad line {line}")))?;
            history.push(Operation {
                client: v["client"].as_u64().unwrap_or_default() as usize,
                node: v["node"].as_u64().unwrap_or_default(),
                key: v["key"].as_str().ok_or_else(|| bad("no key"))?.to_owned(),
                op,
                invoked: at(v["invoked_ms"]
                    .as_f64()
                    .ok_or_else(|| bad("no invoked_ms"))?),
                returned: v["returned_ms"].as_f64().map(at),
                outcome,
            });
        }
        Ok(history)
    }

    /// Checks the whole history with `budget` search steps per key.
    pub fn check(&self, budget: u64) -> Result<CheckStats, Violation> {
        check(&self.operations(), self.start, budget)
    }
}

/// The operation and outcome of one recorded line (`op`, `value`, `outcome` as
/// [`History::write_jsonl`] writes them); `None` if they are not of that form.
pub fn parse_line(v: &serde_json::Value) -> Option<(Op, Outcome)> {
    let op = match (v["op"].as_str()?, v["value"].as_u64()) {
        ("put", Some(id)) => Op::Put(id),
        ("get", _) => Op::Get,
        ("delete", _) => Op::Delete,
        ("set", Some(id)) => Op::Set(id),
        ("remove", _) => Op::Remove,
        _ => return None,
    };
    let outcome = match v["outcome"].as_str()? {
        "failed" => Outcome::Failed,
        "unknown" => Outcome::Unknown,
        "Created" => Outcome::Ok(Ret::Created),
        "Exists" => Outcome::Ok(Ret::Exists),
        "Deleted" => Outcome::Ok(Ret::Deleted),
        "NotFound" => Outcome::Ok(Ret::NotFound),
        "Absent" => Outcome::Ok(Ret::Absent),
        other => Outcome::Ok(Ret::Value(
            other
                .strip_prefix("Value(")?
                .strip_suffix(')')?
                .parse()
                .ok()?,
        )),
    };
    Some((op, outcome))
}

/// An operation in flight; [`Pending::end`] records its outcome.
#[derive(Debug)]
pub struct Pending {
    history: History,
    op: Option<Operation>,
}

impl Pending {
    /// Records the outcome, now. `Unknown` outcomes get no response time.
    pub fn end(mut self, outcome: Outcome) {
        if let Some(mut op) = self.op.take() {
            op.outcome = outcome;
            op.returned = (outcome != Outcome::Unknown).then(Instant::now);
            self.history.push(op);
        }
    }

    /// When it was sent.
    pub fn invoked(&self) -> Instant {
        self.op.as_ref().map(|o| o.invoked).expect("ended")
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(op) = self.op.take() {
            self.history.push(op);
        }
    }
}

/// What a successful check covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckStats {
    /// Keys checked.
    pub keys: usize,
    /// Operations that took part (not `Failed`, not `Unknown` reads).
    pub checked: usize,
    /// Of these, `Unknown` writes.
    pub unknown: usize,
    /// The most operations of one key.
    pub max_per_key: usize,
    /// Search steps, all keys together.
    pub steps: u64,
}

/// Why a history was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// No linearization exists for this key.
    NotLinearizable {
        /// The key.
        key: String,
        /// The operations that cannot be linearized together, one per line.
        explanation: String,
    },
    /// The search for this key ran out of steps: undecided, which is a failure.
    BudgetExhausted {
        /// The key.
        key: String,
        /// Operations of the key.
        ops: usize,
        /// The budget.
        budget: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NotLinearizable { key, explanation } => {
                write!(f, "history of {key} is not linearizable:\n{explanation}")
            }
            Violation::BudgetExhausted { key, ops, budget } => write!(
                f,
                "linearizability of {key} ({ops} operations) undecided after {budget} search steps"
            ),
        }
    }
}

/// Checks every key of `ops` (times in messages relative to `start`), at most `budget`
/// search steps per key (and per explanation step). Keys are checked in order; the
/// first violation is returned.
pub fn check(ops: &[Operation], start: Instant, budget: u64) -> Result<CheckStats, Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut stats = CheckStats::default();
    for (key, key_ops) in by_key {
        let relevant: Vec<&Operation> = key_ops
            .into_iter()
            .filter(|o| match o.outcome {
                Outcome::Failed => false,
                Outcome::Unknown => o.op != Op::Get,
                Outcome::Ok(_) => true,
            })
            .collect();
        let entries: Vec<Entry> = relevant.iter().map(|o| Entry::of(o, start)).collect();
        stats.keys += 1;
        stats.checked += entries.len();
        stats.unknown += entries.iter().filter(|e| e.expect.is_none()).count();
        stats.max_per_key = stats.max_per_key.max(entries.len());
        match search(&entries, budget) {
            Search::Linearizable(steps) => stats.steps += steps,
            Search::Exhausted => {
                return Err(Violation::BudgetExhausted {
                    key: key.to_owned(),
                    ops: entries.len(),
                    budget,
                })
            }
            Search::Impossible => {
                return Err(Violation::NotLinearizable {
                    key: key.to_owned(),
                    explanation: explain(&relevant, &entries, budget, start),
                })
            }
        }
    }
    Ok(stats)
}

/// One operation as the search sees it: times in nanoseconds since the start.
#[derive(Debug, Clone, Copy)]
struct Entry {
    invoked: u64,
    /// `u64::MAX` when unknown.
    returned: u64,
    op: Op,
    /// `None`: any answer is acceptable (unknown outcome).
    expect: Option<Ret>,
}

impl Entry {
    fn of(o: &Operation, start: Instant) -> Entry {
        let ns = |t: Instant| t.saturating_duration_since(start).as_nanos() as u64;
        let expect = match o.outcome {
            Outcome::Ok(r) => Some(r),
            _ => None,
        };
        Entry {
            invoked: ns(o.invoked),
            returned: match (expect, o.returned) {
                (Some(_), Some(t)) => ns(t).max(ns(o.invoked)),
                _ => u64::MAX,
            },
            op: o.op,
            expect,
        }
    }
}

/// The register: applies `op` to `state`, returning the answer and the new state.
fn apply(state: Option<ValueId>, op: Op) -> (Ret, Option<ValueId>) {
    match (op, state) {
        (Op::Put(v), None) => (Ret::Created, Some(v)),
        (Op::Put(_), Some(_)) => (Ret::Exists, state),
        (Op::Delete, Some(_)) => (Ret::Deleted, None),
        (Op::Delete, None) => (Ret::NotFound, None),
        (Op::Get, Some(v)) => (Ret::Value(v), state),
        (Op::Get, None) => (Ret::Absent, None),
        (Op::Set(v), _) => (Ret::Created, Some(v)),
        (Op::Remove, _) => (Ret::Deleted, None),
    }
}

/// Whether an answer leaves the register unchanged whenever it is possible at all:
/// such operations never need to be branched on (see [`Searcher::dfs`]).
fn read_only(ret: Ret) -> bool {
    matches!(
        ret,
        Ret::Exists | Ret::NotFound | Ret::Value(_) | Ret::Absent
    )
}

enum Search {
    /// Found, in this many steps.
    Linearizable(u64),
    /// None exists.
    Impossible,
    /// Ran out of steps.
    Exhausted,
}

/// The Wing & Gong / Porcupine search over one key's operations, from the absent
/// register.
fn search(entries: &[Entry], budget: u64) -> Search {
    let mut s = Searcher::new(entries, budget, false);
    match s.run(None) {
        Some(true) => Search::Linearizable(s.steps),
        Some(false) => Search::Impossible,
        None => Search::Exhausted,
    }
}

struct Searcher<'a> {
    entries: &'a [Entry],
    /// Indices by invocation time.
    order: Vec<usize>,
    memo: HashSet<(Vec<u64>, Option<ValueId>)>,
    steps: u64,
    budget: u64,
    /// When collecting: every register value a complete linearization ends in (the
    /// search then explores everything instead of stopping at the first).
    ends: Option<HashSet<Option<ValueId>>>,
}

impl<'a> Searcher<'a> {
    fn new(entries: &'a [Entry], budget: u64, collect: bool) -> Self {
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&i| (entries[i].invoked, entries[i].returned));
        Searcher {
            entries,
            order,
            memo: HashSet::new(),
            steps: 0,
            budget,
            ends: collect.then(HashSet::new),
        }
    }

    /// From register value `init`: `Some(found)`, `None` when the budget ran out.
    fn run(&mut self, init: Option<ValueId>) -> Option<bool> {
        let mut done = vec![0u64; self.entries.len().div_ceil(64)];
        self.dfs(&mut done, init)
    }

    fn is_done(done: &[u64], i: usize) -> bool {
        done[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(done: &mut [u64], i: usize, on: bool) {
        if on {
            done[i / 64] |= 1 << (i % 64);
        } else {
            done[i / 64] &= !(1 << (i % 64));
        }
    }

    /// The earliest response among the operations not yet linearized: `None` when all
    /// are, `u64::MAX` when only unknown ones are left.
    fn min_ret(&self, done: &[u64]) -> Option<u64> {
        (0..self.entries.len())
            .filter(|&i| !Self::is_done(done, i))
            .map(|i| self.entries[i].returned)
            .min()
    }

    /// Operations that may take effect next: not linearized, invoked no later than
    /// `min_ret`.
    fn candidates(&self, done: &[u64], min_ret: u64) -> impl Iterator<Item = usize> + '_ {
        let done = done.to_vec();
        self.order
            .iter()
            .copied()
            .take_while(move |&i| self.entries[i].invoked <= min_ret)
            .filter(move |&i| !Self::is_done(&done, i))
    }

    fn dfs(&mut self, done: &mut [u64], state: Option<ValueId>) -> Option<bool> {
        // A candidate whose recorded answer is read-only and matches the register
        // can be linearized right now without losing any solution: moving it earlier
        // keeps every real-time constraint (nothing left returned before it was
        // invoked) and the register's history (it changes nothing). So no branching
        // on those.
        let mut greedy = Vec::new();
        while let Some(min_ret) = self.min_ret(done) {
            let next = self.candidates(done, min_ret).find(|&i| {
                let e = self.entries[i];
                e.expect
                    .is_some_and(|want| read_only(want) && apply(state, e.op).0 == want)
            });
            let Some(i) = next else { break };
            Self::set(done, i, true);
            greedy.push(i);
        }
        let found = self.branch(done, state);
        for i in greedy {
            Self::set(done, i, false);
        }
        found
    }

    fn branch(&mut self, done: &mut [u64], state: Option<ValueId>) -> Option<bool> {
        let min_ret = match self.min_ret(done) {
            // Everything is linearized, or only unknown writes are left: they fit
            // last, in any order, with any answers (collecting is only ever done on
            // histories without unknown operations).
            None | Some(u64::MAX) => {
                return match &mut self.ends {
                    Some(ends) => {
                        ends.insert(state);
                        Some(false)
                    }
                    None => Some(true),
                };
            }
            Some(t) => t,
        };
        self.steps += 1;
        if self.steps > self.budget {
            return None;
        }
        if !self.memo.insert((done.to_vec(), state)) {
            return Some(false);
        }
        let candidates: Vec<usize> = self.candidates(done, min_ret).collect();
        let mut unknown_delete_tried = false;
        for i in candidates {
            let e = self.entries[i];
            let (ret, next) = apply(state, e.op);
            if e.expect.is_some_and(|want| want != ret) {
                continue;
            }
            match e.expect {
                // An unknown operation that would change nothing here is better
                // left for later (or never): taking it now only loses options.
                None if next == state => continue,
                // Unknown DELETEs already invoked are interchangeable (any of them
                // stays available later): trying the earliest-invoked one suffices.
                None if matches!(e.op, Op::Delete | Op::Remove) => {
                    if unknown_delete_tried {
                        continue;
                    }
                    unknown_delete_tried = true;
                }
                _ => {}
            }
            Self::set(done, i, true);
            let found = self.dfs(done, next);
            Self::set(done, i, false);
            match found {
                Some(false) => {}
                other => return other,
            }
        }
        Some(false)
    }
}

/// Whether `entries` are definitely not linearizable from any of `inits` (a budget
/// running out counts as "not proven").
fn impossible_from(entries: &[Entry], inits: &[Option<ValueId>], budget: u64) -> bool {
    inits
        .iter()
        .all(|&init| Searcher::new(entries, budget, false).run(init) == Some(false))
}

/// The register values complete linearizations of `entries` (no unknown operations)
/// end in; `None` if the budget ran out.
fn end_states(entries: &[Entry], budget: u64) -> Option<Vec<Option<ValueId>>> {
    let mut s = Searcher::new(entries, budget, true);
    s.run(None)?;
    let mut ends: Vec<Option<ValueId>> = s.ends.unwrap_or_default().into_iter().collect();
    ends.sort();
    Some(ends)
}

/// The history as it stood at time `t`: operations invoked by then, those still
/// without an answer at `t` treated as unknown.
fn truncate(entries: &[Entry], t: u64) -> Vec<Entry> {
    entries
        .iter()
        .filter(|e| e.invoked <= t)
        .map(|&e| {
            if e.returned > t {
                Entry {
                    returned: u64::MAX,
                    expect: None,
                    ..e
                }
            } else {
                e
            }
        })
        .collect()
}

/// The first answer at which `entries` (from `inits`) stop being linearizable: the
/// smallest response time `t` whose [`truncate`]d history is impossible. Histories
/// are prefix-closed, so a binary search finds it. `None` if never (or undecided).
fn fails_at(entries: &[Entry], inits: &[Option<ValueId>], budget: u64) -> Option<u64> {
    let mut times: Vec<u64> = entries
        .iter()
        .map(|e| e.returned)
        .filter(|&t| t != u64::MAX)
        .collect();
    times.sort_unstable();
    times.dedup();
    let bad = |t: u64| impossible_from(&truncate(entries, t), inits, budget);
    let last = *times.last()?;
    if !bad(last) {
        return None;
    }
    let (mut lo, mut hi) = (0, times.len() - 1); // times[hi] is bad
    while lo < hi {
        let mid = (lo + hi) / 2;
        if bad(times[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(times[hi])
}

/// A small set of `ops` (whose entries are `entries`, not linearizable) that shows
/// why, one per line, times in ms since `start`:
///
/// 1. the first answer that cannot be explained, at `t`: the history is cut there
///    (later answers are not needed; operations in flight at `t` count as unknown);
/// 2. the latest quiescent point `q` before it (every earlier answered operation
///    ended before `q`; unknown ones are carried over) after which the key was
///    necessarily absent (else: necessarily held one value): the earlier operations
///    are left out, summarized as "the key held nothing" (or that value), except the
///    PUTs of the values named, shown as context;
/// 3. operations of the rest are dropped one at a time, latest first, as long as
///    the first unexplainable answer stays the same one (so dropping never makes up
///    a different contradiction), keeping the PUT of every value an answer shows.
///
/// Falls back to listing every operation of the key when a search runs out of budget.
fn explain(ops: &[&Operation], entries: &[Entry], budget: u64, start: Instant) -> String {
    let ms = |ns: u64| ns as f64 / 1e6;
    let all: Vec<usize> = (0..entries.len()).collect();
    let fallback = |note: &str| render(ops, &all, &[], None, start, note);
    let Some(t) = fails_at(entries, &[None], budget) else {
        return fallback("(the search ran out of budget while explaining: every operation shown)");
    };
    // Operations invoked by `t`, by invocation; entries as of `t`.
    let mut window: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| entries[i].invoked <= t)
        .collect();
    window.sort_by_key(|&i| (entries[i].invoked, entries[i].returned));
    let at_t = |i: usize| truncate(&entries[i..=i], t)[0];
    // 2. A clean cut: a position k such that every operation before it answered
    //    before operation k was invoked.
    // Operations without an answer (unknown, or in flight at `t`) never end: they do
    // not prevent a cut, and are carried over to the part after it.
    let open = |i: usize| at_t(i).returned == u64::MAX;
    let mut cut = 0;
    let mut inits = vec![None];
    let mut latest_ret = 0u64;
    let mut cuts = Vec::new();
    for (k, &i) in window.iter().enumerate() {
        if k > 0 && latest_ret < entries[i].invoked {
            cuts.push(k);
        }
        if !open(i) {
            latest_ret = latest_ret.max(at_t(i).returned);
        }
    }
    // The latest cut where the answered operations before it leave the key
    // necessarily absent, and the rest (with the open operations) is impossible from
    // there: the story starts at that cut.
    let after_cut = |k: usize| -> Vec<usize> {
        let carried = window[..k].iter().copied().filter(|&i| open(i));
        carried.chain(window[k..].iter().copied()).collect()
    };
    // Failing that, the latest cut where they leave it holding one known value.
    let mut held = None;
    for &k in cuts.iter().rev() {
        let prefix: Vec<Entry> = window[..k]
            .iter()
            .filter(|&&i| !open(i))
            .map(|&i| at_t(i))
            .collect();
        let rest: Vec<Entry> = after_cut(k).iter().map(|&i| at_t(i)).collect();
        let Some(ends) = end_states(&prefix, budget) else {
            continue;
        };
        if ends.len() != 1 || !impossible_from(&rest, &ends, budget) {
            continue;
        }
        if ends == [None] {
            (cut, held) = (k, None);
            break;
        }
        if held.is_none() {
            (cut, held) = (k, Some(ends[0]));
        }
    }
    if let Some(state) = held {
        inits = vec![state];
    }
    // 3. Drop what is not needed, latest first.
    let mut kept: Vec<usize> = after_cut(cut);
    let sub = |kept: &[usize]| kept.iter().map(|&i| at_t(i)).collect::<Vec<Entry>>();
    // `fails_at(trial) == Some(t)`, with two searches instead of a binary search:
    // impossible as of `t`, possible as of the answer before.
    let still_fails_at = |trial: &[Entry], t: u64| {
        let earlier = trial.iter().map(|e| e.returned).filter(|&r| r < t).max();
        impossible_from(&truncate(trial, t), &inits, budget)
            && earlier.is_none_or(|r| {
                Searcher::new(&truncate(trial, r), budget, false).run(inits[0]) == Some(true)
            })
    };
    for pos in (0..kept.len()).rev() {
        let i = kept[pos];
        if entries[i].returned == t {
            continue;
        }
        if let Some(v) = entries[i].op.value() {
            let shown = kept
                .iter()
                .any(|&j| j != i && at_t(j).expect == Some(Ret::Value(v)));
            if shown {
                continue;
            }
        }
        let mut trial = kept.clone();
        trial.remove(pos);
        if still_fails_at(&sub(&trial), t) {
            kept = trial;
        }
    }
    if !still_fails_at(&sub(&kept), t) {
        return fallback("(the explanation could not be reduced: every operation shown)");
    }
    let in_flight: Vec<usize> = kept
        .iter()
        .copied()
        .filter(|&i| entries[i].returned != u64::MAX && entries[i].returned > t)
        .collect();
    // The PUTs, before the cut, of values shown after it.
    let shown_values: Vec<ValueId> = kept
        .iter()
        .filter_map(|&i| match at_t(i).expect {
            Some(Ret::Value(v)) => Some(v),
            _ => None,
        })
        .chain(inits[0])
        .collect();
    let context: Vec<usize> = window[..cut]
        .iter()
        .copied()
        .filter(|&i| !kept.contains(&i))
        .filter(|&i| {
            entries[i]
                .op
                .value()
                .is_some_and(|v| shown_values.contains(&v))
        })
        .collect();
    let before = (cut > 0).then(|| {
        let what = match inits[0] {
            Some(v) => format!("v{v}"),
            None => "nothing".to_owned(),
        };
        format!(
            "  before {:.3} ms the key held {what} (its earlier answered operations all \
             ended by then and leave it so)\n",
            ms(entries[window[cut]].invoked),
        )
    });
    let head = format!(
        "  the answer at {:.3} ms cannot be explained; no linearization exists for:\n",
        ms(t)
    );
    let mut out = render(ops, &kept, &in_flight, before, start, &head);
    if !context.is_empty() {
        out.push_str(&render(
            ops,
            &context,
            &[],
            None,
            start,
            "  where the values named were written (earlier) by:",
        ));
    }
    out
}

/// Lists operations `shown` of `ops`, by invocation, under `head`.
fn render(
    ops: &[&Operation],
    shown: &[usize],
    in_flight: &[usize],
    before: Option<String>,
    start: Instant,
    head: &str,
) -> String {
    let ms = |t: Instant| t.saturating_duration_since(start).as_secs_f64() * 1e3;
    let mut shown = shown.to_vec();
    shown.sort_by_key(|&j| ops[j].invoked);
    let mut out = String::new();
    out.push_str(&before.unwrap_or_default());
    out.push_str(head);
    if !head.ends_with('\n') {
        out.push('\n');
    }
    for j in shown {
        let o = ops[j];
        let what = match o.op {
            Op::Put(v) => format!("PUT v{v}"),
            Op::Get => "GET".to_owned(),
            Op::Delete => "DELETE".to_owned(),
            Op::Set(v) => format!("PUT (overwrite) v{v}"),
            Op::Remove => "DELETE (idempotent)".to_owned(),
        };
        let answer = match o.outcome {
            Outcome::Ok(Ret::Created) => "201".to_owned(),
            Outcome::Ok(Ret::Exists) => "403 exists".to_owned(),
            Outcome::Ok(Ret::Deleted) => "204".to_owned(),
            Outcome::Ok(Ret::NotFound) => "404".to_owned(),
            Outcome::Ok(Ret::Value(v)) => format!("v{v}"),
            Outcome::Ok(Ret::Absent) => "404 absent".to_owned(),
            Outcome::Failed => "failed".to_owned(),
            Outcome::Unknown => "unknown (may have happened)".to_owned(),
        };
        let end = o
            .returned
            .map_or_else(|| "…".to_owned(), |t| format!("{:.3}", ms(t)));
        let note = if in_flight.contains(&j) {
            "  (answered later: counts as in flight)"
        } else {
            ""
        };
        out.push_str(&format!(
            "    client {} at node {}: {what} → {answer}  [{:.3} .. {end}]{note}\n",
            o.client,
            o.node,
            ms(o.invoked),
        ));
    }
    out
}
