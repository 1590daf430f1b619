//! The server's error type and the one place where errors become
//! `tonic::Status` codes.

use deeb_core::sql::QueryError;
use deeb_core::{AdminError, ReadError, WriteError};
use thiserror::Error;
use tonic::{Code, Status};

/// Why a client request failed on this node.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("{0}")]
    Write(#[from] WriteError),
    #[error("{0}")]
    Read(#[from] ReadError),
    #[error("{0}")]
    Query(#[from] QueryError),
    #[error("{0}")]
    Admin(#[from] AdminError),
    /// The request did not finish within the server's request timeout.
    #[error("request timed out after {0} ms")]
    Timeout(u64),
    /// The node's input queue is full.
    #[error("server overloaded: request queue full; retry later")]
    Overloaded,
    /// The node is shutting down or stopped.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The request is malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The leader could not be reached to forward the request.
    #[error("no leader: {0}")]
    NoLeader(String),
    /// The node's own database failed while answering (e.g. a digest).
    #[error("internal error: {0}")]
    Internal(String),
    /// The leader answered a forwarded request with this status: relayed as is.
    #[error("{}", .0.message())]
    Forwarded(Status),
}

/// Maps every server error to the gRPC status a client sees. This is the
/// only such mapping in the server.
pub fn to_status(error: ServerError) -> Status {
    let not_applied = is_not_applied(&error);
    let mut status = status_of(error);
    if not_applied {
        status.metadata_mut().insert(NOT_APPLIED_KEY, tonic::metadata::MetadataValue::from_static("1"));
    }
    status
}

/// True if `status` came from a node that knows the request did nothing
/// (so forwarding it again cannot apply it twice). A status without the
/// mark, such as a connection broken mid-call, proves nothing.
pub fn proves_not_applied(status: &Status) -> bool {
    status.metadata().contains_key(NOT_APPLIED_KEY)
}

/// The metadata key that marks a definite "nothing was done" failure.
pub const NOT_APPLIED_KEY: &str = "x-deeb-not-applied";

/// Errors after which the request certainly had no effect.
fn is_not_applied(error: &ServerError) -> bool {
    match error {
        ServerError::Forwarded(status) => proves_not_applied(status),
        ServerError::Write(error) => !matches!(error, WriteError::OutcomeUnknown),
        ServerError::Admin(error) => !matches!(error, AdminError::OutcomeUnknown | AdminError::TransferTimeout(_)),
        ServerError::Read(_) | ServerError::Query(_) | ServerError::Invalid(_) => true,
        ServerError::Overloaded | ServerError::NoLeader(_) => true,
        ServerError::Timeout(_) | ServerError::ShuttingDown | ServerError::Internal(_) => false,
    }
}

fn status_of(error: ServerError) -> Status {
    let message = error.to_string();
    let code = match error {
        ServerError::Forwarded(status) => return status,
        ServerError::Write(error) => write_code(&error),
        ServerError::Read(error) => read_code(&error),
        ServerError::Query(QueryError::Stopped(_)) => Code::DeadlineExceeded,
        ServerError::Query(_) => Code::InvalidArgument,
        ServerError::Admin(error) => admin_code(&error),
        ServerError::Timeout(_) => Code::DeadlineExceeded,
        ServerError::Overloaded => Code::ResourceExhausted,
        ServerError::ShuttingDown | ServerError::NoLeader(_) => Code::Unavailable,
        ServerError::Invalid(_) => Code::InvalidArgument,
        ServerError::Internal(_) => Code::Internal,
    };
    let message = match code {
        Code::Unavailable if !message.starts_with("no leader") && is_leaderless(&message) => {
            format!("no leader: {message}")
        }
        _ => message,
    };
    Status::new(code, message)
}

fn write_code(error: &WriteError) -> Code {
    match error {
        WriteError::NotLeader { .. } | WriteError::Stopped => Code::Unavailable,
        WriteError::TooLarge { .. } => Code::ResourceExhausted,
        WriteError::QueueFull { .. } => Code::ResourceExhausted,
        WriteError::Statement(_) | WriteError::Invalid(_) => Code::InvalidArgument,
        WriteError::OutcomeUnknown => Code::Unknown,
    }
}

fn read_code(error: &ReadError) -> Code {
    match error {
        ReadError::NoLeader | ReadError::NotLeader { .. } | ReadError::Stopped => Code::Unavailable,
        ReadError::LeaseExpired | ReadError::TooStale { .. } => Code::FailedPrecondition,
        ReadError::Timeout => Code::DeadlineExceeded,
        ReadError::QueueFull { .. } => Code::ResourceExhausted,
        ReadError::Query(QueryError::Stopped(_)) => Code::DeadlineExceeded,
        ReadError::Query(_) => Code::InvalidArgument,
    }
}

fn admin_code(error: &AdminError) -> Code {
    match error {
        AdminError::NotLeader { .. } | AdminError::Stopped => Code::Unavailable,
        AdminError::ChangeInProgress => Code::FailedPrecondition,
        AdminError::QueueFull { .. } => Code::ResourceExhausted,
        AdminError::Invalid(_) => Code::InvalidArgument,
        AdminError::OutcomeUnknown => Code::Unknown,
        AdminError::TransferTimeout(_) => Code::DeadlineExceeded,
    }
}

/// True for a "not the leader (leader: unknown)" style message.
fn is_leaderless(message: &str) -> bool {
    message.contains("leader: unknown") || message.contains("no leader")
}

#[cfg(test)]
mod tests {
    use deeb_core::sql::RequestError;
    use deeb_core::NodeId;

    use super::*;

    #[test]
    fn leaderless_write_is_unavailable_no_leader() {
        let status = to_status(WriteError::NotLeader { leader: None }.into());
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().starts_with("no leader:"), "{}", status.message());
    }

    #[test]
    fn known_leader_is_unavailable_without_prefix() {
        let status = to_status(WriteError::NotLeader { leader: Some(NodeId(2)) }.into());
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("leader: 2"));
    }

    #[test]
    fn statement_error_is_invalid_argument_with_sqlite_message() {
        let error = RequestError { statement_index: 0, message: "no such table: nope".into() };
        let status = to_status(WriteError::Statement(error).into());
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("no such table: nope"));
    }

    #[test]
    fn each_class_has_its_code() {
        let cases: Vec<(ServerError, Code)> = vec![
            (WriteError::TooLarge { what: "request size", size: 2, max: 1 }.into(), Code::ResourceExhausted),
            (WriteError::OutcomeUnknown.into(), Code::Unknown),
            (WriteError::QueueFull { max: 1 }.into(), Code::ResourceExhausted),
            (ReadError::Timeout.into(), Code::DeadlineExceeded),
            (ReadError::NoLeader.into(), Code::Unavailable),
            (QueryError::NotReadOnly("BEGIN".into()).into(), Code::InvalidArgument),
            (ServerError::Timeout(10), Code::DeadlineExceeded),
            (AdminError::ChangeInProgress.into(), Code::FailedPrecondition),
        ];
        for (error, code) in cases {
            let text = error.to_string();
            assert_eq!(to_status(error).code(), code, "{text}");
        }
    }

    #[test]
    fn outcome_unknown_says_so() {
        let status = to_status(WriteError::OutcomeUnknown.into());
        assert!(status.message().starts_with("outcome unknown"));
    }

    #[test]
    fn forwarded_status_is_relayed_unchanged() {
        let status = to_status(ServerError::Forwarded(Status::new(Code::Aborted, "x")));
        assert_eq!((status.code(), status.message()), (Code::Aborted, "x"));
    }

    #[test]
    fn only_definite_failures_are_marked_not_applied() {
        let not_leader = to_status(ServerError::Write(WriteError::NotLeader { leader: None }));
        assert!(proves_not_applied(&not_leader));
        assert!(!proves_not_applied(&to_status(ServerError::Write(WriteError::OutcomeUnknown))));
        assert!(!proves_not_applied(&to_status(ServerError::Timeout(10))));
        // A call broken in flight: the same code, but no mark.
        let broken = Status::unavailable("transport error");
        assert!(!proves_not_applied(&broken));
        assert!(!proves_not_applied(&to_status(ServerError::Forwarded(broken))));
        assert!(proves_not_applied(&to_status(ServerError::Forwarded(not_leader))));
    }
}
