//! The system under test, seen by the runner: deeb's 3-node harness
//! cluster ([`DeebTarget`]) or, in the checker's own tests, a plain SQLite
//! with injected faults ([`super::fake::FakeTarget`]).

use std::cell::Cell as FlagCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::Duration;

use deeb_core::disk::MemDisk;
use deeb_core::sql::Reader;
use deeb_core::{Node, WriteError};
use deeb_proto::Statement;

use super::answer::{sorted, Answer, Cell, Rows, StatementResult};
use super::dump::{dump, Dump};
use super::finding::Kind;
use crate::harness::{Cluster, Reply};

/// A failure that ends the program (a node stopped, a wait ran out).
#[derive(Clone, Debug)]
pub struct Broken {
    pub kind: Kind,
    pub detail: String,
}

/// All replicas after they converged.
pub struct Settled {
    /// (node, applied index, digest) of every running node.
    pub digests: Vec<(u64, u64, u64)>,
    /// The dump of every node, lowest id first.
    pub dumps: Vec<(u64, Dump)>,
    /// `PRAGMA quick_check`'s answer on every node ("ok" if well formed).
    pub checks: Vec<(u64, String)>,
}

/// `PRAGMA quick_check`'s answer on a database: "ok" if it is well formed.
pub fn quick_check(conn: &rusqlite::Connection) -> String {
    let verdicts = conn.prepare("PRAGMA quick_check").and_then(|mut statement| {
        statement.query_map([], |row| row.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()
    });
    verdicts.map_or_else(|error| error.to_string(), |verdicts| verdicts.join("; "))
}

pub trait Target {
    /// Sends one write request and waits for its answer and for every
    /// replica to apply it.
    fn write(&mut self, statements: &[String]) -> Result<Answer, Broken>;
    /// Runs a query on every node (after they converge): (node, rows).
    fn read(&mut self, sql: &str) -> Result<Vec<(u64, Rows)>, Broken>;
    /// Waits for the replicas to converge and reports their state.
    fn settle(&mut self) -> Result<Settled, Broken>;
}

/// deeb: a fresh 3-node cluster of the deterministic harness.
pub struct DeebTarget {
    cluster: Cluster,
}

impl DeebTarget {
    pub fn new(seed: u64) -> Result<DeebTarget, Broken> {
        guarded(|| {
            let mut cluster = Cluster::new(NODES, seed);
            cluster.wait_leader();
            DeebTarget { cluster }
        })
    }

    fn submit(&mut self, statements: &[String]) -> Answer {
        let leader = self.cluster.wait_leader();
        let statements: Vec<Statement> = statements.iter().map(|sql| crate::harness::statement(sql)).collect();
        let token = match self.cluster.submit_write(leader, statements) {
            Ok(token) => token,
            Err(error) => return Answer::Failed { statement_index: None, message: error.to_string() },
        };
        match self.cluster.wait_reply(token, WRITE_WAIT) {
            Reply::Write(Ok(outcome)) => Answer::Done(
                outcome
                    .results
                    .iter()
                    .map(|r| {
                        let mut returned: Vec<Vec<Cell>> =
                            r.rows.iter().map(|row| row.values.iter().map(Cell::from_proto).collect()).collect();
                        returned.sort();
                        StatementResult { rows_affected: r.rows_affected, last_insert_id: r.last_insert_id, returned }
                    })
                    .collect(),
            ),
            Reply::Write(Err(WriteError::Statement(error))) => {
                Answer::Failed { statement_index: Some(error.statement_index), message: error.message }
            }
            Reply::Write(Err(error)) => Answer::Failed { statement_index: None, message: error.to_string() },
            other => Answer::Failed { statement_index: None, message: format!("unexpected reply {other:?}") },
        }
    }

    /// A node that stopped without the harness noticing.
    fn stopped(&self) -> Result<(), Broken> {
        for id in self.cluster.running() {
            if self.cluster.node(id).is_stopped() {
                return Err(Broken { kind: Kind::NodeStopped, detail: format!("node {id} is stopped") });
            }
        }
        Ok(())
    }
}

impl Target for DeebTarget {
    fn write(&mut self, statements: &[String]) -> Result<Answer, Broken> {
        let answer = guarded(|| {
            let answer = self.submit(statements);
            self.cluster.converge();
            answer
        })?;
        self.stopped()?;
        Ok(answer)
    }

    fn read(&mut self, sql: &str) -> Result<Vec<(u64, Rows)>, Broken> {
        guarded(|| {
            self.cluster.converge();
        })?;
        self.stopped()?;
        let cluster = &self.cluster;
        Ok(cluster.running().into_iter().map(|id| (id, sorted(&node_rows(cluster.node(id), sql)))).collect())
    }

    fn settle(&mut self) -> Result<Settled, Broken> {
        let digests = guarded(|| self.cluster.converge())?;
        self.stopped()?;
        let digests: Vec<(u64, u64, u64)> =
            digests.into_iter().map(|(id, (index, digest))| (id, index, digest)).collect();
        let mut dumps = Vec::new();
        let mut checks = Vec::new();
        for id in self.cluster.running() {
            let path = self.cluster.data_dir(id).join("state.db");
            let conn = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|error| Broken { kind: Kind::HarnessPanic, detail: format!("node {id}: open: {error}") })?;
            checks.push((id, quick_check(&conn)));
            let reader = self
                .cluster
                .node(id)
                .reader()
                .map_err(|error| Broken { kind: Kind::HarnessPanic, detail: format!("node {id}: reader: {error}") })?;
            dumps.push((id, dump(&mut |sql| reader_rows(&reader, sql))));
        }
        Ok(Settled { digests, dumps, checks })
    }
}

/// Reads a query's rows on a node's reader.
fn node_rows(node: &Node<MemDisk>, sql: &str) -> Rows {
    let reader = node.reader().map_err(|error| format!("reader: {error}"))?;
    reader_rows(&reader, sql)
}

fn reader_rows(reader: &Reader, sql: &str) -> Rows {
    let mut rows = Vec::new();
    reader
        .query(&crate::harness::statement(sql), 1000, 1 << 20, &mut |chunk| {
            rows.extend(chunk.rows.iter().map(|row| row.values.iter().map(Cell::from_proto).collect::<Vec<Cell>>()));
            true
        })
        .map_err(|error| error.to_string())?;
    Ok(rows)
}

/// Runs `work`, turning a harness panic (a node's `Output::Stopped`, a
/// bounded wait that ran out) into a [`Broken`]. The panic message is not
/// printed: the finding reports it.
pub fn guarded<T>(work: impl FnOnce() -> T) -> Result<T, Broken> {
    install_quiet_hook();
    QUIET.with(|quiet| quiet.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(work));
    QUIET.with(|quiet| quiet.set(false));
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic without a message".to_owned());
        let kind = if message.contains(" stopped: ") {
            Kind::NodeStopped
        } else if message.contains("not reached within") {
            Kind::Hang
        } else {
            Kind::HarnessPanic
        };
        Broken { kind, detail: message }
    })
}

thread_local! {
    static QUIET: FlagCell<bool> = const { FlagCell::new(false) };
}

fn install_quiet_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(FlagCell::get) {
                previous(info);
            }
        }));
    });
}

const NODES: u64 = 3;
/// Simulated time a write may take (there are no faults: a few ms).
const WRITE_WAIT: Duration = Duration::from_secs(10);
