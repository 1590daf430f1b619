//! `MemDisk`: an in-memory disk that remembers what is durable, so a test
//! can crash it and see only what a real disk would be guaranteed to keep.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{Disk, DiskError};

/// At most this many trailing bytes of a torn write are garbled, modelling a
/// sector that was being written when the power went.
const GARBLED_BYTES_MAX: usize = 8;

/// One file's bytes: what a crash is guaranteed to keep, and what reads see.
#[derive(Clone, Debug, Default)]
struct FileContents {
    durable: Vec<u8>,
    current: Vec<u8>,
}

/// Files are inodes so that a rename or remove can be undone by a crash.
type InodeId = u64;

#[derive(Debug, Default)]
struct MemState {
    /// The directory as `list` and `read` see it.
    current_directory: BTreeMap<String, InodeId>,
    /// The directory as of the last `sync_dir`.
    durable_directory: BTreeMap<String, InodeId>,
    inodes: BTreeMap<InodeId, FileContents>,
    next_inode: InodeId,
    fail_next_sync: bool,
    /// Appended bytes still allowed before appends fail.
    bytes_until_failure: Option<u64>,
    /// Mutating calls still allowed before one fails.
    operations_until_failure: Option<u64>,
    /// A call failed because the operation budget was spent.
    operation_budget_spent: bool,
}

/// An in-memory [`Disk`]. Clones share the same files, so a test can keep a
/// handle, [`MemDisk::crash`] it, and open a new store on it.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    state: Arc<Mutex<MemState>>,
}

fn injected(name: &str, what: &str) -> DiskError {
    DiskError::Io { name: name.to_string(), message: format!("injected fault: {what}") }
}

fn not_found(name: &str) -> DiskError {
    DiskError::NotFound { name: name.to_string() }
}

impl MemDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        // A panic while holding the lock can only come from a failing test;
        // the state is still usable for reporting.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the next `sync` or `sync_dir` fail (and not sync anything).
    pub fn fail_next_sync(&self) {
        self.lock().fail_next_sync = true;
    }

    /// Lets `bytes` more bytes be appended; the append that would exceed
    /// that writes the bytes that fit, then fails, as does every later one.
    pub fn fail_after_bytes(&self, bytes: u64) {
        self.lock().bytes_until_failure = Some(bytes);
    }

    /// Lets `operations` more mutating calls (create, append, truncate, sync,
    /// rename, remove, sync_dir) succeed; every later one fails untouched.
    /// With a [`MemDisk::crash`] once one failed, this is a crash at that
    /// very operation: everything before it happened (durable or not, as
    /// the crash model then decides), nothing from it on.
    pub fn fail_after_operations(&self, operations: u64) {
        self.lock().operations_until_failure = Some(operations);
    }

    /// True once a call failed because the budget of
    /// [`MemDisk::fail_after_operations`] was spent (until the next crash).
    pub fn operation_budget_spent(&self) -> bool {
        self.lock().operation_budget_spent
    }

    /// Lifts the operation budget unless it was already spent; true if it
    /// was lifted (or there was none).
    pub fn lift_operation_budget(&self) -> bool {
        let mut state = self.lock();
        if state.operation_budget_spent {
            return false;
        }
        state.operations_until_failure = None;
        true
    }

    /// The durable files (as of the last `sync_dir`) and their synced bytes:
    /// what a crash now would leave.
    pub fn durable_files(&self) -> Vec<(String, Vec<u8>)> {
        let state = self.lock();
        let contents = |inode: &InodeId| state.inodes.get(inode).map(|file| file.durable.clone()).unwrap_or_default();
        state.durable_directory.iter().map(|(name, inode)| (name.clone(), contents(inode))).collect()
    }

    /// Bit rot: flips the bits of the durable byte at `offset` in file
    /// `name` (and of its current copy). False if there is no such byte.
    pub fn rot_byte(&self, name: &str, offset: usize) -> bool {
        let mut state = self.lock();
        let Some(&inode) = state.durable_directory.get(name) else { return false };
        let Some(file) = state.inodes.get_mut(&inode) else { return false };
        if offset >= file.durable.len() {
            return false;
        }
        file.durable[offset] ^= 0xff;
        if let Some(byte) = file.current.get_mut(offset) {
            *byte ^= 0xff;
        }
        true
    }

    /// Simulates power loss: each file keeps, drops or tears (keeps a random
    /// prefix of, perhaps garbling its end) its unsynced bytes, and directory
    /// changes since the last `sync_dir` are undone. Clears injected faults.
    pub fn crash(&self, seed: u64) {
        let mut random = SmallRng::seed_from_u64(seed);
        let mut state = self.lock();
        let state = &mut *state;
        state.current_directory = state.durable_directory.clone();
        let live: Vec<InodeId> = state.durable_directory.values().copied().collect();
        state.inodes.retain(|inode, _| live.contains(inode));
        for contents in state.inodes.values_mut() {
            let survivor = crashed_contents(contents, &mut random);
            contents.durable = survivor.clone();
            contents.current = survivor;
        }
        state.fail_next_sync = false;
        state.bytes_until_failure = None;
        state.operations_until_failure = None;
        state.operation_budget_spent = false;
    }
}

/// What survives a crash of one file.
fn crashed_contents(contents: &FileContents, random: &mut SmallRng) -> Vec<u8> {
    let FileContents { durable, current } = contents;
    if current == durable {
        return durable.clone();
    }
    if !current.starts_with(durable) {
        // A truncate not yet synced: either it reached the disk or not.
        return if random.gen_bool(0.5) { current.clone() } else { durable.clone() };
    }
    match random.gen_range(0..3) {
        0 => current.clone(),
        1 => durable.clone(),
        _ => torn(durable, &current[durable.len()..], random),
    }
}

/// The durable bytes plus a random prefix of the unsynced ones, whose last
/// few bytes may be garbled (never touching the durable bytes).
fn torn(durable: &[u8], unsynced: &[u8], random: &mut SmallRng) -> Vec<u8> {
    let kept = random.gen_range(0..unsynced.len());
    let mut survivor = durable.to_vec();
    survivor.extend_from_slice(&unsynced[..kept]);
    if kept > 0 && random.gen_bool(0.5) {
        let garbled = random.gen_range(1..=kept.min(GARBLED_BYTES_MAX));
        let end = survivor.len();
        for byte in &mut survivor[end - garbled..] {
            *byte = random.gen();
        }
    }
    survivor
}

impl MemState {
    /// Counts a mutating call against the injected operation budget.
    fn spend_operation(&mut self, name: &str) -> Result<(), DiskError> {
        match self.operations_until_failure {
            Some(0) => {
                self.operation_budget_spent = true;
                Err(injected(name, "operation budget spent"))
            }
            Some(left) => {
                self.operations_until_failure = Some(left - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn contents_mut(&mut self, name: &str) -> Result<&mut FileContents, DiskError> {
        let inode = *self.current_directory.get(name).ok_or_else(|| not_found(name))?;
        self.inodes.get_mut(&inode).ok_or_else(|| not_found(name))
    }

    /// How many of `wanted` bytes may be appended before the byte budget
    /// runs out, spending them.
    fn spend_bytes(&mut self, wanted: usize) -> usize {
        match self.bytes_until_failure {
            Some(left) => {
                let allowed = usize::try_from(left).unwrap_or(usize::MAX).min(wanted);
                self.bytes_until_failure = Some(left - allowed as u64);
                allowed
            }
            None => wanted,
        }
    }
}

impl Disk for MemDisk {
    fn list(&self) -> Result<Vec<String>, DiskError> {
        Ok(self.lock().current_directory.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, DiskError> {
        let state = self.lock();
        let inode = state.current_directory.get(name).ok_or_else(|| not_found(name))?;
        let contents = state.inodes.get(inode).ok_or_else(|| not_found(name))?;
        Ok(contents.current.clone())
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        let state = self.lock();
        let inode = state.current_directory.get(name).ok_or_else(|| not_found(name))?;
        let contents = state.inodes.get(inode).ok_or_else(|| not_found(name))?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        contents.current.get(start..start.saturating_add(len)).map(<[u8]>::to_vec).ok_or_else(|| DiskError::Io {
            name: name.to_string(),
            message: format!("read of {len} bytes at {offset} is past the end ({} bytes)", contents.current.len()),
        })
    }

    fn create(&mut self, name: &str) -> Result<(), DiskError> {
        let mut state = self.lock();
        state.spend_operation(name)?;
        if state.current_directory.contains_key(name) {
            return Err(DiskError::AlreadyExists { name: name.to_string() });
        }
        let inode = state.next_inode;
        state.next_inode += 1;
        state.inodes.insert(inode, FileContents::default());
        state.current_directory.insert(name.to_string(), inode);
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        let mut state = self.lock();
        state.spend_operation(name)?;
        state.contents_mut(name)?;
        let allowed = state.spend_bytes(data.len());
        state.contents_mut(name)?.current.extend_from_slice(&data[..allowed]);
        if allowed < data.len() {
            return Err(injected(name, "byte budget spent"));
        }
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> Result<(), DiskError> {
        let mut state = self.lock();
        state.spend_operation(name)?;
        let contents = state.contents_mut(name)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        // Like ftruncate, a longer length extends the file with zeros.
        contents.current.resize(len, 0);
        Ok(())
    }

    fn sync(&mut self, name: &str) -> Result<(), DiskError> {
        let mut state = self.lock();
        state.spend_operation(name)?;
        if std::mem::take(&mut state.fail_next_sync) {
            return Err(injected(name, "sync failed"));
        }
        let contents = state.contents_mut(name)?;
        contents.durable = contents.current.clone();
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError> {
        let mut state = self.lock();
        state.spend_operation(from)?;
        let inode = state.current_directory.remove(from).ok_or_else(|| not_found(from))?;
        state.current_directory.insert(to.to_string(), inode);
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<(), DiskError> {
        let mut state = self.lock();
        state.spend_operation(name)?;
        state.current_directory.remove(name).ok_or_else(|| not_found(name))?;
        Ok(())
    }

    fn sync_dir(&mut self) -> Result<(), DiskError> {
        let mut state = self.lock();
        state.spend_operation("<directory>")?;
        if std::mem::take(&mut state.fail_next_sync) {
            return Err(injected("<directory>", "sync_dir failed"));
        }
        state.durable_directory = state.current_directory.clone();
        // Inodes no name points to any more can never come back.
        let live: Vec<InodeId> = state.durable_directory.values().copied().collect();
        state.inodes.retain(|inode, _| live.contains(inode));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_with(name: &str, durable: &[u8], unsynced: &[u8]) -> MemDisk {
        let mut disk = MemDisk::new();
        disk.create(name).expect("create");
        disk.append(name, durable).expect("append");
        disk.sync(name).expect("sync");
        disk.sync_dir().expect("sync_dir");
        disk.append(name, unsynced).expect("append");
        disk
    }

    #[test]
    fn crash_keeps_synced_bytes_and_a_prefix_of_the_rest() {
        for seed in 0..64 {
            let disk = disk_with("f", b"durable", b"0123456789");
            disk.crash(seed);
            let contents = disk.read("f").expect("file survives");
            assert!(contents.starts_with(b"durable"));
            assert!(contents.len() <= b"durable0123456789".len());
        }
    }

    #[test]
    fn crash_sometimes_keeps_sometimes_drops_sometimes_tears() {
        let mut lengths = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let disk = disk_with("f", b"d", b"0123456789");
            disk.crash(seed);
            lengths.insert(disk.read("f").expect("file survives").len());
        }
        assert!(lengths.contains(&1) && lengths.contains(&11) && lengths.len() > 2, "{lengths:?}");
    }

    #[test]
    fn crash_undoes_directory_changes_not_synced() {
        let mut disk = disk_with("kept", b"k", b"");
        disk.create("new").expect("create");
        disk.sync("new").expect("sync file, not directory");
        disk.rename("kept", "renamed").expect("rename");
        disk.crash(7);
        assert_eq!(disk.list().expect("list"), vec!["kept".to_string()]);
        disk.remove("kept").expect("remove");
        disk.crash(8);
        assert_eq!(disk.read("kept").expect("remove undone"), b"k");
        disk.remove("kept").expect("remove");
        disk.sync_dir().expect("sync_dir");
        disk.crash(9);
        assert!(disk.list().expect("list").is_empty());
    }

    #[test]
    fn rotted_bytes_survive_a_crash() {
        let disk = disk_with("f", b"abc", b"de");
        assert!(disk.rot_byte("f", 1));
        assert!(!disk.rot_byte("f", 3), "only durable bytes rot");
        assert!(!disk.rot_byte("missing", 0));
        assert_eq!(disk.durable_files(), vec![("f".to_owned(), vec![b'a', b'b' ^ 0xff, b'c'])]);
        disk.crash(1);
        assert_eq!(disk.read("f").unwrap()[..3], [b'a', b'b' ^ 0xff, b'c']);
    }

    #[test]
    fn injected_faults_fail_calls() {
        let mut disk = disk_with("f", b"", b"");
        disk.fail_next_sync();
        assert!(disk.sync("f").is_err());
        disk.sync("f").expect("only the next sync fails");
        disk.fail_after_bytes(3);
        assert!(disk.append("f", b"12345").is_err());
        assert_eq!(disk.read("f").expect("read"), b"123");
        disk.crash(0);
        disk.fail_after_operations(1);
        disk.append("f", b"x").expect("first operation allowed");
        assert!(!disk.operation_budget_spent());
        assert!(disk.create("g").is_err());
        assert!(disk.operation_budget_spent() && !disk.lift_operation_budget(), "spent until the crash");
        disk.crash(1);
        assert!(!disk.operation_budget_spent());
        disk.fail_after_operations(0);
        assert!(disk.lift_operation_budget());
        disk.create("g").expect("lifted");
    }

    /// A crash at the k-th operation keeps what the operations before it
    /// made durable and nothing of the failed one or any after it.
    #[test]
    fn crash_at_an_operation_keeps_only_what_came_before() {
        let mut disk = disk_with("f", b"ab", b"");
        disk.fail_after_operations(2);
        disk.append("f", b"cd").expect("first");
        disk.sync("f").expect("second");
        assert!(disk.append("f", b"ef").is_err(), "the crash point");
        assert!(disk.sync("f").is_err(), "nothing after it");
        disk.crash(3);
        assert_eq!(disk.read("f").expect("read"), b"abcd");
    }
}
