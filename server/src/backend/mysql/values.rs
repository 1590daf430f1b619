//! MySQL values to deeb's wire values and back, and the exact encoding of
//! MySQL values in snapshot files.

use deeb_proto::value::Kind;
use mysql::consts::ColumnType;
use mysql::{Column, Value};

/// The character set number MySQL gives binary strings.
const BINARY: u16 = 63;

/// A value read from MySQL as deeb sends it: integers and floating point as
/// such, binary strings as blobs, everything else (decimals, dates, text)
/// as MySQL's text for it.
pub(crate) fn to_proto(value: Value, column: &Column) -> deeb_proto::Value {
    let kind = match value {
        Value::NULL => None,
        Value::Int(integer) => Some(Kind::Integer(integer)),
        Value::UInt(integer) => Some(match i64::try_from(integer) {
            Ok(integer) => Kind::Integer(integer),
            Err(_) => Kind::Text(integer.to_string()),
        }),
        Value::Float(real) => Some(Kind::Real(f64::from(real))),
        Value::Double(real) => Some(Kind::Real(real)),
        Value::Bytes(bytes) => Some(bytes_kind(bytes, column)),
        date @ (Value::Date(..) | Value::Time(..)) => Some(Kind::Text(temporal_text(&date, column))),
    };
    deeb_proto::Value { kind }
}

/// Text-protocol bytes by the column's type.
fn bytes_kind(bytes: Vec<u8>, column: &Column) -> Kind {
    let text = || String::from_utf8(bytes.clone());
    match column.column_type() {
        ColumnType::MYSQL_TYPE_TINY
        | ColumnType::MYSQL_TYPE_SHORT
        | ColumnType::MYSQL_TYPE_INT24
        | ColumnType::MYSQL_TYPE_LONG
        | ColumnType::MYSQL_TYPE_LONGLONG
        | ColumnType::MYSQL_TYPE_YEAR => match text().ok().and_then(|text| text.parse::<i64>().ok()) {
            Some(integer) => Kind::Integer(integer),
            None => Kind::Text(String::from_utf8_lossy(&bytes).into_owned()),
        },
        ColumnType::MYSQL_TYPE_FLOAT | ColumnType::MYSQL_TYPE_DOUBLE => {
            match text().ok().and_then(|text| text.parse::<f64>().ok()) {
                Some(real) => Kind::Real(real),
                None => Kind::Text(String::from_utf8_lossy(&bytes).into_owned()),
            }
        }
        ColumnType::MYSQL_TYPE_BIT | ColumnType::MYSQL_TYPE_GEOMETRY => Kind::Blob(bytes),
        _ if column.character_set() == BINARY && !is_temporal(column.column_type()) => Kind::Blob(bytes),
        _ => match String::from_utf8(bytes) {
            Ok(text) => Kind::Text(text),
            Err(error) => Kind::Blob(error.into_bytes()),
        },
    }
}

fn is_temporal(kind: ColumnType) -> bool {
    matches!(
        kind,
        ColumnType::MYSQL_TYPE_DATE
            | ColumnType::MYSQL_TYPE_DATETIME
            | ColumnType::MYSQL_TYPE_DATETIME2
            | ColumnType::MYSQL_TYPE_TIMESTAMP
            | ColumnType::MYSQL_TYPE_TIMESTAMP2
            | ColumnType::MYSQL_TYPE_TIME
            | ColumnType::MYSQL_TYPE_TIME2
            | ColumnType::MYSQL_TYPE_NEWDATE
            | ColumnType::MYSQL_TYPE_NEWDECIMAL
            | ColumnType::MYSQL_TYPE_DECIMAL
    )
}

/// A date or time as MySQL's text protocol shows it: a DATE without a
/// time, fractions of a second to the column's precision.
fn temporal_text(value: &Value, column: &Column) -> String {
    let fraction = |micros: u32| match usize::from(column.decimals().min(6)) {
        0 => String::new(),
        digits => format!(".{:06}", micros)[..=digits].to_owned(),
    };
    match *value {
        Value::Date(year, month, day, ..) if column.column_type() == ColumnType::MYSQL_TYPE_DATE => {
            format!("{year:04}-{month:02}-{day:02}")
        }
        Value::Date(year, month, day, hour, minute, second, micros) => {
            format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}{}", fraction(micros))
        }
        Value::Time(negative, days, hours, minutes, seconds, micros) => {
            let hours = u64::from(days) * 24 + u64::from(hours);
            let sign = if negative { "-" } else { "" };
            format!("{sign}{hours:02}:{minutes:02}:{seconds:02}{}", fraction(micros))
        }
        _ => String::new(),
    }
}

/// A client's parameter as a MySQL value.
pub(crate) fn from_proto(value: &deeb_proto::Value) -> Value {
    match &value.kind {
        None => Value::NULL,
        Some(Kind::Integer(integer)) => Value::Int(*integer),
        Some(Kind::Real(real)) => Value::Double(*real),
        Some(Kind::Text(text)) => Value::Bytes(text.as_bytes().to_vec()),
        Some(Kind::Blob(bytes)) => Value::Bytes(bytes.clone()),
    }
}

/// Appends `value` to a snapshot record, exactly (a FLOAT stays the same
/// four bytes, a date its fields).
pub(crate) fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::NULL => out.push(0),
        Value::Bytes(bytes) => {
            out.push(1);
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        Value::Int(integer) => {
            out.push(2);
            out.extend_from_slice(&integer.to_le_bytes());
        }
        Value::UInt(integer) => {
            out.push(3);
            out.extend_from_slice(&integer.to_le_bytes());
        }
        Value::Float(real) => {
            out.push(4);
            out.extend_from_slice(&real.to_le_bytes());
        }
        Value::Double(real) => {
            out.push(5);
            out.extend_from_slice(&real.to_le_bytes());
        }
        Value::Date(year, month, day, hour, minute, second, micros) => {
            out.push(6);
            out.extend_from_slice(&year.to_le_bytes());
            out.extend_from_slice(&[*month, *day, *hour, *minute, *second]);
            out.extend_from_slice(&micros.to_le_bytes());
        }
        Value::Time(negative, days, hours, minutes, seconds, micros) => {
            out.push(7);
            out.push(u8::from(*negative));
            out.extend_from_slice(&days.to_le_bytes());
            out.extend_from_slice(&[*hours, *minutes, *seconds]);
            out.extend_from_slice(&micros.to_le_bytes());
        }
    }
}

/// Reads one value [`encode`] wrote from the front of `input`.
pub(crate) fn decode(input: &mut &[u8]) -> Option<Value> {
    fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = input.split_at_checked(n)?;
        *input = rest;
        Some(head)
    }
    fn array<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
        take(input, N)?.try_into().ok()
    }
    let tag = take(input, 1)?[0];
    Some(match tag {
        0 => Value::NULL,
        1 => {
            let len = usize::try_from(u64::from_le_bytes(array(input)?)).ok()?;
            Value::Bytes(take(input, len)?.to_vec())
        }
        2 => Value::Int(i64::from_le_bytes(array(input)?)),
        3 => Value::UInt(u64::from_le_bytes(array(input)?)),
        4 => Value::Float(f32::from_le_bytes(array(input)?)),
        5 => Value::Double(f64::from_le_bytes(array(input)?)),
        6 => {
            let year = u16::from_le_bytes(array(input)?);
            let [month, day, hour, minute, second] = array(input)?;
            Value::Date(year, month, day, hour, minute, second, u32::from_le_bytes(array(input)?))
        }
        7 => {
            let negative = take(input, 1)?[0] != 0;
            let days = u32::from_le_bytes(array(input)?);
            let [hours, minutes, seconds] = array(input)?;
            Value::Time(negative, days, hours, minutes, seconds, u32::from_le_bytes(array(input)?))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_values_round_trip_exactly() {
        let values = [
            Value::NULL,
            Value::Bytes(b"caf\xc3\xa9\x00".to_vec()),
            Value::Int(-7),
            Value::UInt(u64::MAX),
            Value::Float(1.234_567_8),
            Value::Double(-0.1),
            Value::Date(2026, 11, 30, 23, 59, 58, 123_456),
            Value::Time(true, 3, 4, 5, 6, 7),
        ];
        let mut bytes = Vec::new();
        for value in &values {
            encode(value, &mut bytes);
        }
        let mut input = &bytes[..];
        for value in &values {
            assert_eq!(decode(&mut input).as_ref(), Some(value));
        }
        assert!(input.is_empty());
        assert_eq!(decode(&mut &[9u8][..]), None, "an unknown tag");
        assert_eq!(decode(&mut &[1u8, 5, 0, 0, 0, 0, 0, 0, 0, b'a'][..]), None, "a short value");
    }
}
