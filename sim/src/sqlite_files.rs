//! SQLite's files on the simulator's crash model.
//!
//! The raft log lives on `MemDisk`, which loses and tears unsynced writes
//! when a node crashes. The state machine's files (the database, its WAL,
//! snapshot copies SQLite writes) are real files; this module puts them on
//! the same footing with a VFS shim in front of the platform's VFS. Every
//! call passes through; for the files of a registered node directory the
//! shim also keeps, per file, what each write and truncate since the file's
//! last sync overwrote. [`crash`] then undoes, per file, a random suffix of
//! those unsynced changes (all, none or some), as a power cut would leave
//! them: what was synced survives, the rest may not. Files are not torn
//! inside one write (SQLite's WAL checksums are tested by the log's torn
//! writes instead), and creations, deletions and renames are durable at
//! once.
//!
//! A node's handles from before a crash stay dead: madsim drops a killed
//! node's tasks (and their connections) only later, and a connection
//! closing checkpoints its WAL. Writes, truncates and syncs through such a
//! handle fail, as they would in a process that no longer exists.
//!
//! Crash points: [`fail_after_operations`] lets a directory's next writes,
//! truncates and syncs succeed up to a budget; the call that exceeds it
//! fails untouched (SQLite reports an I/O error, the node stops) and
//! [`crash`] then decides what of the rest survived.
//!
//! [`install`] makes the shim SQLite's default VFS for the whole process;
//! tests open connections with [`VFS_NAME`] instead.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rusqlite::ffi;

/// The name the shim registers under.
pub const VFS_NAME: &str = "deeb-crash";
const VFS_NAME_C: &CStr = c"deeb-crash";

/// What the shim knows: which directories it tracks, and per tracked file
/// the changes not yet synced.
struct Registry {
    directories: BTreeMap<PathBuf, Directory>,
    unsynced: BTreeMap<PathBuf, Vec<Undo>>,
}

/// A node's data directory.
#[derive(Default)]
struct Directory {
    /// Bumped by every crash: handles opened before it are dead.
    incarnation: u64,
    /// Writes, truncates and syncs left before one fails (none: no limit).
    operations_until_failure: Option<u64>,
    /// One failed for the budget (until the next crash).
    budget_spent: bool,
    /// Over the directory's life: crash points reached, and unsynced
    /// changes crashes took back.
    crash_points_reached: usize,
    changes_undone: usize,
}

/// How to take back one change: write `old` at `offset`, then cut the file
/// to `old_size`.
struct Undo {
    offset: u64,
    old: Vec<u8>,
    old_size: u64,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { directories: BTreeMap::new(), unsynced: BTreeMap::new() });

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Tracks the SQLite files under `directory` from now on.
pub fn track(directory: &Path) {
    registry().directories.entry(directory.to_path_buf()).or_default();
}

/// A crash of the node owning `directory`: its open handles die, and of
/// each file's unsynced changes a random suffix is undone (drawn from
/// `seed`). Also lifts the operation budget. Call it while the node is
/// down, before it opens its files again.
pub fn crash(directory: &Path, seed: u64) {
    let mut random = SmallRng::seed_from_u64(seed);
    crash_with(directory, |unsynced| match random.gen_range(0..3) {
        0 => 0,
        1 => unsynced,
        _ => random.gen_range(0..=unsynced),
    });
}

/// [`crash`], keeping `kept(n)` of each file's `n` unsynced changes (the
/// oldest ones), in path order.
fn crash_with(directory: &Path, mut kept: impl FnMut(usize) -> usize) {
    let mut registry = registry();
    let files: Vec<PathBuf> = registry.unsynced.keys().filter(|path| path.starts_with(directory)).cloned().collect();
    let mut undone = 0;
    for path in files {
        let undos = registry.unsynced.remove(&path).unwrap_or_default();
        let kept = kept(undos.len()).min(undos.len());
        undo(&path, &undos[kept..]);
        undone += undos.len() - kept;
    }
    let state = registry.directories.entry(directory.to_path_buf()).or_default();
    state.incarnation += 1;
    state.operations_until_failure = None;
    state.budget_spent = false;
    state.changes_undone += undone;
}

/// Marks the handles of the node owning `directory` dead (it was killed)
/// without touching its files; [`crash`] follows at its restart.
pub fn kill(directory: &Path) {
    registry().directories.entry(directory.to_path_buf()).or_default().incarnation += 1;
}

/// Lets `operations` more writes, truncates and syncs of the files under
/// `directory` succeed; the next one fails.
pub fn fail_after_operations(directory: &Path, operations: u64) {
    registry().directories.entry(directory.to_path_buf()).or_default().operations_until_failure = Some(operations);
}

/// True once a call under `directory` failed for the budget (until its
/// next crash).
pub fn budget_spent(directory: &Path) -> bool {
    registry().directories.get(directory).is_some_and(|state| state.budget_spent)
}

/// Lifts the budget unless it was spent; true if lifted (or none).
pub fn lift_operation_budget(directory: &Path) -> bool {
    let mut registry = registry();
    let Some(state) = registry.directories.get_mut(directory) else { return true };
    if state.budget_spent {
        return false;
    }
    state.operations_until_failure = None;
    true
}

/// Stops tracking everything under `directory` (a finished run's scratch
/// directory) and forgets its unsynced changes.
pub fn forget(directory: &Path) {
    let mut registry = registry();
    registry.directories.retain(|path, _| !path.starts_with(directory));
    registry.unsynced.retain(|path, _| !path.starts_with(directory));
}

/// Over the life of the directories under `directory`: crash points
/// reached in SQLite files, and unsynced changes crashes took back.
pub fn statistics(directory: &Path) -> (usize, usize) {
    let registry = registry();
    let states = registry.directories.iter().filter(|(path, _)| path.starts_with(directory));
    states.fold((0, 0), |(points, undone), (_, state)| {
        (points + state.crash_points_reached, undone + state.changes_undone)
    })
}

/// Changes to files under `directory` not yet synced (for tests).
pub fn unsynced_changes(directory: &Path) -> usize {
    registry().unsynced.iter().filter(|(path, _)| path.starts_with(directory)).map(|(_, undos)| undos.len()).sum()
}

/// Takes back `undos` (the newest first) on the file at `path`, if it is
/// still there.
fn undo(path: &Path, undos: &[Undo]) {
    let Ok(file) = OpenOptions::new().write(true).open(path) else { return };
    for change in undos.iter().rev() {
        let restored = file.write_all_at(&change.old, change.offset).and_then(|()| file.set_len(change.old_size));
        if let Err(error) = restored {
            panic!("cannot undo an unsynced change of {}: {error}", path.display());
        }
    }
}

// --- the VFS ------------------------------------------------------------

/// Registers the shim (once) in front of SQLite's default VFS; as the new
/// default if `make_default`.
///
/// # Panics
///
/// If SQLite has no default VFS or refuses the registration.
pub fn install(make_default: bool) {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| unsafe {
        let real = ffi::sqlite3_vfs_find(std::ptr::null());
        assert!(!real.is_null(), "SQLite has no default VFS");
        REAL_VFS.store(real, std::sync::atomic::Ordering::SeqCst);
        let mut vfs: ffi::sqlite3_vfs = std::ptr::read(real);
        vfs.zName = VFS_NAME_C.as_ptr();
        vfs.szOsFile = c_int::try_from(std::mem::size_of::<CrashFile>()).expect("small") + (*real).szOsFile;
        vfs.pNext = std::ptr::null_mut();
        vfs.xOpen = Some(x_open);
        vfs.xDelete = Some(x_delete);
        let leaked: &'static mut ffi::sqlite3_vfs = Box::leak(Box::new(vfs));
        assert_eq!(ffi::sqlite3_vfs_register(leaked, 0), ffi::SQLITE_OK, "registering the crash VFS");
    });
    if make_default {
        unsafe {
            let shim = ffi::sqlite3_vfs_find(VFS_NAME_C.as_ptr());
            assert_eq!(ffi::sqlite3_vfs_register(shim, 1), ffi::SQLITE_OK, "making the crash VFS the default");
        }
    }
}

static REAL_VFS: std::sync::atomic::AtomicPtr<ffi::sqlite3_vfs> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

fn real_vfs() -> *mut ffi::sqlite3_vfs {
    REAL_VFS.load(std::sync::atomic::Ordering::SeqCst)
}

/// The shim's file: SQLite's header, then the platform VFS's file, which
/// lives in the same allocation right after it.
#[repr(C)]
struct CrashFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// Null for files outside every tracked directory (and temp files).
    tracked: *mut Tracked,
}

struct Tracked {
    path: PathBuf,
    directory: PathBuf,
    incarnation: u64,
}

/// Why a change through a tracked handle may not happen.
enum Refusal {
    /// Its node crashed since the handle was opened.
    Dead,
    /// The directory's operation budget is spent.
    Budget,
}

impl Registry {
    /// Counts one write, truncate or sync through `tracked`.
    fn admit(&mut self, tracked: &Tracked) -> Result<(), Refusal> {
        let state = self.directories.entry(tracked.directory.clone()).or_default();
        if state.incarnation != tracked.incarnation {
            return Err(Refusal::Dead);
        }
        match state.operations_until_failure {
            Some(0) => {
                state.crash_points_reached += usize::from(!state.budget_spent);
                state.budget_spent = true;
                Err(Refusal::Budget)
            }
            Some(left) => {
                state.operations_until_failure = Some(left - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// The platform's file inside the shim's, and what the shim tracks of it
/// (valid until the file is closed).
unsafe fn parts<'a>(file: *mut ffi::sqlite3_file) -> (*mut ffi::sqlite3_file, Option<&'a Tracked>) {
    let shim = file.cast::<CrashFile>();
    ((*shim).real, (*shim).tracked.as_ref())
}

unsafe fn methods(real: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    &*(*real).pMethods
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let shim = file.cast::<CrashFile>();
    let real = file.cast::<u8>().add(std::mem::size_of::<CrashFile>()).cast::<ffi::sqlite3_file>();
    (*shim).base.pMethods = std::ptr::null();
    (*shim).real = real;
    (*shim).tracked = std::ptr::null_mut();
    (*real).pMethods = std::ptr::null();
    let real_vfs = real_vfs();
    let rc = ((*real_vfs).xOpen.expect("xOpen"))(real_vfs, name, real, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        if !(*real).pMethods.is_null() {
            (methods(real).xClose.expect("xClose"))(real);
        }
        return rc;
    }
    if !name.is_null() {
        let path = PathBuf::from(CStr::from_ptr(name).to_string_lossy().into_owned());
        let registry = registry();
        let directory = registry.directories.iter().find(|(directory, _)| path.starts_with(directory));
        if let Some((directory, state)) = directory {
            let tracked = Tracked { path: path.clone(), directory: directory.clone(), incarnation: state.incarnation };
            (*shim).tracked = Box::into_raw(Box::new(tracked));
        }
    }
    (*shim).base.pMethods = &IO_METHODS;
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_delete(_vfs: *mut ffi::sqlite3_vfs, name: *const c_char, sync_dir: c_int) -> c_int {
    let real_vfs = real_vfs();
    let rc = ((*real_vfs).xDelete.expect("xDelete"))(real_vfs, name, sync_dir);
    if rc == ffi::SQLITE_OK && !name.is_null() {
        let path = PathBuf::from(CStr::from_ptr(name).to_string_lossy().into_owned());
        registry().unsynced.remove(&path);
    }
    rc
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    let shim = file.cast::<CrashFile>();
    let real = (*shim).real;
    let rc = (methods(real).xClose.expect("xClose"))(real);
    if !(*shim).tracked.is_null() {
        drop(Box::from_raw((*shim).tracked));
        (*shim).tracked = std::ptr::null_mut();
    }
    rc
}

unsafe extern "C" fn x_read(file: *mut ffi::sqlite3_file, buf: *mut c_void, amount: c_int, offset: i64) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xRead.expect("xRead"))(real, buf, amount, offset)
}

/// The file's size, through the platform VFS.
unsafe fn real_size(real: *mut ffi::sqlite3_file) -> Result<u64, c_int> {
    let mut size: i64 = 0;
    let rc = (methods(real).xFileSize.expect("xFileSize"))(real, &mut size);
    if rc == ffi::SQLITE_OK {
        Ok(u64::try_from(size).unwrap_or(0))
    } else {
        Err(rc)
    }
}

/// The undo record of a change to `[offset, end)` of `real`: the bytes
/// there now (within the file) and the size now.
unsafe fn undo_for(real: *mut ffi::sqlite3_file, offset: u64, end: u64) -> Result<Undo, c_int> {
    let old_size = real_size(real)?;
    let covered = end.min(old_size).saturating_sub(offset);
    let mut old = vec![0u8; usize::try_from(covered).expect("fits")];
    if covered > 0 {
        let amount = c_int::try_from(covered).expect("SQLite writes fit an int");
        let offset = i64::try_from(offset).expect("fits");
        let rc = (methods(real).xRead.expect("xRead"))(real, old.as_mut_ptr().cast(), amount, offset);
        if rc != ffi::SQLITE_OK {
            return Err(rc);
        }
    }
    Ok(Undo { offset, old, old_size })
}

/// Admits a change through `tracked` and records how to undo it; the
/// error code to return if it may not happen.
unsafe fn record(
    tracked: &Tracked,
    real: *mut ffi::sqlite3_file,
    offset: u64,
    end: u64,
    refused: c_int,
) -> Result<(), c_int> {
    let mut registry = registry();
    if registry.admit(tracked).is_err() {
        return Err(refused);
    }
    let undo = undo_for(real, offset, end)?;
    registry.unsynced.entry(tracked.path.clone()).or_default().push(undo);
    Ok(())
}

unsafe extern "C" fn x_write(file: *mut ffi::sqlite3_file, buf: *const c_void, amount: c_int, offset: i64) -> c_int {
    let (real, tracked) = parts(file);
    if let Some(tracked) = tracked {
        let start = u64::try_from(offset).unwrap_or(0);
        let end = start + u64::try_from(amount).unwrap_or(0);
        if let Err(rc) = record(tracked, real, start, end, ffi::SQLITE_IOERR_WRITE) {
            return rc;
        }
    }
    (methods(real).xWrite.expect("xWrite"))(real, buf, amount, offset)
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    let (real, tracked) = parts(file);
    if let Some(tracked) = tracked {
        let new_size = u64::try_from(size).unwrap_or(0);
        if let Err(rc) = record(tracked, real, new_size, u64::MAX, ffi::SQLITE_IOERR_TRUNCATE) {
            return rc;
        }
    }
    (methods(real).xTruncate.expect("xTruncate"))(real, size)
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    let (real, tracked) = parts(file);
    if let Some(tracked) = tracked {
        if registry().admit(tracked).is_err() {
            return ffi::SQLITE_IOERR_FSYNC;
        }
    }
    let rc = (methods(real).xSync.expect("xSync"))(real, flags);
    if let (ffi::SQLITE_OK, Some(tracked)) = (rc, tracked) {
        registry().unsynced.remove(&tracked.path);
    }
    rc
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xFileSize.expect("xFileSize"))(real, size)
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xLock.expect("xLock"))(real, level)
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xUnlock.expect("xUnlock"))(real, level)
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xCheckReservedLock.expect("xCheckReservedLock"))(real, out)
}

unsafe extern "C" fn x_file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xFileControl.expect("xFileControl"))(real, op, arg)
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xSectorSize.expect("xSectorSize"))(real)
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xDeviceCharacteristics.expect("xDeviceCharacteristics"))(real)
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xShmMap.expect("xShmMap"))(real, region, size, extend, out)
}

unsafe extern "C" fn x_shm_lock(file: *mut ffi::sqlite3_file, offset: c_int, n: c_int, flags: c_int) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xShmLock.expect("xShmLock"))(real, offset, n, flags)
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    let (real, _) = parts(file);
    (methods(real).xShmBarrier.expect("xShmBarrier"))(real);
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xShmUnmap.expect("xShmUnmap"))(real, delete)
}

unsafe extern "C" fn x_fetch(file: *mut ffi::sqlite3_file, offset: i64, amount: c_int, out: *mut *mut c_void) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xFetch.expect("xFetch"))(real, offset, amount, out)
}

unsafe extern "C" fn x_unfetch(file: *mut ffi::sqlite3_file, offset: i64, page: *mut c_void) -> c_int {
    let (real, _) = parts(file);
    (methods(real).xUnfetch.expect("xUnfetch"))(real, offset, page)
}

#[cfg(test)]
mod tests;
