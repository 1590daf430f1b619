//! The SQL vocabulary of the `client_request` target's structured mode.
//!
//! Fuzzer bytes become a batch of client write requests over a schema with
//! foreign keys (ON DELETE CASCADE, SET NULL, RESTRICT, DEFERRABLE
//! INITIALLY DEFERRED, a two-level cascade), triggers (AFTER triggers that
//! write other tables, BEFORE triggers that RAISE ROLLBACK, ABORT, FAIL or
//! IGNORE on some values, an INSTEAD OF trigger on a view), AUTOINCREMENT,
//! UNIQUE and CHECK constraints, a WITHOUT ROWID table and a STRICT table
//! with generated columns. Each statement is one of a few templates whose
//! bytes choose the conflict clause (OR ROLLBACK/ABORT/FAIL/IGNORE/REPLACE),
//! an UPSERT clause and small values that collide often, or one of
//! [`FIXED`] (DDL, runaway and oversized statements, refused ones), or raw
//! SQL text. The encoding is the inverse of the decoding, so seeds are
//! written from [`Sql`] values (`core/tests/fuzz_corpus.rs`).
//!
//! Encoding of one statement: a kind byte (bit 7 set: the statement starts a
//! new request; the low bits, modulo the number of kinds, pick the
//! template), then the template's argument bytes (a raw statement: a length
//! byte and that many bytes of text).

use deeb_proto::{value, Statement, Value};

use super::Input;

/// The schema every `client_request` state machine starts from (besides
/// deeb's own tables). `t` and `u` are the older scratch tables, kept so
/// that the protobuf seeds written for them still run.
pub const SQL_SCHEMA: &[&str] = &[
    "CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT, c BLOB, d REAL)",
    "CREATE TABLE u (x, y)",
    "CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT UNIQUE, n INTEGER CHECK (n >= 0))",
    "CREATE TABLE c (id INTEGER PRIMARY KEY, \
     pid INTEGER REFERENCES p (id) ON DELETE CASCADE ON UPDATE CASCADE, v TEXT)",
    "CREATE TABLE cc (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES c (id) ON DELETE CASCADE, v TEXT)",
    "CREATE TABLE s (id INTEGER PRIMARY KEY, \
     pid INTEGER REFERENCES p (id) ON DELETE SET NULL ON UPDATE SET NULL, v TEXT)",
    "CREATE TABLE r (id INTEGER PRIMARY KEY, pid INTEGER NOT NULL REFERENCES p (id) ON DELETE RESTRICT, v TEXT)",
    "CREATE TABLE d (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED, v TEXT)",
    "CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT UNIQUE, v INTEGER CHECK (v < 100))",
    "CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT NOT NULL, ref INTEGER)",
    "CREATE TABLE kv (k TEXT PRIMARY KEY, v) WITHOUT ROWID",
    "CREATE TABLE g (id INTEGER PRIMARY KEY, x INTEGER NOT NULL, \
     y INTEGER GENERATED ALWAYS AS (x * 2) STORED UNIQUE, z INTEGER AS (x + 1)) STRICT",
    "CREATE INDEX c_pid ON c (pid)",
    "CREATE VIEW pv AS SELECT id, name, n FROM p",
    "CREATE TRIGGER p_added AFTER INSERT ON p BEGIN INSERT INTO log (what, ref) VALUES ('p+', NEW.id); END",
    "CREATE TRIGGER c_removed AFTER DELETE ON c BEGIN INSERT INTO log (what, ref) VALUES ('c-', OLD.id); END",
    "CREATE TRIGGER s_orphaned AFTER UPDATE OF pid ON s WHEN NEW.pid IS NULL BEGIN \
     INSERT INTO kv (k, v) VALUES ('orphans', 1) ON CONFLICT (k) DO UPDATE SET v = v + 1; END",
    "CREATE TRIGGER log_counted AFTER INSERT ON log BEGIN \
     INSERT INTO kv (k, v) VALUES ('log', 1) ON CONFLICT (k) DO UPDATE SET v = v + 1; END",
    "CREATE TRIGGER a_moved AFTER UPDATE OF id ON a BEGIN INSERT INTO log (what, ref) VALUES ('a~', NEW.id); END",
    "CREATE TRIGGER a_guard BEFORE INSERT ON a WHEN NEW.v < 0 BEGIN SELECT CASE abs(NEW.v) % 4 \
     WHEN 0 THEN RAISE(ROLLBACK, 'a: rollback') WHEN 1 THEN RAISE(ABORT, 'a: abort') \
     WHEN 2 THEN RAISE(FAIL, 'a: fail') ELSE RAISE(IGNORE) END; END",
    "CREATE TRIGGER p_guard BEFORE UPDATE ON p WHEN NEW.n >= 50 BEGIN SELECT CASE NEW.n % 4 \
     WHEN 0 THEN RAISE(ROLLBACK, 'p: rollback') WHEN 1 THEN RAISE(ABORT, 'p: abort') \
     WHEN 2 THEN RAISE(FAIL, 'p: fail') ELSE RAISE(IGNORE) END; END",
    "CREATE TRIGGER pv_insert INSTEAD OF INSERT ON pv BEGIN \
     INSERT OR REPLACE INTO p (id, name, n) VALUES (NEW.id, NEW.name, NEW.n); END",
];

/// The rows every `client_request` state machine starts with.
pub const SQL_ROWS: &[&str] = &[
    "INSERT INTO t VALUES (1, 'one', x'01', 1.5), (2, 'two', NULL, NULL), (3, NULL, x'', -0.0)",
    "INSERT INTO u VALUES (1, 'x'), ('y', 2.5)",
    "INSERT INTO p (id, name, n) VALUES (1, 'n1', 1), (2, 'n2', 2), (3, 'n3', 3), (4, 'n4', 4)",
    "INSERT INTO c (id, pid, v) VALUES (1, 1, 'c1'), (2, 1, 'c2'), (3, 2, 'c3')",
    "INSERT INTO cc (id, pid, v) VALUES (1, 1, 'cc1'), (2, 3, 'cc2')",
    "INSERT INTO s (id, pid, v) VALUES (1, 2, 's1'), (2, 3, 's2')",
    "INSERT INTO r (id, pid, v) VALUES (1, 3, 'r1')",
    "INSERT INTO d (id, pid, v) VALUES (1, 4, 'd1')",
    "INSERT INTO a (k, v) VALUES ('k1', 1), ('k2', 2), ('k3', 3)",
    // The counter (3) is now above the largest id (2).
    "DELETE FROM a WHERE k = 'k3'",
    "INSERT INTO g (id, x) VALUES (1, 1), (2, 2)",
];

/// Whole statements the templates do not make: DDL on tables others
/// reference, runaway and oversized statements, statements deeb refuses,
/// and ones that read connection state or randomness.
pub const FIXED: &[&str] = &[
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) INSERT INTO log (what, ref) SELECT 'runaway', i FROM n",
    "INSERT INTO kv VALUES ('big', zeroblob(2000000))",
    "INSERT INTO kv VALUES ('b1', zeroblob(400000)), ('b2', zeroblob(400000)), ('b3', zeroblob(400000))",
    "DELETE FROM p",
    "UPDATE p SET id = id + 10",
    "INSERT INTO a DEFAULT VALUES",
    "DELETE FROM a",
    "UPDATE a SET id = id + 1000",
    "INSERT INTO p (id, name, n) SELECT id + 20, 'copy' || id, n FROM p",
    "REPLACE INTO p (id, name, n) SELECT id, name, n + 1 FROM p",
    "INSERT INTO d (id, pid, v) VALUES (100, 99, 'dangling')",
    "INSERT INTO p (id, name, n) VALUES (99, 'n99', 0)",
    "UPDATE OR REPLACE p SET name = 'n1'",
    "INSERT OR REPLACE INTO a (k, v) VALUES ('k1', 5)",
    "INSERT INTO pv (id, name, n) VALUES (1, 'view', 7)",
    "DELETE FROM p WHERE id IN (SELECT pid FROM c)",
    "UPDATE s SET pid = (SELECT max(id) FROM p)",
    "INSERT INTO log (what, ref) VALUES ('random', random())",
    "DELETE FROM sqlite_sequence WHERE name = 'a'",
    "UPDATE sqlite_sequence SET seq = seq + 100",
    "CREATE TABLE temp.tt (x)",
    "CREATE TRIGGER p_keep BEFORE DELETE ON p WHEN OLD.id = 3 BEGIN SELECT RAISE(ROLLBACK, 'keep 3'); END",
    "DROP TRIGGER a_guard",
    "DROP TRIGGER IF EXISTS p_keep",
    "CREATE UNIQUE INDEX p_n ON p (n)",
    "CREATE INDEX a_v ON a (v) WHERE v > 0",
    "ALTER TABLE p ADD COLUMN extra TEXT DEFAULT 'e'",
    "ALTER TABLE c RENAME COLUMN v TO w",
    "ALTER TABLE kv RENAME TO kv2",
    "DROP TABLE cc",
    "DROP TABLE c",
    "DROP TABLE p",
    "DROP TABLE a",
    "CREATE TABLE x (id INTEGER PRIMARY KEY AUTOINCREMENT, pid INTEGER REFERENCES a (id) ON DELETE CASCADE)",
    "INSERT INTO x (pid) SELECT id FROM a",
    "CREATE TRIGGER kv_watch AFTER UPDATE ON kv BEGIN UPDATE p SET n = n + 1 WHERE id = 1; END",
    "DROP VIEW pv",
    "CREATE TABLE y (id INTEGER PRIMARY KEY, pid INTEGER DEFAULT 1 REFERENCES p (id) ON DELETE SET DEFAULT)",
    "INSERT INTO y SELECT id, id FROM p",
    "ALTER TABLE s DROP COLUMN v",
    "DELETE FROM c; DELETE FROM p WHERE id = 1",
    "INSERT INTO a (k, v) VALUES ('k9', 1) RETURNING id, k",
    "UPDATE p SET n = n + 50",
    "SELECT * FROM p",
    "INSERT INTO kv (k, v) SELECT 'j' || id, json_object('id', id, 'n', n) FROM p",
    "UPDATE g SET x = x + 1",
    "INSERT INTO log (what, ref) VALUES ('rowid', last_insert_rowid())",
    "SAVEPOINT inner_one",
    "PRAGMA foreign_keys = OFF",
    "INSERT INTO r (id, pid, v) VALUES (9, 1, 'r9')",
    "DELETE FROM r",
    "DELETE FROM d WHERE pid NOT IN (SELECT id FROM p)",
    "UPDATE p SET id = 50 + id WHERE id = (SELECT min(id) FROM p)",
    "INSERT INTO cc (pid, v) SELECT id, 'again' FROM c",
    "CREATE TABLE z (id INTEGER PRIMARY KEY, v) WITHOUT ROWID",
    "INSERT INTO z SELECT id, n FROM p ORDER BY id DESC",
    "INSERT INTO g (id, x) SELECT id + 10, n FROM p WHERE true ON CONFLICT DO NOTHING",
    "UPDATE a SET v = v + 98",
    "INSERT INTO kv (k, v) SELECT 'w' || id, sum(n) OVER (ORDER BY id) FROM p",
];

/// Templates of [`Sql`], for the kind byte.
const KINDS: u8 = 13;
/// Requests in one structured batch.
pub const REQUESTS_MAX: usize = 6;

/// The conflict clause of an INSERT or UPDATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conflict {
    Default,
    Rollback,
    Abort,
    Fail,
    Ignore,
    Replace,
}

const CONFLICTS: [Conflict; 6] =
    [Conflict::Default, Conflict::Rollback, Conflict::Abort, Conflict::Fail, Conflict::Ignore, Conflict::Replace];

impl Conflict {
    fn or(self) -> &'static str {
        match self {
            Conflict::Default => "",
            Conflict::Rollback => " OR ROLLBACK",
            Conflict::Abort => " OR ABORT",
            Conflict::Fail => " OR FAIL",
            Conflict::Ignore => " OR IGNORE",
            Conflict::Replace => " OR REPLACE",
        }
    }
}

/// The tables that reference another by `pid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Child {
    /// `c`: ON DELETE CASCADE, ON UPDATE CASCADE.
    Cascade,
    /// `cc`: references `c` ON DELETE CASCADE (a cascade two levels deep).
    Grandchild,
    /// `s`: ON DELETE SET NULL, ON UPDATE SET NULL.
    SetNull,
    /// `r`: NOT NULL, ON DELETE RESTRICT.
    Restrict,
    /// `d`: DEFERRABLE INITIALLY DEFERRED.
    Deferred,
}

const CHILDREN: [Child; 5] = [Child::Cascade, Child::Grandchild, Child::SetNull, Child::Restrict, Child::Deferred];

impl Child {
    fn table(self) -> &'static str {
        match self {
            Child::Cascade => "c",
            Child::Grandchild => "cc",
            Child::SetNull => "s",
            Child::Restrict => "r",
            Child::Deferred => "d",
        }
    }
}

/// The UPSERT clause of an INSERT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upsert {
    None,
    /// `ON CONFLICT DO NOTHING`.
    Nothing,
    /// `ON CONFLICT (key) DO UPDATE` of a value column.
    Update,
    /// `ON CONFLICT (unique column) DO UPDATE` of the primary key.
    UpdateKey,
}

const UPSERTS: [Upsert; 4] = [Upsert::None, Upsert::Nothing, Upsert::Update, Upsert::UpdateKey];

/// The column an UPDATE of `p` sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParentColumn {
    Id,
    Name,
    N,
}

const PARENT_COLUMNS: [ParentColumn; 3] = [ParentColumn::Id, ParentColumn::Name, ParentColumn::N];

/// How a statement writes the WITHOUT ROWID table `kv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvWrite {
    Insert,
    Upsert,
    Replace,
    Ignore,
    Delete,
}

const KV_WRITES: [KvWrite; 5] = [KvWrite::Insert, KvWrite::Upsert, KvWrite::Replace, KvWrite::Ignore, KvWrite::Delete];

/// One statement of a structured request. Ids are small (0 to 7) so that
/// they collide with the rows there; a `pid` of 8 is NULL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sql {
    /// `INSERT [OR x] INTO p (id, name, n) VALUES (..) [upsert]`.
    InsertParent { conflict: Conflict, id: u8, name: u8, n: i8, upsert: Upsert },
    /// `INSERT [OR x] INTO <child> (id, pid, v) VALUES (..)`, the values as
    /// literals or as parameters.
    InsertChild { child: Child, conflict: Conflict, id: u8, pid: u8, params: bool },
    /// `UPDATE [OR x] p SET <column> = <value> WHERE id = <id>` (or `id >= <id>`).
    UpdateParent { conflict: Conflict, column: ParentColumn, value: i8, id: u8, from: bool },
    /// `DELETE FROM p WHERE id = <id>` (or `id >= <id>`).
    DeleteParent { id: u8, from: bool },
    /// `UPDATE [OR x] <child> SET pid = <pid> WHERE id = <id>`.
    UpdateChild { child: Child, conflict: Conflict, pid: u8, id: u8 },
    /// `DELETE FROM <child> WHERE id = <id>`.
    DeleteChild { child: Child, id: u8 },
    /// `INSERT [OR x] INTO a (k, v) VALUES ('k<key>', v), ('k<key+1>', v-1) ...`
    /// (`rows` rows, 1 to 3) `[upsert]`: a negative `v` makes `a_guard` RAISE.
    InsertAuto { conflict: Conflict, key: u8, v: i8, rows: u8, upsert: Upsert },
    /// `UPDATE [OR x] a SET id = id + <shift>`.
    UpdateAuto { conflict: Conflict, shift: i8 },
    /// `DELETE FROM a WHERE id >= <id>`.
    DeleteAuto { id: u8 },
    /// A write of `kv` with key `'k<key>'`.
    Kv { write: KvWrite, key: u8, v: i8 },
    /// `INSERT [OR x] INTO g (id, x) VALUES (..)` (STRICT, generated UNIQUE column).
    Generated { conflict: Conflict, id: u8, x: i8 },
    /// One of [`FIXED`].
    Fixed(u8),
    /// SQL text as it came (at most 255 bytes).
    Raw(String),
}

fn pick<T: Copy>(input: &mut Input, choices: &[T]) -> T {
    choices[usize::from(input.byte()) % choices.len()]
}

fn position<T: PartialEq>(choices: &[T], chosen: &T) -> u8 {
    choices.iter().position(|choice| choice == chosen).expect("a listed choice") as u8
}

impl Sql {
    /// Reads one statement; the flag is true if it starts a new request.
    pub fn decode(input: &mut Input) -> (bool, Sql) {
        let kind = input.byte();
        let new_request = kind & 0x80 != 0;
        let sql = match (kind & 0x7f) % KINDS {
            0 => Sql::InsertParent {
                conflict: pick(input, &CONFLICTS),
                id: input.byte() % 8,
                name: input.byte() % 8,
                n: input.byte() as i8,
                upsert: pick(input, &UPSERTS),
            },
            1 => Sql::InsertChild {
                child: pick(input, &CHILDREN),
                conflict: pick(input, &CONFLICTS),
                id: input.byte() % 8,
                pid: input.byte() % 9,
                params: input.byte() & 1 == 1,
            },
            2 => Sql::UpdateParent {
                conflict: pick(input, &CONFLICTS),
                column: pick(input, &PARENT_COLUMNS),
                value: input.byte() as i8,
                id: input.byte() % 8,
                from: input.byte() & 1 == 1,
            },
            3 => Sql::DeleteParent { id: input.byte() % 8, from: input.byte() & 1 == 1 },
            4 => Sql::UpdateChild {
                child: pick(input, &CHILDREN),
                conflict: pick(input, &CONFLICTS),
                pid: input.byte() % 9,
                id: input.byte() % 8,
            },
            5 => Sql::DeleteChild { child: pick(input, &CHILDREN), id: input.byte() % 8 },
            6 => Sql::InsertAuto {
                conflict: pick(input, &CONFLICTS),
                key: input.byte() % 8,
                v: input.byte() as i8,
                rows: 1 + input.byte() % 3,
                upsert: pick(input, &UPSERTS),
            },
            7 => Sql::UpdateAuto { conflict: pick(input, &CONFLICTS), shift: input.byte() as i8 },
            8 => Sql::DeleteAuto { id: input.byte() % 8 },
            9 => Sql::Kv { write: pick(input, &KV_WRITES), key: input.byte() % 8, v: input.byte() as i8 },
            10 => Sql::Generated { conflict: pick(input, &CONFLICTS), id: input.byte() % 8, x: input.byte() as i8 },
            11 => Sql::Fixed(input.byte() % FIXED.len() as u8),
            _ => {
                let length = usize::from(input.byte());
                Sql::Raw(String::from_utf8_lossy(input.bytes(length)).into_owned())
            }
        };
        (new_request, sql)
    }

    /// The bytes [`Sql::decode`] reads back as `self` (a raw text longer
    /// than 255 bytes is cut).
    pub fn encode(&self, new_request: bool, out: &mut Vec<u8>) {
        let flag = if new_request { 0x80 } else { 0 };
        let (kind, args): (u8, Vec<u8>) = match self {
            Sql::InsertParent { conflict, id, name, n, upsert } => {
                (0, vec![position(&CONFLICTS, conflict), *id, *name, *n as u8, position(&UPSERTS, upsert)])
            }
            Sql::InsertChild { child, conflict, id, pid, params } => {
                (1, vec![position(&CHILDREN, child), position(&CONFLICTS, conflict), *id, *pid, u8::from(*params)])
            }
            Sql::UpdateParent { conflict, column, value, id, from } => (
                2,
                vec![
                    position(&CONFLICTS, conflict),
                    position(&PARENT_COLUMNS, column),
                    *value as u8,
                    *id,
                    u8::from(*from),
                ],
            ),
            Sql::DeleteParent { id, from } => (3, vec![*id, u8::from(*from)]),
            Sql::UpdateChild { child, conflict, pid, id } => {
                (4, vec![position(&CHILDREN, child), position(&CONFLICTS, conflict), *pid, *id])
            }
            Sql::DeleteChild { child, id } => (5, vec![position(&CHILDREN, child), *id]),
            Sql::InsertAuto { conflict, key, v, rows, upsert } => {
                (6, vec![position(&CONFLICTS, conflict), *key, *v as u8, rows - 1, position(&UPSERTS, upsert)])
            }
            Sql::UpdateAuto { conflict, shift } => (7, vec![position(&CONFLICTS, conflict), *shift as u8]),
            Sql::DeleteAuto { id } => (8, vec![*id]),
            Sql::Kv { write, key, v } => (9, vec![position(&KV_WRITES, write), *key, *v as u8]),
            Sql::Generated { conflict, id, x } => (10, vec![position(&CONFLICTS, conflict), *id, *x as u8]),
            Sql::Fixed(index) => (11, vec![*index]),
            Sql::Raw(text) => {
                let mut cut = text.len().min(255);
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                let mut args = vec![cut as u8];
                args.extend_from_slice(&text.as_bytes()[..cut]);
                (12, args)
            }
        };
        out.push(flag | kind);
        out.extend(args);
    }

    /// The client statement: SQL text and its parameters.
    pub fn statement(&self) -> Statement {
        let mut params = Vec::new();
        let sql = match self {
            Sql::InsertParent { conflict, id, name, n, upsert } => {
                let upsert = match upsert {
                    Upsert::None => "",
                    Upsert::Nothing => " ON CONFLICT DO NOTHING",
                    Upsert::Update => " ON CONFLICT (id) DO UPDATE SET n = p.n + excluded.n",
                    Upsert::UpdateKey => " ON CONFLICT (name) DO UPDATE SET id = excluded.id + 8",
                };
                format!("INSERT{} INTO p (id, name, n) VALUES ({id}, 'n{name}', {n}){upsert}", conflict.or())
            }
            Sql::InsertChild { child, conflict, id, pid, params: true } => {
                params = vec![integer(i64::from(*id)), parent_value(*pid), text(format!("{}{id}", child.table()))];
                format!("INSERT{} INTO {} (id, pid, v) VALUES (?, ?, ?)", conflict.or(), child.table())
            }
            Sql::InsertChild { child, conflict, id, pid, params: false } => format!(
                "INSERT{} INTO {table} (id, pid, v) VALUES ({id}, {}, '{table}{id}')",
                conflict.or(),
                parent_literal(*pid),
                table = child.table()
            ),
            Sql::UpdateParent { conflict, column, value, id, from } => {
                let set = match column {
                    ParentColumn::Id => format!("id = {value}"),
                    ParentColumn::Name => format!("name = 'n{}'", value.rem_euclid(8)),
                    ParentColumn::N => format!("n = {value}"),
                };
                format!("UPDATE{} p SET {set} WHERE {}", conflict.or(), id_filter(*id, *from))
            }
            Sql::DeleteParent { id, from } => format!("DELETE FROM p WHERE {}", id_filter(*id, *from)),
            Sql::UpdateChild { child, conflict, pid, id } => {
                format!("UPDATE{} {} SET pid = {} WHERE id = {id}", conflict.or(), child.table(), parent_literal(*pid))
            }
            Sql::DeleteChild { child, id } => format!("DELETE FROM {} WHERE id = {id}", child.table()),
            Sql::InsertAuto { conflict, key, v, rows, upsert } => {
                let values: Vec<String> =
                    (0..*rows).map(|row| format!("('k{}', {})", key + row, i16::from(*v) - i16::from(row))).collect();
                let upsert = match upsert {
                    Upsert::None => "",
                    Upsert::Nothing => " ON CONFLICT DO NOTHING",
                    Upsert::Update => " ON CONFLICT (k) DO UPDATE SET v = a.v + excluded.v",
                    Upsert::UpdateKey => " ON CONFLICT (k) DO UPDATE SET id = a.id + 100",
                };
                format!("INSERT{} INTO a (k, v) VALUES {}{upsert}", conflict.or(), values.join(", "))
            }
            Sql::UpdateAuto { conflict, shift } => format!("UPDATE{} a SET id = id + {shift}", conflict.or()),
            Sql::DeleteAuto { id } => format!("DELETE FROM a WHERE id >= {id}"),
            Sql::Kv { write, key, v } => match write {
                KvWrite::Insert => format!("INSERT INTO kv (k, v) VALUES ('k{key}', {v})"),
                KvWrite::Upsert => format!(
                    "INSERT INTO kv (k, v) VALUES ('k{key}', {v}) ON CONFLICT (k) DO UPDATE SET v = kv.v || excluded.v"
                ),
                KvWrite::Replace => format!("REPLACE INTO kv (k, v) VALUES ('k{key}', {v})"),
                KvWrite::Ignore => format!("INSERT OR IGNORE INTO kv (k, v) VALUES ('k{key}', {v})"),
                KvWrite::Delete => format!("DELETE FROM kv WHERE k = 'k{key}'"),
            },
            Sql::Generated { conflict, id, x } => format!("INSERT{} INTO g (id, x) VALUES ({id}, {x})", conflict.or()),
            Sql::Fixed(index) => FIXED[usize::from(*index) % FIXED.len()].to_string(),
            Sql::Raw(text) => text.clone(),
        };
        Statement { sql, params, ..Default::default() }
    }
}

fn id_filter(id: u8, from: bool) -> String {
    if from {
        format!("id >= {id}")
    } else {
        format!("id = {id}")
    }
}

fn parent_literal(pid: u8) -> String {
    if pid >= 8 {
        "NULL".into()
    } else {
        pid.to_string()
    }
}

fn parent_value(pid: u8) -> Value {
    if pid >= 8 {
        Value::default()
    } else {
        integer(i64::from(pid))
    }
}

fn integer(number: i64) -> Value {
    Value { kind: Some(value::Kind::Integer(number)) }
}

fn text(string: String) -> Value {
    Value { kind: Some(value::Kind::Text(string)) }
}

/// Reads a batch of requests: statements until the input ends, a new
/// request at each flagged statement, at most [`REQUESTS_MAX`] requests of
/// `statements_max` statements (further statements are dropped).
pub fn decode_program(data: &[u8], statements_max: usize) -> Vec<Vec<Sql>> {
    let mut input = Input::new(data);
    let mut requests: Vec<Vec<Sql>> = Vec::new();
    while !input.is_empty() {
        let (new_request, sql) = Sql::decode(&mut input);
        if new_request || requests.is_empty() {
            if requests.len() == REQUESTS_MAX {
                break;
            }
            requests.push(Vec::new());
        }
        let request = requests.last_mut().expect("a request was pushed");
        if request.len() < statements_max {
            request.push(sql);
        }
    }
    requests
}

/// The bytes [`decode_program`] reads back as `requests`.
pub fn encode_program(requests: &[Vec<Sql>]) -> Vec<u8> {
    let mut out = Vec::new();
    for request in requests {
        for (position, sql) in request.iter().enumerate() {
            sql.encode(position == 0, &mut out);
        }
    }
    out
}
