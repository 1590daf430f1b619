//! Aligned table output for query results.

use deeb_proto::{value, Row, Value};

/// Renders a result as an aligned table:
///
/// ```text
///  id | name
/// ----+-------
///  1  | alice
/// (1 row)
/// ```
pub fn render(columns: &[String], rows: &[Row]) -> String {
    let mut out = Vec::new();
    super::output::print_all(&mut out, super::output::Format::Table, columns, rows).expect("writing to memory");
    String::from_utf8(out).expect("cells are text")
}

/// One value as the shell shows it.
pub fn format_value(value: &Value) -> String {
    match &value.kind {
        None => "NULL".to_owned(),
        Some(value::Kind::Integer(integer)) => integer.to_string(),
        Some(value::Kind::Real(real)) => format_real(*real),
        Some(value::Kind::Text(text)) => text.clone(),
        Some(value::Kind::Blob(blob)) => {
            format!("x'{}'", blob.iter().map(|byte| format!("{byte:02x}")).collect::<String>())
        }
    }
}

fn format_real(real: f64) -> String {
    if real.is_finite() && real.fract() == 0.0 && real.abs() < 1e15 {
        format!("{real:.1}")
    } else {
        real.to_string()
    }
}

/// A text value (for tests).
#[cfg(test)]
pub(crate) fn text(value: &str) -> Value {
    Value { kind: Some(value::Kind::Text(value.to_owned())) }
}

/// An integer value (for tests).
#[cfg(test)]
pub(crate) fn integer(value: i64) -> Value {
    Value { kind: Some(value::Kind::Integer(value)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_aligned_columns() {
        let columns = vec!["id".to_owned(), "name".to_owned()];
        let rows = vec![
            Row { values: vec![integer(1), text("alice")] },
            Row { values: vec![integer(10), Value { kind: None }] },
        ];
        let expected = " id | name\n----+-------\n 1  | alice\n 10 | NULL\n(2 rows)\n";
        assert_eq!(render(&columns, &rows), expected);
    }

    #[test]
    fn empty_result_has_header_and_count() {
        assert_eq!(render(&["x".to_owned()], &[]), " x\n---\n(0 rows)\n");
    }

    #[test]
    fn values_format() {
        assert_eq!(format_value(&Value { kind: Some(value::Kind::Real(2.0)) }), "2.0");
        assert_eq!(format_value(&Value { kind: Some(value::Kind::Real(0.5)) }), "0.5");
        assert_eq!(format_value(&Value { kind: Some(value::Kind::Blob(vec![0xab, 1])) }), "x'ab01'");
    }
}
