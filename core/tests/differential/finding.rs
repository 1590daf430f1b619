//! What the tester reports.

use std::fmt;

/// The check that failed. Shrinking keeps the kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A node stopped (`Output::Stopped`): client SQL must never do that.
    NodeStopped,
    /// A bounded wait of the harness ran out (no reply, no convergence).
    Hang,
    /// The harness panicked for another reason.
    HarnessPanic,
    /// deeb's answer differs from SQLite's (error vs success, rows
    /// affected, last insert id, failing statement).
    Answer,
    /// deeb refused a request SQLite ran, with an undocumented reason.
    Refusal,
    /// deeb accepted a request SQLite refused, or one that creates state
    /// outside replication (temporary objects).
    Accepted,
    /// A query's rows on a node differ from SQLite's.
    Query,
    /// Replicas differ (digests, or the same query's rows).
    Replicas,
    /// A replica's dump differs from SQLite's.
    Dump,
    /// A replica's database fails SQLite's integrity check.
    Malformed,
}

#[derive(Clone, Debug)]
pub struct Finding {
    pub kind: Kind,
    /// The index of the request after which the check failed.
    pub request: usize,
    pub detail: String,
}

impl Finding {
    /// A key for "the same finding": the kind plus the detail without
    /// numbers and names that vary from program to program.
    pub fn signature(&self) -> String {
        // The class is in the words before any values: after the last
        // "stopped: " of a harness message, before the first bracket.
        let text = self.detail.rsplit(" stopped: ").next().unwrap_or(&self.detail);
        let text = text.split(['[', '(', '{', ';']).next().unwrap_or(text);
        let mut detail = String::new();
        for c in text.chars() {
            if c.is_ascii_digit() {
                if !detail.ends_with('#') {
                    detail.push('#');
                }
            } else {
                detail.push(c);
            }
        }
        let detail = detail.split_whitespace().take(SIGNATURE_WORDS).collect::<Vec<_>>().join(" ");
        format!("{:?}: {detail}", self.kind)
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} after request {}: {}", self.kind, self.request, self.detail)
    }
}

/// Words of a finding's detail that make its signature.
const SIGNATURE_WORDS: usize = 14;
