//! What the MySQL backend replicates and what it refuses, decided by a SQL
//! parser (sqlparser's MySQL dialect) before anything is proposed.
//!
//! Statements are replicated as text and executed on every replica, so a
//! statement whose effect could differ between replicas is refused here,
//! with the reason: MySQL's own list of statements unsafe for
//! statement-based replication, plus what deeb cannot carry between
//! requests (session state). Whatever does not parse is refused too. What
//! needs the schema to decide (a table's keys) comes back as [`Need`]s the
//! state machine checks against its database.

use std::ops::ControlFlow;

use sqlparser::ast::{
    visit_expressions, visit_relations, visit_statements, AlterTableOperation, ColumnOption, Expr, FromTable, Function,
    ObjectName, OnInsert, OrderByKind, SetExpr, Statement, TableConstraint, TableFactor, TableObject,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

/// Functions whose result differs between replicas (or between runs), and
/// functions with effects outside the database: MySQL's list of functions
/// unsafe for statement-based replication, and MariaDB's additions.
const NONDETERMINISTIC: &[&str] = &[
    "UUID",
    "UUID_SHORT",
    "SYS_GUID",
    "SYSDATE",
    "USER",
    "CURRENT_USER",
    "SESSION_USER",
    "SYSTEM_USER",
    "CURRENT_ROLE",
    "CONNECTION_ID",
    "FOUND_ROWS",
    "ROW_COUNT",
    "GET_LOCK",
    "RELEASE_LOCK",
    "RELEASE_ALL_LOCKS",
    "IS_FREE_LOCK",
    "IS_USED_LOCK",
    "LOAD_FILE",
    "SLEEP",
    "BENCHMARK",
    "MASTER_POS_WAIT",
    "MASTER_GTID_WAIT",
    "SOURCE_POS_WAIT",
    "VERSION",
    "DATABASE",
    "SCHEMA",
    "NEXTVAL",
    "LASTVAL",
    "SETVAL",
    "RANDOM_BYTES",
    "UNCOMPRESSED_LENGTH",
];

/// The functions that need no lookup: MySQL builtins deeb has checked run
/// alike everywhere given the same data and the leader's fixed context
/// (clock, random seeds, session settings). Any other name is looked up:
/// a stored function or a loadable (user-defined) one is refused.
pub(crate) fn is_nondeterministic(name: &str) -> bool {
    NONDETERMINISTIC.iter().any(|refused| refused.eq_ignore_ascii_case(name))
}

/// What a statement is, once it passed the checks that need no schema.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// A schema change (MySQL commits around it): an entry of its own, run
    /// on every replica when it commits.
    pub(crate) schema_change: bool,
    /// Tables it writes (each must have a primary key).
    pub(crate) writes: Vec<String>,
    /// Checks against the schema the state machine makes.
    pub(crate) needs: Vec<Need>,
    /// The functions it calls, to be looked up (stored or loadable ones are
    /// refused).
    pub(crate) functions: Vec<String>,
}

/// A check that needs the table's keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// `INSERT ... ON DUPLICATE KEY UPDATE`: which row it updates depends
    /// on which unique key clashes first unless the table has one.
    OneUniqueKey { table: String },
    /// `UPDATE`/`DELETE ... LIMIT`: which rows it takes depends on the
    /// scan order unless the `ORDER BY` names every primary key column.
    TotalOrder { table: String, order: Vec<String> },
    /// A trigger inserting into a table with an AUTO_INCREMENT column: the
    /// value the replicas fix (`insert_id`) would number the trigger's row
    /// or the statement's, which MySQL's replication calls unsafe.
    NoAutoIncrement { table: String },
}

/// Why a statement is refused (the client's error message).
pub(crate) type Refusal = String;

/// True if `sql` starts a schema change (checked by its first keyword, so
/// the node can batch it alone before it is parsed; [`check_write`] makes
/// the same call).
pub(crate) fn is_schema_change(sql: &str) -> bool {
    let first = first_keyword(sql);
    ["CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE"].iter().any(|keyword| keyword.eq_ignore_ascii_case(first))
}

/// The first word of `sql`, after blanks and comments.
fn first_keyword(sql: &str) -> &str {
    let mut rest = sql.trim_start();
    loop {
        if let Some(comment) = rest.strip_prefix("/*") {
            rest = comment.split_once("*/").map_or("", |(_, after)| after).trim_start();
        } else if rest.starts_with("--") || rest.starts_with('#') {
            rest = rest.split_once('\n').map_or("", |(_, after)| after).trim_start();
        } else {
            break;
        }
    }
    let end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
    &rest[..end]
}

/// True if the parser reads `sql` (false: a syntax error, or MySQL syntax
/// the parser does not know).
pub(crate) fn parses(sql: &str) -> bool {
    Parser::parse_sql(&MySqlDialect {}, sql).is_ok()
}

fn parse_one(sql: &str) -> Result<Statement, Refusal> {
    let parsed = Parser::parse_sql(&MySqlDialect {}, sql).or_else(|error| {
        // The parser reads only block bodies of triggers: a one-statement
        // body is checked as the same trigger with a block body.
        match trigger_with_block_body(sql) {
            Some(block) => Parser::parse_sql(&MySqlDialect {}, &block).map_err(|_| error),
            None => Err(error),
        }
    });
    let mut statements = parsed.map_err(|error| {
        format!("refused: deeb could not parse the statement to check it is deterministic ({error})")
    })?;
    match statements.len() {
        1 => Ok(statements.remove(0)),
        0 => Err("refused: no statement".into()),
        _ => Err("refused: one SQL statement per statement of the request".into()),
    }
}

/// `CREATE TRIGGER ... FOR EACH ROW statement` with its statement in a
/// `BEGIN ... END` block: the same trigger, in the form the parser reads.
/// `None` for anything else.
fn trigger_with_block_body(sql: &str) -> Option<String> {
    if !first_keyword(sql).eq_ignore_ascii_case("CREATE") {
        return None;
    }
    // ASCII upper-casing keeps byte offsets.
    let upper = sql.to_ascii_uppercase();
    upper.find(" TRIGGER ")?;
    let at = upper.find("FOR EACH ROW")? + "FOR EACH ROW".len();
    let body = sql[at..].trim().trim_end_matches(';').trim();
    if body.to_ascii_uppercase().starts_with("BEGIN") {
        return None;
    }
    Some(format!("{} BEGIN {body}; END", &sql[..at]))
}

/// Checks one statement of a write request.
pub(crate) fn check_write(sql: &str) -> Result<Plan, Refusal> {
    let statement = parse_one(sql)?;
    if !replicated_kind(&statement) {
        return Err(refusal_for(&statement));
    }
    let mut plan = Plan { schema_change: is_schema_change(sql), ..Plan::default() };
    check_names(&statement, false)?;
    check_expressions(&statement, &mut plan)?;
    match &statement {
        Statement::Query(query) => {
            if !query.locks.is_empty() {
                // Harmless on the single writer, but say what it does.
                return Err(
                    "refused: locking reads (FOR UPDATE, LOCK IN SHARE MODE) lock nothing across replicas".into()
                );
            }
            if matches!(&*query.body, SetExpr::Select(select) if select.into.is_some()) {
                return Err("refused: SELECT ... INTO writes outside the database or into session variables".into());
            }
        }
        Statement::Insert(insert) => check_insert(insert, &mut plan)?,
        Statement::Update(update) => {
            let tables = all_tables(&update.table);
            let order = update.order_by.iter().map(|expr| expr.expr.clone()).collect::<Vec<_>>();
            plan.writes.extend(tables.clone());
            if update.from.is_some() {
                return Err("refused: UPDATE ... FROM is not MySQL".into());
            }
            limited(update.limit.is_some(), tables, &order, &mut plan)?;
        }
        Statement::Delete(delete) => {
            let from = match &delete.from {
                FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables) => tables,
            };
            let targets: Vec<String> = match delete.tables.is_empty() {
                true => from.iter().flat_map(all_tables).collect(),
                false => delete.tables.iter().map(last_part).collect(),
            };
            plan.writes.extend(targets.clone());
            let order = delete.order_by.iter().map(|expr| expr.expr.clone()).collect::<Vec<_>>();
            limited(delete.limit.is_some(), targets, &order, &mut plan)?;
        }
        Statement::CreateTable(create) => {
            if create.temporary {
                return Err("refused: temporary tables live in one session; replicas would not have them".into());
            }
            if create.query.is_some() {
                return Err("refused: CREATE TABLE ... SELECT is unsafe for statement replication; create the table, \
                            then INSERT ... SELECT"
                    .into());
            }
            if create.like.is_some() {
                return Err(
                    "refused: CREATE TABLE ... LIKE copies a table deeb cannot check; write its definition".into()
                );
            }
            let keyed =
                create.columns.iter().any(|column| {
                    column.options.iter().any(|option| matches!(option.option, ColumnOption::PrimaryKey(_)))
                }) || create.constraints.iter().any(|constraint| matches!(constraint, TableConstraint::PrimaryKey(_)));
            if !keyed {
                return Err(format!(
                    "refused: table {} has no PRIMARY KEY; deeb replicates only tables with one",
                    last_part(&create.name)
                ));
            }
            transactional_engine(&create.table_options.to_string())?;
        }
        Statement::AlterTable(alter) => {
            if alter.operations.iter().any(|op| matches!(op, AlterTableOperation::DropPrimaryKey { .. })) {
                return Err("refused: a table without a PRIMARY KEY cannot be replicated".into());
            }
            transactional_engine(&statement.to_string())?;
        }
        Statement::CreateTrigger(_) => {
            let _ = visit_statements(&statement, |inner: &Statement| {
                if let Statement::Insert(insert) = inner {
                    if let TableObject::TableName(name) = &insert.table {
                        plan.needs.push(Need::NoAutoIncrement { table: last_part(name) });
                    }
                }
                ControlFlow::<()>::Continue(())
            });
        }
        Statement::CreateIndex(_)
        | Statement::CreateView(_)
        | Statement::AlterView(_)
        | Statement::DropTrigger(_)
        | Statement::RenameTable(_)
        | Statement::Truncate(_) => {}
        Statement::Drop { object_type, temporary, .. } => {
            use sqlparser::ast::ObjectType;
            if *temporary {
                return Err("refused: temporary tables are not replicated".into());
            }
            if !matches!(object_type, ObjectType::Table | ObjectType::View | ObjectType::Index) {
                return Err(format!("refused: DROP {object_type} is not replicated by the MySQL backend"));
            }
        }
        other => return Err(refusal_for(other)),
    }
    if !plan.schema_change && !matches!(statement, Statement::Query(_)) && plan.writes.is_empty() {
        return Err("refused: deeb could not tell which tables the statement writes".into());
    }
    Ok(plan)
}

/// The kinds of statement the MySQL backend replicates (each checked
/// further); every other kind is refused with [`refusal_for`].
fn replicated_kind(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Query(_)
            | Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::CreateTable(_)
            | Statement::AlterTable(_)
            | Statement::CreateIndex(_)
            | Statement::CreateView(_)
            | Statement::AlterView(_)
            | Statement::CreateTrigger(_)
            | Statement::DropTrigger(_)
            | Statement::RenameTable(_)
            | Statement::Truncate(_)
            | Statement::Drop { .. }
    )
}

/// Why a kind of statement is not replicated.
fn refusal_for(statement: &Statement) -> Refusal {
    let reason = match statement {
        Statement::Set(_) => "SET changes session state, which does not carry from one request to the next",
        Statement::Call(_) => "stored procedures may do anything; deeb cannot check them",
        Statement::LockTables { .. } | Statement::UnlockTables => {
            "LOCK TABLES locks one server; deeb orders writes itself"
        }
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => "a request is already one transaction; send its statements together",
        Statement::Load { .. } | Statement::Copy { .. } => "loading files reads one server's disk",
        Statement::Use(_) | Statement::CreateDatabase { .. } | Statement::CreateSchema { .. } => {
            "deeb replicates one database; name tables without a database"
        }
        Statement::Grant(_) | Statement::Revoke(_) | Statement::CreateRole(_) => {
            "accounts and privileges are each server's own (deeb has its own users)"
        }
        Statement::CreateFunction(_) | Statement::CreateProcedure { .. } => {
            "stored routines and events may do anything; deeb cannot check them"
        }
        Statement::Prepare { .. } | Statement::Execute { .. } | Statement::Deallocate { .. } => {
            "server-side prepared statements are session state; send parameters with the statement"
        }
        Statement::Kill { .. } | Statement::Flush { .. } => "it acts on one server, not on the data",
        _ => "this kind of statement is not replicated by the MySQL backend",
    };
    format!("refused: {reason}")
}

/// Statement text allowed on the read path: one query, nothing locked.
pub(crate) fn check_read(sql: &str) -> Result<(), Refusal> {
    let statement = parse_one(sql)?;
    check_names(&statement, true)?;
    match &statement {
        Statement::Query(query) if query.locks.is_empty() => Ok(()),
        Statement::Query(_) => Err("refused: a locking read would block the replication of writes".into()),
        Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCreate { .. }
        | Statement::ExplainTable { .. }
        | Statement::Explain { .. } => Ok(()),
        _ => Err("not a read: send it as a write".into()),
    }
}

/// Names only this database's tables, never deeb's own (a read may also
/// name `information_schema`'s).
fn check_names(statement: &Statement, read: bool) -> Result<(), Refusal> {
    let flow = visit_relations(statement, |name: &ObjectName| {
        let catalog = name.0.first().and_then(|part| part.as_ident()).map(|ident| ident.value.to_ascii_lowercase());
        if read && name.0.len() == 2 && catalog.as_deref() == Some("information_schema") {
            return ControlFlow::Continue(());
        }
        if name.0.len() > 1 {
            return ControlFlow::Break(format!(
                "refused: {name} names another database; deeb replicates one database, name tables alone"
            ));
        }
        if last_part(name).to_ascii_lowercase().starts_with("_deeb_") {
            return ControlFlow::Break(format!("refused: {name} is deeb's own table"));
        }
        ControlFlow::Continue(())
    });
    match flow {
        ControlFlow::Break(refusal) => Err(refusal),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Refuses nondeterministic functions and variables; collects the other
/// function names for lookup.
fn check_expressions(statement: &Statement, plan: &mut Plan) -> Result<(), Refusal> {
    let flow = visit_expressions(statement, |expr: &Expr| {
        match expr {
            Expr::Function(Function { name, .. }) => {
                if name.0.len() > 1 {
                    return ControlFlow::Break(format!("refused: {name}() is a function of another database"));
                }
                let name = last_part(name);
                if is_nondeterministic(&name) {
                    return ControlFlow::Break(format!(
                        "refused: {}() gives different results on different replicas",
                        name.to_ascii_uppercase()
                    ));
                }
                if !plan.functions.iter().any(|known| known.eq_ignore_ascii_case(&name)) {
                    plan.functions.push(name);
                }
            }
            Expr::Identifier(ident) if ident.value.starts_with("@@") => {
                return ControlFlow::Break(format!("refused: system variable {} differs between servers", ident.value));
            }
            Expr::Identifier(ident) if ident.value.starts_with('@') => {
                return ControlFlow::Break(format!(
                    "refused: user variable {} is session state, which does not carry from one request to the next",
                    ident.value
                ));
            }
            Expr::CompoundIdentifier(parts) if parts.first().is_some_and(|part| part.value.starts_with('@')) => {
                return ControlFlow::Break("refused: variables are session state".into());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    });
    match flow {
        ControlFlow::Break(refusal) => Err(refusal),
        ControlFlow::Continue(()) => Ok(()),
    }
}

fn check_insert(insert: &sqlparser::ast::Insert, plan: &mut Plan) -> Result<(), Refusal> {
    let TableObject::TableName(name) = &insert.table else {
        return Err("refused: INSERT into a table function".into());
    };
    let table = last_part(name);
    plan.writes.push(table.clone());
    let selects = insert.source.as_ref().is_some_and(|source| !matches!(*source.body, SetExpr::Values(_)));
    if selects && (insert.ignore || insert.replace_into) {
        return Err("refused: INSERT IGNORE ... SELECT and REPLACE ... SELECT are unsafe for statement replication \
                    (which rows clash depends on the order the SELECT returns them)"
            .into());
    }
    if let Some(source) = insert.source.as_ref().filter(|_| selects) {
        let limited = source.limit_clause.is_some();
        let ordered = source
            .order_by
            .as_ref()
            .is_some_and(|order| matches!(&order.kind, OrderByKind::Expressions(e) if !e.is_empty()));
        if limited && !ordered {
            return Err("refused: INSERT ... SELECT ... LIMIT without ORDER BY takes rows in no set order".into());
        }
    }
    match &insert.on {
        Some(OnInsert::DuplicateKeyUpdate(_)) if selects => {
            Err("refused: INSERT ... SELECT ... ON DUPLICATE KEY UPDATE is unsafe for statement replication".into())
        }
        Some(OnInsert::DuplicateKeyUpdate(_)) => {
            plan.needs.push(Need::OneUniqueKey { table });
            Ok(())
        }
        Some(OnInsert::OnConflict(_)) => Err("refused: ON CONFLICT is not MySQL".into()),
        _ => Ok(()),
    }
}

/// `UPDATE`/`DELETE ... LIMIT` needs an `ORDER BY` over the whole primary
/// key of its (single) table.
fn limited(limit: bool, tables: Vec<String>, order: &[Expr], plan: &mut Plan) -> Result<(), Refusal> {
    if !limit {
        return Ok(());
    }
    let [table] = &tables[..] else {
        return Err("refused: a multi-table UPDATE or DELETE with LIMIT".into());
    };
    let columns = order
        .iter()
        .map(|expr| match expr {
            Expr::Identifier(ident) => Some(ident.value.clone()),
            Expr::CompoundIdentifier(parts) => parts.last().map(|part| part.value.clone()),
            _ => None,
        })
        .collect::<Option<Vec<_>>>();
    let Some(columns) = columns.filter(|columns| !columns.is_empty()) else {
        return Err("refused: UPDATE or DELETE with LIMIT needs an ORDER BY naming the primary key's columns \
                    (otherwise which rows it takes depends on the scan order)"
            .into());
    };
    plan.needs.push(Need::TotalOrder { table: table.clone(), order: columns });
    Ok(())
}

/// Only InnoDB tables roll back with the request (and replicate alike):
/// every `ENGINE [=] name` option in `text` must name InnoDB (a column or
/// comment that merely says "engine" is not one).
fn transactional_engine(text: &str) -> Result<(), Refusal> {
    let upper = text.to_ascii_uppercase();
    for (at, _) in upper.match_indices("ENGINE") {
        let before = upper[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '`' || c == '\'' || c == '"') {
            continue;
        }
        let rest = &upper[at + "ENGINE".len()..];
        let value = rest.trim_start_matches(' ');
        let Some(value) = value.strip_prefix('=') else { continue };
        let engine: String =
            value.trim_start_matches(' ').chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if engine != "INNODB" {
            return Err(format!("refused: ENGINE={engine}: only InnoDB tables are transactional and replicated"));
        }
    }
    Ok(())
}

fn last_part(name: &ObjectName) -> String {
    name.0.last().and_then(|part| part.as_ident()).map(|ident| ident.value.clone()).unwrap_or_default()
}

fn table_names<'t>(factors: impl Iterator<Item = &'t TableFactor>) -> Vec<String> {
    factors
        .filter_map(|factor| match factor {
            TableFactor::Table { name, .. } => Some(last_part(name)),
            _ => None,
        })
        .collect()
}

fn all_tables(table: &sqlparser::ast::TableWithJoins) -> Vec<String> {
    table_names(std::iter::once(&table.relation).chain(table.joins.iter().map(|join| &join.relation)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> String {
        match check_write(sql) {
            Ok(plan) => panic!("{sql} was accepted: {plan:?}"),
            Err(refusal) => refusal,
        }
    }

    #[test]
    fn deterministic_statements_pass() {
        for sql in [
            "INSERT INTO t (v, at) VALUES ('a', NOW()), ('b', RAND())",
            "INSERT INTO t (v) SELECT v FROM u WHERE id < 3",
            "UPDATE t SET v = CONCAT(v, 'x') WHERE id = 1",
            "DELETE FROM t WHERE id > 3",
            "REPLACE INTO t VALUES (1, 'a')",
            "SELECT LAST_INSERT_ID()",
            "SELECT 'go into the engine = x' AS note",
        ] {
            let plan = check_write(sql).unwrap_or_else(|refusal| panic!("{sql}: {refusal}"));
            assert!(!plan.schema_change, "{sql}");
        }
        let plan = check_write("UPDATE t SET v = 'x' ORDER BY id LIMIT 3").expect("ordered");
        assert_eq!(plan.needs, vec![Need::TotalOrder { table: "t".into(), order: vec!["id".into()] }]);
        let plan = check_write("INSERT INTO t VALUES (1, 2) ON DUPLICATE KEY UPDATE v = v + 1").expect("upsert");
        assert_eq!(plan.needs, vec![Need::OneUniqueKey { table: "t".into() }]);
        let plan =
            check_write("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT) ENGINE=InnoDB").expect("ddl");
        assert!(plan.schema_change);
        for sql in [
            "CREATE TABLE e (id INT PRIMARY KEY, engine VARCHAR(10), note TEXT COMMENT 'engine = fast')",
            "CREATE TABLE f (id INT PRIMARY KEY) ENGINE = InnoDB",
        ] {
            assert!(check_write(sql).is_ok_and(|plan| plan.schema_change), "{sql}");
        }
    }

    #[test]
    fn unsafe_statements_are_refused_with_their_reason() {
        let cases = [
            ("INSERT INTO t VALUES (UUID())", "UUID()"),
            ("INSERT INTO t VALUES (UUID_SHORT())", "UUID_SHORT()"),
            ("INSERT INTO t VALUES (SYSDATE())", "SYSDATE()"),
            ("INSERT INTO t VALUES (USER())", "USER()"),
            ("INSERT INTO t VALUES (CONNECTION_ID())", "CONNECTION_ID()"),
            ("INSERT INTO t VALUES (FOUND_ROWS())", "FOUND_ROWS()"),
            ("SELECT GET_LOCK('x', 1)", "GET_LOCK()"),
            ("INSERT INTO t VALUES (LOAD_FILE('/etc/passwd'))", "LOAD_FILE()"),
            ("SELECT SLEEP(10)", "SLEEP()"),
            ("INSERT INTO t VALUES (@@hostname)", "system variable"),
            ("INSERT INTO t VALUES (@x)", "user variable"),
            ("UPDATE t SET v = 1 LIMIT 2", "ORDER BY"),
            ("DELETE FROM t LIMIT 2", "ORDER BY"),
            ("LOAD DATA INFILE '/tmp/x' INTO TABLE t", "parse"),
            ("XA START 'x'", "parse"),
            ("LOCK TABLES t WRITE", "LOCK TABLES"),
            ("CALL p()", "stored procedures"),
            ("CREATE PROCEDURE p() BEGIN SELECT 1; END", "parse"),
            ("CREATE EVENT e ON SCHEDULE EVERY 1 HOUR DO DELETE FROM t", "parse"),
            ("CREATE TABLE s AS SELECT * FROM t", "CREATE TABLE ... SELECT"),
            ("CREATE TEMPORARY TABLE tt (a INT PRIMARY KEY)", "temporary"),
            ("INSERT INTO mysql.user VALUES (1)", "another database"),
            ("CREATE TABLE k (a INT)", "PRIMARY KEY"),
            ("CREATE TABLE k (a INT PRIMARY KEY) ENGINE=MyISAM", "InnoDB"),
            ("INSERT INTO t SELECT * FROM u ON DUPLICATE KEY UPDATE v = 1", "ON DUPLICATE KEY"),
            ("INSERT IGNORE INTO t SELECT * FROM u", "IGNORE"),
            ("SET @x = 1", "SET"),
            ("SELECT 1 INTO @x", "refused"),
            ("CREATE TABLE k (a INT PRIMARY KEY) ENGINE = Aria", "InnoDB"),
            ("BEGIN", "transaction"),
            ("INSERT INTO _deeb_state VALUES (1)", "deeb's own"),
            ("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)", "one SQL statement"),
            ("this is not sql", "parse"),
        ];
        for (sql, reason) in cases {
            let refusal = refused(sql);
            assert!(refusal.contains(reason), "{sql}: {refusal:?} does not name {reason:?}");
        }
    }

    #[test]
    fn triggers_name_the_tables_they_insert_into() {
        let trigger = "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW BEGIN INSERT INTO log (v) VALUES (NEW.v); \
                       REPLACE INTO other (id) VALUES (NEW.id); END";
        let plan = check_write(trigger).expect("a trigger");
        assert_eq!(
            plan.needs,
            vec![Need::NoAutoIncrement { table: "log".into() }, Need::NoAutoIncrement { table: "other".into() }]
        );
    }

    #[test]
    fn one_statement_trigger_bodies_are_checked_too() {
        let plain = "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW INSERT INTO log (v) VALUES (NEW.v)";
        assert!(check_write(plain).is_ok_and(|plan| plan.schema_change));
        let unsafe_body = "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW INSERT INTO log (v) VALUES (UUID())";
        assert!(refused(unsafe_body).contains("UUID()"));
        assert_eq!(trigger_with_block_body("CREATE TABLE t (id INT PRIMARY KEY)"), None);
        assert_eq!(trigger_with_block_body("CREATE TRIGGER tr BEFORE UPDATE ON t FOR EACH ROW BEGIN END"), None);
    }

    #[test]
    fn schema_changes_are_told_by_their_first_keyword() {
        assert!(is_schema_change("  /* x */ create table t (id int primary key)"));
        assert!(is_schema_change("-- c\nDROP TABLE t"));
        assert!(is_schema_change("TRUNCATE t"));
        assert!(!is_schema_change("INSERT INTO t VALUES (1)"));
        assert!(!is_schema_change("createtable"));
    }

    #[test]
    fn reads_are_single_unlocked_queries() {
        assert!(check_read("SELECT * FROM t WHERE id = 1").is_ok());
        assert!(check_read("SHOW TABLES").is_ok());
        assert!(check_read("SELECT * FROM t FOR UPDATE").is_err());
        assert!(check_read("INSERT INTO t VALUES (1)").unwrap_err().contains("not a read"));
        assert!(check_read("SELECT * FROM mysql.user").is_err());
        assert!(check_read("SELECT TABLE_NAME FROM information_schema.TABLES").is_ok());
        assert!(check_write("INSERT INTO t SELECT TABLE_NAME FROM information_schema.TABLES").is_err());
    }
}
