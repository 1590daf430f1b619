//! A stand-in for deeb in the checker's own tests: a second plain SQLite
//! that misbehaves in one chosen way, so each check is shown to fail.

use super::answer::{Answer, Rows};
use super::dump::dump;
use super::finding::Kind;
use super::reference::{query_rows, Reference};
use super::target::{Broken, Settled, Target};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Behaves like SQLite.
    None,
    /// Reports one row more than it changed.
    RowsAffectedOffByOne,
    /// Node 3 answers queries with an extra row and has another digest.
    DivergentReplica,
    /// A node stops on any DELETE.
    StopOnDelete,
    /// Refuses every UPDATE with an undocumented message.
    RefuseUpdates,
    /// Refuses every UPDATE as leaving a foreign key violated, when it
    /// does not.
    RefuseUpdatesAsViolating,
    /// Acknowledges writes to table `t2` but does not keep them.
    LoseWritesToT2,
    /// A node stops at the write request with this index (0-based).
    StopAtWrite(usize),
    /// Answers without the rows its statements returned (RETURNING).
    DropReturnedRows,
}

pub struct FakeTarget {
    database: Reference,
    fault: Fault,
    writes: usize,
}

impl FakeTarget {
    pub fn new(fault: Fault) -> FakeTarget {
        FakeTarget { database: Reference::open(), fault, writes: 0 }
    }
}

impl Target for FakeTarget {
    fn write(&mut self, statements: &[String]) -> Result<Answer, Broken> {
        self.writes += 1;
        if self.fault == Fault::StopAtWrite(self.writes - 1) {
            return Err(Broken { kind: Kind::NodeStopped, detail: "node 1 stopped: fake fatal error".into() });
        }
        let starts =
            |word: &str| statements.iter().position(|sql| sql.trim_start().to_ascii_uppercase().starts_with(word));
        if self.fault == Fault::StopOnDelete && starts("DELETE").is_some() {
            return Err(Broken { kind: Kind::NodeStopped, detail: "node 2 stopped: fake divergence".into() });
        }
        if let (Fault::RefuseUpdates, Some(index)) = (self.fault, starts("UPDATE")) {
            return Ok(Answer::Failed { statement_index: Some(index), message: "updates are not served today".into() });
        }
        if let (Fault::RefuseUpdatesAsViolating, Some(index)) = (self.fault, starts("UPDATE")) {
            let message = format!("FOREIGN KEY constraint failed ({})", super::refusals::LEAVES_VIOLATION);
            return Ok(Answer::Failed { statement_index: Some(index), message });
        }
        let mut answer = self.database.run(statements);
        if self.database.has_temporary_objects() {
            // Refused by design, as deeb must (a documented refusal).
            self.database.finish(false);
            return Ok(Answer::Failed { statement_index: None, message: "temporary objects are not allowed".into() });
        }
        let lose = self.fault == Fault::LoseWritesToT2 && statements.iter().any(|sql| sql.contains("INTO t2"));
        self.database.finish(!lose);
        if let (Fault::RowsAffectedOffByOne, Answer::Done(results)) = (self.fault, &mut answer) {
            results.iter_mut().for_each(|result| result.rows_affected += 1);
        }
        if let (Fault::DropReturnedRows, Answer::Done(results)) = (self.fault, &mut answer) {
            results.iter_mut().for_each(|result| result.returned.clear());
        }
        Ok(answer)
    }

    fn read(&mut self, sql: &str) -> Result<Vec<(u64, Rows)>, Broken> {
        let rows = super::answer::sorted(&self.database.query(sql));
        let mut per_node: Vec<(u64, Rows)> = (1..=3).map(|id| (id, rows.clone())).collect();
        if self.fault == Fault::DivergentReplica {
            if let Ok(rows) = &mut per_node[2].1 {
                rows.push(Vec::new());
            }
        }
        Ok(per_node)
    }

    fn settle(&mut self) -> Result<Settled, Broken> {
        let diverged = u64::from(self.fault == Fault::DivergentReplica);
        let digests = vec![(1, 10, 7), (2, 10, 7), (3, 10, 7 + diverged)];
        let connection = self.database.connection();
        let dumped = dump(&mut |sql| query_rows(connection, sql));
        let mut dumps = vec![(1, dumped.clone()), (2, dumped.clone()), (3, dumped.clone())];
        if self.fault == Fault::DivergentReplica {
            dumps[2].1.truncate(1);
        }
        // Its one real database, behind all three: plain SQLite, so a
        // program reaching SQLite's undefined behaviour malforms it.
        let check = super::target::quick_check(connection);
        let checks = (1..=3).map(|id| (id, check.clone())).collect();
        Ok(Settled { digests, dumps, checks })
    }
}
