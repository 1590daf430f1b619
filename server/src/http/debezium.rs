//! The change stream in Debezium's JSON envelope (`GET /api/v1/watch?
//! format=debezium`, `deeb watch --format debezium`), as Debezium's JSON
//! converter writes a change event with schemas off: `before`, `after`,
//! `source`, `op` (`c`, `u`, `d`) and `ts_ms`, so a consumer written for
//! Debezium reads deeb's rows. `source` is the connector's own part (every
//! Debezium connector has its own): the log index as `lsn`, the request as
//! `txId`, and deeb's `position` and `last_in_request`. A schema change is
//! a schema change event (`ddl`); a restore is one too, with `restore`
//! naming it and an empty `ddl`.
//!
//! Values are plain JSON: integers and reals as numbers (a real JSON
//! cannot hold, an infinity, as the string `"Infinity"` or `"-Infinity"`),
//! text as strings, blobs as base64 (Debezium's default for bytes).

use base64::Engine as _;
use deeb_proto::value::Kind;
use deeb_proto::{Change, ChangeKind, NamedValue};
use serde_json::{json, Map, Value as Json};

/// `change` as one line of JSON in Debezium's envelope, with its newline.
pub fn line(change: &Change) -> Vec<u8> {
    let mut line = serde_json::to_vec(&event(change)).unwrap_or_default();
    line.push(b'\n');
    line
}

fn event(change: &Change) -> Json {
    let source = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "connector": "deeb",
        "name": "deeb",
        "ts_ms": change.timestamp_unix_ms,
        "snapshot": "false",
        "db": "main",
        "table": change.table,
        "lsn": change.index,
        "term": change.term,
        "txId": format!("{}:{}", change.index, change.request),
        "position": change.position,
        "last_in_request": change.last_in_request,
    });
    let op = match change.kind() {
        ChangeKind::Insert => "c",
        ChangeKind::Update => "u",
        ChangeKind::Delete => "d",
        ChangeKind::Ddl => {
            return json!({ "source": source, "databaseName": "main", "ddl": change.sql, "tableChanges": [] });
        }
        ChangeKind::Restore | ChangeKind::Unspecified => {
            return json!({ "source": source, "databaseName": "main", "ddl": "", "restore": change.sql });
        }
    };
    json!({
        "before": image(&change.before),
        "after": image(&change.after),
        "source": source,
        "op": op,
        "ts_ms": change.timestamp_unix_ms,
        "transaction": {
            "id": format!("{}:{}", change.index, change.request),
            "total_order": change.position + 1,
        },
    })
}

/// A row image as an object by column name; none is `null`.
fn image(values: &[NamedValue]) -> Json {
    if values.is_empty() {
        return Json::Null;
    }
    let columns =
        values.iter().map(|named| (named.name.clone(), value(named.value.as_ref().and_then(|v| v.kind.as_ref()))));
    Json::Object(columns.collect::<Map<String, Json>>())
}

fn value(kind: Option<&Kind>) -> Json {
    match kind {
        None => Json::Null,
        Some(Kind::Integer(integer)) => json!(integer),
        Some(Kind::Real(real)) if real.is_finite() => json!(real),
        Some(Kind::Real(real)) if *real > 0.0 => json!("Infinity"),
        Some(Kind::Real(_)) => json!("-Infinity"),
        Some(Kind::Text(text)) => json!(text),
        Some(Kind::Blob(bytes)) => json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str, kind: Option<Kind>) -> NamedValue {
        NamedValue { name: name.into(), value: Some(deeb_proto::Value { kind }) }
    }

    #[test]
    fn row_changes_read_as_debezium_events() {
        let update = Change {
            index: 7,
            term: 2,
            timestamp_unix_ms: 1000,
            request: 1,
            position: 0,
            last_in_request: true,
            kind: ChangeKind::Update.into(),
            table: "t".into(),
            key: vec![named("id", Some(Kind::Integer(1)))],
            before: vec![named("id", Some(Kind::Integer(1))), named("v", Some(Kind::Real(f64::INFINITY)))],
            after: vec![
                named("id", Some(Kind::Integer(1))),
                named("v", None),
                named("b", Some(Kind::Blob(vec![0, 1]))),
            ],
            sql: String::new(),
        };
        let event: Json = serde_json::from_slice(&line(&update)).expect("JSON");
        assert_eq!(event["op"], "u");
        assert_eq!(event["before"], json!({"id": 1, "v": "Infinity"}));
        assert_eq!(event["after"], json!({"id": 1, "v": null, "b": "AAE="}));
        assert_eq!(event["source"]["lsn"], 7);
        assert_eq!(event["source"]["table"], "t");
        assert_eq!(event["transaction"], json!({"id": "7:1", "total_order": 1}));
        assert_eq!(event["ts_ms"], 1000);

        let insert = Change { kind: ChangeKind::Insert.into(), before: Vec::new(), ..update.clone() };
        let event: Json = serde_json::from_slice(&line(&insert)).expect("JSON");
        assert_eq!((event["op"].clone(), event["before"].clone()), (json!("c"), Json::Null));
        let delete = Change { kind: ChangeKind::Delete.into(), after: Vec::new(), ..update.clone() };
        let event: Json = serde_json::from_slice(&line(&delete)).expect("JSON");
        assert_eq!((event["op"].clone(), event["after"].clone()), (json!("d"), Json::Null));
        let ddl = Change { kind: ChangeKind::Ddl.into(), sql: "CREATE TABLE x (a)".into(), ..Change::default() };
        let event: Json = serde_json::from_slice(&line(&ddl)).expect("JSON");
        assert_eq!(event["ddl"], "CREATE TABLE x (a)");
        assert!(event.get("op").is_none());
    }
}
