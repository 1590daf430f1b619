//! Log records and their framing: `[len: u32 LE][crc32c: u32 LE][payload]`,
//! where the payload is a one-byte kind followed by a protobuf message.
//!
//! [`decode_segment`] is pure and total: any bytes give an answer, never a
//! panic, so it can be fuzzed directly. [`decode_segment_skipping_checksums`]
//! is its deliberately broken twin for the simulator's mutant M17.

use protobuf::Message;
use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};

/// Bytes of the frame header: length then checksum.
pub const HEADER_BYTES: usize = 8;

/// The largest payload accepted. A larger length field is treated as damage
/// rather than trusted, so a flipped bit never causes a huge allocation.
pub const PAYLOAD_BYTES_MAX: usize = 64 << 20;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_CONF_STATE: u8 = 3;
const KIND_COMPACT: u8 = 4;
const KIND_RESTORE: u8 = 5;

/// One change to the log's state. Replaying a segment's records in order
/// reproduces the state the store had after writing them.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A raft entry at `entry.index`, replacing any entry at or after it.
    Entry(Entry),
    /// The whole hard state.
    HardState(HardState),
    /// The whole conf state.
    ConfState(ConfState),
    /// Entries up to the metadata's index are covered by a snapshot and
    /// dropped. Ignored if an earlier compaction went further.
    Compact(SnapshotMetadata),
    /// A snapshot replaced the whole log: every entry is dropped.
    Restore(SnapshotMetadata),
}

impl Record {
    fn kind(&self) -> u8 {
        match self {
            Record::Entry(_) => KIND_ENTRY,
            Record::HardState(_) => KIND_HARD_STATE,
            Record::ConfState(_) => KIND_CONF_STATE,
            Record::Compact(_) => KIND_COMPACT,
            Record::Restore(_) => KIND_RESTORE,
        }
    }

    fn message(&self) -> &dyn Message {
        match self {
            Record::Entry(entry) => entry,
            Record::HardState(hard_state) => hard_state,
            Record::ConfState(conf_state) => conf_state,
            Record::Compact(metadata) | Record::Restore(metadata) => metadata,
        }
    }

    /// The framed bytes of this record, or the payload size if it is over
    /// [`PAYLOAD_BYTES_MAX`].
    pub fn encode(&self) -> Result<Vec<u8>, usize> {
        let mut payload = vec![self.kind()];
        self.message()
            .write_to_vec(&mut payload)
            .expect("eraftpb messages have no required fields, so encoding cannot fail");
        if payload.len() > PAYLOAD_BYTES_MAX {
            return Err(payload.len());
        }
        Ok(frame(&payload))
    }

    /// Parses a payload whose checksum already matched (or was skipped, under
    /// mutant M17).
    fn decode_payload(payload: &[u8]) -> Result<Record, String> {
        let (&kind, body) = payload.split_first().ok_or("empty payload")?;
        let record = match kind {
            KIND_ENTRY => Record::Entry(parse(body)?),
            KIND_HARD_STATE => Record::HardState(parse(body)?),
            KIND_CONF_STATE => Record::ConfState(parse(body)?),
            KIND_COMPACT => Record::Compact(parse(body)?),
            KIND_RESTORE => Record::Restore(parse(body)?),
            unknown => return Err(format!("unknown record kind {unknown}")),
        };
        Ok(record)
    }
}

fn parse<M: Message>(body: &[u8]) -> Result<M, String> {
    M::parse_from_bytes(body).map_err(|error| format!("undecodable {}: {error}", M::descriptor_static().name()))
}

/// Frames a payload with its length and checksum.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("payloads are checked against PAYLOAD_BYTES_MAX first");
    let mut framed = Vec::with_capacity(HEADER_BYTES + payload.len());
    framed.extend_from_slice(&length.to_le_bytes());
    framed.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    framed.extend_from_slice(payload);
    framed
}

/// A record's position in its segment.
#[derive(Clone, Debug, PartialEq)]
pub struct Located {
    /// Byte offset of the record's frame.
    pub offset: u64,
    pub record: Record,
}

/// The first bad bytes in a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the bad frame.
    pub offset: u64,
    /// What is wrong with it, for the error message.
    pub reason: String,
    /// True when this looks like an interrupted write: the frame is
    /// incomplete or its checksum fails, and no valid frame follows it.
    /// Only then may it be cut from the end of the last segment.
    pub torn: bool,
}

/// What [`decode_segment`] found in one segment's bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecodedSegment {
    /// The valid records before any damage, in order.
    pub records: Vec<Located>,
    /// Length of the valid prefix (where damage, if any, starts).
    pub valid_bytes: u64,
    /// The first bad frame, if any.
    pub damage: Option<Damage>,
}

/// How a single frame at some offset reads.
enum Frame {
    /// A whole frame with a matching checksum (or an unchecked one, when
    /// checksums are skipped).
    Valid { payload_start: usize, end: usize },
    /// Too few bytes for the header or for the length it announces.
    Incomplete,
    /// The length field is zero or over the limit.
    BadLength(u32),
    /// The header and payload are there but the checksum differs.
    BadChecksum,
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([field[0], field[1], field[2], field[3]]))
}

fn read_frame(bytes: &[u8], offset: usize, checksums: Checksums) -> Frame {
    let (Some(length), Some(checksum)) = (read_u32(bytes, offset), read_u32(bytes, offset + 4)) else {
        return Frame::Incomplete;
    };
    let payload_bytes = length as usize;
    if payload_bytes == 0 || payload_bytes > PAYLOAD_BYTES_MAX {
        return Frame::BadLength(length);
    }
    let payload_start = offset + HEADER_BYTES;
    let end = payload_start + payload_bytes;
    let Some(payload) = bytes.get(payload_start..end) else {
        return Frame::Incomplete;
    };
    if checksums == Checksums::Skip || crc32c::crc32c(payload) == checksum {
        Frame::Valid { payload_start, end }
    } else {
        Frame::BadChecksum
    }
}

/// Bytes the search for a valid frame after damage may checksum. Torn
/// tails are short, so this only runs out after damage far from the end.
const SEARCH_CHECKSUM_BYTES_MAX: usize = 256 << 20;

/// Whether any valid, decodable frame starts at or after `from`, used to
/// tell a torn tail (nothing valid after) from damage in the middle. `None`
/// when the search ran out of budget, which the caller treats as damage.
fn valid_frame_from(bytes: &[u8], from: usize) -> Option<bool> {
    let mut budget = SEARCH_CHECKSUM_BYTES_MAX;
    for offset in from..bytes.len() {
        // Cheap filters first: a known kind byte and a length that fits.
        let known_kind =
            bytes.get(offset + HEADER_BYTES).is_some_and(|kind| (KIND_ENTRY..=KIND_RESTORE).contains(kind));
        let length = read_u32(bytes, offset).map_or(0, |length| length as usize);
        if !known_kind || length == 0 || length > (bytes.len() - offset).saturating_sub(HEADER_BYTES) {
            continue;
        }
        budget = budget.checked_sub(length)?;
        if let Frame::Valid { payload_start, end } = read_frame(bytes, offset, Checksums::Verify) {
            if Record::decode_payload(&bytes[payload_start..end]).is_ok() {
                return Some(true);
            }
        }
    }
    Some(false)
}

/// Describes bad bytes at `offset`, deciding whether they may be torn.
fn damage_at(bytes: &[u8], offset: usize, reason: String) -> Damage {
    let (torn, reason) = match valid_frame_from(bytes, offset + 1) {
        Some(followed) => (!followed, reason),
        None => (false, format!("{reason} (too much data after it to tell a torn write)")),
    };
    Damage { offset: offset as u64, reason, torn }
}

/// Decodes one segment's bytes. Never panics, whatever the input.
pub fn decode_segment(bytes: &[u8]) -> DecodedSegment {
    decode_frames(bytes, Checksums::Verify)
}

/// Mutant M17 (`Mutations::skip_record_checksums`), never for real use:
/// like [`decode_segment`], but a frame whose length fits in the bytes left
/// is accepted without checking its crc32c, and a payload that then does not
/// decode is taken as a torn tail, the end of the valid log. A damaged record
/// is thus either believed or, with everything after it, thrown away.
/// Never panics, whatever the input.
pub fn decode_segment_skipping_checksums(bytes: &[u8]) -> DecodedSegment {
    decode_frames(bytes, Checksums::Skip)
}

/// Whether frames' checksums are verified; only mutant M17 skips them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Checksums {
    Verify,
    Skip,
}

fn decode_frames(bytes: &[u8], checksums: Checksums) -> DecodedSegment {
    let mut decoded = DecodedSegment::default();
    let mut offset = 0;
    while offset < bytes.len() {
        let damage = match read_frame(bytes, offset, checksums) {
            Frame::Valid { payload_start, end } => {
                match Record::decode_payload(&bytes[payload_start..end]) {
                    Ok(record) => {
                        decoded.records.push(Located { offset: offset as u64, record });
                        offset = end;
                        continue;
                    }
                    // A matching checksum means these bytes were written so:
                    // a bug or deliberate damage, never a torn write. Without
                    // the checksum (M17) there is no telling, so it is cut.
                    Err(reason) => Damage { offset: offset as u64, reason, torn: checksums == Checksums::Skip },
                }
            }
            Frame::Incomplete => {
                let reason = format!("incomplete record ({} bytes left)", bytes.len() - offset);
                damage_at(bytes, offset, reason)
            }
            Frame::BadLength(length) => damage_at(bytes, offset, format!("invalid record length {length}")),
            Frame::BadChecksum => damage_at(bytes, offset, "checksum mismatch".to_string()),
        };
        decoded.damage = Some(damage);
        break;
    }
    decoded.valid_bytes = offset as u64;
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry { index, term, data: data.to_vec().into(), ..Default::default() }
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
        HardState { term, vote, commit, ..Default::default() }
    }

    fn sample_records() -> Vec<Record> {
        let metadata = SnapshotMetadata { index: 4, term: 2, ..Default::default() };
        let conf_state = ConfState { voters: vec![1, 2, 3], ..Default::default() };
        vec![
            Record::Compact(metadata.clone()),
            Record::HardState(hard_state(2, 1, 3)),
            Record::ConfState(conf_state),
            Record::Entry(entry(5, 2, b"five")),
            Record::Entry(entry(6, 2, b"")),
            Record::Restore(metadata),
        ]
    }

    fn encode_all(records: &[Record]) -> Vec<u8> {
        records.iter().flat_map(|record| record.encode().expect("small record")).collect()
    }

    #[test]
    fn records_round_trip() {
        let records = sample_records();
        let bytes = encode_all(&records);
        let decoded = decode_segment(&bytes);
        assert_eq!(decoded.damage, None);
        assert_eq!(decoded.valid_bytes, bytes.len() as u64);
        let got: Vec<Record> = decoded.records.into_iter().map(|located| located.record).collect();
        assert_eq!(got, records);
    }

    #[test]
    fn every_truncation_is_a_torn_tail() {
        let bytes = encode_all(&sample_records());
        for cut in 0..bytes.len() {
            let decoded = decode_segment(&bytes[..cut]);
            if let Some(damage) = decoded.damage {
                assert!(damage.torn, "cut at {cut}: {damage:?}");
                assert_eq!(damage.offset, decoded.valid_bytes);
            }
        }
    }

    #[test]
    fn a_flipped_bit_before_valid_records_is_not_torn() {
        let bytes = encode_all(&sample_records());
        for position in 0..bytes.len() - 20 {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x10;
            let damage = decode_segment(&damaged).damage.expect("damage found");
            assert!(!damage.torn, "flip at {position}: {damage:?}");
        }
    }

    #[test]
    fn huge_length_is_rejected_without_allocating() {
        let mut bytes = u32::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 12]);
        let damage = decode_segment(&bytes).damage.expect("damage found");
        assert!(damage.reason.contains("invalid record length"), "{damage:?}");
    }

    #[test]
    fn unknown_kind_with_valid_checksum_is_corruption() {
        let bytes = frame(&[99, 1, 2]);
        let damage = decode_segment(&bytes).damage.expect("damage found");
        assert!(!damage.torn);
        assert!(damage.reason.contains("unknown record kind 99"));
    }

    /// Offset of the first occurrence of `needle` in `bytes`.
    fn find(bytes: &[u8], needle: &[u8]) -> usize {
        bytes.windows(needle.len()).position(|window| window == needle).expect("needle present")
    }

    #[test]
    fn skipping_checksums_believes_a_garbled_record() {
        let records = sample_records();
        let mut bytes = encode_all(&records);
        let data = find(&bytes, b"five");
        bytes[data] = b'F';
        let strict = decode_segment(&bytes);
        assert_eq!(strict.records.len(), 3);
        assert!(!strict.damage.expect("checksum mismatch found").torn, "valid records follow it");
        let skipping = decode_segment_skipping_checksums(&bytes);
        assert_eq!(skipping.damage, None);
        assert_eq!(skipping.records[3].record, Record::Entry(entry(5, 2, b"Five")));
    }

    #[test]
    fn skipping_checksums_cuts_at_an_undecodable_record() {
        let records = sample_records();
        let mut bytes = encode_all(&records);
        let fourth = encode_all(&records[..3]).len();
        bytes[fourth + HEADER_BYTES] = 99;
        let strict = decode_segment(&bytes);
        assert!(!strict.damage.expect("checksum mismatch found").torn, "valid records follow it");
        let skipping = decode_segment_skipping_checksums(&bytes);
        let damage = skipping.damage.expect("unknown kind found");
        assert!(damage.torn && damage.reason.contains("unknown record kind 99"), "{damage:?}");
        assert_eq!((skipping.records.len(), skipping.valid_bytes), (3, fourth as u64));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let decoded = decode_segment(&bytes);
            proptest::prop_assert!(decoded.valid_bytes <= bytes.len() as u64);
            let skipping = decode_segment_skipping_checksums(&bytes);
            proptest::prop_assert!(skipping.valid_bytes <= bytes.len() as u64);
        }

        #[test]
        fn decoding_checksummed_garbage_never_panics(
            kind in 1..=5u8,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        ) {
            let mut payload = vec![kind];
            payload.extend_from_slice(&body);
            let decoded = decode_segment(&frame(&payload));
            proptest::prop_assert!(decoded.records.len() + usize::from(decoded.damage.is_some()) == 1);
        }
    }
}
