//! What `deeb restore` and `POST /db/load` share to send a SQLite file
//! through the log as `RestorePart` pieces, and to read what it came to.

use deeb_proto::RestorePart;

/// SQLite's file header: how a SQLite file is told from SQL text.
pub const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// gzip's header: a compressed backup (`deeb backup --compress`,
/// `GET /db/backup?compress`).
pub const GZIP_MAGIC: &[u8; 2] = &[0x1f, 0x8b];

/// Decompresses the gzip file `source` into `out`, a buffer at a time;
/// returns the bytes written.
///
/// # Errors
/// Either file fails, or `source` is not (whole) gzip.
pub fn gunzip(source: &std::path::Path, out: &std::path::Path) -> std::io::Result<u64> {
    let mut reader = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(std::fs::File::open(source)?));
    let mut writer = std::io::BufWriter::new(std::fs::File::create(out)?);
    let written = std::io::copy(&mut reader, &mut writer)?;
    std::io::Write::flush(&mut writer)?;
    Ok(written)
}

/// Bytes of SQL text per request of a load (the server's default limit is
/// 4 MiB).
pub const REQUEST_BYTES: usize = 1 << 20;

/// Bytes of the file per piece (each a log entry of its own).
pub const PIECE_BYTES: usize = 256 << 10;

/// The query for what restore `id` came to (a row with `outcome`, text
/// starting `installed` or `refused`; none: it did not complete).
pub fn outcome_query(id: &str) -> String {
    format!("SELECT outcome FROM _deeb_restores WHERE id = '{}'", id.replace('\'', "''"))
}

/// SQLite's answer to [`outcome_query`] when no restore ever completed on
/// the cluster (the table is made by the first): no outcome.
pub const NO_OUTCOMES: &str = "no such table: _deeb_restores";

/// The piece of restore `id` holding `data` at `offset` of a file of
/// `total` bytes with CRC32C `crc32c` (the last piece carries both).
pub fn piece(id: &str, offset: u64, data: Vec<u8>, (total, crc32c): (u64, u32)) -> RestorePart {
    let last = offset + data.len() as u64 >= total;
    RestorePart {
        id: id.to_owned(),
        offset,
        data,
        last,
        total_bytes: if last { total } else { 0 },
        crc32c: if last { crc32c } else { 0 },
    }
}

/// Fills `buffer` from `reader` as far as the file goes: the bytes read.
///
/// # Errors
/// Reading failed.
pub fn read_piece(reader: &mut impl std::io::Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..])? {
            0 => break,
            read => filled += read,
        }
    }
    Ok(filled)
}
