//! The server's error type and the one place where errors become
//! `tonic::Status` codes.

use deeb_core::sql::{ErrorClass, QueryError};
use deeb_core::{AdminError, ReadError, WriteError};
use deeb_proto::{ErrorCode, ErrorDetail};
use prost::Message as _;
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
    /// A change stream asked for entries below the log's first index.
    #[error(
        "compacted: the log now starts at index {first_index}; take a backup (deeb backup), load it, then watch \
         from the backup's applied index + 1"
    )]
    Compacted { first_index: u64 },
    /// The leader answered a forwarded request with this status: relayed as is.
    #[error("{}", .0.message())]
    Forwarded(Status),
}

/// Maps every server error to the gRPC status a client sees, with an
/// [`ErrorDetail`] in the status details. This is the only such mapping in
/// the server.
pub fn to_status(error: ServerError) -> Status {
    if let ServerError::Forwarded(status) = error {
        return forwarded(status);
    }
    let not_applied = is_not_applied(&error);
    let (code, mut detail) = classify(&error);
    detail.not_applied = not_applied;
    let mut message = error.to_string();
    if code == Code::Unavailable && !message.starts_with("no leader") && is_leaderless(&message) {
        message = format!("no leader: {message}");
    }
    Status::with_details(code, message, detail.encode_to_vec().into())
}

pub use deeb_client::detail_of;

/// The HTTP status code of a failed call, beside [`to_status`]'s gRPC one
/// and from the same typed detail: the HTTP API's only such mapping.
/// A statement the client got wrong is 400 (a constraint 409), a limit 413,
/// anything to retry later or elsewhere 503, an unknown outcome 500.
pub fn http_code(status: &Status) -> u16 {
    match status.code() {
        Code::Unauthenticated => return 401,
        Code::PermissionDenied => return 403,
        _ => {}
    }
    match detail_of(status).map_or(ErrorCode::Unspecified, |detail| detail.code()) {
        ErrorCode::Sql | ErrorCode::Refused | ErrorCode::InvalidRequest => 400,
        ErrorCode::Constraint => 409,
        ErrorCode::Limit => 413,
        ErrorCode::Permission => 403,
        ErrorCode::Compacted => 410,
        ErrorCode::Timeout | ErrorCode::Unavailable | ErrorCode::Overloaded | ErrorCode::Consistency => 503,
        ErrorCode::OutcomeUnknown | ErrorCode::Internal => 500,
        // No detail: a transport failure or a status made outside `to_status`.
        ErrorCode::Unspecified => match status.code() {
            Code::InvalidArgument => 400,
            Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => 503,
            _ => 500,
        },
    }
}

/// True if `status` came from a node that knows the request did nothing
/// (so forwarding it again cannot apply it twice). A status without the
/// mark, such as a connection broken mid-call, proves nothing.
pub fn proves_not_applied(status: &Status) -> bool {
    detail_of(status).is_some_and(|detail| detail.not_applied)
}

/// Errors after which the request certainly had no effect.
fn is_not_applied(error: &ServerError) -> bool {
    match error {
        ServerError::Forwarded(status) => proves_not_applied(status),
        ServerError::Write(error) => !matches!(error, WriteError::OutcomeUnknown),
        ServerError::Admin(error) => !matches!(error, AdminError::OutcomeUnknown | AdminError::TransferTimeout(_)),
        ServerError::Read(_) | ServerError::Query(_) | ServerError::Invalid(_) => true,
        ServerError::Compacted { .. } => true,
        ServerError::Overloaded | ServerError::NoLeader(_) => true,
        ServerError::Timeout(_) | ServerError::ShuttingDown | ServerError::Internal(_) => false,
    }
}

/// The gRPC code and the detail of every error class: the table the
/// README's "Errors" section documents.
fn classify(error: &ServerError) -> (Code, ErrorDetail) {
    let plain = |code: Code, error_code: ErrorCode| (code, detail(error_code));
    match error {
        ServerError::Write(WriteError::Statement(error)) => {
            let (code, error_code) = statement_code(error.class);
            let detail = ErrorDetail {
                code: error_code as i32,
                sqlite_code: error.sqlite_code.unwrap_or(0),
                statement_index: u32::try_from(error.statement_index).ok(),
                not_applied: false,
            };
            (code, detail)
        }
        ServerError::Write(error) => match error {
            WriteError::NotLeader { .. } | WriteError::NotMember { .. } | WriteError::Stopped => {
                plain(Code::Unavailable, ErrorCode::Unavailable)
            }
            WriteError::TooLarge { .. } => plain(Code::ResourceExhausted, ErrorCode::Limit),
            WriteError::QueueFull { .. } => plain(Code::ResourceExhausted, ErrorCode::Overloaded),
            WriteError::Invalid(_) => plain(Code::InvalidArgument, ErrorCode::InvalidRequest),
            WriteError::OutcomeUnknown => plain(Code::Unknown, ErrorCode::OutcomeUnknown),
            WriteError::Statement(_) => unreachable!("matched above"),
        },
        ServerError::Read(error) => match error {
            ReadError::NoLeader | ReadError::NotLeader { .. } | ReadError::NotMember { .. } | ReadError::Stopped => {
                plain(Code::Unavailable, ErrorCode::Unavailable)
            }
            ReadError::LeaseExpired | ReadError::TooStale { .. } => {
                plain(Code::FailedPrecondition, ErrorCode::Consistency)
            }
            ReadError::Timeout => plain(Code::DeadlineExceeded, ErrorCode::Timeout),
            ReadError::QueueFull { .. } => plain(Code::ResourceExhausted, ErrorCode::Overloaded),
            ReadError::Query(error) => query_code(error),
        },
        ServerError::Query(error) => query_code(error),
        ServerError::Admin(error) => match error {
            AdminError::NotLeader { .. } | AdminError::NotMember { .. } | AdminError::Stopped => {
                plain(Code::Unavailable, ErrorCode::Unavailable)
            }
            AdminError::ChangeInProgress => plain(Code::FailedPrecondition, ErrorCode::Overloaded),
            AdminError::QueueFull { .. } => plain(Code::ResourceExhausted, ErrorCode::Overloaded),
            AdminError::Invalid(_) => plain(Code::InvalidArgument, ErrorCode::InvalidRequest),
            AdminError::OutcomeUnknown => plain(Code::Unknown, ErrorCode::OutcomeUnknown),
            AdminError::TransferTimeout(_) => plain(Code::DeadlineExceeded, ErrorCode::Timeout),
        },
        ServerError::Timeout(_) => plain(Code::DeadlineExceeded, ErrorCode::Timeout),
        ServerError::Overloaded => plain(Code::ResourceExhausted, ErrorCode::Overloaded),
        ServerError::ShuttingDown | ServerError::NoLeader(_) => plain(Code::Unavailable, ErrorCode::Unavailable),
        ServerError::Invalid(_) => plain(Code::InvalidArgument, ErrorCode::InvalidRequest),
        ServerError::Internal(_) => plain(Code::Internal, ErrorCode::Internal),
        ServerError::Compacted { .. } => plain(Code::OutOfRange, ErrorCode::Compacted),
        ServerError::Forwarded(_) => unreachable!("relayed as is by to_status"),
    }
}

/// A forwarded call's status, relayed as the leader gave it; but one
/// without deeb's detail and with tonic's code for a broken call (the link
/// failed mid-call, perhaps after the leader applied it) says so: the
/// outcome is unknown, which clients may retry with their idempotency key
/// (HTTP answers 503, not 500).
fn forwarded(status: Status) -> Status {
    let broken = detail_of(&status).is_none() && matches!(status.code(), Code::Unknown | Code::Internal);
    if !broken {
        return status;
    }
    let message = format!("outcome unknown: forwarding to the leader failed: {}", status.message());
    Status::with_details(Code::Unknown, message, detail(ErrorCode::OutcomeUnknown).encode_to_vec().into())
}

fn detail(code: ErrorCode) -> ErrorDetail {
    ErrorDetail { code: code as i32, ..ErrorDetail::default() }
}

/// A failed statement's gRPC code, by what failed.
fn statement_code(class: ErrorClass) -> (Code, ErrorCode) {
    match class {
        ErrorClass::Sql => (Code::InvalidArgument, ErrorCode::Sql),
        ErrorClass::Constraint => (Code::Aborted, ErrorCode::Constraint),
        ErrorClass::Refused => (Code::InvalidArgument, ErrorCode::Refused),
        ErrorClass::Limit => (Code::ResourceExhausted, ErrorCode::Limit),
        ErrorClass::Timeout => (Code::DeadlineExceeded, ErrorCode::Timeout),
    }
}

fn query_code(error: &QueryError) -> (Code, ErrorDetail) {
    let (code, error_code) = match error {
        QueryError::Stopped(_) => (Code::DeadlineExceeded, ErrorCode::Timeout),
        QueryError::NotReadOnly(_) => (Code::InvalidArgument, ErrorCode::Refused),
        QueryError::Sql(_) => (Code::InvalidArgument, ErrorCode::Sql),
        QueryError::Limit(_) => (Code::ResourceExhausted, ErrorCode::Limit),
    };
    (code, detail(error_code))
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
        let error = RequestError {
            statement_index: 0,
            class: ErrorClass::Sql,
            sqlite_code: Some(1),
            message: "no such table: nope".into(),
        };
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

    /// Every status a node makes carries a detail whose code tells the
    /// statement error classes apart.
    #[test]
    fn statement_errors_carry_their_class() {
        let classes = [
            (ErrorClass::Sql, Code::InvalidArgument, ErrorCode::Sql),
            (ErrorClass::Constraint, Code::Aborted, ErrorCode::Constraint),
            (ErrorClass::Refused, Code::InvalidArgument, ErrorCode::Refused),
            (ErrorClass::Limit, Code::ResourceExhausted, ErrorCode::Limit),
            (ErrorClass::Timeout, Code::DeadlineExceeded, ErrorCode::Timeout),
        ];
        for (class, code, error_code) in classes {
            let error = RequestError { statement_index: 2, class, sqlite_code: Some(2067), message: "m".into() };
            let status = to_status(WriteError::Statement(error).into());
            let detail = detail_of(&status).expect("a detail");
            assert_eq!((status.code(), detail.code()), (code, error_code), "{class:?}");
            assert_eq!((detail.sqlite_code, detail.statement_index, detail.not_applied), (2067, Some(2), true));
        }
        let unknown = to_status(WriteError::OutcomeUnknown.into());
        let detail = detail_of(&unknown).expect("a detail");
        assert_eq!((detail.code(), detail.not_applied), (ErrorCode::OutcomeUnknown, false));
        assert_eq!(detail_of(&Status::unavailable("transport error")), None, "a transport status has no detail");
    }

    #[test]
    fn http_codes_follow_the_detail() {
        let sql =
            RequestError { statement_index: 0, class: ErrorClass::Sql, sqlite_code: Some(1), message: "m".into() };
        let constraint = RequestError { class: ErrorClass::Constraint, ..sql.clone() };
        let cases: Vec<(ServerError, u16)> = vec![
            (WriteError::Statement(sql).into(), 400),
            (WriteError::Statement(constraint).into(), 409),
            (WriteError::TooLarge { what: "request size", size: 2, max: 1 }.into(), 413),
            (WriteError::NotLeader { leader: None }.into(), 503),
            (WriteError::OutcomeUnknown.into(), 500),
            (ReadError::Timeout.into(), 503),
            (ReadError::LeaseExpired.into(), 503),
            (ServerError::Invalid("x".into()), 400),
        ];
        for (error, code) in cases {
            let text = error.to_string();
            assert_eq!(http_code(&to_status(error)), code, "{text}");
        }
        assert_eq!(http_code(&Status::unauthenticated("who")), 401);
        assert_eq!(http_code(&Status::unavailable("transport error")), 503);
        assert_eq!(http_code(&Status::unknown("broken")), 500);
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
    fn a_forward_broken_in_flight_is_an_unknown_outcome() {
        let status = to_status(ServerError::Forwarded(Status::unknown("transport error")));
        assert_eq!(status.message(), "outcome unknown: forwarding to the leader failed: transport error");
        let detail = detail_of(&status).expect("detail");
        assert_eq!((detail.code(), detail.not_applied), (ErrorCode::OutcomeUnknown, false));
        // The leader's own answers, with their detail, pass unchanged.
        let leaders = to_status(ServerError::Write(WriteError::OutcomeUnknown));
        assert_eq!(to_status(ServerError::Forwarded(leaders.clone())).message(), leaders.message());
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
