//! Seeded random SQL programs over the SQLite surface a client would use.
//! Each statement is drawn against the schema as it is right now (read back
//! from a scratch reference database the program is run on while it is
//! generated), so most statements are valid and some deliberately are not.

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::program::{Program, Request};
use super::reference::Reference;
use super::schema::{Column, Schema, Table};

/// Generates a program of `requests` requests from `seed`.
pub fn generate(seed: u64, requests: usize) -> Program {
    let mut generator = Generator::new(seed);
    let mut scratch = Scratch::new();
    for _ in 0..requests {
        let schema = Schema::read(scratch.reference.connection()).expect("the scratch reference's schema is readable");
        if !scratch.push(generator.request(&schema)) {
            break;
        }
    }
    scratch.program
}

/// The requests of `requests` up to the one that outgrows the reference's
/// bounds, as [`generate`] keeps them.
pub fn keep_within_bounds(requests: impl IntoIterator<Item = Request>) -> Program {
    let mut scratch = Scratch::new();
    for request in requests {
        if !scratch.push(request) {
            break;
        }
    }
    scratch.program
}

/// A program being generated and the scratch reference it is run on.
struct Scratch {
    reference: Reference,
    program: Program,
}

impl Scratch {
    fn new() -> Self {
        Scratch { reference: Reference::open(), program: Program::default() }
    }

    /// Runs and keeps `request`; false once the program has outgrown the
    /// reference's bounds (a request stopped at the step bound is dropped).
    fn push(&mut self, request: Request) -> bool {
        if let Request::Write(statements) = &request {
            self.reference.run_and_commit(statements);
            if self.reference.interrupted() {
                return false;
            }
        }
        self.program.requests.push(request);
        !self.reference.full()
    }
}

/// Draws requests; `non_deterministic` programs also call `random()` and
/// friends (their rows are then not compared with the reference).
pub struct Generator {
    rng: SmallRng,
    non_deterministic: bool,
    next_name: u32,
}

/// Conflict clauses of INSERT OR ... / UPDATE OR ...
const CONFLICTS: &[&str] = &["", "", "", "OR REPLACE ", "OR IGNORE ", "OR ABORT ", "OR FAIL ", "OR ROLLBACK "];
/// Foreign key actions.
const ACTIONS: &[&str] = &["CASCADE", "SET NULL", "SET DEFAULT", "RESTRICT", "NO ACTION"];
/// Largest value the generator builds with an expression (keeps memory modest).
const LARGE_BYTES_MAX: usize = 3 << 20;
/// Rows any recursive CTE or INSERT ... SELECT produces at most.
const ROWS_PER_SELECT_MAX: usize = 40;

impl Generator {
    pub fn new(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let non_deterministic = rng.gen_bool(0.08);
        Generator { rng, non_deterministic, next_name: 1 }
    }

    /// One request: a query (sometimes) or 1..=4 statements.
    pub fn request(&mut self, schema: &Schema) -> Request {
        if !schema.tables.is_empty() && self.rng.gen_bool(0.12) {
            return Request::Query(self.query(schema));
        }
        let count = *[1, 1, 1, 1, 2, 2, 3, 4].choose(&mut self.rng).expect("non-empty");
        Request::Write((0..count).map(|_| self.statement(schema)).collect())
    }

    fn statement(&mut self, schema: &Schema) -> String {
        if schema.tables.is_empty() {
            return match self.rng.gen_range(0..20) {
                0 => self.refused(schema),
                1 => self.invalid(schema),
                _ => self.create_table(schema),
            };
        }
        let table = schema.tables.choose(&mut self.rng).expect("non-empty").clone();
        // Parents of foreign keys get more UPDATE and DELETE: cascades.
        let parents: Vec<&Table> = schema
            .tables
            .iter()
            .filter(|parent| {
                schema.tables.iter().any(|table| table.foreign_keys.iter().any(|key| key.parent == parent.name))
            })
            .collect();
        if let Some(parent) = parents.choose(&mut self.rng).copied().cloned().filter(|_| self.rng.gen_bool(0.15)) {
            return if self.chance(0.5) { self.delete(&parent) } else { self.update(schema, &parent) };
        }
        if table.autoincrement && self.chance(0.15) {
            return self.sequence(&table);
        }
        match self.rng.gen_range(0..100) {
            0..=24 => self.insert(schema, &table),
            25..=36 => self.update(schema, &table),
            37..=43 => self.delete(&table),
            44..=48 => self.insert_select(schema, &table),
            49..=55 => self.create_table(schema),
            56..=60 => self.create_index(&table),
            61..=63 => self.create_view(schema, &table),
            64..=70 => self.create_trigger(schema, &table),
            71..=75 => self.alter(schema, &table),
            76..=79 => self.drop(schema),
            80..=82 => self.refused(schema),
            83..=85 => self.invalid(schema),
            86..=88 => self.large(&table),
            89..=90 => self.write_view(schema),
            _ => self.insert(schema, &table),
        }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next_name += 1;
        format!("{prefix}{}", self.next_name)
    }

    fn chance(&mut self, probability: f64) -> bool {
        self.rng.gen_bool(probability)
    }

    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items.choose(&mut self.rng).expect("non-empty choice")
    }

    // --- values and expressions ----------------------------------------

    /// A literal for a column of this declared type (small ranges, so keys
    /// collide often), sometimes NULL, sometimes of another type.
    fn literal(&mut self, declared_type: &str) -> String {
        if self.non_deterministic && self.chance(0.1) {
            return self.pick(&["random()", "randomblob(4)", "datetime('now')", "abs(random()) % 5"]).to_owned();
        }
        if self.chance(0.08) {
            return "NULL".into();
        }
        let upper = declared_type.to_ascii_uppercase();
        let kind = if self.chance(0.06) { "ANY".to_owned() } else { upper };
        if kind.contains("INT") {
            return self.integer();
        }
        if kind.contains("TEXT") || kind.contains("CHAR") {
            return self.text();
        }
        if kind.contains("REAL") {
            return self.pick(&["1.5", "2.0", "-0.5", "1e3", "0.1"]).to_owned();
        }
        if kind.contains("BLOB") {
            return self.pick(&["x'00'", "x'0102'", "x''", "x'ff'"]).to_owned();
        }
        match self.rng.gen_range(0..4) {
            0 => self.text(),
            1 => "2.5".into(),
            _ => self.integer(),
        }
    }

    /// A literal for `column`, rarely NULL where NULL is refused.
    fn value_for(&mut self, column: &Column) -> String {
        for _ in 0..3 {
            let value = self.literal(&column.declared_type);
            if value != "NULL" || !(column.not_null || column.primary_key > 0) {
                return value;
            }
        }
        "NULL".into()
    }

    fn integer(&mut self) -> String {
        // Not the largest integer: once a rowid table holds the largest rowid,
        // SQLite picks new rowids at random (see `sequence` for AUTOINCREMENT).
        match self.rng.gen_range(0..20) {
            0 => "9223372036854775000".into(),
            1 => "-1".into(),
            2 => "1000".into(),
            _ => self.rng.gen_range(0..10).to_string(),
        }
    }

    fn text(&mut self) -> String {
        self.pick(&["'a'", "'A'", "'a '", "'b'", "'B'", "'x1'", "''", "'{\"a\":1}'", "'[1,2]'"]).to_owned()
    }

    /// A WHERE condition over `table`'s columns.
    fn condition(&mut self, table: &Table) -> String {
        let column = table.columns.choose(&mut self.rng).expect("tables have columns").clone();
        match self.rng.gen_range(0..8) {
            0 => format!("{} IS NULL", column.name),
            1 => format!("{} > {}", column.name, self.literal(&column.declared_type)),
            2 if !table.without_rowid => "rowid % 2 = 0".into(),
            3 => format!("{} IN (SELECT {} FROM {} LIMIT 3)", column.name, column.name, table.name),
            4 => format!("{} <> {}", column.name, self.literal(&column.declared_type)),
            _ => format!("{} = {}", column.name, self.literal(&column.declared_type)),
        }
    }

    /// A value expression for `column` (literal, arithmetic, JSON, subquery).
    fn expression(&mut self, schema: &Schema, table: &Table, column: &Column) -> String {
        let other = schema.tables.choose(&mut self.rng).expect("non-empty").name.clone();
        match self.rng.gen_range(0..12) {
            0 => format!("{} + 1", column.name),
            1 if column.primary_key > 0 => format!("{} + 1000", column.name),
            2 => format!("upper({})", column.name),
            3 => format!("json_set('{{}}', '$.a', {})", column.name),
            4 => format!("(SELECT count(*) FROM {other})"),
            5 => format!("coalesce({}, 0) - 1", column.name),
            6 => format!("json_extract('{{\"a\":[1,2,3]}}', '$.a[{}]')", self.rng.gen_range(0..4)),
            7 => format!("(SELECT max({}) FROM {})", column.name, table.name),
            _ => self.literal(&column.declared_type),
        }
    }

    // --- DML -----------------------------------------------------------

    fn insert(&mut self, schema: &Schema, table: &Table) -> String {
        if self.chance(0.04) {
            return format!("INSERT INTO {} DEFAULT VALUES", table.name);
        }
        let columns = self.insert_columns(table);
        let names: Vec<String> = columns.iter().map(|column| column.name.clone()).collect();
        let rows: Vec<String> = (0..self.rng.gen_range(1..=3))
            .map(|_| {
                let values: Vec<String> = columns.iter().map(|column| self.value_for(column)).collect();
                format!("({})", values.join(", "))
            })
            .collect();
        let verb = if self.chance(0.08) { "REPLACE ".to_owned() } else { format!("INSERT {}", self.pick(CONFLICTS)) };
        let upsert = if self.chance(0.2) { self.upsert(schema, table) } else { String::new() };
        let returning = self.returning(table);
        format!("{verb}INTO {}({}) VALUES {}{upsert}{returning}", table.name, names.join(", "), rows.join(", "))
    }

    /// Writable columns for an INSERT: a random subset, usually keeping the
    /// NOT NULL ones.
    fn insert_columns(&mut self, table: &Table) -> Vec<Column> {
        let writable: Vec<Column> = table.writable().into_iter().cloned().collect();
        let mut columns: Vec<Column> = writable
            .iter()
            .filter(|column| column.not_null || column.primary_key > 0 || self.rng.gen_bool(0.7))
            .cloned()
            .collect();
        if columns.is_empty() {
            columns.push(writable.choose(&mut self.rng).expect("a table has a writable column").clone());
        }
        columns
    }

    fn upsert(&mut self, schema: &Schema, table: &Table) -> String {
        let key: Vec<String> = table.key().iter().map(|column| column.name.clone()).collect();
        if key.is_empty() || self.chance(0.3) {
            return " ON CONFLICT DO NOTHING".into();
        }
        let writable: Vec<Column> = table.writable().into_iter().cloned().collect();
        let column = writable.choose(&mut self.rng).expect("writable").clone();
        let value = match self.rng.gen_range(0..3) {
            0 => format!("excluded.{}", column.name),
            1 => self.expression(schema, table, &column),
            _ => self.literal(&column.declared_type),
        };
        let filter = if self.chance(0.2) { format!(" WHERE {}", self.condition(table)) } else { String::new() };
        format!(" ON CONFLICT({}) DO UPDATE SET {} = {value}{filter}", key.join(", "), column.name)
    }

    fn update(&mut self, schema: &Schema, table: &Table) -> String {
        let conflict = self.pick(CONFLICTS);
        if !table.without_rowid && self.chance(0.1) {
            return self.update_window(table);
        }
        let writable: Vec<Column> = table.writable().into_iter().cloned().collect();
        let count = self.rng.gen_range(1..=2.min(writable.len()));
        let assignments: Vec<String> = writable
            .choose_multiple(&mut self.rng, count)
            .cloned()
            .collect::<Vec<_>>()
            .iter()
            .map(|column| format!("{} = {}", column.name, self.expression(schema, table, column)))
            .collect();
        let filter = if self.chance(0.7) { format!(" WHERE {}", self.condition(table)) } else { String::new() };
        let returning = self.returning(table);
        format!("UPDATE {conflict}{} SET {}{filter}{returning}", table.name, assignments.join(", "))
    }

    /// Sometimes a RETURNING clause: every column, or one column and an
    /// expression over it.
    fn returning(&mut self, table: &Table) -> String {
        if !self.chance(0.15) {
            return String::new();
        }
        if self.chance(0.5) {
            return " RETURNING *".into();
        }
        let column = &table.columns.choose(&mut self.rng).expect("a table has columns").name;
        format!(" RETURNING {column}, typeof({column}) AS kind, length({column}) AS size")
    }

    /// UPDATE ... FROM a window-function subquery.
    fn update_window(&mut self, table: &Table) -> String {
        let writable: Vec<Column> = table.writable().into_iter().cloned().collect();
        let column = writable.choose(&mut self.rng).expect("writable").name.clone();
        let order = self.pick(&["rowid", "rowid DESC"]);
        format!(
            "UPDATE {t} SET {column} = s.rn FROM (SELECT rowid AS r, row_number() OVER (ORDER BY {order}) AS rn \
             FROM {t}) AS s WHERE {t}.rowid = s.r",
            t = table.name
        )
    }

    fn delete(&mut self, table: &Table) -> String {
        let returning = self.returning(table);
        if self.chance(0.2) {
            return format!("DELETE FROM {}{returning}", table.name);
        }
        format!("DELETE FROM {} WHERE {}{returning}", table.name, self.condition(table))
    }

    /// INSERT ... SELECT from a bounded recursive CTE, JSON, a window
    /// function or another table.
    fn insert_select(&mut self, schema: &Schema, table: &Table) -> String {
        let columns = self.insert_columns(table);
        let names: Vec<String> = columns.iter().map(|column| column.name.clone()).collect();
        let conflict = self.pick(CONFLICTS);
        let width = columns.len();
        let project = |first: &str| -> String {
            let mut values = vec![first.to_owned()];
            values.extend((1..width).map(|i| format!("{first} + {i}")));
            values.join(", ")
        };
        let rows = self.rng.gen_range(1..=ROWS_PER_SELECT_MAX);
        let source = match self.rng.gen_range(0..4) {
            0 => format!(
                "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {rows}) \
                 INSERT {conflict}INTO {}({}) SELECT {} FROM s",
                table.name,
                names.join(", "),
                project("x")
            ),
            1 => format!(
                "INSERT {conflict}INTO {}({}) SELECT {} FROM json_each('[1, 2, \"a\", null, 2.5, {{\"k\": 1}}]')",
                table.name,
                names.join(", "),
                project("value")
            ),
            2 => {
                let other = schema.tables.choose(&mut self.rng).expect("non-empty").name.clone();
                format!(
                    "INSERT {conflict}INTO {}({}) SELECT {} FROM (SELECT row_number() OVER (ORDER BY 1) AS n \
                     FROM {other}) LIMIT {rows}",
                    table.name,
                    names.join(", "),
                    project("n")
                )
            }
            _ => format!(
                "INSERT {conflict}INTO {t}({n}) SELECT {n} FROM {t} ORDER BY 1 LIMIT {l}",
                t = table.name,
                n = names.join(", "),
                l = rows.min(10)
            ),
        };
        if self.chance(0.15) {
            format!("{source} WHERE true ON CONFLICT DO NOTHING")
        } else {
            source
        }
    }

    /// Statements that move an AUTOINCREMENT table's `sqlite_sequence`.
    fn sequence(&mut self, table: &Table) -> String {
        let t = &table.name;
        match self.rng.gen_range(0..5) {
            0 => format!("UPDATE {t} SET id = id + 1000"),
            1 => format!("DELETE FROM {t} WHERE id = (SELECT max(id) FROM {t})"),
            2 => format!("INSERT INTO {t}(id) VALUES (NULL)"),
            3 => format!("INSERT INTO {t}(id) VALUES ({})", self.integer()),
            // AUTOINCREMENT at the largest rowid: the next insert fails (SQLITE_FULL).
            4 if self.chance(0.3) => format!("INSERT INTO {t}(id) VALUES (9223372036854775807)"),
            _ => format!(
                "CREATE TRIGGER {} AFTER INSERT ON {t} BEGIN DELETE FROM {t} WHERE id = NEW.id; END",
                self.fresh("g")
            ),
        }
    }

    /// A large value (KB to a few MB) built by an expression, or a literal.
    fn large(&mut self, table: &Table) -> String {
        let writable: Vec<Column> = table.writable().into_iter().cloned().collect();
        let column = writable.choose(&mut self.rng).expect("writable").name.clone();
        let bytes = match self.rng.gen_range(0..20) {
            0 => self.rng.gen_range(1 << 20..=LARGE_BYTES_MAX),
            1..=5 => self.rng.gen_range(100 << 10..1 << 20),
            _ => self.rng.gen_range(1 << 10..20 << 10),
        };
        let value = match self.rng.gen_range(0..4) {
            0 => format!("zeroblob({bytes})"),
            1 if bytes < 16 << 10 => format!("'{}'", "y".repeat(bytes)),
            _ => format!("replace(hex(zeroblob({})), '0', 'z')", bytes / 2),
        };
        if self.chance(0.5) {
            format!("INSERT INTO {}({column}) VALUES ({value})", table.name)
        } else {
            format!("UPDATE {} SET {column} = {value} WHERE {}", table.name, self.condition(table))
        }
    }

    /// INSERT/UPDATE/DELETE on a view (needs an INSTEAD OF trigger).
    fn write_view(&mut self, schema: &Schema) -> String {
        let Some((view, columns)) = schema.views.choose(&mut self.rng).cloned() else {
            return self.query(schema);
        };
        let Some(column) = columns.choose(&mut self.rng).cloned() else {
            return format!("DELETE FROM {view}");
        };
        match self.rng.gen_range(0..3) {
            0 => format!("INSERT INTO {view}({column}) VALUES ({})", self.integer()),
            1 => format!("UPDATE {view} SET {column} = {}", self.integer()),
            _ => format!("DELETE FROM {view} WHERE {column} = {}", self.integer()),
        }
    }

    // --- DDL -----------------------------------------------------------

    fn create_table(&mut self, schema: &Schema) -> String {
        let name = self.fresh("t");
        let strict = self.chance(0.2);
        let mut definitions = Vec::new();
        let mut constraints = Vec::new();
        let key_kind = self.rng.gen_range(0..5);
        let autoincrement = key_kind == 0 && self.chance(0.4);
        match key_kind {
            0 => {
                definitions.push(format!("id INTEGER PRIMARY KEY{}", if autoincrement { " AUTOINCREMENT" } else { "" }))
            }
            1 => {
                let collate = self.collation();
                definitions.push("a INTEGER".into());
                definitions.push(format!("b TEXT{collate}"));
                constraints.push("PRIMARY KEY(a, b)".to_owned());
            }
            2 => {
                let collate = self.collation();
                definitions.push(format!("k TEXT PRIMARY KEY{collate}"));
            }
            _ => {}
        }
        let keyed = key_kind <= 2;
        let without_rowid = keyed && !autoincrement && self.chance(0.3);
        for index in 0..self.rng.gen_range(1..=4) {
            definitions.push(self.column_definition(&format!("c{index}"), strict));
        }
        if self.chance(0.2) {
            definitions.push(self.generated_column(strict));
        }
        let own_key = match key_kind {
            0 => Some("id"),
            2 => Some("k"),
            _ => None,
        };
        if let Some(reference) = self.foreign_key(schema, &name, own_key) {
            definitions.push(reference);
        }
        if self.chance(0.12) {
            constraints.push("UNIQUE(c0, c1)".into());
        }
        if self.chance(0.12) {
            constraints.push("CHECK(c0 IS NULL OR length(c0) < 40)".into());
        }
        definitions.extend(constraints);
        let mut options = Vec::new();
        if without_rowid {
            options.push("WITHOUT ROWID");
        }
        if strict {
            options.push("STRICT");
        }
        let exists = if self.chance(0.05) { "IF NOT EXISTS " } else { "" };
        format!("CREATE TABLE {exists}{name}({}) {}", definitions.join(", "), options.join(", ")).trim_end().to_owned()
    }

    fn collation(&mut self) -> &'static str {
        match self.rng.gen_range(0..6) {
            0 => " COLLATE NOCASE",
            1 => " COLLATE RTRIM",
            _ => "",
        }
    }

    fn column_definition(&mut self, name: &str, strict: bool) -> String {
        let types: &[&str] = if strict {
            &["INTEGER", "INT", "TEXT", "REAL", "BLOB", "ANY"]
        } else {
            &["INTEGER", "TEXT", "REAL", "BLOB", "NUMERIC", "", "VARCHAR(10)"]
        };
        let declared_type = self.pick(types).to_owned();
        let mut definition = format!("{name} {declared_type}").trim_end().to_owned();
        if declared_type.contains("TEXT") && self.chance(0.3) {
            definition.push_str(self.collation());
        }
        if self.chance(0.2) {
            definition.push_str(" NOT NULL");
        }
        if self.chance(0.3) {
            let value = self.literal(&declared_type);
            definition.push_str(&format!(" DEFAULT ({value})"));
        }
        if self.chance(0.12) {
            definition.push_str(" UNIQUE");
        }
        if self.chance(0.1) {
            definition.push_str(&format!(" CHECK({name} IS NULL OR {name} <> 7)"));
        }
        definition
    }

    fn generated_column(&mut self, strict: bool) -> String {
        let storage = self.pick(&["", " VIRTUAL", " STORED"]);
        match self.rng.gen_range(0..3) {
            0 => format!("g INTEGER AS (length(c0)){storage}"),
            1 => format!("g {} AS (upper(c0)){storage}", if strict { "TEXT" } else { "" }),
            _ => format!("g INTEGER AS (coalesce(json_valid(c0), 0) + 1){storage}"),
        }
    }

    /// A `p INTEGER REFERENCES parent(key) ON DELETE ... ON UPDATE ...`
    /// column, sometimes deferred, sometimes to itself, sometimes to a
    /// column that is not a key (a "foreign key mismatch" later).
    fn foreign_key(&mut self, schema: &Schema, name: &str, own_key: Option<&str>) -> Option<String> {
        if schema.tables.is_empty() || !self.chance(0.4) {
            return None;
        }
        let parents: Vec<&Table> = schema.tables.iter().filter(|table| table.key().len() == 1).collect();
        let (parent_name, parent_column) = match (parents.choose(&mut self.rng), own_key) {
            (_, Some(key)) if self.rng.gen_bool(0.15) => (name.to_owned(), key.to_owned()),
            (Some(parent), _) if self.rng.gen_bool(0.95) => (parent.name.clone(), parent.key()[0].name.clone()),
            // Rarely, a column that is not a key: "foreign key mismatch".
            _ if self.rng.gen_bool(0.1) => {
                let parent = schema.tables.choose(&mut self.rng).expect("non-empty");
                (parent.name.clone(), parent.columns[0].name.clone())
            }
            _ => return None,
        };
        let on_delete = self.pick(ACTIONS);
        let on_update = self.pick(ACTIONS);
        let default = if self.chance(0.5) { " DEFAULT 0" } else { "" };
        let deferred = if self.chance(0.25) { " DEFERRABLE INITIALLY DEFERRED" } else { "" };
        Some(format!(
            "p INTEGER{default} REFERENCES {parent_name}({parent_column}) ON DELETE {on_delete} ON UPDATE {on_update}{deferred}"
        ))
    }

    fn create_index(&mut self, table: &Table) -> String {
        let name = self.fresh("i");
        let unique = if self.chance(0.3) { "UNIQUE " } else { "" };
        let column = table.columns.choose(&mut self.rng).expect("columns").name.clone();
        let key = match self.rng.gen_range(0..6) {
            0 => format!("lower({column})"),
            1 => format!("{column} + 1"),
            2 => format!("CASE WHEN json_valid({column}) THEN json_extract({column}, '$.a') END"),
            3 => format!("{column} COLLATE NOCASE DESC"),
            _ => {
                let second = table.columns.choose(&mut self.rng).expect("columns").name.clone();
                if second == column {
                    column.clone()
                } else {
                    format!("{column}, {second}")
                }
            }
        };
        let partial = if self.chance(0.25) { format!(" WHERE {column} IS NOT NULL") } else { String::new() };
        format!("CREATE {unique}INDEX {name} ON {}({key}){partial}", table.name)
    }

    fn create_view(&mut self, schema: &Schema, table: &Table) -> String {
        let name = self.fresh("v");
        let column = table.columns.choose(&mut self.rng).expect("columns").name.clone();
        let select = match self.rng.gen_range(0..4) {
            0 => format!("SELECT {column}, count(*) AS n FROM {} GROUP BY {column}", table.name),
            1 => format!("SELECT {column}, row_number() OVER (ORDER BY {column}) AS rn FROM {}", table.name),
            2 => {
                let other = schema.tables.choose(&mut self.rng).expect("non-empty").name.clone();
                format!(
                    "SELECT a.{column} AS x, b.rowid AS y FROM {} a JOIN {other} b ON a.{column} = b.rowid",
                    table.name
                )
            }
            _ => format!("SELECT * FROM {} WHERE {}", table.name, self.condition(table)),
        };
        format!("CREATE VIEW {name} AS {select}")
    }

    fn create_trigger(&mut self, schema: &Schema, table: &Table) -> String {
        let name = self.fresh("g");
        if let Some((view, columns)) = schema.views.choose(&mut self.rng).cloned().filter(|_| self.chance(0.25)) {
            let event = self.pick(&["INSERT", "UPDATE", "DELETE"]);
            let body = self.trigger_body(schema, event, &columns);
            return format!("CREATE TRIGGER {name} INSTEAD OF {event} ON {view} BEGIN {body} END");
        }
        let timing = self.pick(&["BEFORE", "AFTER", "AFTER"]);
        let event = self.pick(&["INSERT", "UPDATE", "DELETE"]);
        let columns: Vec<String> = table.columns.iter().map(|column| column.name.clone()).collect();
        let when = if self.chance(0.3) {
            let row = if event == "DELETE" { "OLD" } else { "NEW" };
            format!(" WHEN {row}.{} IS NOT NULL", columns.choose(&mut self.rng).expect("columns"))
        } else {
            String::new()
        };
        let body = self.trigger_body(schema, event, &columns);
        format!("CREATE TRIGGER {name} {timing} {event} ON {}{when} BEGIN {body} END", table.name)
    }

    /// One or two trigger statements referring to NEW/OLD of `columns`.
    fn trigger_body(&mut self, schema: &Schema, event: &str, columns: &[String]) -> String {
        let row = if event == "DELETE" { "OLD" } else { "NEW" };
        let source = columns.choose(&mut self.rng).map(|column| format!("{row}.{column}"));
        let value = source.unwrap_or_else(|| "1".into());
        let target = schema.tables.choose(&mut self.rng).expect("non-empty").clone();
        let target_column = target.writable().choose(&mut self.rng).map(|column| column.name.clone());
        let target_column = target_column.unwrap_or_else(|| "rowid".into());
        let statement = match self.rng.gen_range(0..7) {
            0 => format!("INSERT {}INTO {}({target_column}) VALUES ({value});", self.pick(CONFLICTS), target.name),
            1 => format!("UPDATE {} SET {target_column} = {value} WHERE rowid = 1;", target.name),
            2 => format!("DELETE FROM {} WHERE {target_column} = {value};", target.name),
            3 => format!("SELECT RAISE(ABORT, 'refused by trigger') WHERE {value} = {};", self.integer()),
            4 => format!("SELECT RAISE(ROLLBACK, 'rolled back by trigger') WHERE {value} = {};", self.integer()),
            5 => format!("SELECT RAISE(FAIL, 'failed by trigger') WHERE {value} = {};", self.integer()),
            _ => format!("SELECT RAISE(IGNORE) WHERE {value} = {};", self.integer()),
        };
        if self.chance(0.3) {
            format!("{statement} INSERT OR IGNORE INTO {}({target_column}) VALUES ({value});", target.name)
        } else {
            statement
        }
    }

    fn alter(&mut self, schema: &Schema, table: &Table) -> String {
        let column = table.columns.choose(&mut self.rng).expect("columns").name.clone();
        match self.rng.gen_range(0..5) {
            0 => format!("ALTER TABLE {} RENAME TO {}", table.name, self.fresh("t")),
            1 => format!("ALTER TABLE {} RENAME COLUMN {column} TO {}", table.name, self.fresh("c")),
            2 => format!("ALTER TABLE {} DROP COLUMN {column}", table.name),
            3 if self.chance(0.5) => {
                let own_key = table.key().first().map(|column| column.name.clone()).filter(|_| table.key().len() == 1);
                let reference =
                    self.foreign_key(schema, &table.name, own_key.as_deref()).unwrap_or_else(|| "p INTEGER".into());
                let reference = reference.replacen("p INTEGER", &format!("{} INTEGER", self.fresh("c")), 1);
                format!("ALTER TABLE {} ADD COLUMN {reference}", table.name)
            }
            _ => {
                let name = self.fresh("c");
                let definition = self.column_definition(&name, table.strict);
                format!("ALTER TABLE {} ADD COLUMN {definition}", table.name)
            }
        }
    }

    fn drop(&mut self, schema: &Schema) -> String {
        let mut choices: Vec<(&str, String)> =
            schema.tables.iter().map(|table| ("TABLE", table.name.clone())).collect();
        choices.extend(schema.views.iter().map(|(name, _)| ("VIEW", name.clone())));
        choices.extend(schema.indexes.iter().map(|name| ("INDEX", name.clone())));
        choices.extend(schema.triggers.iter().map(|name| ("TRIGGER", name.clone())));
        let (kind, name) = choices.choose(&mut self.rng).expect("a table exists").clone();
        let exists = if self.chance(0.2) { "IF EXISTS " } else { "" };
        format!("DROP {kind} {exists}{name}")
    }

    /// Statements deeb refuses by design (the documented refusals).
    fn refused(&mut self, schema: &Schema) -> String {
        let table = schema.tables.first().map_or("t1".to_owned(), |table| table.name.clone());
        match self.rng.gen_range(0..12) {
            0 => format!("CREATE TEMP TABLE {}(x)", self.fresh("tmp")),
            1 => format!("CREATE TABLE temp.{}(x)", self.fresh("tmp")),
            2 => "PRAGMA user_version = 7".into(),
            3 => "PRAGMA foreign_keys = OFF".into(),
            4 => "SAVEPOINT s".into(),
            5 => format!("CREATE TABLE {} AS SELECT * FROM {table}", self.fresh("t")),
            6 => "DELETE FROM sqlite_sequence".into(),
            7 => "UPDATE sqlite_sequence SET seq = 0".into(),
            8 => "ANALYZE".into(),
            9 => format!("SELECT 1; DELETE FROM {table}"),
            10 => format!("CREATE TEMP VIEW {} AS SELECT 1", self.fresh("tmpv")),
            _ => format!("CREATE TABLE _deeb_{}(x)", self.fresh("x")),
        }
    }

    /// Statements that fail in SQLite too.
    fn invalid(&mut self, schema: &Schema) -> String {
        let table = schema.tables.first().map_or("t1".to_owned(), |table| table.name.clone());
        match self.rng.gen_range(0..6) {
            0 => "INSERT INTO".into(),
            1 => "INSERT INTO missing VALUES (1)".into(),
            2 => format!("INSERT INTO {table} VALUES (1, 2, 3, 4, 5, 6, 7, 8, 9)"),
            3 => format!("UPDATE {table} SET missing = 1"),
            4 => "SELEC 1".into(),
            _ => format!("CREATE TABLE {table}(x)"),
        }
    }

    // --- queries -------------------------------------------------------

    fn query(&mut self, schema: &Schema) -> String {
        let table = schema.tables.choose(&mut self.rng).expect("non-empty").clone();
        let column = table.columns.choose(&mut self.rng).expect("columns").name.clone();
        match self.rng.gen_range(0..9) {
            0 => format!("SELECT {column}, count(*), sum(length({column})) FROM {} GROUP BY 1", table.name),
            1 => format!(
                "SELECT {column}, row_number() OVER (PARTITION BY typeof({column}) ORDER BY {column}) FROM {}",
                table.name
            ),
            2 => format!("SELECT json_group_array({column}) FROM (SELECT {column} FROM {} ORDER BY 1)", table.name),
            3 => "SELECT name, seq FROM sqlite_sequence".into(),
            4 => match schema.views.choose(&mut self.rng) {
                Some((view, _)) => format!("SELECT * FROM {view}"),
                None => format!("SELECT * FROM {}", table.name),
            },
            5 => format!("SELECT * FROM {} WHERE {}", table.name, self.condition(&table)),
            6 => format!("SELECT * FROM pragma_table_info('{}')", table.name),
            _ => format!("SELECT * FROM {}", table.name),
        }
    }
}
