//! `deeb backup`: a consistent copy of the whole database from any node,
//! written to a file as it streams (never whole in memory), checked against
//! the node's CRC32C, made durable, then renamed into place.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use deeb_proto::{BackupFormat, BackupRequest, Consistency};

use super::args::ClientArgs;
use super::commands;

/// What a backup file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackupFileFormat {
    /// The SQLite database file.
    Sqlite,
    /// SQL text: the schema and every row as an INSERT.
    Sql,
}

/// Which state a backup holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackupConsistency {
    /// Every write acknowledged before the backup began (a read-index
    /// barrier on the node called).
    Linearizable,
    /// The node's state as it is, without asking the leader.
    Stale,
}

/// Takes the backup into `out`; a line saying what was written.
///
/// # Errors
/// The node refused or failed, the stream broke, the checksum did not
/// match, or the file could not be written.
pub async fn run(
    client: &ClientArgs,
    out: &Path,
    (format, consistency, compress): (BackupFileFormat, BackupConsistency, bool),
) -> Result<String, String> {
    let connected = commands::connect(client)?;
    let format = match format {
        BackupFileFormat::Sqlite => BackupFormat::Sqlite,
        BackupFileFormat::Sql => BackupFormat::Sql,
    };
    let consistency = match consistency {
        BackupConsistency::Linearizable => Consistency::Linearizable,
        BackupConsistency::Stale => Consistency::Stale,
    };
    // The file first: a path that cannot be written fails before the node
    // copies the database.
    let partial = partial_path(out);
    let file = std::fs::File::create(&partial).map_err(|error| format!("{}: {error}", partial.display()))?;
    let mut file = match compress {
        true => Out::Gzip(flate2::write::GzEncoder::new(file, flate2::Compression::fast())),
        false => Out::Plain(file),
    };
    let request = BackupRequest { consistency: consistency as i32, format: format as i32 };
    let result = async {
        let mut stream = connected.backup(request).await.map_err(|error| commands::describe_error(&error))?;
        let (mut header, mut written, mut crc32c) = (None, 0_u64, 0_u32);
        let mut progress = Progress::new();
        while let Some(chunk) = stream.message().await.map_err(|status| status.message().to_owned())? {
            if let Some(first) = chunk.header {
                header = Some(first);
            }
            let Some(header) = header.as_ref() else { return Err("the stream began without its header".to_owned()) };
            crc32c = crc32c::crc32c_append(crc32c, &chunk.data);
            file.write_all(&chunk.data).map_err(|error| format!("{}: {error}", partial.display()))?;
            written += chunk.data.len() as u64;
            if written > header.total_bytes {
                return Err(format!("the node sent more than the {} bytes it announced", header.total_bytes));
            }
            progress.show(written, header.total_bytes);
        }
        let header = header.ok_or("the node sent nothing")?;
        progress.done();
        if written != header.total_bytes || crc32c != header.crc32c {
            return Err(format!(
                "the backup arrived damaged: {written} of {} bytes, CRC32C {crc32c:08x}, expected {:08x}",
                header.total_bytes, header.crc32c
            ));
        }
        let file = file.finish().map_err(|error| format!("{}: {error}", partial.display()))?;
        file.sync_all().map_err(|error| format!("{}: {error}", partial.display()))?;
        std::fs::rename(&partial, out).map_err(|error| format!("{}: {error}", out.display()))?;
        if let Some(dir) = out.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|error| format!("{}: {error}", dir.display()))?;
        }
        let seconds = progress.started.elapsed().as_secs_f64();
        let compressed = match compress {
            true => format!(" (gzip-compressed to {} bytes)", std::fs::metadata(out).map_or(0, |meta| meta.len())),
            false => String::new(),
        };
        Ok(format!(
            "backup of node {} at applied index {}: {} bytes, CRC32C {:08x}, in {seconds:.1} s ({:.1} MiB/s) to {}{compressed}",
            header.served_by,
            header.applied_index,
            header.total_bytes,
            header.crc32c,
            header.total_bytes as f64 / f64::from(1 << 20) / seconds.max(1e-9),
            out.display()
        ))
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// The backup file, compressed as it is written or not.
enum Out {
    Plain(std::fs::File),
    Gzip(flate2::write::GzEncoder<std::fs::File>),
}

impl Out {
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Plain(file) => file.write_all(data),
            Out::Gzip(encoder) => encoder.write_all(data),
        }
    }

    /// The file, everything written to it.
    fn finish(self) -> std::io::Result<std::fs::File> {
        match self {
            Out::Plain(file) => Ok(file),
            Out::Gzip(encoder) => encoder.finish(),
        }
    }
}

/// Where the file is written until it is complete and checked.
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|name| name.to_os_string()).unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// A progress line on a terminal (bytes, rate, time left), redrawn at most
/// a few times a second; nothing otherwise.
pub(super) struct Progress {
    pub(super) started: Instant,
    drawn: Option<Instant>,
    terminal: bool,
}

impl Progress {
    pub(super) fn new() -> Self {
        Progress { started: Instant::now(), drawn: None, terminal: std::io::stderr().is_terminal() }
    }

    pub(super) fn show(&mut self, done: u64, total: u64) {
        if !self.terminal || self.drawn.is_some_and(|at| at.elapsed().as_millis() < 200) {
            return;
        }
        self.drawn = Some(Instant::now());
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / seconds;
        let left = if rate > 0.0 { (total.saturating_sub(done)) as f64 / rate } else { 0.0 };
        let mib = |bytes: f64| bytes / f64::from(1 << 20);
        let percent = if total == 0 { 100.0 } else { done as f64 * 100.0 / total as f64 };
        eprint!(
            "\r{percent:5.1}%  {:.1} / {:.1} MiB  {:.1} MiB/s  {left:.0} s left   ",
            mib(done as f64),
            mib(total as f64),
            mib(rate)
        );
    }

    pub(super) fn done(&self) {
        if self.terminal && self.drawn.is_some() {
            eprintln!();
        }
    }
}
