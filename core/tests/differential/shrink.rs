//! Reduces a failing program to a small one that fails the same way (same
//! check kind): cut after the failing request, then ddmin over requests,
//! then drop single statements; every step bounded by `attempts_max` runs.

use super::finding::{Finding, Kind};
use super::program::{Program, Request};

/// Shrinks `program`, whose run gave `finding`. `run` runs a candidate and
/// returns its finding, if any. Returns the smallest program found that
/// still fails with the same kind, its finding and the runs spent.
pub fn shrink(
    program: &Program,
    finding: &Finding,
    attempts_max: usize,
    run: &mut dyn FnMut(&Program) -> Option<Finding>,
) -> (Program, Finding, usize) {
    let mut state =
        State { best: program.clone(), finding: finding.clone(), kind: finding.kind, attempts: 0, attempts_max, run };
    let cut = Program { requests: program.requests[..=finding.request.min(program.requests.len() - 1)].to_vec() };
    state.try_candidate(cut);
    // Dropping statements can make whole requests removable: repeat both
    // until neither helps (each pass spends attempts, so this ends).
    for _pass in 0..PASSES_MAX {
        let before = state.best.statement_count();
        state.ddmin_requests();
        state.drop_statements();
        if state.best.statement_count() == before {
            break;
        }
    }
    (state.best, state.finding, state.attempts)
}

struct State<'a> {
    best: Program,
    finding: Finding,
    kind: Kind,
    attempts: usize,
    attempts_max: usize,
    run: &'a mut dyn FnMut(&Program) -> Option<Finding>,
}

impl State<'_> {
    /// Runs `candidate`; keeps it if it fails the same way. Returns true if kept.
    fn try_candidate(&mut self, candidate: Program) -> bool {
        if self.attempts >= self.attempts_max || candidate.requests.is_empty() || candidate == self.best {
            return false;
        }
        self.attempts += 1;
        match (self.run)(&candidate) {
            Some(finding) if finding.kind == self.kind => {
                self.best = Program {
                    requests: candidate.requests[..=finding.request.min(candidate.requests.len() - 1)].to_vec(),
                };
                self.finding = finding;
                true
            }
            _ => false,
        }
    }

    /// Delta debugging over whole requests: remove chunks while the
    /// failure stays.
    fn ddmin_requests(&mut self) {
        let mut chunks = 2;
        while self.attempts < self.attempts_max && self.best.requests.len() >= 2 {
            let length = self.best.requests.len();
            let chunk = length.div_ceil(chunks);
            let mut removed = false;
            for start in (0..length).step_by(chunk) {
                let mut requests = self.best.requests.clone();
                requests.drain(start..(start + chunk).min(length));
                if self.try_candidate(Program { requests }) {
                    removed = true;
                    break;
                }
            }
            if removed {
                chunks = (chunks - 1).max(2);
            } else if chunks >= length {
                break;
            } else {
                chunks = (chunks * 2).min(length);
            }
        }
    }

    /// Drops single statements of multi-statement writes.
    fn drop_statements(&mut self) {
        let mut request = 0;
        while request < self.best.requests.len() && self.attempts < self.attempts_max {
            let count = match &self.best.requests[request] {
                Request::Write(statements) => statements.len(),
                Request::Query(_) => 0,
            };
            let mut shrunk = false;
            if count >= 2 {
                for statement in 0..count {
                    let mut candidate = self.best.clone();
                    if let Some(Request::Write(statements)) = candidate.requests.get_mut(request) {
                        statements.remove(statement);
                    }
                    if self.try_candidate(candidate) {
                        shrunk = true;
                        break;
                    }
                }
            }
            if !shrunk {
                request += 1;
            }
        }
    }
}

/// Rounds of (ddmin over requests, drop statements).
const PASSES_MAX: usize = 8;
