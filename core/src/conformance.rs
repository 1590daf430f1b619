//! The state-machine conformance suite: what every [`StateMachine`] must
//! do, as plain functions over a factory, so each backend runs the same
//! scenarios (the SQLite one in `core/tests/conformance.rs`).
//!
//! Each scenario opens fresh state machines through the factory (a new,
//! empty database per call, in the given directory) and panics with a
//! message naming what failed. Its SQL is what SQLite and MySQL both take,
//! and schema changes go in batches of their own (as MySQL needs them).

use std::path::Path;

use deeb_proto::{Statement, Write, WriteBatch};

use crate::sql::{Applied, ApplyError, ErrorClass};
use crate::state_machine::StateMachine;

fn statement(sql: &str) -> Statement {
    Statement { sql: sql.to_string(), ..Statement::default() }
}

/// Runs each request as the leader's batch at `index` (one request per
/// write) and commits it; returns what a follower would apply. A request
/// the state machine runs alone (a schema change, for MySQL) must be the
/// batch's only one: it ends the batch, and the leader applies the entry
/// as every replica does, as the node would.
fn leader_batch<S: StateMachine>(sm: &mut S, index: u64, requests: &[&[&str]]) -> WriteBatch {
    sm.begin_batch(index).expect("begin_batch");
    let mut batch = WriteBatch { proposer: 1, writes: Vec::new(), ..Default::default() };
    for (id, request) in requests.iter().enumerate() {
        let statements: Vec<Statement> = request.iter().map(|sql| statement(sql)).collect();
        if sm.runs_alone(&statements) {
            assert_eq!(requests.len(), 1, "a request run alone is a batch of its own: {request:?}");
        }
        match sm.execute_request(&statements).expect("execute_request") {
            Ok(executed) => batch.writes.push(Write { request_id: id as u64, ops: executed.ops, ..Write::default() }),
            Err(error) => panic!("request {request:?} failed: {error}"),
        }
    }
    let applied = Applied { index, term: 1 };
    if sm.batch_open() {
        sm.commit_batch(applied).expect("commit_batch");
    } else {
        sm.apply_batch(&batch, applied).expect("the leader applies its own entry");
        if let Some(outcomes) = sm.take_outcomes() {
            assert!(outcomes.iter().all(Result::is_ok), "the request ran: {outcomes:?}");
        }
    }
    batch
}

/// Every scenario, in order.
pub fn run_all<S: StateMachine>(dir: &Path, open: &mut dyn FnMut(&Path) -> S) {
    execute_and_apply(dir, open);
    failed_request_leaves_no_trace(dir, open);
    refuses_transaction_control(dir, open);
    rolled_back_batch_is_gone(dir, open);
    snapshot_round_trip(dir, open);
    broken_snapshot_install_keeps_state(dir, open);
    divergence_is_reported(dir, open);
    request_keys_are_replicated(dir, open);
}

/// An idempotency key the leader records with its request's results is
/// recorded alike by a replica applying the entry (equal digests); a batch
/// rolled back forgets it.
pub fn request_keys_are_replicated<S: StateMachine>(dir: &Path, open: &mut dyn FnMut(&Path) -> S) {
    let mut leader = open(&dir.join("keys-leader"));
    let mut follower = open(&dir.join("keys-follower"));
    let create = leader_batch(&mut leader, 1, &[&["CREATE TABLE t(id INTEGER PRIMARY KEY, v VARCHAR(10))"]]);
    follower.apply_batch(&create, Applied { index: 1, term: 1 }).expect("apply");
    leader.begin_batch(2).expect("begin");
    let executed = leader.execute_request(&[statement("INSERT INTO t VALUES (1, 'a')")]).expect("execute");
    let executed = executed.expect("the insert runs");
    leader.record_request("k1", &executed.results).expect("record");
    assert!(leader.recorded_request("k1").expect("lookup").is_some(), "visible in the open batch");
    leader.rollback_batch().expect("rollback");
    assert_eq!(leader.recorded_request("k1").expect("lookup"), None, "a rolled-back batch forgets its keys");
    leader.begin_batch(2).expect("begin");
    let executed = leader.execute_request(&[statement("INSERT INTO t VALUES (1, 'a')")]).expect("execute");
    let executed = executed.expect("the insert runs");
    leader.record_request("k1", &executed.results).expect("record");
    leader.commit_batch(Applied { index: 2, term: 1 }).expect("commit");
    let write = Write {
        request_id: 1,
        ops: executed.ops,
        idempotency_key: "k1".into(),
        results: executed.results.clone(),
        ..Write::default()
    };
    follower
        .apply_batch(
            &WriteBatch { proposer: 1, writes: vec![write], ..Default::default() },
            Applied { index: 2, term: 1 },
        )
        .expect("apply");
    let expected = Some((2, executed.results));
    assert_eq!(leader.recorded_request("k1").expect("lookup"), expected);
    assert_eq!(follower.recorded_request("k1").expect("lookup"), expected, "the replica recorded it alike");
    assert_eq!(leader.digest().expect("digest"), follower.digest().expect("digest"));
}

/// A leader's batch applied on a follower gives equal digests and applied
/// indexes; an empty entry and a membership change move the index.
pub fn execute_and_apply<S: StateMachine>(dir: &Path, open: &mut dyn FnMut(&Path) -> S) {
    let mut leader = open(&dir.join("execute-leader"));
    let mut follower = open(&dir.join("execute-follower"));
    assert_eq!(leader.applied(), Applied::default(), "a new database has applied nothing");
    let create = leader_batch(&mut leader, 1, &[&["CREATE TABLE t(id INTEGER PRIMARY KEY, v VARCHAR(10))"]]);
    follower.apply_batch(&create, Applied { index: 1, term: 1 }).expect("the follower applies a schema change");
    let batch =
        leader_batch(&mut leader, 2, &[&["INSERT INTO t VALUES (1, 'a'), (2, 'b')"], &["DELETE FROM t WHERE id = 3"]]);
    follower.apply_batch(&batch, Applied { index: 2, term: 1 }).expect("the follower applies the leader's batch");
    assert_eq!(leader.applied(), Applied { index: 2, term: 1 });
    assert_eq!(follower.applied(), leader.applied());
    assert_eq!(leader.digest().expect("digest"), follower.digest().expect("digest"), "digests after a batch");
    for sm in [&mut leader, &mut follower] {
        sm.apply_empty(Applied { index: 3, term: 2 }).expect("apply_empty");
        sm.apply_membership(Applied { index: 4, term: 2 }, b"conf", &[(7, Some("n7:1".into()))])
            .expect("apply_membership");
        assert_eq!(sm.applied(), Applied { index: 4, term: 2 });
        assert_eq!(sm.conf_state().expect("conf_state"), Some(b"conf".to_vec()));
        assert_eq!(sm.members().expect("members"), vec![(7, "n7:1".to_string())]);
    }
    assert_eq!(leader.digest().expect("digest"), follower.digest().expect("digest"), "digests after membership");
    let other = leader_batch(&mut leader, 5, &[&["UPDATE t SET v = 'c' WHERE id = 1"]]);
    assert_ne!(leader.digest().expect("digest"), follower.digest().expect("digest"), "a digest sees a change");
    follower.apply_batch(&other, Applied { index: 5, term: 2 }).expect("apply");
    assert_eq!(leader.digest().expect("digest"), follower.digest().expect("digest"));
}

/// A request that fails is the client's error; the requests around it in
/// the batch keep their effects and the failed one leaves none.
pub fn failed_request_leaves_no_trace<S: StateMachine>(dir: &Path, open: &mut dyn FnMut(&Path) -> S) {
    let mut sm = open(&dir.join("failed"));
    let mut reference = open(&dir.join("failed-reference"));
    leader_batch(&mut sm, 1, &[&["CREATE TABLE t(id INTEGER PRIMARY KEY)"]]);
    leader_batch(&mut reference, 1, &[&["CREATE TABLE t(id INTEGER PRIMARY KEY)"]]);
    sm.begin_batch(2).expect("begin");
    let ok = sm.execute_request(&[statement("INSERT INTO t VALUES (1)")]).expect("execute");
    assert!(ok.is_ok(), "{ok:?}");
    let failed = sm
        .execute_request(&[statement("INSERT INTO t VALUES (2)"), statement("INSERT INTO t VALUES (1)")])
        .expect("execute");
    let error = failed.expect_err("a duplicate key fails the request");
    assert_eq!(error.statement_index, 1, "the error names the failing statement");
    assert_eq!(error.class, ErrorClass::Constraint, "a duplicate key is a constraint error: {error:?}");
    let syntax = sm.execute_request(&[statement("INSERT INTO t VALUES (")]).expect("execute");
    assert_eq!(syntax.expect_err("a syntax error").class, ErrorClass::Sql);
    assert!(sm.batch_open(), "an ordinary failure leaves the batch open");
    sm.commit_batch(Applied { index: 2, term: 1 }).expect("commit");
    leader_batch(&mut reference, 2, &[&["INSERT INTO t VALUES (1)"]]);
    assert_eq!(sm.digest().expect("digest"), reference.digest().expect("digest"), "only the good request stayed");
}

/// A request may not control the transaction it runs in.
pub fn refuses_transaction_control<S: StateMachine>(dir: &Path, open: &mut dyn FnMut(&Path) -> S) {
    let mut sm = open(&dir.join("refuses"));
    sm.begin_batch(1).expect("begin");
    for sql in ["BEGIN", "COMMIT", "ROLLBACK"] {
        let result = sm.execute_request(&[statement(sql)]).expect("execute");
        assert_eq!(result.map_err(|error| error.class), Err(ErrorClass::Refused), "{sql} must be refused");
    }
    sm.rollback_batch().expect("rollback");
    assert!(!sm.batch_open());
}

/// A batch dropped on the leader (its proposal failed) leaves nothing.
pub fn rolled_back_batch_is_gone<S: StateMachine>(dir: &Path, open: &mut dyn FnMut(&Path) -> S) {
    let mut sm = open(&dir.join("rolled-back"));
    leader_batch(&mut sm, 1, &[&["CREATE TABLE t(x INTEGER PRIMARY KEY)"]]);
    let before = sm.digest().expect("digest");
    sm.begin_batch(2).expect("begin");
    sm.execute_request(&[statement("INSERT INTO t VALUES (1)")]).expect("execute").expect("ok");
    sm.rollback_batch().expect("rollback");
    assert_eq!(sm.digest().expect("digest"), before);
    assert_eq!(sm.applied(), Applied { index: 1, term: 1 });
}

/// A snapshot installed on an empty replica gives the same digest and
/// applied index, and the replica goes on applying.
pub fn snapshot_round_trip<S: StateMachine>(dir: &Path, open: &mut dyn FnMut(&Path) -> S) {
    let mut leader = open(&dir.join("snapshot-leader"));
    leader_batch(&mut leader, 1, &[&["CREATE TABLE t(k VARCHAR(10) PRIMARY KEY, v INTEGER)"]]);
    leader_batch(&mut leader, 2, &[&["INSERT INTO t VALUES ('a', 1)"]]);
    let file = dir.join("snapshot-file");
    let taken = leader.create_snapshot(&file).expect("create_snapshot");
    assert_eq!(taken, leader.applied(), "a snapshot reflects the applied entry");
    let mut follower = open(&dir.join("snapshot-follower"));
    let installed = follower.install_snapshot(&file).expect("install_snapshot");
    assert_eq!(installed, taken);
    assert_eq!(follower.applied(), taken);
    assert_eq!(follower.digest().expect("digest"), leader.digest().expect("digest"));
    let next = leader_batch(&mut leader, 3, &[&["INSERT INTO t VALUES ('b', 2)"]]);
    follower.apply_batch(&next, Applied { index: 3, term: 1 }).expect("apply after install");
    assert_eq!(follower.digest().expect("digest"), leader.digest().expect("digest"));
}

/// A snapshot file cut short (a crash while it was written or received)
/// is refused and the replica keeps its state.
pub fn broken_snapshot_install_keeps_state<S: StateMachine>(dir: &Path, open: &mut dyn FnMut(&Path) -> S) {
    let mut leader = open(&dir.join("broken-leader"));
    leader_batch(&mut leader, 1, &[&["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]]);
    let large = format!("INSERT INTO t VALUES (1, '{}')", "x".repeat(60_000));
    leader_batch(&mut leader, 2, &[&[large.as_str()]]);
    let file = dir.join("broken-file");
    leader.create_snapshot(&file).expect("create_snapshot");
    let bytes = std::fs::read(&file).expect("read snapshot");
    std::fs::write(&file, &bytes[..bytes.len() / 2]).expect("cut snapshot");
    let mut replica = open(&dir.join("broken-replica"));
    leader_batch(&mut replica, 1, &[&["CREATE TABLE other(y INTEGER PRIMARY KEY)"]]);
    let before = (replica.applied(), replica.digest().expect("digest"));
    assert!(replica.install_snapshot(&file).is_err(), "a cut snapshot must be refused");
    assert_eq!((replica.applied(), replica.digest().expect("digest")), before, "the old state is intact");
}

/// An entry that does not fit the replica's data is divergence, and
/// nothing of it is applied.
pub fn divergence_is_reported<S: StateMachine>(dir: &Path, open: &mut dyn FnMut(&Path) -> S) {
    let mut leader = open(&dir.join("divergence-leader"));
    let mut follower = open(&dir.join("divergence-follower"));
    leader_batch(&mut leader, 1, &[&["CREATE TABLE t(id INTEGER PRIMARY KEY)"]]);
    // The follower skipped entry 1: it has no table t.
    follower.apply_empty(Applied { index: 1, term: 1 }).expect("apply_empty");
    let batch = leader_batch(&mut leader, 2, &[&["INSERT INTO t VALUES (1)"]]);
    let before = follower.digest().expect("digest");
    match follower.apply_batch(&batch, Applied { index: 2, term: 1 }) {
        Err(ApplyError::Divergence { index: 2, .. }) => {}
        other => panic!("expected divergence at index 2, got {other:?}"),
    }
    assert_eq!(follower.applied(), Applied { index: 1, term: 1 });
    assert_eq!(follower.digest().expect("digest"), before);
}
