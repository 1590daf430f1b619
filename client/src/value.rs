//! SQL values as Rust types.

use deeb_proto::{value, Statement};

/// One SQLite value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<&deeb_proto::Value> for Value {
    fn from(value: &deeb_proto::Value) -> Value {
        match &value.kind {
            None => Value::Null,
            Some(value::Kind::Integer(integer)) => Value::Integer(*integer),
            Some(value::Kind::Real(real)) => Value::Real(*real),
            Some(value::Kind::Text(text)) => Value::Text(text.clone()),
            Some(value::Kind::Blob(blob)) => Value::Blob(blob.to_vec()),
        }
    }
}

impl From<&Value> for deeb_proto::Value {
    fn from(value: &Value) -> deeb_proto::Value {
        let kind = match value {
            Value::Null => None,
            Value::Integer(integer) => Some(value::Kind::Integer(*integer)),
            Value::Real(real) => Some(value::Kind::Real(*real)),
            Value::Text(text) => Some(value::Kind::Text(text.clone())),
            Value::Blob(blob) => Some(value::Kind::Blob(blob.clone())),
        };
        deeb_proto::Value { kind }
    }
}

impl From<i64> for Value {
    fn from(integer: i64) -> Value {
        Value::Integer(integer)
    }
}

impl From<f64> for Value {
    fn from(real: f64) -> Value {
        Value::Real(real)
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::Text(text.to_owned())
    }
}

impl From<Vec<u8>> for Value {
    fn from(blob: Vec<u8>) -> Value {
        Value::Blob(blob)
    }
}

/// A statement with positional parameters.
pub(crate) fn statement(sql: &str, params: &[Value]) -> Statement {
    Statement {
        sql: sql.to_owned(),
        params: params.iter().map(deeb_proto::Value::from).collect(),
        named_params: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_the_wire_form() {
        for value in
            [Value::Null, Value::Integer(-3), Value::Real(0.5), Value::Text("é".into()), Value::Blob(vec![0, 255])]
        {
            assert_eq!(Value::from(&deeb_proto::Value::from(&value)), value);
        }
    }
}
