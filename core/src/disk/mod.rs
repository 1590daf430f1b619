//! The `Disk` trait: a flat directory of files under the log store, with two
//! implementations, real files (`FsDisk`) and an in-memory disk that models a
//! crash (`MemDisk`).
//!
//! Semantics every implementation keeps (they are what the log store relies
//! on, and what `MemDisk` punishes when they are not respected):
//! - `append`/`truncate` change a file's contents at once for reads, but are
//!   durable only after `sync(name)`.
//! - `create`, `rename` and `remove` change the directory at once for
//!   `list`/`read`, but are durable only after `sync_dir()`.
//! - Every error is final for the caller: the log store never retries a failed
//!   write or sync (fail-stop).

use thiserror::Error;

mod fs;
mod mem;

pub use fs::FsDisk;
pub use mem::MemDisk;

/// A disk operation failed. The node must stop.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DiskError {
    /// The file does not exist.
    #[error("file {name:?} not found")]
    NotFound { name: String },
    /// `create` found the file already there.
    #[error("file {name:?} already exists")]
    AlreadyExists { name: String },
    /// Any other failure, including injected faults.
    #[error("I/O error on {name:?}: {message}")]
    Io { name: String, message: String },
}

/// A flat directory of files.
pub trait Disk: Send {
    /// The names of the files in the directory, sorted.
    fn list(&self) -> Result<Vec<String>, DiskError>;
    /// The whole current contents of a file.
    fn read(&self, name: &str) -> Result<Vec<u8>, DiskError>;
    /// `len` bytes of a file from `offset` (all of them must be there).
    fn read_at(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        let bytes = self.read(name)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        bytes.get(start..start.saturating_add(len)).map(<[u8]>::to_vec).ok_or_else(|| DiskError::Io {
            name: name.to_string(),
            message: format!("read of {len} bytes at {offset} is past the end ({} bytes)", bytes.len()),
        })
    }
    /// Creates an empty file. Fails if it exists.
    fn create(&mut self, name: &str) -> Result<(), DiskError>;
    /// Appends to the end of a file.
    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), DiskError>;
    /// Cuts a file to `len` bytes.
    fn truncate(&mut self, name: &str, len: u64) -> Result<(), DiskError>;
    /// Makes a file's contents durable.
    fn sync(&mut self, name: &str) -> Result<(), DiskError>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError>;
    /// Removes a file.
    fn remove(&mut self, name: &str) -> Result<(), DiskError>;
    /// Makes creates, renames and removes durable.
    fn sync_dir(&mut self) -> Result<(), DiskError>;
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old contents
/// or the new, never a mix: a temporary file written and synced, renamed
/// over the old one, and the directory synced. For the small files beside
/// the log (a node's start count, its identities); not for the log itself,
/// which goes through [`Disk`].
///
/// # Errors
/// Any step's I/O error.
pub fn replace_file_durably(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}
