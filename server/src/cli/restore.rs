//! `deeb restore`: a backup back into a cluster.
//!
//! - Online (`--addr`), a SQLite file (a `deeb backup`, or any SQLite
//!   database): it replaces the whole database, atomically, through the
//!   log (see `deeb_proto::RestorePart`), with a progress line.
//! - Online, SQL text (or a SQLite file with `--as-sql`, dumped to SQL in a
//!   temporary file first): its statements run through the leader in
//!   requests of bounded size, each one transaction. Not atomic: a failed
//!   request stops it, and the error says how far it got.
//! - Offline (`--bootstrap DATA_DIR`): seeds a new node's data directory
//!   from a SQLite file, the whole state at once (see
//!   `deeb_core::node::seed_data_dir`); run it on every initial node with
//!   the same file, `--id` and `--peers`, then start the nodes as a new
//!   cluster with the same `--peers`.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deeb_core::sql::load::Loader;
use deeb_core::NodeId;
use deeb_server::restore::{
    gunzip, outcome_query, piece, read_piece, GZIP_MAGIC, NO_OUTCOMES, PIECE_BYTES, REQUEST_BYTES, SQLITE_MAGIC,
};

use super::args::ClientArgs;
use super::backup::Progress;
use super::commands;

/// Seeds `data_dir` for node `id` of the new cluster `peers`.
///
/// # Errors
/// The file or the directory is unusable, or holds what deeb cannot replicate.
pub fn bootstrap(data_dir: &Path, given: &Path, id: u64, peers: &[(NodeId, String)]) -> Result<String, String> {
    let staged = Staged::decompressed(given)?;
    let file = staged.path.as_path();
    if !is_sqlite(file)? {
        return Err(format!(
            "{}: --bootstrap takes a SQLite file (a `deeb backup --format sqlite`); load SQL text online with --addr",
            file.display()
        ));
    }
    let seeded =
        deeb_core::node::seed_data_dir(NodeId(id), data_dir, file, peers).map_err(|error| error.to_string())?;
    Ok(format!(
        "seeded {} for node {id} of {} from {}: {} tables, {} rows; start it with --peers as a new cluster",
        data_dir.display(),
        peers.iter().map(|(id, address)| format!("{id}={address}")).collect::<Vec<_>>().join(","),
        given.display(),
        seeded.tables.len(),
        seeded.rows
    ))
}

/// Restores `file` through the node at `client`'s address: a SQLite file
/// replaces the whole database ([`replace`]); SQL text (or a SQLite file
/// with `as_sql`) is loaded as statements ([`load`]).
///
/// # Errors
/// As [`replace`] and [`load`].
pub async fn online(
    client: &ClientArgs,
    file: &Path,
    statements_per_request: usize,
    as_sql: bool,
) -> Result<String, String> {
    let staged = Staged::decompressed(file)?;
    let file = staged.path.as_path();
    match (is_sqlite(file)?, as_sql) {
        (true, false) => replace(client, file).await,
        (true, true) => load(client, &Staged::dumped(file)?, file, statements_per_request).await,
        (false, _) => {
            load(client, &Staged { path: file.to_path_buf(), temporary: false }, file, statements_per_request).await
        }
    }
}

/// Replaces the whole database with the SQLite file `file`, atomically:
/// the file goes through the log in pieces and every node installs it at
/// the last (`deeb_proto::RestorePart`); then the outcome is read back.
///
/// # Errors
/// The file cannot be read, a piece was refused, the nodes refused the
/// file (it stays as it was), or the restore did not complete (a leader
/// change while it ran: the old state stays; run it again).
async fn replace(client: &ClientArgs, file: &Path) -> Result<String, String> {
    let connected = commands::connect(client)?;
    let failed = |error: std::io::Error| format!("{}: {error}", file.display());
    let total = std::fs::metadata(file).map_err(failed)?.len();
    let id = deeb_client::new_idempotency_key();
    let mut reader = BufReader::new(std::fs::File::open(file).map_err(failed)?);
    let mut buffer = vec![0; PIECE_BYTES];
    // The CRC32C rides on the last piece only: it is summed as the pieces go.
    let (mut progress, mut offset, mut crc32c) = (Progress::new(), 0_u64, 0_u32);
    loop {
        let read = read_piece(&mut reader, &mut buffer).map_err(failed)?;
        crc32c = crc32c::crc32c_append(crc32c, &buffer[..read]);
        let part = piece(&id, offset, buffer[..read].to_vec(), (total, crc32c));
        let last = part.last;
        if read == 0 && !last {
            return Err(format!("{}: it shrank while it was read; the cluster keeps its old state", file.display()));
        }
        let request = deeb_proto::ExecuteRequest { restore: Some(part), ..Default::default() };
        // The last piece's entry writes out, checks and installs the whole
        // file, which may outlast a request's timeout: it is sent again (a
        // piece applied twice changes nothing the second time) until one
        // is answered, which means the first was applied before it.
        let deadline = Instant::now() + install_time_max(total);
        loop {
            match connected.execute_request(request.clone()).await {
                Ok(_) => break,
                Err(error) if error.not_applied => {
                    return Err(format!(
                        "the restore was refused: {}; the cluster keeps its old state",
                        commands::describe_error(&error)
                    ))
                }
                Err(error) if last && error.worth_retrying() && Instant::now() < deadline => {}
                Err(error) if last => {
                    return Err(format!(
                        "the restore's last piece got no answer: {}; its outcome is unknown until the nodes \
                         answer (`SELECT * FROM _deeb_restores` on any node shows it)",
                        commands::describe_error(&error)
                    ))
                }
                Err(error) => {
                    return Err(format!(
                        "the restore stopped at byte {offset} of {total}: {}; the cluster keeps its old state",
                        commands::describe_error(&error)
                    ))
                }
            }
        }
        offset += read as u64;
        progress.show(offset, total);
        if last {
            break;
        }
    }
    progress.done();
    let seconds = progress.started.elapsed().as_secs_f64();
    let answer =
        match commands::query(&connected, &outcome_query(&id), super::args::Level::Linearizable, None, None).await {
            // No restore ever completed on this cluster.
            Err(error) if error.message.contains(NO_OUTCOMES) => commands::QueryResult::default(),
            Err(error) => {
                return Err(format!("the restore's outcome could not be read: {}", commands::describe_error(&error)))
            }
            Ok(answer) => answer,
        };
    let outcome = answer.rows.first().and_then(|row| row.values.first()).and_then(|value| match &value.kind {
        Some(deeb_proto::value::Kind::Text(text)) => Some(text.clone()),
        _ => None,
    });
    match outcome {
        Some(outcome) if outcome.starts_with("installed") => Ok(format!(
            "restored {} ({total} bytes, CRC32C {crc32c:08x}) as the whole database: {outcome}, in {seconds:.1} s \
             ({:.1} MiB/s)",
            file.display(),
            total as f64 / f64::from(1 << 20) / seconds.max(1e-9)
        )),
        Some(outcome) => {
            Err(format!("the nodes did not take {}: {outcome}; the cluster keeps its old state", file.display()))
        }
        None => Err(format!(
            "the restore of {} did not complete (the leader changed while it ran); the cluster keeps its old state: \
             run it again",
            file.display()
        )),
    }
}

/// How long the last piece may take to be answered: its entry writes,
/// checks and installs the whole file (a few passes over it).
fn install_time_max(total: u64) -> Duration {
    Duration::from_secs(60 + total / (4 << 20))
}

/// Loads the SQL text `text` (from `file`) as statements through the node
/// at `client`'s address.
///
/// # Errors
/// The file cannot be read, a request failed (the message says how far the
/// load got), or the node cannot be reached.
async fn load(
    client: &ClientArgs,
    text: &Staged,
    file: &Path,
    statements_per_request: usize,
) -> Result<String, String> {
    let connected = commands::connect(client)?;
    let opened = std::fs::File::open(&text.path).map_err(|error| format!("{}: {error}", text.path.display()))?;
    let total = opened.metadata().map_err(|error| format!("{}: {error}", text.path.display()))?.len();
    let mut reader = BufReader::new(opened);
    let mut loader = Loader::new(statements_per_request, REQUEST_BYTES);
    let mut progress = Progress::new();
    let (mut read, mut requests, mut loaded, mut line) = (0_u64, 0_u64, 0_u64, String::new());
    loop {
        line.clear();
        let bytes = reader.read_line(&mut line).map_err(|error| format!("{}: {error}", text.path.display()))?;
        read += bytes as u64;
        let full = match bytes {
            0 => loader.finish(),
            _ => loader.feed(&line),
        };
        let full = full.map_err(|error| format!("{}: {error}", file.display()))?;
        for request in full {
            let count = request.len() as u64;
            send(&connected, request, requests, loaded).await?;
            (requests, loaded) = (requests + 1, loaded + count);
            progress.show(read, total);
        }
        if bytes == 0 {
            break;
        }
    }
    progress.done();
    let seconds = progress.started.elapsed().as_secs_f64();
    Ok(format!(
        "loaded {loaded} statements in {requests} requests ({} left out: transaction control, PRAGMA, \
         sqlite_sequence) from {}: {total} bytes in {seconds:.1} s ({:.1} MiB/s)",
        loader.skipped,
        file.display(),
        total as f64 / f64::from(1 << 20) / seconds.max(1e-9),
    ))
}

/// Sends one request; on failure, says how far the load got.
async fn send(client: &deeb_client::Client, request: Vec<String>, sent: u64, loaded: u64) -> Result<(), String> {
    let first: Vec<String> = request.iter().map(|sql| sql.chars().take(80).collect()).collect();
    let batch = request.into_iter().map(|sql| deeb_server::api::statement(&sql)).collect();
    client.execute_statements(batch).await.map(drop).map_err(|error| {
        let at = error.statement_index.map_or(String::new(), |index| {
            let sql = first.get(index as usize).map_or("", String::as_str);
            format!(" at its statement {} ({sql}...)", index + 1)
        });
        format!(
            "request {} of the load failed{at}: {}; the {sent} requests before it ({loaded} statements) \
             are loaded, this one and the rest are not",
            sent + 1,
            commands::describe_error(&error)
        )
    })
}

/// True if `file` starts with SQLite's header.
fn is_sqlite(file: &Path) -> Result<bool, String> {
    starts_with(file, SQLITE_MAGIC)
}

/// True if `file` starts with `magic`.
fn starts_with(file: &Path, magic: &[u8]) -> Result<bool, String> {
    let mut header = vec![0_u8; magic.len()];
    let mut opened = std::fs::File::open(file).map_err(|error| format!("{}: {error}", file.display()))?;
    let read = opened.read(&mut header).map_err(|error| format!("{}: {error}", file.display()))?;
    Ok(read == header.len() && header == magic)
}

/// A file a restore reads: the one given, or one made from it in a
/// temporary file (removed when dropped): a SQLite file's dump, a
/// compressed file's contents.
struct Staged {
    path: PathBuf,
    temporary: bool,
}

impl Staged {
    fn dumped(database: &Path) -> Result<Staged, String> {
        let path = std::env::temp_dir().join(format!("deeb-restore-{}.sql", std::process::id()));
        let text = Staged { path, temporary: true };
        deeb_server::backup::dump_to(database, &text.path)
            .map_err(|error| format!("{}: dumping it as SQL: {error}", database.display()))?;
        Ok(text)
    }

    /// `file` itself, or its contents if it is gzip-compressed.
    fn decompressed(file: &Path) -> Result<Staged, String> {
        if !starts_with(file, GZIP_MAGIC)? {
            return Ok(Staged { path: file.to_path_buf(), temporary: false });
        }
        // Named after the file: what the restore prints names it.
        let name = file.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let name = format!("{}.unzipped-{}", name.trim_end_matches(".gz"), std::process::id());
        let path = std::env::temp_dir().join(name);
        let staged = Staged { path, temporary: true };
        gunzip(file, &staged.path).map_err(|error| format!("{}: decompressing it: {error}", file.display()))?;
        Ok(staged)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
