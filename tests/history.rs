//! Unit tests of the linearizability checker (`tests/common/history.rs`) on known
//! histories: linearizable ones it must accept, and violations it must reject with an
//! explanation naming the key and the operations involved.

mod common;

use std::time::{Duration, Instant};

use common::history::{check, History, Op, Operation, Outcome, Ret, ValueId, Violation};

const BUDGET: u64 = 1_000_000;

/// A history written by hand: times in ms after a common start.
struct H {
    start: Instant,
    ops: Vec<Operation>,
}

impl H {
    fn new() -> H {
        H {
            start: Instant::now(),
            ops: Vec::new(),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// An operation on `key` from `inv` to `ret` (ms) with outcome `out`; `Unknown`
    /// operations get no response time.
    fn op(&mut self, client: usize, key: &str, op: Op, inv: u64, ret: u64, out: Outcome) -> &mut H {
        let returned = (out != Outcome::Unknown).then(|| self.at(ret));
        self.ops.push(Operation {
            client,
            node: 1,
            key: key.to_owned(),
            op,
            invoked: self.at(inv),
            returned,
            outcome: out,
        });
        self
    }

    fn put(&mut self, c: usize, v: ValueId, inv: u64, ret: u64, r: Ret) -> &mut H {
        self.op(c, "/k", Op::Put(v), inv, ret, Outcome::Ok(r))
    }

    fn get(&mut self, c: usize, inv: u64, ret: u64, r: Ret) -> &mut H {
        self.op(c, "/k", Op::Get, inv, ret, Outcome::Ok(r))
    }

    fn del(&mut self, c: usize, inv: u64, ret: u64, r: Ret) -> &mut H {
        self.op(c, "/k", Op::Delete, inv, ret, Outcome::Ok(r))
    }

    fn unknown(&mut self, c: usize, op: Op, inv: u64) -> &mut H {
        self.op(c, "/k", op, inv, 0, Outcome::Unknown)
    }

    fn failed(&mut self, c: usize, op: Op, inv: u64, ret: u64) -> &mut H {
        self.op(c, "/k", op, inv, ret, Outcome::Failed)
    }

    fn check(&self) -> Result<common::history::CheckStats, Violation> {
        check(&self.ops, self.start, BUDGET)
    }

    #[track_caller]
    fn ok(&self) {
        if let Err(v) = self.check() {
            panic!("a linearizable history was rejected: {v}");
        }
    }

    /// Asserts a violation on `/k` and returns its explanation.
    #[track_caller]
    fn bad(&self) -> String {
        match self.check() {
            Err(Violation::NotLinearizable { key, explanation }) => {
                assert_eq!(key, "/k");
                explanation
            }
            other => panic!("a non-linearizable history was not rejected: {other:?}"),
        }
    }
}

use Ret::*;

#[test]
fn sequential_history_is_linearizable() {
    H::new()
        .get(0, 0, 1, Absent)
        .del(0, 2, 3, NotFound)
        .put(0, 1, 4, 5, Created)
        .put(1, 2, 6, 7, Exists)
        .get(1, 8, 9, Value(1))
        .del(0, 10, 11, Deleted)
        .get(1, 12, 13, Absent)
        .put(1, 3, 14, 15, Created)
        .get(0, 16, 17, Value(3))
        .ok();
}

#[test]
fn empty_history_is_linearizable() {
    let stats = H::new().check().unwrap();
    assert_eq!(stats.keys, 0);
}

#[test]
fn stale_read_after_201() {
    let why = H::new().put(0, 1, 0, 1, Created).get(1, 2, 3, Absent).bad();
    assert!(
        why.contains("PUT v1 → 201") && why.contains("GET → 404 absent"),
        "{why}"
    );
}

#[test]
fn stale_read_of_an_overwritten_value() {
    H::new()
        .put(0, 1, 0, 1, Created)
        .del(0, 2, 3, Deleted)
        .put(0, 2, 4, 5, Created)
        .get(1, 6, 7, Value(1))
        .bad();
}

#[test]
fn lost_write_final_read_absent() {
    // A 201, nothing else touches the key, and a later read finds nothing.
    H::new()
        .put(0, 1, 0, 1, Created)
        .get(2, 10, 20, Absent)
        .bad();
}

#[test]
fn lost_write_second_create_without_delete() {
    // Two creates in sequence: the first must have been lost.
    H::new()
        .put(0, 1, 0, 1, Created)
        .put(1, 2, 2, 3, Created)
        .bad();
}

#[test]
fn read_of_a_value_never_written() {
    let why = H::new().get(0, 0, 1, Value(9)).bad();
    assert!(why.contains("GET → v9"), "{why}");
}

#[test]
fn read_of_a_value_written_to_another_key() {
    let mut h = H::new();
    h.op(0, "/other", Op::Put(1), 0, 1, Outcome::Ok(Created))
        .get(1, 2, 3, Value(1));
    h.bad();
}

#[test]
fn read_of_a_value_refused_with_403() {
    H::new()
        .put(0, 1, 0, 1, Created)
        .put(1, 2, 2, 3, Exists)
        .get(0, 4, 5, Value(2))
        .bad();
}

#[test]
fn read_of_a_deleted_value() {
    let why = H::new()
        .put(0, 1, 0, 1, Created)
        .del(1, 2, 3, Deleted)
        .get(2, 4, 5, Value(1))
        .bad();
    assert!(
        why.contains("held nothing") && why.contains("GET → v1"),
        "{why}"
    );
    assert!(why.contains("were written (earlier) by"), "{why}");
    assert!(why.contains("PUT v1 → 201"), "{why}");
}

#[test]
fn delete_of_a_present_key_answering_404() {
    H::new()
        .put(0, 1, 0, 1, Created)
        .del(1, 2, 3, NotFound)
        .bad();
}

#[test]
fn delete_of_an_absent_key_answering_204() {
    H::new().del(0, 0, 1, Deleted).bad();
}

#[test]
fn put_answering_exists_on_an_absent_key() {
    H::new().put(0, 1, 0, 1, Exists).bad();
}

#[test]
fn concurrent_put_and_reads_are_fine() {
    // The PUT takes effect somewhere in [0, 10]: a read may see it before, the next
    // read after.
    H::new()
        .put(0, 1, 0, 10, Created)
        .get(1, 1, 2, Absent)
        .get(1, 3, 4, Value(1))
        .get(2, 5, 6, Value(1))
        .get(2, 11, 12, Value(1))
        .ok();
}

#[test]
fn concurrent_reads_cannot_go_back_in_time() {
    // Seen, then not seen, while only a PUT is in flight.
    H::new()
        .put(0, 1, 0, 10, Created)
        .get(1, 1, 2, Value(1))
        .get(1, 3, 4, Absent)
        .bad();
}

#[test]
fn overlapping_reads_may_be_ordered_either_way() {
    // Two reads overlapping each other and the PUT: either order is fine.
    H::new()
        .put(0, 1, 0, 10, Created)
        .get(1, 1, 8, Value(1))
        .get(2, 2, 9, Absent)
        .ok();
}

#[test]
fn concurrent_delete_and_reads() {
    H::new()
        .put(0, 1, 0, 1, Created)
        .del(1, 2, 10, Deleted)
        .get(2, 3, 4, Value(1))
        .get(2, 5, 6, Absent)
        .get(3, 7, 8, Absent)
        .ok();
    H::new()
        .put(0, 1, 0, 1, Created)
        .del(1, 2, 10, Deleted)
        .get(2, 3, 4, Value(1))
        .get(2, 5, 6, Absent)
        .get(3, 7, 8, Value(1))
        .bad();
}

#[test]
fn concurrent_puts_one_wins() {
    H::new()
        .put(0, 1, 0, 10, Created)
        .put(1, 2, 1, 9, Exists)
        .put(2, 3, 2, 8, Exists)
        .get(3, 11, 12, Value(1))
        .ok();
    // Two 201s without a delete between them.
    H::new()
        .put(0, 1, 0, 10, Created)
        .put(1, 2, 1, 9, Created)
        .bad();
    // The 403 came before the winner could have taken effect.
    H::new()
        .put(1, 2, 0, 1, Exists)
        .put(0, 1, 2, 10, Created)
        .bad();
}

#[test]
fn put_delete_put_cycle_under_concurrency() {
    H::new()
        .put(0, 1, 0, 5, Created)
        .del(1, 1, 6, Deleted)
        .put(2, 2, 2, 7, Created)
        .get(3, 8, 9, Value(2))
        .ok();
    // (There, v2 may even have been created first, deleted, then v1 created.) Once
    // v1's creation is answered before the others start, v1 cannot be back.
    H::new()
        .put(0, 1, 0, 1, Created)
        .del(1, 2, 6, Deleted)
        .put(2, 2, 3, 7, Created)
        .get(3, 8, 9, Value(1))
        .bad();
}

#[test]
fn unknown_put_may_have_happened() {
    H::new()
        .unknown(0, Op::Put(1), 0)
        .get(1, 5, 6, Value(1))
        .get(1, 7, 8, Value(1))
        .ok();
}

#[test]
fn unknown_put_may_not_have_happened() {
    H::new()
        .unknown(0, Op::Put(1), 0)
        .get(1, 5, 6, Absent)
        .put(1, 2, 7, 8, Created)
        .get(1, 9, 10, Value(2))
        .ok();
}

#[test]
fn unknown_put_may_happen_late() {
    H::new()
        .unknown(0, Op::Put(1), 0)
        .get(1, 1, 2, Absent)
        .get(1, 3, 4, Absent)
        .get(1, 100, 101, Value(1))
        .ok();
}

#[test]
fn unknown_put_cannot_happen_before_its_invocation() {
    H::new()
        .get(1, 0, 1, Value(1))
        .unknown(0, Op::Put(1), 2)
        .bad();
}

#[test]
fn unknown_put_cannot_happen_twice_or_unhappen() {
    let why = H::new()
        .unknown(0, Op::Put(1), 0)
        .get(1, 2, 3, Value(1))
        .get(1, 4, 5, Absent)
        .bad();
    assert!(why.contains("unknown (may have happened)"), "{why}");
}

#[test]
fn unknown_delete_both_ways() {
    // It happened between the two reads.
    H::new()
        .put(0, 1, 0, 1, Created)
        .unknown(1, Op::Delete, 2)
        .get(2, 3, 4, Value(1))
        .get(2, 5, 6, Absent)
        .ok();
    // It never happened.
    H::new()
        .put(0, 1, 0, 1, Created)
        .unknown(1, Op::Delete, 2)
        .get(2, 3, 4, Value(1))
        .get(2, 50, 60, Value(1))
        .ok();
    // It cannot happen twice.
    H::new()
        .put(0, 1, 0, 1, Created)
        .unknown(1, Op::Delete, 2)
        .get(2, 3, 4, Absent)
        .get(2, 5, 6, Value(1))
        .bad();
}

#[test]
fn failed_operations_never_happened() {
    H::new()
        .failed(0, Op::Put(1), 0, 1)
        .get(1, 2, 3, Value(1))
        .bad();
    H::new()
        .put(0, 1, 0, 1, Created)
        .failed(1, Op::Delete, 2, 3)
        .get(1, 4, 5, Absent)
        .bad();
    H::new()
        .put(0, 1, 0, 1, Created)
        .failed(1, Op::Delete, 2, 3)
        .failed(1, Op::Put(2), 2, 3)
        .get(1, 4, 5, Value(1))
        .ok();
}

#[test]
fn unknown_reads_constrain_nothing() {
    H::new()
        .put(0, 1, 0, 1, Created)
        .unknown(1, Op::Get, 2)
        .get(1, 4, 5, Value(1))
        .ok();
}

#[test]
fn keys_are_checked_independently() {
    let mut h = H::new();
    h.op(0, "/a", Op::Put(1), 0, 10, Outcome::Ok(Created))
        .op(1, "/b", Op::Put(2), 1, 2, Outcome::Ok(Created))
        .op(2, "/a", Op::Get, 3, 4, Outcome::Ok(Absent))
        .op(3, "/b", Op::Get, 3, 4, Outcome::Ok(Value(2)))
        .op(2, "/a", Op::Get, 11, 12, Outcome::Ok(Value(1)));
    let stats = h.check().unwrap();
    assert_eq!(stats.keys, 2);
    assert_eq!(stats.checked, 5);
    // A violation on one key is reported under that key.
    h.op(3, "/b", Op::Get, 20, 21, Outcome::Ok(Absent));
    match h.check() {
        Err(Violation::NotLinearizable { key, .. }) => assert_eq!(key, "/b"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn explanation_is_small_and_names_the_operations() {
    // Lots of harmless traffic, then a stale read: the explanation shows the write it
    // missed and the read, not the rest.
    let mut h = H::new();
    let mut t = 0;
    for v in 1..=10 {
        h.put(0, v, t, t + 1, Created)
            .get(1, t + 2, t + 3, Value(v))
            .del(2, t + 4, t + 5, Deleted);
        t += 10;
    }
    h.put(0, 11, t, t + 1, Created).get(1, t + 2, t + 3, Absent);
    let why = h.bad();
    assert!(why.contains("the key held nothing"), "{why}");
    let lines: Vec<&str> = why.lines().filter(|l| l.contains("client")).collect();
    assert_eq!(lines.len(), 2, "{why}");
    assert!(lines[0].contains("PUT v11 → 201"), "{why}");
    assert!(lines[1].contains("GET → 404 absent"), "{why}");
    // The Display form names the key.
    let v = h.check().unwrap_err();
    assert!(
        v.to_string()
            .starts_with("history of /k is not linearizable"),
        "{v}"
    );
}

#[test]
fn explanation_keeps_the_put_of_a_value_read() {
    let why = H::new()
        .put(0, 1, 0, 1, Created)
        .del(1, 2, 3, Deleted)
        .get(2, 4, 5, Value(1))
        .bad();
    assert!(why.contains("PUT v1"), "{why}");
}

#[test]
fn budget_exhaustion_is_an_error() {
    // Forty writes of unknown outcome, concurrent with everything after them, then a
    // read of a value never written: refuting it means trying every subset of them.
    let mut h = H::new();
    for c in 0..20 {
        h.unknown(c, Op::Put(c as u64 + 1), 0);
        h.unknown(c + 20, Op::Delete, 0);
    }
    h.get(99, 10, 11, Value(1_000));
    match check(&h.ops, h.start, 1_000) {
        Err(Violation::BudgetExhausted { key, ops, budget }) => {
            assert_eq!((key.as_str(), ops, budget), ("/k", 41, 1_000));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn many_unknown_deletes_are_cheap() {
    // Thirty DELETEs of unknown outcome and a few answered operations after them:
    // interchangeable, so the search does not try their subsets.
    let mut h = H::new();
    for c in 0..30 {
        h.unknown(c, Op::Delete, 0);
    }
    h.put(40, 1, 1, 2, Created)
        .get(41, 3, 4, Absent)
        .put(40, 2, 5, 6, Created)
        .get(41, 7, 8, Absent)
        .put(40, 3, 9, 10, Created)
        .get(41, 11, 12, Value(3));
    check(&h.ops, h.start, 10_000).unwrap();
    h.get(41, 13, 14, Value(2));
    assert!(matches!(
        check(&h.ops, h.start, 10_000),
        Err(Violation::NotLinearizable { .. })
    ));
}

/// A random history that is linearizable by construction: every operation takes
/// effect at a random instant inside its interval, in the order of those instants, on
/// a simulated register; some answers are then lost (unknown) or refused (failed,
/// and then not applied at all).
fn random_history(seed: u64, n: usize, clients: usize) -> H {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut h = H::new();
    // (effect instant, client, op, invoked, returned, unknown)
    let mut planned = Vec::new();
    let mut free_at = vec![0u64; clients];
    let mut next_value = 1;
    for _ in 0..n {
        let c = rng.usize(..clients);
        let inv = free_at[c] + rng.u64(0..5);
        let effect = inv + rng.u64(0..20);
        let ret = effect + rng.u64(0..20);
        free_at[c] = ret + 1;
        let op = match rng.u8(0..10) {
            0..=3 => {
                next_value += 1;
                Op::Put(next_value)
            }
            4..=6 => Op::Get,
            _ => Op::Delete,
        };
        let fate = rng.u8(0..20);
        planned.push((effect, c, op, inv, ret, fate));
    }
    planned.sort_by_key(|p| p.0);
    let mut state = None;
    for (_, c, op, inv, ret, fate) in planned {
        if fate == 0 {
            h.failed(c, op, inv, ret);
            continue;
        }
        let answer = match (op, state) {
            (Op::Put(v), None) => {
                state = Some(v);
                Created
            }
            (Op::Put(_), Some(_)) => Exists,
            (Op::Delete, Some(_)) => {
                state = None;
                Deleted
            }
            (Op::Delete, None) => NotFound,
            (Op::Get, Some(v)) => Value(v),
            (Op::Get, None) => Absent,
            (Op::Set(v), _) => {
                state = Some(v);
                Created
            }
            (Op::Remove, _) => {
                state = None;
                Deleted
            }
        };
        if fate == 1 {
            h.unknown(c, op, inv);
        } else {
            h.op(c, "/k", op, inv, ret, Outcome::Ok(answer));
        }
    }
    h
}

#[test]
fn random_linearizable_histories_are_accepted() {
    let mut steps = 0;
    for seed in 0..300 {
        let h = random_history(seed, 64, 8);
        match h.check() {
            Ok(stats) => steps += stats.steps,
            Err(v) => panic!("seed {seed}: {v}"),
        }
    }
    assert!(steps > 300 * 32, "the search did no work: {steps} steps");
}

#[test]
fn random_histories_with_a_bad_final_read_are_rejected() {
    for seed in 0..100 {
        let mut h = random_history(seed, 64, 8);
        let end = h.ops.iter().filter_map(|o| o.returned).max().unwrap();
        let end = end.duration_since(h.start).as_millis() as u64 + 1;
        // A value never written.
        h.get(99, end, end + 1, Value(1_000_000));
        let why = h.bad();
        assert!(why.contains("GET → v1000000"), "seed {seed}: {why}");
    }
}

#[test]
fn random_histories_with_a_stale_final_read_are_rejected() {
    for seed in 0..100 {
        let mut h = random_history(seed, 64, 8);
        let end = h.ops.iter().filter_map(|o| o.returned).max().unwrap();
        let end = end.duration_since(h.start).as_millis() as u64 + 1;
        // An acknowledged value created earlier, read after a newer 201 (if that 201
        // was itself possible): whatever the unknown operations did, it cannot be
        // back.
        let Some(old) = h.ops.iter().find_map(|o| match (o.op, o.outcome) {
            (Op::Put(v), Outcome::Ok(Created)) => Some(v),
            _ => None,
        }) else {
            continue;
        };
        h.put(99, 1_000_001, end, end + 1, Created)
            .get(98, end + 2, end + 3, Value(old));
        h.bad();
    }
}

#[test]
fn recorder_records_from_many_threads() {
    let history = History::new();
    std::thread::scope(|s| {
        for c in 0..8 {
            let history = history.clone();
            s.spawn(move || {
                for i in 0..50u64 {
                    let key = format!("/t{c}");
                    let v = c as u64 * 1000 + i;
                    history
                        .begin(c, 1, &key, Op::Put(v))
                        .end(Outcome::Ok(Created));
                    history
                        .begin(c, 1, &key, Op::Get)
                        .end(Outcome::Ok(Value(v)));
                    history
                        .begin(c, 1, &key, Op::Delete)
                        .end(Outcome::Ok(Deleted));
                    // Dropped without an answer: unknown.
                    drop(history.begin(c, 1, &key, Op::Get));
                }
            });
        }
    });
    let ops = history.operations();
    assert_eq!(ops.len(), 8 * 50 * 4);
    assert_eq!(
        ops.iter().filter(|o| o.outcome == Outcome::Unknown).count(),
        8 * 50
    );
    assert!(ops
        .iter()
        .all(|o| o.returned.is_some() == (o.outcome != Outcome::Unknown)));
    let stats = history.check(BUDGET).unwrap();
    assert_eq!((stats.keys, stats.checked), (8, 8 * 50 * 3));
    // A read of a deleted value, recorded the same way, is caught.
    history
        .begin(0, 1, "/t0", Op::Get)
        .end(Outcome::Ok(Value(0)));
    assert!(matches!(
        history.check(BUDGET),
        Err(Violation::NotLinearizable { .. })
    ));
}

/// The file form of a history (what the nemesis suite records) keeps everything the
/// checker needs: a lost write, a stale read and a read of a value never committed are
/// still caught after a round trip through JSON lines, and a good history still passes.
#[test]
fn recorded_histories_are_checked_from_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let round_trip = |h: &H| {
        let history = History::new();
        for op in &h.ops {
            let mut op = op.clone();
            // Re-based on the new history's start, as a recorder would have it.
            op.invoked = history.start() + (op.invoked - h.start);
            op.returned = op.returned.map(|r| history.start() + (r - h.start));
            history.push(op);
        }
        let path = dir.path().join("h.jsonl");
        history.write_jsonl(&path).unwrap();
        History::read_jsonl(&path).unwrap()
    };
    // A lost write: 201, then a later read finds nothing.
    let mut lost = H::new();
    lost.put(1, 1, 0, 10, Ret::Created)
        .get(2, 20, 30, Ret::Absent);
    // A stale read: a delete answered, then a read still sees the value.
    let mut stale = H::new();
    stale
        .put(1, 1, 0, 10, Ret::Created)
        .del(1, 20, 30, Ret::Deleted)
        .get(2, 40, 50, Ret::Value(1));
    // A read of a value whose write was refused (never committed).
    let mut phantom = H::new();
    phantom
        .put(1, 1, 0, 10, Ret::Created)
        .put(2, 2, 20, 30, Ret::Exists)
        .get(3, 40, 50, Ret::Value(2));
    for (name, h) in [
        ("lost write", &lost),
        ("stale read", &stale),
        ("phantom", &phantom),
    ] {
        assert!(h.check().is_err(), "{name}: the in-memory history passes");
        let back = round_trip(h);
        assert_eq!(back.operations().len(), h.ops.len());
        assert!(
            matches!(back.check(BUDGET), Err(Violation::NotLinearizable { .. })),
            "{name}: the recorded history passed the checker"
        );
    }
    let mut good = H::new();
    good.put(1, 1, 0, 10, Ret::Created)
        .unknown(2, Op::Delete, 15)
        .get(3, 20, 30, Ret::Value(1));
    assert!(round_trip(&good).check(BUDGET).is_ok());
}

/// S3's semantics (an overwriting PUT, an idempotent DELETE): concurrent overwrites may
/// be read in either order, but a read may not go back to a value overwritten before
/// it began, nor find a value after a DELETE that was answered before it began.
#[test]
fn overwrites_and_idempotent_deletes() {
    let mut ok = H::new();
    ok.op(1, "/k", Op::Set(1), 0, 10, Outcome::Ok(Ret::Created))
        .op(2, "/k", Op::Set(2), 5, 15, Outcome::Ok(Ret::Created))
        .get(3, 20, 25, Ret::Value(2))
        .op(1, "/k", Op::Remove, 30, 40, Outcome::Ok(Ret::Deleted))
        .op(2, "/k", Op::Remove, 45, 50, Outcome::Ok(Ret::Deleted))
        .get(3, 55, 60, Ret::Absent);
    ok.ok();
    let mut back_in_time = H::new();
    back_in_time
        .op(1, "/k", Op::Set(1), 0, 10, Outcome::Ok(Ret::Created))
        .op(2, "/k", Op::Set(2), 20, 30, Outcome::Ok(Ret::Created))
        .get(3, 40, 50, Ret::Value(1));
    back_in_time.bad();
    let mut resurrected = H::new();
    resurrected
        .op(1, "/k", Op::Set(1), 0, 10, Outcome::Ok(Ret::Created))
        .op(2, "/k", Op::Remove, 20, 30, Outcome::Ok(Ret::Deleted))
        .get(3, 40, 50, Ret::Value(1));
    resurrected.bad();
}

/// An S3 overwrite of unknown outcome either happened or did not: it never leaves the
/// key absent (issue 25: the old value survives a failed overwrite) — nor may an
/// acknowledged or a refused one.
#[test]
fn an_abandoned_overwrite_never_leaves_the_key_absent() {
    let mut abandoned = H::new();
    abandoned
        .op(1, "/k", Op::Set(1), 0, 10, Outcome::Ok(Ret::Created))
        .op(2, "/k", Op::Set(2), 20, 0, Outcome::Unknown)
        .get(3, 40, 50, Ret::Absent);
    abandoned.bad();
    let mut either = H::new();
    either
        .op(1, "/k", Op::Set(1), 0, 10, Outcome::Ok(Ret::Created))
        .op(2, "/k", Op::Set(2), 20, 0, Outcome::Unknown)
        .get(3, 40, 50, Ret::Value(1))
        .get(3, 60, 70, Ret::Value(2));
    either.ok();
    let mut lost = H::new();
    lost.op(1, "/k", Op::Set(1), 0, 10, Outcome::Ok(Ret::Created))
        .get(3, 40, 50, Ret::Absent);
    lost.bad();
    let mut refused = H::new();
    refused
        .op(1, "/k", Op::Set(1), 0, 10, Outcome::Ok(Ret::Created))
        .op(2, "/k", Op::Set(2), 20, 30, Outcome::Failed)
        .get(3, 40, 50, Ret::Absent);
    refused.bad();
}
