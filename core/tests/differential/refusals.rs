//! The documented refusals: statements plain SQLite runs but deeb refuses
//! before (or instead of) replicating them, each with its reason. A deeb
//! error on a request SQLite accepted must contain one of these substrings;
//! any other is a finding. This is the one place the list lives; it mirrors
//! the README's "SQL support" section and `core/src/sql/classify.rs`.

pub const DOCUMENTED: &[(&str, &str)] = &[
    // CREATE TEMP ... / temp.x: temporary objects live on one connection of
    // one node, outside replication.
    ("temporary objects", "state outside replication"),
    // PRAGMA on the write path: most pragmas change per-connection or
    // database-header state that is not replicated.
    ("PRAGMA is not allowed", "pragmas are not replicated"),
    // BEGIN / COMMIT / SAVEPOINT / RELEASE / ROLLBACK / ATTACH / DETACH /
    // VACUUM refused by their first keyword: a request is one transaction.
    ("is not allowed: each request already runs as one transaction", "transaction control by keyword"),
    // The same, caught by the authorizer (e.g. inside a CTE or trigger).
    ("transaction control is not allowed", "transaction control by authorizer"),
    // Another database file is state outside replication.
    ("ATTACH and DETACH are not allowed", "attached databases"),
    // ANALYZE writes sqlite_stat tables (planner statistics) per node.
    ("ANALYZE is not allowed", "planner statistics are per node"),
    // A schema change must not also write rows (DDL replicates as text).
    ("CREATE TABLE ... AS SELECT is not supported", "CREATE TABLE ... AS SELECT"),
    // Every replica maintains sqlite_sequence itself.
    ("sqlite_sequence may not be written directly", "sqlite_sequence writes"),
    // The protocol carries one statement per SQL string.
    ("one statement per sql string", "several statements in one string"),
    // Virtual tables (fts, rtree, ...) have no row-change capture.
    ("virtual tables are not supported", "virtual tables"),
    // deeb's own bookkeeping tables (_deeb_meta, _deeb_members).
    ("are internal to deeb", "internal tables"),
    // Request size limits (request bytes, statements per request, changes).
    ("over the limit of", "size limits"),
    // A statement with no SQL in it.
    ("empty statement", "empty statement"),
    // Sessions key rows by the key's bytes: 'B' and 'b' under NOCASE would
    // be two rows to a replica, one to SQLite.
    ("collation other than BINARY", "collated primary keys"),
    // Rowid tables let NULL into key columns; sessions skip such rows.
    ("PRIMARY KEY columns may hold NULL", "nullable primary keys"),
    ("NULL in a PRIMARY KEY column", "a NULL written into a one-column key"),
    // DROP TABLE deleting referenced rows: the session cannot describe rows
    // of a table that no longer exists.
    ("DROP TABLE would also delete rows", "dropping a referenced table with rows"),
    // Other schema changes that write rows (DDL replicates as text).
    ("this schema change also changes rows", "schema change writing rows"),
    // DDL travels as text, so it may not have parameters.
    ("schema statements (DDL) may not use parameters", "parameters in DDL"),
    // The rowid of a table keyed otherwise is each replica's own.
    ("is not replicated (each replica numbers its rows itself)", "unreplicated rowids"),
    // Bounds on a request's row changes and on a value's size.
    ("request_row_changes_bytes_max", "row-changes limit"),
    ("string or blob too big", "value size limit (the row-changes limit)"),
    // Bounds on a statement's running time or steps.
    ("statement stopped", "statement steps bound"),
    ("statement timeout", "statement deadline"),
    // Replayed on the leader, the recorded row changes did not apply (a
    // trigger changing rows its statement changes: undefined in SQLite).
    ("cannot be replicated faithfully", "unfaithful row changes"),
    // SQLite answered SQLITE_CORRUPT from a sound database (its undefined
    // behaviour): the leader rolled back and checked the file. Plain SQLite
    // answers "malformed" there too; this covers runs where it did not.
    ("the statement was undone and the database checked well formed", "SQLite's undefined behaviour"),
    // A statement's row changes that SQLite's session cannot record.
    ("row changes could not be recorded", "unrecordable row changes"),
    // A schema change while a deferred foreign key is violated, after a
    // replayed statement (whose row changes lost SQLite's count of them).
    ("a schema change while a deferred foreign key is violated", "schema change over deferred violations"),
];

/// deeb's refusal of a request that leaves a foreign key violated where
/// SQLite's own count missed it: documented only when the reference holds
/// such a violation after the request (checked by the runner), so it is
/// not in [`DOCUMENTED`].
pub const LEAVES_VIOLATION: &str = "the request leaves a foreign key violated";

/// The documented reason `message` matches, if any.
pub fn documented(message: &str) -> Option<&'static str> {
    DOCUMENTED.iter().find(|(substring, _)| message.contains(substring)).map(|(_, reason)| *reason)
}
