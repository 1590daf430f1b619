//! SQL workload invariants: what foreign-key actions, triggers, conflict clauses, AUTOINCREMENT,
//! schema changes and large rows promise a client, whatever faults the cluster went through.
//!
//! - a request that a trigger's `RAISE(ROLLBACK)` or an `INSERT OR ROLLBACK` conflict ends is never
//!   acknowledged, and none of its values ever appears;
//! - an acknowledged `INSERT OR IGNORE` of a present value changed nothing;
//! - no child row ever points at a missing parent (`ON DELETE CASCADE`, `SET NULL`,
//!   `ON UPDATE CASCADE`), and once a parent's delete or rename is acknowledged no child points at
//!   its old id;
//! - the AFTER INSERT trigger's audit table holds each inserted value exactly once, and every
//!   audited row's value;
//! - AUTOINCREMENT ids handed to acknowledged inserts are unique, increase with the log index, and
//!   with real time (an insert that completed before another began got the smaller id), across
//!   leader changes, deletes of the largest row and updates of the id;
//! - acknowledged set-null children, large rows (not deleted since) and added columns are present
//!   in the final reads, and nothing there was invented;
//! - no statement error that the operation does not allow.

use std::collections::{BTreeMap, BTreeSet};

use super::history::{Kind, Operation, SqlEvent, SqlFinal, SqlOutcome};
use super::violation::Violation;

/// What each count of an [`SqlEvent::Invariants`] read measures (all must be zero), in order.
pub const INVARIANT_NAMES: [&str; 5] = [
    "cascade children whose parent is missing",
    "set-null children whose parent is missing",
    "audited rows without an audit row",
    "values audited more than once",
    "negative values audited (RAISE(ROLLBACK) let through)",
];

/// The audited value the setup inserts; `INSERT OR IGNORE` and `INSERT OR ROLLBACK` collide with it.
pub const PRESENT_AUDITED: i64 = 100;
/// The size of every large row.
pub const BLOB_BYTES: i64 = 200_000;

/// Checks every [`Kind::Sql`] event of `history`.
///
/// # Errors
/// A [`Violation::Sql`] naming the first broken promise and the operation involved.
pub fn check_sql(history: &[Operation]) -> Result<(), Violation> {
    let fail = |position: usize, text: String| {
        Err(Violation::Sql { detail: format!("{text} (operation #{position}: {})", history[position]) })
    };
    let mut poison = BTreeSet::new();
    let mut audited_attempts = BTreeSet::from([PRESENT_AUDITED]);
    let mut audited_acknowledged = BTreeMap::new();
    let mut children_attempted = BTreeSet::new();
    let mut children_acknowledged = BTreeMap::new();
    let mut blobs_attempted = BTreeSet::new();
    let mut blobs_acknowledged = BTreeMap::new();
    let mut blobs_deleted = BTreeSet::new();
    let mut columns = BTreeMap::new();
    for (position, operation) in history.iter().enumerate() {
        let Kind::Sql(event) = &operation.kind else { continue };
        match event {
            SqlEvent::MustFail { what, poison: values, outcome } => {
                if *outcome == SqlOutcome::Acknowledged {
                    return fail(position, format!("{what} was acknowledged: it must end in a statement error"));
                }
                poison.extend(values.iter().copied());
            }
            SqlEvent::UnexpectedError { what, message } => {
                return fail(position, format!("{what} failed with an error it does not allow: {message}"));
            }
            SqlEvent::Ignored { rows } if *rows != 0 => {
                return fail(position, format!("INSERT OR IGNORE of a present value changed {rows} rows"));
            }
            SqlEvent::Invariants { counts } => {
                if counts.len() != INVARIANT_NAMES.len() {
                    return fail(position, format!("the invariant read returned {} counts", counts.len()));
                }
                for (count, name) in counts.iter().zip(INVARIANT_NAMES) {
                    if *count != 0 {
                        return fail(position, format!("{count} {name}"));
                    }
                }
            }
            SqlEvent::GoneParent { parent, children } if *children != 0 => {
                return fail(
                    position,
                    format!("{children} children still point at deleted or renamed parent {parent}"),
                );
            }
            SqlEvent::Audited { value, acknowledged, permanent } => {
                audited_attempts.insert(*value);
                if *acknowledged {
                    audited_acknowledged.entry(*value).or_insert((position, *permanent));
                }
            }
            SqlEvent::NullableChild { id, acknowledged } => {
                children_attempted.insert(*id);
                if *acknowledged {
                    children_acknowledged.entry(*id).or_insert(position);
                }
            }
            SqlEvent::Blob { id, acknowledged } => {
                blobs_attempted.insert(*id);
                if *acknowledged {
                    blobs_acknowledged.entry(*id).or_insert(position);
                }
            }
            SqlEvent::BlobDelete { id } => {
                blobs_deleted.insert(*id);
            }
            SqlEvent::AddColumn { column } => {
                columns.entry(*column).or_insert(position);
            }
            SqlEvent::Final(read) => {
                let SqlFinal { audit, audited, nullable_children, blobs, columns: present } = &**read;
                let audit_set: BTreeSet<i64> = audit.iter().copied().collect();
                if audit_set.len() != audit.len() {
                    return fail(position, "a value is in the audit table twice".to_owned());
                }
                for value in audit.iter().chain(audited) {
                    if poison.contains(value) {
                        return fail(position, format!("value {value} of a request that had to fail is present"));
                    }
                    if !audited_attempts.contains(value) {
                        return fail(position, format!("audited value {value} was never inserted"));
                    }
                }
                if let Some(value) = audited.iter().find(|value| !audit_set.contains(value)) {
                    return fail(position, format!("audited value {value} has no audit row"));
                }
                let audited_set: BTreeSet<i64> = audited.iter().copied().collect();
                for (value, &(insert, permanent)) in &audited_acknowledged {
                    if !audit_set.contains(value) {
                        return fail(
                            position,
                            format!("acknowledged audited insert #{insert} ({value}) has no audit row"),
                        );
                    }
                    if permanent && !audited_set.contains(value) {
                        return fail(position, format!("acknowledged audited insert #{insert} ({value}) is lost"));
                    }
                }
                let children: BTreeSet<i64> = nullable_children.iter().copied().collect();
                if let Some(id) = children.iter().find(|id| !children_attempted.contains(id)) {
                    return fail(position, format!("set-null child {id} was never inserted"));
                }
                if let Some((id, insert)) = children_acknowledged.iter().find(|(id, _)| !children.contains(id)) {
                    return fail(position, format!("acknowledged set-null child insert #{insert} ({id}) is lost"));
                }
                let present_blobs: BTreeMap<i64, i64> = blobs.iter().copied().collect();
                for (id, bytes) in &present_blobs {
                    if !blobs_attempted.contains(id) || *bytes != BLOB_BYTES {
                        return fail(position, format!("large row {id} of {bytes} bytes was never inserted"));
                    }
                }
                let lost = blobs_acknowledged
                    .iter()
                    .find(|(id, _)| !blobs_deleted.contains(id) && !present_blobs.contains_key(id));
                if let Some((id, insert)) = lost {
                    return fail(position, format!("acknowledged large row insert #{insert} ({id}) is lost"));
                }
                if let Some((column, added)) = columns.iter().find(|(column, _)| !present.contains(column)) {
                    return fail(position, format!("column c{column}, added by #{added}, is missing"));
                }
            }
            _ => {}
        }
    }
    check_autoincrement(history)
}

/// AUTOINCREMENT ids of acknowledged inserts: unique, larger than every id handed out at an earlier
/// log index, and larger than every id handed out to an insert that completed before this one began.
fn check_autoincrement(history: &[Operation]) -> Result<(), Violation> {
    let inserts: Vec<(usize, &Operation, i64, u64)> = history
        .iter()
        .enumerate()
        .filter_map(|(position, operation)| match operation.kind {
            Kind::Sql(SqlEvent::AutoIncrement { id, index }) => Some((position, operation, id, index)),
            _ => None,
        })
        .collect();
    let violation = |first: usize, second: usize, why: &str| {
        Err(Violation::Sql {
            detail: format!(
                "AUTOINCREMENT {why}:\n  operation #{first}: {}\n  operation #{second}: {}",
                history[first], history[second]
            ),
        })
    };
    let mut by_id: BTreeMap<i64, usize> = BTreeMap::new();
    for &(position, _, id, _) in &inserts {
        if let Some(&earlier) = by_id.get(&id) {
            return violation(earlier, position, "id handed out twice");
        }
        by_id.insert(id, position);
    }
    // Largest id (and its operation) of each log index, then a running maximum over earlier indexes.
    let mut by_index: BTreeMap<u64, Vec<(i64, usize)>> = BTreeMap::new();
    for &(position, _, id, index) in &inserts {
        by_index.entry(index).or_default().push((id, position));
    }
    let mut earlier_max: Option<(i64, usize)> = None;
    for group in by_index.values() {
        if let Some((max_id, max_position)) = earlier_max {
            if let Some(&(_, position)) = group.iter().find(|(id, _)| *id <= max_id) {
                return violation(max_position, position, "id not larger than one given at an earlier log index");
            }
        }
        let group_max = group.iter().copied().max().expect("non-empty group");
        earlier_max = Some(earlier_max.map_or(group_max, |max| max.max(group_max)));
    }
    for &(first, a, a_id, _) in &inserts {
        for &(second, b, b_id, _) in &inserts {
            let a_before_b = a.completed.is_some_and(|completed| completed < b.invoked);
            if a_before_b && a_id >= b_id {
                return violation(first, second, "id not larger than one acknowledged before this insert began");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(invoked: u64, completed: u64, event: SqlEvent) -> Operation {
        Operation {
            client: 1,
            invoked: Duration::from_nanos(invoked),
            completed: Some(Duration::from_nanos(completed)),
            kind: Kind::Sql(event),
        }
    }

    fn event(event: SqlEvent) -> Operation {
        at(1, 2, event)
    }

    fn final_read(audit: Vec<i64>, audited: Vec<i64>) -> Operation {
        let read = SqlFinal { audit, audited, nullable_children: vec![], blobs: vec![], columns: vec![] };
        event(SqlEvent::Final(Box::new(read)))
    }

    fn audited(value: i64, acknowledged: bool) -> Operation {
        event(SqlEvent::Audited { value, acknowledged, permanent: true })
    }

    fn autoincrement(invoked: u64, completed: u64, id: i64, index: u64) -> Operation {
        at(invoked, completed, SqlEvent::AutoIncrement { id, index })
    }

    fn detail(result: Result<(), Violation>) -> String {
        result.expect_err("a violation").to_string()
    }

    #[test]
    fn a_good_history_passes() {
        let history = vec![
            audited(200, true),
            audited(300, false),
            event(SqlEvent::MustFail { what: "raise", poison: vec![400], outcome: SqlOutcome::StatementError }),
            event(SqlEvent::Ignored { rows: 0 }),
            event(SqlEvent::Invariants { counts: vec![0; 5] }),
            event(SqlEvent::GoneParent { parent: 7, children: 0 }),
            event(SqlEvent::NullableChild { id: 5, acknowledged: true }),
            event(SqlEvent::Blob { id: 9, acknowledged: true }),
            event(SqlEvent::Blob { id: 10, acknowledged: true }),
            event(SqlEvent::BlobDelete { id: 10 }),
            event(SqlEvent::AddColumn { column: 2 }),
            autoincrement(1, 2, 1, 10),
            autoincrement(1, 5, 3, 11),
            autoincrement(3, 6, 2, 11), // same index, concurrent: any order
            autoincrement(7, 8, 4, 12),
            event(SqlEvent::Final(Box::new(SqlFinal {
                audit: vec![100, 200],
                audited: vec![100, 200],
                nullable_children: vec![5],
                blobs: vec![(9, BLOB_BYTES)],
                columns: vec![0, 2],
            }))),
        ];
        assert_eq!(check_sql(&history), Ok(()));
    }

    #[test]
    fn an_acknowledged_rollback_or_its_values_are_violations() {
        let acknowledged = SqlEvent::MustFail { what: "raise", poison: vec![400], outcome: SqlOutcome::Acknowledged };
        assert!(detail(check_sql(&[event(acknowledged)])).contains("was acknowledged"));
        let unknown = SqlEvent::MustFail { what: "raise", poison: vec![400], outcome: SqlOutcome::Unknown };
        let history = vec![event(unknown), audited(400, false), final_read(vec![100, 400], vec![100, 400])];
        assert!(detail(check_sql(&history)).contains("value 400 of a request that had to fail"));
    }

    #[test]
    fn broken_invariants_and_leftover_children_are_violations() {
        let counts = vec![0, 1, 0, 0, 0];
        assert!(detail(check_sql(&[event(SqlEvent::Invariants { counts })])).contains("1 set-null children"));
        let gone = SqlEvent::GoneParent { parent: 7, children: 2 };
        assert!(detail(check_sql(&[event(gone)])).contains("parent 7"));
        assert!(detail(check_sql(&[event(SqlEvent::Ignored { rows: 1 })])).contains("OR IGNORE"));
    }

    #[test]
    fn audit_losses_and_inventions_are_violations() {
        let lost = vec![audited(200, true), final_read(vec![100, 200], vec![100])];
        assert!(detail(check_sql(&lost)).contains("(200) is lost"));
        let unaudited = vec![audited(200, true), final_read(vec![100], vec![100, 200])];
        assert!(detail(check_sql(&unaudited)).contains("200 has no audit row"));
        let invented = vec![final_read(vec![100, 999], vec![100])];
        assert!(detail(check_sql(&invented)).contains("999 was never inserted"));
        let twice = vec![audited(200, true), final_read(vec![100, 200, 200], vec![100, 200])];
        assert!(detail(check_sql(&twice)).contains("twice"));
    }

    #[test]
    fn lost_children_rows_and_columns_are_violations() {
        let final_empty = final_read(vec![100], vec![100]);
        let child = vec![event(SqlEvent::NullableChild { id: 5, acknowledged: true }), final_empty.clone()];
        assert!(detail(check_sql(&child)).contains("child insert #0 (5) is lost"));
        let blob = vec![event(SqlEvent::Blob { id: 9, acknowledged: true }), final_empty.clone()];
        assert!(detail(check_sql(&blob)).contains("large row insert #0 (9) is lost"));
        let column = vec![event(SqlEvent::AddColumn { column: 3 }), final_empty];
        assert!(detail(check_sql(&column)).contains("column c3"));
    }

    #[test]
    fn reused_or_decreasing_autoincrement_ids_are_violations() {
        let twice = vec![autoincrement(1, 2, 5, 10), autoincrement(3, 4, 5, 11)];
        assert!(detail(check_sql(&twice)).contains("handed out twice"));
        let by_index = vec![autoincrement(1, 9, 5, 12), autoincrement(1, 9, 4, 13)];
        assert!(detail(check_sql(&by_index)).contains("earlier log index"));
        // Indexes from a confused server still lose to real time.
        let by_time = vec![autoincrement(1, 2, 5, 13), autoincrement(3, 4, 4, 13)];
        assert!(detail(check_sql(&by_time)).contains("acknowledged before"));
    }

    #[test]
    fn an_unexpected_statement_error_is_a_violation() {
        let error = SqlEvent::UnexpectedError { what: "add column", message: "no such table".to_owned() };
        assert!(detail(check_sql(&[event(error)])).contains("no such table"));
    }
}
