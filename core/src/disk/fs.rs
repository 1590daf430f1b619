//! `FsDisk`: the `Disk` trait over a real directory.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{Disk, DiskError};

/// A real directory. Append handles are cached so that a stream of small
/// appends does not reopen the file each time.
#[derive(Debug)]
pub struct FsDisk {
    directory: PathBuf,
    append_handles: HashMap<String, File>,
}

impl FsDisk {
    /// Opens the directory, creating it (and its parents) if missing.
    pub fn open(directory: &Path) -> Result<Self, DiskError> {
        fs::create_dir_all(directory).map_err(|error| to_disk_error(directory_name(directory), &error))?;
        Ok(Self { directory: directory.to_path_buf(), append_handles: HashMap::new() })
    }

    /// The directory this disk works in.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    fn path(&self, name: &str) -> PathBuf {
        self.directory.join(name)
    }

    fn append_handle(&mut self, name: &str) -> Result<&mut File, DiskError> {
        if !self.append_handles.contains_key(name) {
            let file =
                OpenOptions::new().append(true).open(self.path(name)).map_err(|error| to_disk_error(name, &error))?;
            self.append_handles.insert(name.to_string(), file);
        }
        self.append_handles
            .get_mut(name)
            .ok_or_else(|| DiskError::Io { name: name.to_string(), message: "append handle vanished".to_string() })
    }
}

fn directory_name(directory: &Path) -> &str {
    directory.to_str().unwrap_or("<non-UTF-8 directory>")
}

/// Maps an io error to the disk error the log store understands.
fn to_disk_error(name: &str, error: &io::Error) -> DiskError {
    let name = name.to_string();
    match error.kind() {
        io::ErrorKind::NotFound => DiskError::NotFound { name },
        io::ErrorKind::AlreadyExists => DiskError::AlreadyExists { name },
        _ => DiskError::Io { name, message: error.to_string() },
    }
}

impl Disk for FsDisk {
    fn list(&self) -> Result<Vec<String>, DiskError> {
        let name = directory_name(&self.directory);
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.directory).map_err(|error| to_disk_error(name, &error))? {
            let entry = entry.map_err(|error| to_disk_error(name, &error))?;
            let is_file = entry.file_type().map_err(|error| to_disk_error(name, &error))?.is_file();
            // Names that are not UTF-8 cannot be ours, so they are skipped.
            if let (true, Some(file_name)) = (is_file, entry.file_name().to_str()) {
                names.push(file_name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, DiskError> {
        fs::read(self.path(name)).map_err(|error| to_disk_error(name, &error))
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        use std::os::unix::fs::FileExt;
        let file = fs::File::open(self.path(name)).map_err(|error| to_disk_error(name, &error))?;
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, offset).map_err(|error| to_disk_error(name, &error))?;
        Ok(bytes)
    }

    fn create(&mut self, name: &str) -> Result<(), DiskError> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path(name))
            .map_err(|error| to_disk_error(name, &error))?;
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        let file = self.append_handle(name)?;
        file.write_all(data).map_err(|error| to_disk_error(name, &error))
    }

    fn truncate(&mut self, name: &str, len: u64) -> Result<(), DiskError> {
        let file = OpenOptions::new().write(true).open(self.path(name)).map_err(|error| to_disk_error(name, &error))?;
        file.set_len(len).map_err(|error| to_disk_error(name, &error))
    }

    fn sync(&mut self, name: &str) -> Result<(), DiskError> {
        let result = match self.append_handles.get(name) {
            Some(file) => file.sync_all(),
            // fsync through a fresh read-only handle flushes the same inode.
            None => File::open(self.path(name)).and_then(|file| file.sync_all()),
        };
        result.map_err(|error| to_disk_error(name, &error))
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError> {
        self.append_handles.remove(from);
        self.append_handles.remove(to);
        fs::rename(self.path(from), self.path(to)).map_err(|error| to_disk_error(from, &error))
    }

    fn remove(&mut self, name: &str) -> Result<(), DiskError> {
        self.append_handles.remove(name);
        fs::remove_file(self.path(name)).map_err(|error| to_disk_error(name, &error))
    }

    fn sync_dir(&mut self) -> Result<(), DiskError> {
        let name = directory_name(&self.directory);
        let directory = File::open(&self.directory).map_err(|error| to_disk_error(name, &error))?;
        directory.sync_all().map_err(|error| to_disk_error(name, &error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_in_a_real_directory() {
        let temporary = tempfile::tempdir().expect("tempdir");
        let mut disk = FsDisk::open(&temporary.path().join("nested/log")).expect("open");
        disk.create("b").expect("create b");
        disk.create("a").expect("create a");
        assert!(matches!(disk.create("a"), Err(DiskError::AlreadyExists { .. })));
        disk.append("a", b"hello ").expect("append");
        disk.append("a", b"world").expect("append");
        disk.sync("a").expect("sync");
        disk.sync_dir().expect("sync_dir");
        assert_eq!(disk.list().expect("list"), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(disk.read("a").expect("read"), b"hello world");
        disk.truncate("a", 5).expect("truncate");
        disk.append("a", b"!").expect("append after truncate");
        assert_eq!(disk.read("a").expect("read"), b"hello!");
        disk.rename("a", "b").expect("rename");
        assert_eq!(disk.read("b").expect("read"), b"hello!");
        disk.remove("b").expect("remove");
        assert!(matches!(disk.read("b"), Err(DiskError::NotFound { .. })));
        assert!(disk.list().expect("list").is_empty());
    }
}
