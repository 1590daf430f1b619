//! The SQL workload: foreign keys with `ON DELETE CASCADE`, `ON DELETE SET
//! NULL` and `ON UPDATE CASCADE`; an AFTER INSERT trigger writing an audit
//! table and a BEFORE trigger that `RAISE(ROLLBACK)`s negative values;
//! `INSERT OR ROLLBACK`, `OR REPLACE` and `OR IGNORE` conflicts;
//! AUTOINCREMENT inserts, deletes of the largest row and updates of the id;
//! `ALTER TABLE ADD COLUMN`, `CREATE`/`DROP INDEX` and inserts naming the
//! added columns; rows of 200 kB. Each operation records what it promises
//! (`SqlEvent`) for `checker::sql`; a statement error an operation does not
//! allow is recorded as a violation, one it allows is the client's and
//! nothing more. The replicas' final digests cover every table (and
//! `sqlite_sequence`).

use std::time::Duration;

use deeb_proto::{ExecuteResponse, Statement};
use rand::Rng;

use super::{connect_within, integer, linearizable_rows, plain, statement, Client, Failure, Rows};
use crate::checker::history::{Kind, SqlEvent, SqlFinal, SqlOutcome};
use crate::checker::sql::{BLOB_BYTES, PRESENT_AUDITED};

/// The SQL workload's tables, triggers and first rows.
pub fn setup_statements() -> Vec<Statement> {
    let mut statements: Vec<Statement> = [
        "CREATE TABLE fk_parent (id INTEGER PRIMARY KEY, v INTEGER)",
        "CREATE TABLE fk_child (id INTEGER PRIMARY KEY, \
         pid INTEGER NOT NULL REFERENCES fk_parent(id) ON DELETE CASCADE ON UPDATE CASCADE)",
        "CREATE TABLE fk_null (id INTEGER PRIMARY KEY, \
         pid INTEGER REFERENCES fk_parent(id) ON DELETE SET NULL ON UPDATE CASCADE)",
        "CREATE INDEX fk_child_pid ON fk_child(pid)",
        "CREATE TABLE audited (id INTEGER PRIMARY KEY, v INTEGER UNIQUE)",
        "CREATE TABLE audit (n INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER)",
        "CREATE TRIGGER audited_copy AFTER INSERT ON audited BEGIN INSERT INTO audit (v) VALUES (NEW.v); END",
        "CREATE TRIGGER audited_positive BEFORE INSERT ON audited WHEN NEW.v < 0 \
         BEGIN SELECT RAISE(ROLLBACK, 'negative values are refused'); END",
        "CREATE TABLE seq (id INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER)",
        "CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)",
        "CREATE TABLE ddl (id INTEGER PRIMARY KEY, v INTEGER)",
    ]
    .into_iter()
    .map(plain)
    .collect();
    statements.push(statement(
        "INSERT INTO audited (id, v) VALUES (?, ?)",
        vec![integer(PRESENT_AUDITED), integer(PRESENT_AUDITED)],
    ));
    statements
}

/// The invariant counts, in the order of `checker::sql::INVARIANT_NAMES`.
const INVARIANTS_SQL: &str = "SELECT \
    (SELECT count(*) FROM fk_child WHERE pid NOT IN (SELECT id FROM fk_parent)), \
    (SELECT count(*) FROM fk_null WHERE pid IS NOT NULL AND pid NOT IN (SELECT id FROM fk_parent)), \
    (SELECT count(*) FROM audited WHERE v NOT IN (SELECT v FROM audit)), \
    (SELECT count(*) FROM (SELECT v FROM audit GROUP BY v HAVING count(*) > 1)), \
    (SELECT count(*) FROM audit WHERE v < 0)";

/// Keys `INSERT OR REPLACE` overwrites (plain audited inserts use their
/// value, far above, as id).
const REPLACE_KEYS: i64 = 8;
/// Columns `c0..c<N>` the DDL operations add and index.
const DDL_COLUMNS: i64 = 3;
/// Large rows a client keeps before deleting its oldest.
const BLOBS_KEPT: usize = 2;
/// SQL workload values sit above the register values (`client << 32 | n`).
const VALUE_BASE: i64 = 1 << 48;

/// What a write came to, once its statement error (if any) is judged.
enum Written {
    Done(ExecuteResponse),
    /// A statement error the operation allows: the client's, no effect.
    Refused,
    NotApplied,
    Unknown,
}

impl Client {
    pub(super) async fn sql_operation(&mut self) {
        match self.rng.gen_range(0..100) {
            0..=10 => self.parent_insert().await,
            11..=28 => self.child_insert().await,
            29..=35 => self.parent_delete().await,
            36..=41 => self.parent_rename().await,
            42..=49 => self.audited_insert().await,
            50..=54 => self.audited_replace().await,
            55..=58 => self.audited_ignore().await,
            59..=62 => self.raise_rollback().await,
            63..=66 => self.or_rollback().await,
            67..=74 => self.autoincrement_insert().await,
            75..=77 => self.autoincrement_bump().await,
            78..=79 => self.autoincrement_delete_max().await,
            80..=81 => self.large_row().await,
            82..=83 => self.add_column().await,
            84..=85 => self.create_index().await,
            86..=87 => self.drop_index().await,
            88..=92 => self.ddl_insert().await,
            _ => self.invariants_read().await,
        }
    }

    fn sql_value(&mut self) -> i64 {
        VALUE_BASE + self.unique_value()
    }

    fn sql_record(&self, invoked: Duration, completed: Option<Duration>, event: SqlEvent) {
        self.record(invoked, completed, Kind::Sql(event));
    }

    /// Runs a write; a statement error whose message contains none of
    /// `allowed` is recorded as unexpected (and, like an allowed one, had no
    /// effect).
    async fn sql_write(&mut self, what: &'static str, statements: Vec<Statement>, allowed: &[&str]) -> Written {
        let invoked = self.recorder.now();
        match self.execute_response(statements).await {
            Ok(response) => Written::Done(response),
            Err(Failure::Statement(message)) => {
                if !allowed.iter().any(|pattern| message.contains(pattern)) {
                    self.sql_record(invoked, Some(self.recorder.now()), SqlEvent::UnexpectedError { what, message });
                }
                Written::Refused
            }
            Err(Failure::NotApplied) => Written::NotApplied,
            Err(Failure::Unknown) => Written::Unknown,
        }
    }

    fn random_parent(&mut self, take: bool) -> Option<i64> {
        let mut parents = self.recorder.parents.lock().expect("parents lock");
        if parents.is_empty() {
            return None;
        }
        let position = self.rng.gen_range(0..parents.len());
        Some(if take { parents.swap_remove(position) } else { parents[position] })
    }

    fn add_parent(&self, id: i64) {
        self.recorder.parents.lock().expect("parents lock").push(id);
    }

    async fn parent_insert(&mut self) {
        let id = self.sql_value();
        let insert = statement("INSERT INTO fk_parent (id, v) VALUES (?, ?)", vec![integer(id), integer(id)]);
        if let Written::Done(_) = self.sql_write("parent insert", vec![insert], &[]).await {
            self.add_parent(id);
        }
    }

    /// A child of a parent believed present: the parent may be gone by now
    /// (a foreign-key error, the client's).
    async fn child_insert(&mut self) {
        let Some(parent) = self.random_parent(false) else {
            return self.parent_insert().await;
        };
        let id = self.sql_value();
        let nullable = self.rng.gen_bool(0.4);
        let table = if nullable { "fk_null" } else { "fk_child" };
        let insert =
            statement(&format!("INSERT INTO {table} (id, pid) VALUES (?, ?)"), vec![integer(id), integer(parent)]);
        let invoked = self.recorder.now();
        let written = self.sql_write("child insert", vec![insert], &["FOREIGN KEY constraint failed"]).await;
        let acknowledged = matches!(written, Written::Done(_));
        if nullable && matches!(written, Written::Done(_) | Written::Unknown) {
            let completed = acknowledged.then(|| self.recorder.now());
            self.sql_record(invoked, completed, SqlEvent::NullableChild { id, acknowledged });
        }
    }

    /// Deletes a parent: its cascade children go, its set-null children stay.
    async fn parent_delete(&mut self) {
        let Some(parent) = self.random_parent(true) else { return };
        let delete = statement("DELETE FROM fk_parent WHERE id = ?", vec![integer(parent)]);
        match self.sql_write("parent delete", vec![delete], &[]).await {
            Written::Done(response) if rows(&response, 0) == 1 => self.gone_parent_read(parent).await,
            Written::Done(_) | Written::Unknown => {}
            Written::Refused | Written::NotApplied => self.add_parent(parent),
        }
    }

    /// Renames a parent: `ON UPDATE CASCADE` moves its children along.
    async fn parent_rename(&mut self) {
        let Some(parent) = self.random_parent(true) else { return };
        let renamed = self.sql_value();
        let update = statement("UPDATE fk_parent SET id = ? WHERE id = ?", vec![integer(renamed), integer(parent)]);
        match self.sql_write("parent rename", vec![update], &[]).await {
            Written::Done(response) if rows(&response, 0) == 1 => {
                self.add_parent(renamed);
                self.gone_parent_read(parent).await;
            }
            Written::Done(_) => {}
            Written::Unknown => self.add_parent(renamed),
            Written::Refused | Written::NotApplied => self.add_parent(parent),
        }
    }

    /// After a parent's delete or rename was acknowledged, no child may
    /// point at its old id (ids are never reused).
    async fn gone_parent_read(&mut self, parent: i64) {
        let sql =
            "SELECT (SELECT count(*) FROM fk_child WHERE pid = ?1) + (SELECT count(*) FROM fk_null WHERE pid = ?1)";
        let invoked = self.recorder.now();
        let rows = self.query(statement(sql, vec![integer(parent)])).await;
        if let Some(children) = rows.as_ref().and_then(first_integer) {
            self.sql_record(invoked, Some(self.recorder.now()), SqlEvent::GoneParent { parent, children });
        }
    }

    async fn audited_insert(&mut self) {
        let value = self.sql_value();
        let insert = statement("INSERT INTO audited (id, v) VALUES (?, ?)", vec![integer(value), integer(value)]);
        self.audited_write("audited insert", insert, value, true).await;
    }

    async fn audited_replace(&mut self) {
        let (key, value) = (self.rng.gen_range(1..=REPLACE_KEYS), self.sql_value());
        let replace =
            statement("INSERT OR REPLACE INTO audited (id, v) VALUES (?, ?)", vec![integer(key), integer(value)]);
        self.audited_write("audited insert or replace", replace, value, false).await;
    }

    async fn audited_write(&mut self, what: &'static str, write: Statement, value: i64, permanent: bool) {
        let invoked = self.recorder.now();
        let written = self.sql_write(what, vec![write], &[]).await;
        let acknowledged = matches!(written, Written::Done(_));
        if acknowledged || matches!(written, Written::Unknown) {
            let completed = acknowledged.then(|| self.recorder.now());
            self.sql_record(invoked, completed, SqlEvent::Audited { value, acknowledged, permanent });
        }
    }

    /// `INSERT OR IGNORE` of the value the setup inserted: nothing changes,
    /// the AFTER INSERT trigger does not fire.
    async fn audited_ignore(&mut self) {
        let id = self.sql_value();
        let insert = statement(
            "INSERT OR IGNORE INTO audited (id, v) VALUES (?, ?)",
            vec![integer(id), integer(PRESENT_AUDITED)],
        );
        let invoked = self.recorder.now();
        if let Written::Done(response) = self.sql_write("audited insert or ignore", vec![insert], &[]).await {
            let rows = rows(&response, 0);
            self.sql_record(invoked, Some(self.recorder.now()), SqlEvent::Ignored { rows });
        }
    }

    /// A good insert, then one the BEFORE trigger refuses with
    /// `RAISE(ROLLBACK)`: the request fails and neither row exists.
    async fn raise_rollback(&mut self) {
        let (good, bad) = (self.sql_value(), self.sql_value());
        let statements = vec![
            statement("INSERT INTO audited (id, v) VALUES (?, ?)", vec![integer(good), integer(good)]),
            statement("INSERT INTO audited (id, v) VALUES (?, ?)", vec![integer(bad), integer(-bad)]),
        ];
        self.must_fail("RAISE(ROLLBACK) request", statements, vec![good, bad, -bad]).await;
    }

    /// A good insert, then an `INSERT OR ROLLBACK` that meets a UNIQUE
    /// conflict: the request fails and neither row exists.
    async fn or_rollback(&mut self) {
        let (good, other) = (self.sql_value(), self.sql_value());
        let statements = vec![
            statement("INSERT INTO audited (id, v) VALUES (?, ?)", vec![integer(good), integer(good)]),
            statement(
                "INSERT OR ROLLBACK INTO audited (id, v) VALUES (?, ?)",
                vec![integer(other), integer(PRESENT_AUDITED)],
            ),
        ];
        self.must_fail("INSERT OR ROLLBACK request", statements, vec![good, other]).await;
    }

    async fn must_fail(&mut self, what: &'static str, statements: Vec<Statement>, poison: Vec<i64>) {
        let invoked = self.recorder.now();
        let outcome = match self.execute_response(statements).await {
            Ok(_) => SqlOutcome::Acknowledged,
            Err(Failure::Statement(_)) => SqlOutcome::StatementError,
            Err(Failure::NotApplied) => SqlOutcome::NotApplied,
            Err(Failure::Unknown) => SqlOutcome::Unknown,
        };
        let completed = (outcome != SqlOutcome::Unknown).then(|| self.recorder.now());
        self.sql_record(invoked, completed, SqlEvent::MustFail { what, poison, outcome });
    }

    async fn autoincrement_insert(&mut self) {
        let value = self.sql_value();
        let insert = statement("INSERT INTO seq (v) VALUES (?)", vec![integer(value)]);
        self.autoincrement_write("autoincrement insert", vec![insert]).await;
    }

    /// Moves the largest row's id up, then inserts: the new id must be
    /// above the moved one.
    async fn autoincrement_bump(&mut self) {
        let (step, value) = (self.rng.gen_range(1..1000), self.sql_value());
        let statements = vec![
            statement("UPDATE seq SET id = id + ? WHERE id = (SELECT max(id) FROM seq)", vec![integer(step)]),
            statement("INSERT INTO seq (v) VALUES (?)", vec![integer(value)]),
        ];
        self.autoincrement_write("autoincrement bump", statements).await;
    }

    /// Deletes the largest row: the next id must still be above it
    /// (`sqlite_sequence`, replicated exactly, remembers it).
    async fn autoincrement_delete_max(&mut self) {
        let delete = plain("DELETE FROM seq WHERE id = (SELECT max(id) FROM seq)");
        let _ = self.sql_write("autoincrement delete", vec![delete], &[]).await;
    }

    /// Records the id the request's last statement (an insert) was given.
    async fn autoincrement_write(&mut self, what: &'static str, statements: Vec<Statement>) {
        let invoked = self.recorder.now();
        let last = statements.len() - 1;
        if let Written::Done(response) = self.sql_write(what, statements, &[]).await {
            if let Some(result) = response.results.get(last) {
                let event = SqlEvent::AutoIncrement { id: result.last_insert_id, index: response.index };
                self.sql_record(invoked, Some(self.recorder.now()), event);
            }
        }
    }

    /// A 200 kB row; beyond `BLOBS_KEPT`, the client deletes its oldest.
    async fn large_row(&mut self) {
        let id = self.sql_value();
        let insert =
            statement("INSERT INTO blobs (id, b) VALUES (?, randomblob(?))", vec![integer(id), integer(BLOB_BYTES)]);
        let invoked = self.recorder.now();
        let written = self.sql_write("large row insert", vec![insert], &[]).await;
        let acknowledged = matches!(written, Written::Done(_));
        if acknowledged || matches!(written, Written::Unknown) {
            let completed = acknowledged.then(|| self.recorder.now());
            self.sql_record(invoked, completed, SqlEvent::Blob { id, acknowledged });
            self.blobs.push(id);
        }
        if self.blobs.len() > BLOBS_KEPT {
            let oldest = self.blobs.remove(0);
            let now = self.recorder.now();
            self.sql_record(now, None, SqlEvent::BlobDelete { id: oldest });
            let delete = statement("DELETE FROM blobs WHERE id = ?", vec![integer(oldest)]);
            let _ = self.sql_write("large row delete", vec![delete], &[]).await;
        }
    }

    async fn add_column(&mut self) {
        let column = self.rng.gen_range(0..DDL_COLUMNS);
        let alter = plain(&format!("ALTER TABLE ddl ADD COLUMN c{column} INTEGER"));
        let invoked = self.recorder.now();
        if let Written::Done(_) = self.sql_write("add column", vec![alter], &["duplicate column name"]).await {
            self.sql_record(invoked, Some(self.recorder.now()), SqlEvent::AddColumn { column });
        }
    }

    async fn create_index(&mut self) {
        let column = self.rng.gen_range(0..DDL_COLUMNS);
        let create = plain(&format!("CREATE INDEX IF NOT EXISTS ddl_c{column} ON ddl (c{column}, v)"));
        let _ = self.sql_write("create index", vec![create], &["no such column", "has no column named"]).await;
    }

    async fn drop_index(&mut self) {
        let column = self.rng.gen_range(0..DDL_COLUMNS);
        let drop = plain(&format!("DROP INDEX IF EXISTS ddl_c{column}"));
        let _ = self.sql_write("drop index", vec![drop], &[]).await;
    }

    /// An insert naming a column that may not have been added yet.
    async fn ddl_insert(&mut self) {
        let (column, value) = (self.rng.gen_range(0..DDL_COLUMNS), self.sql_value());
        let insert =
            statement(&format!("INSERT INTO ddl (v, c{column}) VALUES (?, ?)"), vec![integer(value), integer(value)]);
        let _ = self.sql_write("ddl insert", vec![insert], &["has no column named", "no such column"]).await;
    }

    async fn invariants_read(&mut self) {
        let invoked = self.recorder.now();
        if let Some(rows) = self.query(plain(INVARIANTS_SQL)).await {
            let counts = rows.first().map(|row| row.iter().map(|count| count.unwrap_or(-1)).collect());
            let counts = counts.unwrap_or_default();
            self.sql_record(invoked, Some(self.recorder.now()), SqlEvent::Invariants { counts });
        }
    }
}

fn rows(response: &ExecuteResponse, statement: usize) -> u64 {
    response.results.get(statement).map_or(0, |result| result.rows_affected)
}

fn first_integer(rows: &Rows) -> Option<i64> {
    rows.first().and_then(|row| row.first().copied().flatten())
}

/// The final reads of the SQL tables, each retried until it succeeds
/// (bounded), and a last read of the invariants: `None` if one never did.
pub async fn read_sql_final(addresses: &[String]) -> Option<Vec<SqlEvent>> {
    let column = |rows: Rows| rows.into_iter().filter_map(|row| row.first().copied().flatten()).collect::<Vec<_>>();
    let audit = column(read_retried(addresses, "SELECT v FROM audit").await?);
    let audited = column(read_retried(addresses, "SELECT v FROM audited").await?);
    let nullable_children = column(read_retried(addresses, "SELECT id FROM fk_null").await?);
    let blobs = read_retried(addresses, "SELECT id, length(b) FROM blobs").await?;
    let blobs = blobs.into_iter().map(|row| (row[0].unwrap_or(-1), row[1].unwrap_or(-1))).collect();
    let columns_sql = "SELECT CAST(substr(name, 2) AS INTEGER) FROM pragma_table_info('ddl') WHERE name GLOB 'c[0-9]*'";
    let columns = column(read_retried(addresses, columns_sql).await?);
    let invariants = read_retried(addresses, INVARIANTS_SQL).await?;
    let counts = invariants.first().map(|row| row.iter().map(|count| count.unwrap_or(-1)).collect());
    Some(vec![
        SqlEvent::Invariants { counts: counts.unwrap_or_default() },
        SqlEvent::Final(Box::new(SqlFinal { audit, audited, nullable_children, blobs, columns })),
    ])
}

async fn read_retried(addresses: &[String], sql: &str) -> Option<Rows> {
    for attempt in 0..super::FINAL_READ_ATTEMPTS {
        let address = &addresses[attempt % addresses.len()];
        if let Some(mut client) = connect_within(address, super::OPERATION_TIMEOUT).await {
            if let Ok(Some(rows)) = linearizable_rows(&mut client, plain(sql)).await {
                return Some(rows);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}
