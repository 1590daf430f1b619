//! Runs a program on a target and, side by side, on the reference, and
//! checks after every request: nodes alive, answers equal to SQLite's (or a
//! documented refusal), query rows equal on every node and to SQLite's, and
//! periodically (and at the end) equal digests and a dump equal to SQLite's.

use std::collections::BTreeSet;

use super::answer::{describe, sorted, Answer, Rows};
use super::dump::{describe_difference, dump, first_difference};
use super::finding::{Finding, Kind};
use super::program::{Program, Request};
use super::reference::{query_rows, Reference};
use super::refusals;
use super::target::Target;

/// What one run did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub finding: Option<Finding>,
    pub requests: usize,
    pub statements: usize,
    /// Requests deeb refused for a documented reason.
    pub refusals: usize,
    /// Write requests SQLite itself failed (the generator's invalid share).
    pub sqlite_failures: usize,
    /// The program crossed the reference's own bounds and ended early.
    pub outgrown: bool,
    /// The program left SQLite's defined behaviour ([`Reference::undefined`]).
    pub undefined: bool,
}

/// Runs `program` on `target`, stopping at the first finding.
pub fn run(program: &Program, target: &mut dyn Target) -> Outcome {
    let mut reference = Reference::open();
    let mut outcome = Outcome::default();
    let mut non_deterministic = false;
    let last = program.requests.len().saturating_sub(1);
    for (index, request) in program.requests.iter().enumerate() {
        if reference.full() {
            outcome.outgrown = true;
            break;
        }
        non_deterministic |= request.is_non_deterministic();
        outcome.requests += 1;
        outcome.statements += request.statements().len();
        let checked = match request {
            Request::Write(statements) => write(statements, &mut reference, target, non_deterministic, &mut outcome),
            Request::Query(sql) => query(sql, &reference, target, non_deterministic, &mut outcome),
        };
        // SQLite's own behaviour became undefined: from here deeb is held
        // only to its own replicas (equal) and to staying up.
        outcome.undefined |= reference.undefined();
        non_deterministic |= reference.undefined();
        let checked = checked.and_then(|()| {
            if index == last || (index + 1) % SETTLE_EVERY == 0 || outcome.outgrown {
                settle(&reference, target, non_deterministic)
            } else {
                Ok(())
            }
        });
        if let Err((kind, detail)) = checked {
            outcome.finding = Some(Finding { kind, request: index, detail });
            break;
        }
        if outcome.outgrown {
            // The last request never reached deeb: not counted.
            outcome.requests -= 1;
            outcome.statements -= request.statements().len();
            break;
        }
    }
    outcome
}

type Check = Result<(), (Kind, String)>;

fn write(
    statements: &[String],
    reference: &mut Reference,
    target: &mut dyn Target,
    non_deterministic: bool,
    outcome: &mut Outcome,
) -> Check {
    let expected = reference.run(statements);
    if reference.interrupted() {
        // Not sent to deeb: the program ends here (and is checked once more).
        outcome.outgrown = true;
        return Ok(());
    }
    if matches!(expected, Answer::Failed { .. }) {
        outcome.sqlite_failures += 1;
    }
    let temporary = reference.has_temporary_objects();
    let actual = match target.write(statements) {
        Ok(actual) => actual,
        Err(broken) => {
            reference.finish(false);
            return Err((broken.kind, broken.detail));
        }
    };
    if matches!(actual, Answer::Failed { ref message, .. } if refusals::documented(message).is_some()) {
        outcome.refusals += 1;
    }
    let verdict = if non_deterministic || reference.undefined() {
        Ok(matches!(actual, Answer::Done(_)))
    } else if leaves_violation_refused(&expected, &actual, reference) {
        outcome.refusals += 1;
        Ok(false)
    } else {
        compare_answers(&expected, &actual, temporary)
    };
    reference.finish(*verdict.as_ref().unwrap_or(&false));
    verdict.map(|_| ())
}

/// deeb refused a request that SQLite committed with a foreign key left
/// violated (its own count missed it): a documented refusal only if the
/// reference really holds a violation now.
fn leaves_violation_refused(expected: &Answer, actual: &Answer, reference: &Reference) -> bool {
    let refused = matches!(actual, Answer::Failed { message, .. } if message.contains(refusals::LEAVES_VIOLATION));
    refused && matches!(expected, Answer::Done(_)) && reference.has_foreign_key_violations()
}

/// Compares deeb's answer with SQLite's. `Ok(keep)`: whether the reference
/// keeps the request (deeb applied it).
pub fn compare_answers(expected: &Answer, actual: &Answer, temporary: bool) -> Result<bool, (Kind, String)> {
    match (expected, actual) {
        (Answer::Done(_), Answer::Done(_)) if temporary => Err((
            Kind::Accepted,
            "deeb accepted a request that creates temporary objects (state outside replication)".into(),
        )),
        (Answer::Done(expected), Answer::Done(actual)) => compare_results(expected, actual).map(|()| true),
        (Answer::Done(_), Answer::Failed { message, .. }) => match refusals::documented(message) {
            Some(_) => Ok(false),
            None => Err((Kind::Refusal, format!("deeb refused what SQLite ran: {message}"))),
        },
        (Answer::Failed { message, .. }, Answer::Done(_)) => {
            Err((Kind::Accepted, format!("deeb accepted what SQLite refused: {message}")))
        }
        (
            Answer::Failed { statement_index: expected_index, message: expected_message },
            Answer::Failed { statement_index: actual_index, message },
        ) => {
            let earlier = match (actual_index, expected_index) {
                (None, _) => true,
                (Some(actual), Some(expected)) => actual <= expected,
                // SQLite failed at COMMIT, after every statement.
                (Some(_), None) => true,
            };
            // SQLite checks deferred constraints at COMMIT; deeb at the end
            // of the request, naming its last statement.
            let deferred = expected_index.is_none()
                && (message.contains("deferred constraint") || message.contains(refusals::LEAVES_VIOLATION));
            if actual_index == expected_index || deferred || (earlier && refusals::documented(message).is_some()) {
                Ok(false)
            } else {
                Err((
                    Kind::Answer,
                    format!(
                        "failed at statement {actual_index:?} ({message}) where SQLite failed at \
                         {expected_index:?} ({expected_message})"
                    ),
                ))
            }
        }
    }
}

fn compare_results(expected: &[super::answer::StatementResult], actual: &[super::answer::StatementResult]) -> Check {
    if expected.len() != actual.len() {
        return Err((Kind::Answer, format!("{} results where SQLite gave {}", actual.len(), expected.len())));
    }
    for (index, (expected, actual)) in expected.iter().zip(actual).enumerate() {
        if expected != actual {
            return Err((Kind::Answer, format!("statement {index}: deeb answered {actual:?}, SQLite {expected:?}")));
        }
    }
    Ok(())
}

fn query(
    sql: &str,
    reference: &Reference,
    target: &mut dyn Target,
    non_deterministic: bool,
    outcome: &mut Outcome,
) -> Check {
    let expected = sorted(&reference.query(sql));
    if reference.interrupted() {
        outcome.outgrown = true;
        return Ok(());
    }
    let per_node = target.read(sql).map_err(|broken| (broken.kind, broken.detail))?;
    // A query calling random() answers differently on every node (and run).
    if Request::Query(sql.to_owned()).is_non_deterministic() {
        return Ok(());
    }
    compare_rows(&expected, &per_node, non_deterministic)
}

/// Every node's rows must be equal, and equal to SQLite's unless the
/// program is non-deterministic.
pub fn compare_rows(expected: &Rows, per_node: &[(u64, Rows)], non_deterministic: bool) -> Check {
    let distinct: BTreeSet<&Rows> = per_node.iter().map(|(_, rows)| rows).collect();
    if distinct.len() > 1 {
        let answers: Vec<String> = per_node.iter().map(|(id, rows)| format!("node {id}: {}", describe(rows))).collect();
        return Err((Kind::Replicas, format!("nodes answer the same query differently: {}", answers.join("; "))));
    }
    match per_node.first() {
        Some((_, Err(message))) if refusals::documented(message).is_some() => Ok(()),
        Some((id, rows)) if !non_deterministic && rows != expected => {
            Err((Kind::Query, format!("node {id} read {}, SQLite {}", describe(rows), describe(expected))))
        }
        _ => Ok(()),
    }
}

fn settle(reference: &Reference, target: &mut dyn Target, non_deterministic: bool) -> Check {
    let settled = target.settle().map_err(|broken| (broken.kind, broken.detail))?;
    let digests: BTreeSet<(u64, u64)> = settled.digests.iter().map(|&(_, index, digest)| (index, digest)).collect();
    let dumps_differ = settled.dumps.iter().any(|(_, dump)| dump != &settled.dumps[0].1);
    if digests.len() > 1 || dumps_differ {
        return Err((Kind::Replicas, replicas_differ(&settled)));
    }
    if let Some((id, check)) = settled.checks.iter().find(|(_, check)| check != "ok") {
        return Err((Kind::Malformed, format!("node {id}'s database fails SQLite's integrity check: {check}")));
    }
    if non_deterministic {
        return Ok(());
    }
    let expected = dump(&mut |sql| query_rows(reference.connection(), sql));
    match first_difference(&expected, &settled.dumps[0].1) {
        None => Ok(()),
        Some((section, expected, actual)) => Err((
            Kind::Dump,
            format!(
                "{section}: {} from SQLite: deeb has {}, SQLite {}",
                describe_difference(&section, expected, actual),
                actual.map_or("nothing".into(), describe),
                expected.map_or("nothing".into(), describe)
            ),
        )),
    }
}

/// Which replica differs from the first, and where.
fn replicas_differ(settled: &super::target::Settled) -> String {
    let (first, first_dump) = &settled.dumps[0];
    let differing = settled.dumps[1..].iter().find_map(|(id, dump)| {
        first_difference(first_dump, dump).map(|(section, mine, theirs)| {
            format!(
                "{section}: {}: node {first} has {}, node {id} has {}",
                describe_difference(&section, mine, theirs),
                mine.map_or("nothing".into(), describe),
                theirs.map_or("nothing".into(), describe)
            )
        })
    });
    let detail = differing.unwrap_or_else(|| "dumps equal (state outside the dump?)".into());
    format!("replicas differ: {detail}; (node, index, digest) {:?}", settled.digests)
}

/// Requests between full checks (digests and dumps).
const SETTLE_EVERY: usize = 10;
