//! The state-machine conformance suite (`deeb_core::conformance`) against
//! the SQLite backend, and against a broken backend to show the suite fails.

use std::path::Path;

use deeb_core::conformance;
use deeb_core::sql::SqliteStateMachine;

fn open(path: &Path) -> SqliteStateMachine {
    std::fs::create_dir_all(path).expect("directory");
    SqliteStateMachine::open(&path.join("state.db"), 7).expect("open")
}

#[test]
fn sqlite_backend_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::run_all(dir.path(), &mut open);
}

/// A backend that acknowledges committed batches without applying them.
struct Forgetful(SqliteStateMachine);

impl deeb_core::StateMachine for Forgetful {
    type Readers = <SqliteStateMachine as deeb_core::StateMachine>::Readers;
    type Snapshots = <SqliteStateMachine as deeb_core::StateMachine>::Snapshots;
    fn set_limits(&mut self, limits: deeb_core::sql::WriteLimits) {
        self.0.set_limits(limits)
    }
    fn set_clock(&mut self, clock: deeb_core::sql::Clock) {
        self.0.set_clock(clock)
    }
    fn applied(&self) -> deeb_core::sql::Applied {
        self.0.applied()
    }
    fn conf_state(&self) -> Result<Option<Vec<u8>>, deeb_core::sql::SqlError> {
        self.0.conf_state()
    }
    fn members(&self) -> Result<Vec<(u64, String)>, deeb_core::sql::SqlError> {
        self.0.members()
    }
    fn begin_batch(&mut self, next_index: u64) -> Result<(), deeb_core::sql::SqlError> {
        self.0.begin_batch(next_index)
    }
    fn execute_request(
        &mut self,
        statements: &[deeb_proto::Statement],
    ) -> Result<Result<deeb_core::sql::Executed, deeb_core::sql::RequestError>, deeb_core::sql::SqlError> {
        self.0.execute_request(statements)
    }
    fn record_request(
        &mut self,
        key: &str,
        results: &[deeb_proto::StatementResult],
    ) -> Result<(), deeb_core::sql::SqlError> {
        self.0.record_request(key, results)
    }
    fn recorded_request(
        &self,
        key: &str,
    ) -> Result<Option<(u64, Vec<deeb_proto::StatementResult>)>, deeb_core::sql::SqlError> {
        self.0.recorded_request(key)
    }
    fn batch_open(&self) -> bool {
        self.0.batch_open()
    }
    fn batch_time_spent(&self) -> bool {
        self.0.batch_time_spent()
    }
    fn commit_batch(&mut self, applied: deeb_core::sql::Applied) -> Result<(), deeb_core::sql::SqlError> {
        self.0.commit_batch(applied)
    }
    fn rollback_batch(&mut self) -> Result<(), deeb_core::sql::SqlError> {
        self.0.rollback_batch()
    }
    fn apply_batch(
        &mut self,
        _batch: &deeb_proto::WriteBatch,
        applied: deeb_core::sql::Applied,
    ) -> Result<(), deeb_core::sql::ApplyError> {
        // The bug: the entry is recorded as applied, its changes are not.
        Ok(self.0.apply_empty(applied)?)
    }
    fn apply_empty(&mut self, applied: deeb_core::sql::Applied) -> Result<(), deeb_core::sql::SqlError> {
        self.0.apply_empty(applied)
    }
    fn apply_membership(
        &mut self,
        applied: deeb_core::sql::Applied,
        conf_state: &[u8],
        members: &[(u64, Option<String>)],
    ) -> Result<(), deeb_core::sql::SqlError> {
        self.0.apply_membership(applied, conf_state, members)
    }
    fn snapshot_taker(&self) -> Result<Self::Snapshots, deeb_core::sql::SqlError> {
        deeb_core::StateMachine::snapshot_taker(&self.0)
    }
    fn readers(&self) -> Self::Readers {
        self.0.readers()
    }
    fn create_snapshot(&self, dest: &Path) -> Result<deeb_core::sql::Applied, deeb_core::sql::SqlError> {
        self.0.create_snapshot(dest)
    }
    fn install_snapshot(&mut self, src: &Path) -> Result<deeb_core::sql::Applied, deeb_core::sql::SqlError> {
        self.0.install_snapshot(src)
    }
}

#[test]
fn suite_fails_a_backend_that_forgets_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let result = std::panic::catch_unwind(|| {
        conformance::run_all(dir.path(), &mut |path| Forgetful(open(path)));
    });
    assert!(result.is_err(), "the suite passed a backend that applies nothing");
}
