//! A small safe wrapper over the SQLite C APIs rusqlite does not expose
//! without extra features: sessions and changesets, the authorizer and the
//! PRNG seed. All `unsafe` code of the SQL state machine lives here.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{ffi, params_from_iter, Connection, ToSql};

/// Builds a rusqlite error from a SQLite result code.
fn code_error(code: c_int, what: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), Some(what.to_string()))
}

/// Converts a possibly-null C string into an owned `String`.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string valid for the call.
unsafe fn c_str(p: *const c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        // SAFETY: non-null and NUL-terminated per the caller's contract.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

/// Table filter: record every table but `sqlite_sequence`, which each
/// replica maintains itself when rows with explicit rowids are applied.
unsafe extern "C" fn session_filter(_ctx: *mut c_void, table: *const c_char) -> c_int {
    // SAFETY: SQLite passes a valid NUL-terminated table name.
    let name = unsafe { c_str(table) }.unwrap_or_default();
    c_int::from(!name.eq_ignore_ascii_case("sqlite_sequence"))
}

/// Copies a buffer SQLite allocated and frees it.
///
/// # Safety
/// `p` is null or a `sqlite3_malloc`ed buffer of at least `n` bytes that
/// nothing else frees.
unsafe fn take_buffer(p: *mut c_void, n: c_int) -> Vec<u8> {
    let out = match usize::try_from(n) {
        Ok(len) if !p.is_null() && len > 0 => {
            // SAFETY: per the contract, `len` bytes are readable at `p`.
            unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }.to_vec()
        }
        _ => Vec::new(),
    };
    // SAFETY: per the contract; sqlite3_free accepts null.
    unsafe { ffi::sqlite3_free(p) };
    out
}

/// Copies an error message SQLite allocated and frees it.
///
/// # Safety
/// `p` is null or a NUL-terminated `sqlite3_malloc`ed string nothing else
/// frees.
unsafe fn take_message(p: *mut c_char) -> Option<String> {
    // SAFETY: per the contract.
    let message = unsafe { c_str(p) };
    // SAFETY: per the contract; sqlite3_free accepts null.
    unsafe { ffi::sqlite3_free(p.cast()) };
    message
}

/// A SQLite session recording every change to tables of `main`, including
/// tables without a declared primary key (keyed by rowid). Deleted on drop.
pub(crate) struct Session<'c> {
    raw: *mut ffi::sqlite3_session,
    _conn: PhantomData<&'c Connection>,
}

impl<'c> Session<'c> {
    /// Creates a session on `conn`'s `main` database attached to all tables.
    pub(crate) fn new(conn: &'c Connection) -> rusqlite::Result<Self> {
        let mut raw = ptr::null_mut();
        // SAFETY: the handle is valid while `conn` is borrowed; `raw` is an
        // out pointer; "main" is NUL-terminated.
        let rc = unsafe { ffi::sqlite3session_create(conn.handle(), c"main".as_ptr(), &mut raw) };
        if rc != ffi::SQLITE_OK {
            return Err(code_error(rc, "sqlite3session_create"));
        }
        let session = Session { raw, _conn: PhantomData };
        let mut on: c_int = 1;
        // SAFETY: `raw` is a live session; the ROWID option takes an int*.
        // It must be set before any table is attached.
        let rc = unsafe {
            ffi::sqlite3session_object_config(
                session.raw,
                ffi::SQLITE_SESSION_OBJCONFIG_ROWID,
                (&mut on as *mut c_int).cast(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(code_error(rc, "sqlite3session_object_config"));
        }
        // SAFETY: as above; the SIZE option makes the changeset size cheap
        // to ask while the statement runs.
        let rc = unsafe {
            ffi::sqlite3session_object_config(
                session.raw,
                ffi::SQLITE_SESSION_OBJCONFIG_SIZE,
                (&mut on as *mut c_int).cast(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(code_error(rc, "sqlite3session_object_config"));
        }
        // SAFETY: live session; the filter is a plain function, no context.
        unsafe { ffi::sqlite3session_table_filter(session.raw, Some(session_filter), ptr::null_mut()) };
        // SAFETY: live session; a null table name attaches all tables.
        let rc = unsafe { ffi::sqlite3session_attach(session.raw, ptr::null()) };
        if rc != ffi::SQLITE_OK {
            return Err(code_error(rc, "sqlite3session_attach"));
        }
        Ok(session)
    }

    /// An upper bound on the size of the changeset recorded so far.
    pub(crate) fn changeset_size(&self) -> u64 {
        // SAFETY: live session created with the SIZE option.
        u64::try_from(unsafe { ffi::sqlite3session_changeset_size(self.raw) }).unwrap_or(0)
    }

    /// The changeset recorded so far (empty if nothing changed).
    pub(crate) fn changeset(&self) -> rusqlite::Result<Vec<u8>> {
        let mut n: c_int = 0;
        let mut p: *mut c_void = ptr::null_mut();
        // SAFETY: live session; out pointers are valid locals.
        let rc = unsafe { ffi::sqlite3session_changeset(self.raw, &mut n, &mut p) };
        // SAFETY: what SQLite handed out (or null).
        let out = unsafe { take_buffer(p, n) };
        if rc != ffi::SQLITE_OK {
            return Err(code_error(rc, "sqlite3session_changeset"));
        }
        Ok(out)
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // SAFETY: `raw` came from sqlite3session_create and is deleted once.
        unsafe { ffi::sqlite3session_delete(self.raw) };
    }
}

/// One change of a changeset: table name, column count and operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChangeInfo {
    pub table: String,
    pub columns: usize,
    pub op: c_int,
}

/// An iterator over a changeset buffer, finalized on drop.
struct ChangesetIter<'a> {
    raw: *mut ffi::sqlite3_changeset_iter,
    _data: PhantomData<&'a [u8]>,
}

impl Drop for ChangesetIter<'_> {
    fn drop(&mut self) {
        // SAFETY: `raw` came from sqlite3changeset_start, finalized once.
        unsafe { ffi::sqlite3changeset_finalize(self.raw) };
    }
}

/// Lists the changes of `changeset` in order, without applying them.
pub(crate) fn changeset_changes(changeset: &[u8]) -> rusqlite::Result<Vec<ChangeInfo>> {
    let mut out = Vec::new();
    for_each_change(changeset, |iter| {
        out.push(current_change(iter)?);
        Ok(())
    })?;
    Ok(out)
}

/// The changes of `changeset` as up to three changesets, to be applied in
/// order: its DELETEs, its UPDATEs, then its INSERTs.
///
/// A session orders a table's changes by hash, not by time, and keys them by
/// the primary key's bytes. Where a key has a non-binary collation, one
/// statement can delete `'B'` and insert `'b'`, the same key to SQLite: the
/// insert must not be applied first.
pub(crate) fn split_by_operation(changeset: &[u8]) -> rusqlite::Result<Vec<Vec<u8>>> {
    let order = [ffi::SQLITE_DELETE, ffi::SQLITE_UPDATE, ffi::SQLITE_INSERT];
    let groups = [ChangeGroup::new()?, ChangeGroup::new()?, ChangeGroup::new()?];
    let mut used = [false; 3];
    for_each_change(changeset, |iter| {
        let op = current_change(iter)?.op;
        let slot = order.iter().position(|o| *o == op).ok_or_else(|| code_error(ffi::SQLITE_CORRUPT, "change op"))?;
        used[slot] = true;
        groups[slot].add_change(iter)
    })?;
    if used.iter().filter(|u| **u).count() <= 1 {
        return Ok(vec![changeset.to_vec()]);
    }
    groups.iter().zip(used).filter(|(_, used)| *used).map(|(group, _)| group.output()).collect()
}

/// The changes of `changeset` as two changesets, to be applied in order:
/// its DELETEs, then its INSERTs, with each UPDATE written as a DELETE of
/// the row as `conn` holds it now and an INSERT of the row as the UPDATE
/// leaves it.
///
/// Applied one row at a time, the UPDATEs of a valid changeset can still
/// fail a UNIQUE constraint part way (two rows swapping the values of a
/// UNIQUE column: neither can go first). Applied this way they cannot: every
/// state in between holds a subset of the final rows. SQLite's own remedy,
/// writing random values in between, can fail a CHECK constraint, so it is
/// not used. An UPDATE of a row `conn` does not hold is kept as it is, for
/// the apply to report.
pub(crate) fn updates_as_deletes_and_inserts(conn: &Connection, changeset: &[u8]) -> rusqlite::Result<[Vec<u8>; 2]> {
    let deletes = ChangeGroup::with_schema(conn)?;
    let inserts = ChangeGroup::with_schema(conn)?;
    for_each_change(changeset, |iter| {
        let change = current_change(iter)?;
        match change.op {
            ffi::SQLITE_INSERT => inserts.add_change(iter),
            ffi::SQLITE_DELETE => deletes.add_change(iter),
            _ => match updated_row(conn, iter, &change)? {
                None => deletes.add_change(iter),
                Some((old, new)) => {
                    deletes.add_row(ffi::SQLITE_DELETE, &change.table, &old)?;
                    inserts.add_row(ffi::SQLITE_INSERT, &change.table, &new)
                }
            },
        }
    })?;
    Ok([deletes.output()?, inserts.output()?])
}

/// For the UPDATE the iterator is on: the whole row before (as `conn` holds
/// it, with the change's old values) and after, or None if `conn` has no
/// row with that key.
fn updated_row(
    conn: &Connection,
    iter: *mut ffi::sqlite3_changeset_iter,
    change: &ChangeInfo,
) -> rusqlite::Result<Option<(Vec<Cell>, Vec<Cell>)>> {
    let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let mut columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info(?1)")?
        .query_map([&change.table], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if columns.len() + 1 == change.columns {
        // A table without a declared key: the changeset's column 0 is the rowid.
        columns.insert(0, "_rowid_".into());
    }
    if columns.len() != change.columns {
        return Ok(None);
    }
    let pk = primary_key_columns(iter)?;
    let keys: Vec<usize> = (0..change.columns).filter(|i| pk.get(*i).is_some_and(|k| *k != 0)).collect();
    let sql = format!(
        "SELECT {} FROM main.{} WHERE {}",
        columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", "),
        quote(&change.table),
        keys.iter()
            .enumerate()
            .map(|(n, i)| format!("{} IS ?{}", quote(&columns[*i]), n + 1))
            .collect::<Vec<_>>()
            .join(" AND "),
    );
    let key_values = keys.iter().map(|i| change_value(iter, false, *i)).collect::<rusqlite::Result<Vec<_>>>()?;
    let mut statement = conn.prepare(&sql)?;
    let mut rows = statement.query(params_from_iter(key_values.into_iter().map(|v| v.unwrap_or(Cell::Null))))?;
    let Some(row) = rows.next()? else { return Ok(None) };
    let mut old = Vec::with_capacity(change.columns);
    let mut new = Vec::with_capacity(change.columns);
    for i in 0..change.columns {
        let current = Cell::from(row.get_ref(i)?);
        let before = change_value(iter, false, i)?.unwrap_or(current);
        new.push(change_value(iter, true, i)?.unwrap_or_else(|| before.clone()));
        old.push(before);
    }
    Ok(Some((old, new)))
}

/// The key of a row a changeset inserts or updates.
#[derive(Clone, Debug)]
pub(crate) struct ChangedKey {
    pub table: String,
    /// The key's values, in the table's column order.
    pub values: Vec<Cell>,
}

/// The keys of the rows `changesets` insert or update in tables `wanted`
/// accepts, in order.
pub(crate) fn changed_keys(changesets: &[&[u8]], wanted: impl Fn(&str) -> bool) -> rusqlite::Result<Vec<ChangedKey>> {
    let mut keys = Vec::new();
    for changeset in changesets {
        for_each_change(changeset, |iter| {
            let change = current_change(iter)?;
            if change.op == ffi::SQLITE_DELETE || !wanted(&change.table) {
                return Ok(());
            }
            let pk = primary_key_columns(iter)?;
            let columns: Vec<usize> = (0..pk.len()).filter(|i| pk[*i] != 0).collect();
            // An UPDATE's key is in its old record (a key never changes in
            // an UPDATE), an INSERT's in its new one.
            let new = change.op == ffi::SQLITE_INSERT;
            let values = columns
                .iter()
                .map(|col| change_value(iter, new, *col)?.ok_or_else(|| code_error(ffi::SQLITE_CORRUPT, "key value")))
                .collect::<rusqlite::Result<_>>()?;
            keys.push(ChangedKey { table: change.table, values });
            Ok(())
        })?;
    }
    Ok(keys)
}

/// One change of a changeset with its values, as the change stream shows it.
#[derive(Clone, Debug)]
pub(crate) struct RowChange {
    pub table: String,
    /// `SQLITE_INSERT`, `SQLITE_UPDATE` or `SQLITE_DELETE`.
    pub op: c_int,
    /// Per column: part of the primary key.
    pub key: Vec<bool>,
    /// Per column, the value before (DELETE: all; UPDATE: the key and the
    /// columns it changed, None elsewhere; INSERT: none).
    pub old: Vec<Option<Cell>>,
    /// Per column, the value after (INSERT: all; UPDATE: the columns it
    /// changed; DELETE: none).
    pub new: Vec<Option<Cell>>,
}

/// The changes of `changeset` with their values, in order.
pub(crate) fn row_changes(changeset: &[u8]) -> rusqlite::Result<Vec<RowChange>> {
    let mut out = Vec::new();
    for_each_change(changeset, |iter| {
        let ChangeInfo { table, columns, op } = current_change(iter)?;
        let key = primary_key_columns(iter)?.into_iter().map(|flag| flag != 0).collect();
        let values =
            |new: bool| (0..columns).map(|col| change_value(iter, new, col)).collect::<rusqlite::Result<Vec<_>>>();
        let old = if op == ffi::SQLITE_INSERT { vec![None; columns] } else { values(false)? };
        let new = if op == ffi::SQLITE_DELETE { vec![None; columns] } else { values(true)? };
        out.push(RowChange { table, op, key, old, new });
        Ok(())
    })?;
    Ok(out)
}

/// The primary-key flags of the iterator's current table, one per column.
fn primary_key_columns(iter: *mut ffi::sqlite3_changeset_iter) -> rusqlite::Result<Vec<u8>> {
    let mut flags: *mut u8 = ptr::null_mut();
    let mut n: c_int = 0;
    // SAFETY: `iter` points at a current change; out pointers are locals.
    let rc = unsafe { ffi::sqlite3changeset_pk(iter, &mut flags, &mut n) };
    if rc != ffi::SQLITE_OK || flags.is_null() {
        return Err(code_error(rc, "sqlite3changeset_pk"));
    }
    // SAFETY: SQLite returns `n` flags valid while the iterator is on this change.
    Ok(unsafe { std::slice::from_raw_parts(flags, usize::try_from(n).unwrap_or(0)) }.to_vec())
}

/// Column `col` of the current change's old.* or new.* record, or None if
/// the record has no value for it (an UPDATE's unchanged column).
fn change_value(iter: *mut ffi::sqlite3_changeset_iter, new: bool, col: usize) -> rusqlite::Result<Option<Cell>> {
    let col = c_int::try_from(col).map_err(|_| code_error(ffi::SQLITE_RANGE, "column"))?;
    let mut value: *mut ffi::sqlite3_value = ptr::null_mut();
    // SAFETY: `iter` points at a current change whose op has the record
    // asked for (callers ask old.* of UPDATE/DELETE, new.* of
    // UPDATE/INSERT); `value` is an out pointer.
    let rc = unsafe {
        if new {
            ffi::sqlite3changeset_new(iter, col, &mut value)
        } else {
            ffi::sqlite3changeset_old(iter, col, &mut value)
        }
    };
    if rc != ffi::SQLITE_OK {
        return Err(code_error(rc, "sqlite3changeset_old/new"));
    }
    if value.is_null() {
        return Ok(None);
    }
    // SAFETY: a valid protected value owned by the iterator; text and blob
    // pointers are read (and copied) before the iterator moves.
    // Text is read as bytes: SQLite text need not be valid UTF-8.
    let bytes = |p: *const u8| {
        // SAFETY: `p` is null or the value's buffer of sqlite3_value_bytes
        // bytes, valid until the iterator moves; it is copied at once.
        unsafe {
            let n = usize::try_from(ffi::sqlite3_value_bytes(value)).unwrap_or(0);
            if p.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(p, n).to_vec()
            }
        }
    };
    // SAFETY: a valid protected value owned by the iterator.
    let owned = unsafe {
        match ffi::sqlite3_value_type(value) {
            ffi::SQLITE_INTEGER => Cell::Integer(ffi::sqlite3_value_int64(value)),
            ffi::SQLITE_FLOAT => Cell::Real(ffi::sqlite3_value_double(value)),
            ffi::SQLITE_TEXT => Cell::Text(bytes(ffi::sqlite3_value_text(value))),
            ffi::SQLITE_BLOB => Cell::Blob(bytes(ffi::sqlite3_value_blob(value).cast())),
            _ => Cell::Null,
        }
    };
    Ok(Some(owned))
}

/// One stored SQLite value, owned (text as its bytes).
#[derive(Clone, Debug)]
pub(crate) enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl From<ValueRef<'_>> for Cell {
    fn from(value: ValueRef<'_>) -> Self {
        match value {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Integer(i),
            ValueRef::Real(f) => Cell::Real(f),
            ValueRef::Text(t) => Cell::Text(t.to_vec()),
            ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
        }
    }
}

impl ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Cell::Null => ValueRef::Null,
            Cell::Integer(i) => ValueRef::Integer(*i),
            Cell::Real(f) => ValueRef::Real(*f),
            Cell::Text(t) => ValueRef::Text(t),
            Cell::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// A changegroup, deleted on drop.
struct ChangeGroup {
    raw: *mut ffi::sqlite3_changegroup,
}

impl ChangeGroup {
    fn new() -> rusqlite::Result<Self> {
        let mut raw = ptr::null_mut();
        // SAFETY: `raw` is an out pointer.
        let rc = unsafe { ffi::sqlite3changegroup_new(&mut raw) };
        if rc != ffi::SQLITE_OK {
            return Err(code_error(rc, "sqlite3changegroup_new"));
        }
        Ok(ChangeGroup { raw })
    }

    /// A group that knows the tables of `conn`'s `main` database, so changes
    /// can be added one value at a time ([`ChangeGroup::add_row`]).
    fn with_schema(conn: &Connection) -> rusqlite::Result<Self> {
        let group = ChangeGroup::new()?;
        // SAFETY: live group; valid handle while `conn` is borrowed; "main"
        // is NUL-terminated.
        let rc = unsafe { ffi::sqlite3changegroup_schema(group.raw, conn.handle(), c"main".as_ptr()) };
        if rc != ffi::SQLITE_OK {
            return Err(code_error(rc, "sqlite3changegroup_schema"));
        }
        Ok(group)
    }

    /// Adds an INSERT (`values` are new.*) or a DELETE (`values` are old.*)
    /// of one whole row of `table`, columns numbered as in a changeset.
    fn add_row(&self, op: c_int, table: &str, values: &[Cell]) -> rusqlite::Result<()> {
        let table = CString::new(table).map_err(|_| code_error(ffi::SQLITE_MISUSE, "table name with NUL"))?;
        let new = c_int::from(op == ffi::SQLITE_INSERT);
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: live group; NUL-terminated name; `err` is an out pointer
        // whose message, if any, is freed below.
        let rc = unsafe { ffi::sqlite3changegroup_change_begin(self.raw, op, table.as_ptr(), 0, &mut err) };
        // SAFETY: what SQLite set (null or a message nothing else frees).
        let message = unsafe { take_message(err) };
        if rc != ffi::SQLITE_OK {
            return Err(code_error(rc, &message.unwrap_or_else(|| "sqlite3changegroup_change_begin".into())));
        }
        let mut rc = ffi::SQLITE_OK;
        for (col, value) in values.iter().enumerate() {
            let col = c_int::try_from(col).unwrap_or(c_int::MAX);
            // SAFETY: a change is begun on the live group; text and blob
            // pointers are valid for their lengths during the call (SQLite
            // copies them).
            rc = unsafe {
                match value {
                    Cell::Null => ffi::sqlite3changegroup_change_null(self.raw, new, col),
                    Cell::Integer(i) => ffi::sqlite3changegroup_change_int64(self.raw, new, col, *i),
                    Cell::Real(f) => ffi::sqlite3changegroup_change_double(self.raw, new, col, *f),
                    Cell::Text(t) => ffi::sqlite3changegroup_change_text(
                        self.raw,
                        new,
                        col,
                        t.as_ptr().cast(),
                        c_int::try_from(t.len()).unwrap_or(c_int::MAX),
                    ),
                    Cell::Blob(b) => ffi::sqlite3changegroup_change_blob(
                        self.raw,
                        new,
                        col,
                        b.as_ptr().cast(),
                        c_int::try_from(b.len()).unwrap_or(c_int::MAX),
                    ),
                }
            };
            if rc != ffi::SQLITE_OK {
                break;
            }
        }
        let discard = c_int::from(rc != ffi::SQLITE_OK);
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: a change is begun on the live group; as above for `err`.
        let finish = unsafe { ffi::sqlite3changegroup_change_finish(self.raw, discard, &mut err) };
        // SAFETY: as above.
        let message = unsafe { take_message(err) };
        match (rc, finish) {
            (ffi::SQLITE_OK, ffi::SQLITE_OK) => Ok(()),
            (ffi::SQLITE_OK, rc) | (rc, _) => {
                Err(code_error(rc, &message.unwrap_or_else(|| "sqlite3changegroup_change".into())))
            }
        }
    }

    /// Adds the iterator's current change.
    fn add_change(&self, iter: *mut ffi::sqlite3_changeset_iter) -> rusqlite::Result<()> {
        // SAFETY: live group; `iter` points at a current change.
        let rc = unsafe { ffi::sqlite3changegroup_add_change(self.raw, iter) };
        if rc != ffi::SQLITE_OK {
            return Err(code_error(rc, "sqlite3changegroup_add_change"));
        }
        Ok(())
    }

    /// The group's changes as one changeset.
    fn output(&self) -> rusqlite::Result<Vec<u8>> {
        let mut n: c_int = 0;
        let mut p: *mut c_void = ptr::null_mut();
        // SAFETY: live group; out pointers are valid locals.
        let rc = unsafe { ffi::sqlite3changegroup_output(self.raw, &mut n, &mut p) };
        // SAFETY: what SQLite handed out (or null).
        let out = unsafe { take_buffer(p, n) };
        if rc != ffi::SQLITE_OK {
            return Err(code_error(rc, "sqlite3changegroup_output"));
        }
        Ok(out)
    }
}

impl Drop for ChangeGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from sqlite3changegroup_new, deleted once.
        unsafe { ffi::sqlite3changegroup_delete(self.raw) };
    }
}

/// Calls `f` on each change of `changeset`, in order.
fn for_each_change(
    changeset: &[u8],
    mut f: impl FnMut(*mut ffi::sqlite3_changeset_iter) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let len = c_int::try_from(changeset.len()).map_err(|_| code_error(ffi::SQLITE_TOOBIG, "changeset too large"))?;
    let mut raw = ptr::null_mut();
    // SAFETY: the buffer outlives the iterator (tied by `ChangesetIter`'s
    // lifetime); SQLite only reads it despite the `*mut` signature.
    let rc = unsafe { ffi::sqlite3changeset_start(&mut raw, len, changeset.as_ptr() as *mut c_void) };
    if rc != ffi::SQLITE_OK {
        return Err(code_error(rc, "sqlite3changeset_start"));
    }
    let iter = ChangesetIter { raw, _data: PhantomData::<&[u8]> };
    loop {
        // SAFETY: live iterator.
        let rc = unsafe { ffi::sqlite3changeset_next(iter.raw) };
        match rc {
            ffi::SQLITE_ROW => f(iter.raw)?,
            ffi::SQLITE_DONE => return Ok(()),
            rc => return Err(code_error(rc, "sqlite3changeset_next")),
        }
    }
}

/// Reads table, column count and op of the iterator's current change.
fn current_change(iter: *mut ffi::sqlite3_changeset_iter) -> rusqlite::Result<ChangeInfo> {
    let mut table: *const c_char = ptr::null();
    let (mut ncol, mut op, mut indirect): (c_int, c_int, c_int) = (0, 0, 0);
    // SAFETY: `iter` points at a current change (after SQLITE_ROW or inside a
    // conflict handler); out pointers are valid locals.
    let rc = unsafe { ffi::sqlite3changeset_op(iter, &mut table, &mut ncol, &mut op, &mut indirect) };
    if rc != ffi::SQLITE_OK {
        return Err(code_error(rc, "sqlite3changeset_op"));
    }
    // SAFETY: the table name stays valid while the iterator is on this change.
    let table = unsafe { c_str(table) }.unwrap_or_default();
    Ok(ChangeInfo { table, columns: usize::try_from(ncol).unwrap_or(0), op })
}

/// A short name for a changeset operation code.
pub(crate) fn op_name(op: c_int) -> &'static str {
    match op {
        ffi::SQLITE_INSERT => "INSERT",
        ffi::SQLITE_UPDATE => "UPDATE",
        ffi::SQLITE_DELETE => "DELETE",
        _ => "change",
    }
}

/// A conflict met while applying a changeset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Conflict {
    /// The `SQLITE_CHANGESET_*` conflict kind.
    kind: c_int,
    /// The change's operation.
    op: c_int,
    detail: String,
}

impl Conflict {
    /// An UPDATE that failed a constraint: one that may have been applied
    /// in an order that needs a state the constraint forbids (see
    /// [`updates_as_deletes_and_inserts`]).
    pub(crate) fn is_update_constraint(&self) -> bool {
        self.kind == ffi::SQLITE_CHANGESET_CONSTRAINT && self.op == ffi::SQLITE_UPDATE
    }
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Conflicts seen while applying a changeset, and whether foreign-key
/// violations count as one.
struct Conflicts {
    seen: RefCell<Vec<Conflict>>,
    ignore_foreign_keys: bool,
}

/// Conflict handler: record the conflict, then abort the whole apply.
unsafe extern "C" fn abort_on_conflict(ctx: *mut c_void, kind: c_int, iter: *mut ffi::sqlite3_changeset_iter) -> c_int {
    // SAFETY: `ctx` is the `Conflicts` passed by `apply_changeset`, alive for
    // the whole call; SQLite calls the handler on the same thread.
    let conflicts = unsafe { &*(ctx as *const Conflicts) };
    if kind == ffi::SQLITE_CHANGESET_FOREIGN_KEY && conflicts.ignore_foreign_keys {
        return ffi::SQLITE_CHANGESET_OMIT;
    }
    let what = match kind {
        ffi::SQLITE_CHANGESET_DATA => "row differs (DATA)",
        ffi::SQLITE_CHANGESET_NOTFOUND => "row not found (NOTFOUND)",
        ffi::SQLITE_CHANGESET_CONFLICT => "row already exists (CONFLICT)",
        ffi::SQLITE_CHANGESET_CONSTRAINT => "constraint violation (CONSTRAINT)",
        ffi::SQLITE_CHANGESET_FOREIGN_KEY => "foreign key violation (FOREIGN_KEY)",
        _ => "unknown conflict",
    };
    let (op, detail) = match current_change(iter) {
        Ok(c) => (c.op, format!("{} on table {:?}: {what}", op_name(c.op), c.table)),
        Err(_) => (0, what.to_string()),
    };
    conflicts.seen.borrow_mut().push(Conflict { kind, op, detail });
    ffi::SQLITE_CHANGESET_ABORT
}

/// How a changeset is applied.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApplyMode {
    /// A replica: with the connection's own foreign-key setting (off).
    Replica,
    /// The leader replaying a statement's changeset inside its open
    /// transaction, where foreign keys cannot be switched off: their actions
    /// do nothing and their violations (a deferred one may be repaired by a
    /// later statement) are not conflicts.
    LeaderReplay,
}

/// Applies `changeset` to `conn`'s main database. Returns the conflicts seen
/// (non-empty means the apply was aborted and undone) or an SQLite error.
///
/// UPDATEs are applied one row at a time in the changeset's order (with
/// SQLite's retry of those that fail a constraint once the others are in,
/// but without its loop that writes random values in between, which can
/// fail a CHECK constraint and makes the row count unreliable).
pub(crate) fn apply_changeset(conn: &Connection, changeset: &[u8], mode: ApplyMode) -> rusqlite::Result<Vec<Conflict>> {
    let len = c_int::try_from(changeset.len()).map_err(|_| code_error(ffi::SQLITE_TOOBIG, "changeset too large"))?;
    let leader = mode == ApplyMode::LeaderReplay;
    let conflicts = Conflicts { seen: RefCell::new(Vec::new()), ignore_foreign_keys: leader };
    let mut flags = ffi::SQLITE_CHANGESETAPPLY_NOUPDATELOOP;
    if leader {
        flags |= ffi::SQLITE_CHANGESETAPPLY_FKNOACTION;
    }
    // SAFETY: valid handle while `conn` is borrowed; the buffer is only
    // read; `conflicts` outlives the call and matches the handler's cast;
    // no rebase buffer is asked for.
    let rc = unsafe {
        ffi::sqlite3changeset_apply_v2(
            conn.handle(),
            len,
            changeset.as_ptr() as *mut c_void,
            None,
            Some(abort_on_conflict),
            (&conflicts as *const Conflicts).cast_mut().cast(),
            ptr::null_mut(),
            ptr::null_mut(),
            flags,
        )
    };
    let conflicts = conflicts.seen.into_inner();
    if !conflicts.is_empty() {
        return Ok(conflicts);
    }
    if rc != ffi::SQLITE_OK {
        return Err(code_error(rc, "sqlite3changeset_apply"));
    }
    Ok(conflicts)
}

/// Seeds SQLite's (process-wide) PRNG so `random()` and `randomblob()` are
/// reproducible. `seed` 0 would mean "use OS randomness", so it is avoided.
pub(crate) fn seed_prng(seed: i32) {
    let seed = if seed == 0 { 1 } else { seed };
    // SAFETY: PRNG_SEED takes an int and a (nullable) sqlite3*; null means
    // the seed is used as given.
    unsafe {
        ffi::sqlite3_test_control(ffi::SQLITE_TESTCTRL_PRNG_SEED, seed as c_int, ptr::null_mut::<ffi::sqlite3>())
    };
}

/// What the authorizer refuses, as a reason for the client.
/// Arguments: the action code, its two detail strings, the schema
/// (`main`, `temp`) and the name of the trigger or view whose body is being
/// coded, if any.
pub(crate) type Policy<'p> =
    dyn Fn(c_int, Option<&str>, Option<&str>, Option<&str>, Option<&str>) -> Option<String> + 'p;

/// The authorizer's state: the policy and the first refusal reason.
struct AuthState<'p> {
    policy: Box<Policy<'p>>,
    denied: RefCell<Option<String>>,
}

unsafe extern "C" fn authorize(
    ctx: *mut c_void,
    action: c_int,
    a: *const c_char,
    b: *const c_char,
    db: *const c_char,
    trigger: *const c_char,
) -> c_int {
    // SAFETY: `ctx` is the boxed `AuthState` owned by the live `Authorizer`.
    let state = unsafe { &*(ctx as *const AuthState<'_>) };
    // SAFETY: SQLite passes null or NUL-terminated strings.
    let (a, b, db, trigger) = unsafe { (c_str(a), c_str(b), c_str(db), c_str(trigger)) };
    match (state.policy)(action, a.as_deref(), b.as_deref(), db.as_deref(), trigger.as_deref()) {
        None => ffi::SQLITE_OK,
        Some(reason) => {
            let mut denied = state.denied.borrow_mut();
            if denied.is_none() {
                *denied = Some(reason);
            }
            ffi::SQLITE_DENY
        }
    }
}

/// Installs an authorizer on a connection for its lifetime (removed on
/// drop). Statements must be prepared and run while it is alive.
pub(crate) struct Authorizer<'c, 'p> {
    conn: &'c Connection,
    state: Box<AuthState<'p>>,
}

impl<'c, 'p> Authorizer<'c, 'p> {
    /// Installs `policy` as `conn`'s authorizer.
    pub(crate) fn new(
        conn: &'c Connection,
        policy: impl Fn(c_int, Option<&str>, Option<&str>, Option<&str>, Option<&str>) -> Option<String> + 'p,
    ) -> rusqlite::Result<Self> {
        let state = Box::new(AuthState { policy: Box::new(policy), denied: RefCell::new(None) });
        let ctx: *const AuthState<'p> = &*state;
        // SAFETY: valid handle; `ctx` points into a Box kept alive (and not
        // moved) until Drop removes the authorizer.
        let rc = unsafe { ffi::sqlite3_set_authorizer(conn.handle(), Some(authorize), ctx.cast_mut().cast()) };
        if rc != ffi::SQLITE_OK {
            return Err(code_error(rc, "sqlite3_set_authorizer"));
        }
        Ok(Authorizer { conn, state })
    }

    /// The reason of the first refusal, if any.
    pub(crate) fn denied(&self) -> Option<String> {
        self.state.denied.borrow().clone()
    }
}

impl Drop for Authorizer<'_, '_> {
    fn drop(&mut self) {
        // SAFETY: valid handle; removing the callback before the state dies.
        unsafe { ffi::sqlite3_set_authorizer(self.conn.handle(), None, ptr::null_mut()) };
    }
}

/// How often (in SQLite VM steps) a running statement is checked.
pub(crate) const PROGRESS_STEPS: u64 = 1_000;

/// Asked every [`PROGRESS_STEPS`] VM steps of a running statement;
/// `Some(reason)` interrupts it.
pub(crate) type StopCheck<'f> = dyn FnMut() -> Option<super::StatementError> + 'f;

/// The progress handler's state: the check and the reason it stopped.
struct ProgressState<'f> {
    check: Box<StopCheck<'f>>,
    stopped: Option<super::StatementError>,
}

unsafe extern "C" fn progress(ctx: *mut c_void) -> c_int {
    // SAFETY: `ctx` is the boxed `ProgressState` owned by the live
    // `Progress`; SQLite calls the handler on the connection's thread.
    let state = unsafe { &mut *(ctx as *mut ProgressState<'_>) };
    if state.stopped.is_none() {
        state.stopped = (state.check)();
    }
    c_int::from(state.stopped.is_some())
}

/// A progress handler installed on a connection for its lifetime (removed
/// on drop): statements run while it is alive can be stopped by `check`.
pub(crate) struct Progress<'c, 'f> {
    conn: &'c Connection,
    state: Box<ProgressState<'f>>,
}

impl<'c, 'f> Progress<'c, 'f> {
    /// Installs `check` as `conn`'s progress handler.
    pub(crate) fn new(conn: &'c Connection, check: Box<StopCheck<'f>>) -> Self {
        let mut state = Box::new(ProgressState { check, stopped: None });
        let ctx: *mut ProgressState<'f> = &mut *state;
        // SAFETY: valid handle; `ctx` points into a Box kept alive (and not
        // moved) until Drop removes the handler.
        unsafe { ffi::sqlite3_progress_handler(conn.handle(), PROGRESS_STEPS as c_int, Some(progress), ctx.cast()) };
        Progress { conn, state }
    }

    /// Why the check stopped a statement, if it did.
    pub(crate) fn stopped(&self) -> Option<super::StatementError> {
        self.state.stopped.clone()
    }
}

impl Drop for Progress<'_, '_> {
    fn drop(&mut self) {
        // SAFETY: valid handle; removing the callback before the state dies.
        unsafe { ffi::sqlite3_progress_handler(self.conn.handle(), 0, None, ptr::null_mut()) };
    }
}

/// The rowids of the rows inserted into or updated in some tables of
/// `main` while it is alive (SQLite's update hook, which reports every
/// insert, a trigger's and one that REPLACE makes after deleting the old
/// row, unlike a session that drops a row deleted and inserted again with
/// the same values; and every update, so also a row that `UPDATE OR
/// REPLACE` moved onto the key of a row it deleted, which a session records
/// as no change at all when the values end up equal). Bounded: past `max`
/// rows it records nothing more and [`WrittenRowids::finish`] says so.
/// Removed on drop.
pub(crate) struct WrittenRowids<'c> {
    conn: &'c Connection,
    state: Box<InsertState>,
}

struct InsertState {
    /// The tables to watch (lower-case).
    tables: Vec<String>,
    /// (index into `tables`, rowid).
    seen: RefCell<Vec<(u32, i64)>>,
    overflowed: std::cell::Cell<bool>,
    max: usize,
}

unsafe extern "C" fn on_row_change(ctx: *mut c_void, op: c_int, db: *const c_char, table: *const c_char, rowid: i64) {
    if op != ffi::SQLITE_INSERT && op != ffi::SQLITE_UPDATE {
        return;
    }
    // SAFETY: `ctx` is the boxed `InsertState` owned by the live guard;
    // SQLite passes NUL-terminated names valid for the call.
    let (state, db, table) = unsafe { (&*(ctx as *const InsertState), CStr::from_ptr(db), CStr::from_ptr(table)) };
    if db.to_bytes() != b"main" || state.overflowed.get() {
        return;
    }
    let table = table.to_bytes();
    let Some(index) = state.tables.iter().position(|t| t.as_bytes().eq_ignore_ascii_case(table)) else { return };
    let mut seen = state.seen.borrow_mut();
    if seen.len() >= state.max {
        state.overflowed.set(true);
        return;
    }
    seen.push((index as u32, rowid));
}

impl<'c> WrittenRowids<'c> {
    /// Starts watching inserts into and updates of `tables` (lower-case names).
    pub(crate) fn new(conn: &'c Connection, tables: impl IntoIterator<Item = String>, max: usize) -> Self {
        let state = Box::new(InsertState {
            tables: tables.into_iter().collect(),
            seen: RefCell::new(Vec::new()),
            overflowed: std::cell::Cell::new(false),
            max,
        });
        // SAFETY: valid handle while `conn` is borrowed; the context is the
        // boxed state, which outlives the hook (removed in drop).
        unsafe {
            ffi::sqlite3_update_hook(
                conn.handle(),
                Some(on_row_change),
                (&*state as *const InsertState).cast_mut().cast(),
            )
        };
        WrittenRowids { conn, state }
    }

    /// The (table, rowid) of every insert and update seen, or None if there were more
    /// than the bound.
    pub(crate) fn finish(self) -> Option<Vec<(String, i64)>> {
        if self.state.overflowed.get() {
            return None;
        }
        let seen = self.state.seen.take();
        Some(seen.into_iter().map(|(table, rowid)| (self.state.tables[table as usize].clone(), rowid)).collect())
    }
}

impl Drop for WrittenRowids<'_> {
    fn drop(&mut self) {
        // SAFETY: valid handle; removes the hook before the state is freed.
        unsafe { ffi::sqlite3_update_hook(self.conn.handle(), None, ptr::null_mut()) };
    }
}

/// SQLite's compiled-in maximum length of a string, blob or row.
pub(crate) const LENGTH_MAX: usize = 1_000_000_000;

/// Sets SQLite's limit on the length of one string, blob or row for
/// `conn`; returns the previous limit.
pub(crate) fn set_length_limit(conn: &Connection, bytes: usize) -> usize {
    let bytes = c_int::try_from(bytes).unwrap_or(c_int::MAX);
    // SAFETY: valid handle; SQLITE_LIMIT_LENGTH is a valid limit id.
    let previous = unsafe { ffi::sqlite3_limit(conn.handle(), ffi::SQLITE_LIMIT_LENGTH, bytes) };
    usize::try_from(previous).unwrap_or(0)
}

/// Sets the connection's last insert rowid (what `last_insert_rowid()`
/// reports until the next INSERT).
pub(crate) fn set_last_insert_rowid(conn: &Connection, rowid: i64) {
    // SAFETY: valid handle.
    unsafe { ffi::sqlite3_set_last_insert_rowid(conn.handle(), rowid) };
}

/// True if the connection's open transaction has deferred foreign-key
/// violations (they would make its COMMIT fail).
pub(crate) fn deferred_foreign_key_violations(conn: &Connection) -> bool {
    let (mut current, mut highwater): (c_int, c_int) = (0, 0);
    // SAFETY: valid handle; out pointers are valid locals.
    let rc = unsafe {
        ffi::sqlite3_db_status(conn.handle(), ffi::SQLITE_DBSTATUS_DEFERRED_FKS, &mut current, &mut highwater, 0)
    };
    rc == ffi::SQLITE_OK && current > 0
}
