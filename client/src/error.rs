//! A failed call, with deeb's stable error code.

use deeb_proto::{ErrorCode, ErrorDetail};
use prost::Message as _;

/// Why a call failed. `error_code` is deeb's (from the node's
/// `ErrorDetail`); `None` means no node answered (the transport failed):
/// for a write, its outcome is then unknown.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub error_code: Option<ErrorCode>,
    /// The gRPC status code.
    pub grpc_code: tonic::Code,
    pub message: String,
    /// SQLite's extended result code (0 if SQLite did not fail it).
    pub sqlite_code: i32,
    /// The failing statement's index in the request.
    pub statement_index: Option<u32>,
    /// The request certainly had no effect.
    pub not_applied: bool,
}

impl Error {
    pub(crate) fn transport(message: impl Into<String>) -> Error {
        Error {
            error_code: None,
            grpc_code: tonic::Code::Unavailable,
            message: message.into(),
            sqlite_code: 0,
            statement_index: None,
            not_applied: false,
        }
    }
}

impl Error {
    /// The gRPC status code (as `tonic::Status::code`).
    pub fn code(&self) -> tonic::Code {
        self.grpc_code
    }

    /// The message (as `tonic::Status::message`).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error as the CLI prints it: the message and deeb's code (with
    /// SQLite's extended code), or the gRPC code when no node answered.
    pub fn describe(&self) -> String {
        match self.error_code {
            Some(code) => {
                let name = code.as_str_name().trim_start_matches("ERROR_CODE_").to_ascii_lowercase();
                match self.sqlite_code {
                    0 => format!("{} [{name}]", self.message),
                    sqlite => format!("{} [{name}, sqlite {sqlite}]", self.message),
                }
            }
            None => format!("{} [{:?}]", self.message, self.grpc_code),
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        let detail = detail_of(&status);
        Error {
            error_code: detail.as_ref().map(ErrorDetail::code),
            grpc_code: status.code(),
            message: status.message().to_owned(),
            sqlite_code: detail.as_ref().map_or(0, |detail| detail.sqlite_code),
            statement_index: detail.as_ref().and_then(|detail| detail.statement_index),
            not_applied: detail.as_ref().is_some_and(|detail| detail.not_applied),
        }
    }
}

/// The [`ErrorDetail`] a deeb node put in `status`, if any (a status from
/// the transport, such as a connection refused, has none).
pub fn detail_of(status: &tonic::Status) -> Option<ErrorDetail> {
    if status.details().is_empty() {
        return None;
    }
    ErrorDetail::decode(status.details()).ok()
}
