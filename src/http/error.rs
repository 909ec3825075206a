//! The one error shape every route answers with, `{"message", "code", "type"}` (plus
//! `findings` where there are some), and the one table that gives each kind of error its
//! status and code. A sender's retry logic reads the status; a person reads the message.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::ingest::IngestError;
use crate::pipeline::PipelineError;

/// Every way a request can fail, as the HTTP surface names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ErrorKind {
    PayloadTooLarge,
    BodyTimeout,
    UnreadableBody,
    MissingHeader,
    InvalidHeader,
    MissingSignature,
    InvalidSignature,
    StaleTimestamp,
    MalformedBody,
    InvalidField,
    UnknownSource,
    NotFound,
    AdminDisabled,
    InvalidToken,
    ReloadRefused,
    /// `POST /admin/canary/promote|abort` with no candidate in shadow.
    NothingInShadow,
    /// Accepting failed inside runlink (the store, the matcher): the sender should retry.
    Unavailable,
    /// Too many deliveries pending: the sender should retry later, or elsewhere.
    Overloaded,
    StoreUnavailable,
}

/// Who is at fault, for the body's `type`: a sender retries `internal`, fixes
/// `invalid_request`, and checks its credentials on `auth`.
const INVALID: &str = "invalid_request";
const AUTH: &str = "auth";
const INTERNAL: &str = "internal";

impl ErrorKind {
    /// The table: status, code and type of each kind.
    fn spec(self) -> (StatusCode, &'static str, &'static str) {
        use ErrorKind::*;
        match self {
            PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", INVALID),
            BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "body_timeout", INVALID),
            UnreadableBody => (StatusCode::BAD_REQUEST, "unreadable_body", INVALID),
            MissingHeader => (StatusCode::BAD_REQUEST, "missing_header", INVALID),
            InvalidHeader => (StatusCode::BAD_REQUEST, "invalid_header", INVALID),
            MissingSignature => (StatusCode::UNAUTHORIZED, "missing_signature", AUTH),
            InvalidSignature => (StatusCode::UNAUTHORIZED, "invalid_signature", AUTH),
            StaleTimestamp => (StatusCode::UNAUTHORIZED, "stale_timestamp", AUTH),
            MalformedBody => (StatusCode::BAD_REQUEST, "malformed_body", INVALID),
            InvalidField => (StatusCode::BAD_REQUEST, "invalid_field", INVALID),
            UnknownSource => (StatusCode::NOT_FOUND, "unknown_source", INVALID),
            NotFound => (StatusCode::NOT_FOUND, "not_found", INVALID),
            AdminDisabled => (StatusCode::FORBIDDEN, "admin_disabled", AUTH),
            InvalidToken => (StatusCode::UNAUTHORIZED, "invalid_token", AUTH),
            ReloadRefused => (StatusCode::UNPROCESSABLE_ENTITY, "reload_refused", INVALID),
            NothingInShadow => (StatusCode::CONFLICT, "nothing_in_shadow", INVALID),
            Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", INTERNAL),
            Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", INTERNAL),
            StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                INTERNAL,
            ),
        }
    }

    pub(super) fn status(self) -> StatusCode {
        self.spec().0
    }

    /// The machine-readable code, also the outcome label of a refused webhook in metrics.
    pub(super) fn code(self) -> &'static str {
        self.spec().1
    }
}

/// A refused request: its kind, the message for the person reading it, and any findings
/// (the lint errors that refused a reload).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(super) struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    pub findings: Vec<String>,
    /// Why runlink failed, logged and never sent (it may name internals).
    cause: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    code: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    findings: &'a [String],
}

impl ApiError {
    pub(super) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            findings: Vec::new(),
            cause: None,
        }
    }

    pub(super) fn with_findings(mut self, findings: Vec<String>) -> Self {
        self.findings = findings;
        self
    }

    /// The ticket could not be stored: the sender is told to retry; the cause goes to the
    /// log only.
    pub(super) fn unavailable(cause: &PipelineError) -> Self {
        ApiError {
            cause: Some(cause.to_string()),
            ..ApiError::new(
                ErrorKind::Unavailable,
                "ticket could not be stored, try again later",
            )
        }
    }

    pub(super) fn too_large(limit: usize) -> Self {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("request body is larger than {limit} bytes"),
        )
    }

    pub(super) fn overloaded(pending: i64) -> Self {
        ApiError::new(
            ErrorKind::Overloaded,
            format!("too many deliveries pending ({pending}), try again later"),
        )
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        let kind = match &error {
            IngestError::MissingHeader(_) => ErrorKind::MissingHeader,
            IngestError::BadHeader { .. } => ErrorKind::InvalidHeader,
            IngestError::MissingSignature(_) => ErrorKind::MissingSignature,
            IngestError::BadSignature(_) => ErrorKind::InvalidSignature,
            IngestError::BadCredentials(_) => ErrorKind::InvalidToken,
            IngestError::MissingCredentials(_) => ErrorKind::MissingSignature,
            IngestError::StaleTimestamp { .. } => ErrorKind::StaleTimestamp,
            IngestError::Malformed(_) => ErrorKind::MalformedBody,
            IngestError::InvalidField { .. } => ErrorKind::InvalidField,
        };
        ApiError::new(kind, error.to_string())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code, kind) = self.kind.spec();
        match &self.cause {
            Some(cause) => tracing::error!(error = %cause, code, "request failed"),
            None if status.is_server_error() => {
                tracing::warn!(error = %self, code, "request refused")
            }
            None => tracing::warn!(error = %self, code, "request rejected"),
        }
        let mut response = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Senders retry after this; a little spread keeps them from coming back as one.
            let secs = 5 + rand::random_range(0..5u32);
            response.insert_header(("Retry-After", secs.to_string()));
        }
        response.json(ErrorBody {
            message: &self.message,
            code,
            kind,
            findings: &self.findings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_of_a_sender_is_a_4xx_and_every_failure_of_runlink_a_503() {
        let ingest = [
            IngestError::MissingHeader("X"),
            IngestError::BadHeader {
                header: "X",
                message: "bad".into(),
            },
            IngestError::MissingSignature("X"),
            IngestError::BadSignature("X"),
            IngestError::BadCredentials("X"),
            IngestError::MissingCredentials("X"),
            IngestError::StaleTimestamp {
                header: "X",
                max_skew_secs: 300,
            },
            IngestError::Malformed("eof".into()),
            IngestError::InvalidField {
                field: "a.b".into(),
                message: "is required".into(),
            },
        ];
        for error in ingest {
            let message = error.to_string();
            let api = ApiError::from(error);
            assert!(api.kind.status().is_client_error(), "{message}");
            assert_eq!(api.message, message);
        }
        assert_eq!(
            ApiError::overloaded(3).kind.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn codes_are_unique() {
        use ErrorKind::*;
        let kinds = [
            PayloadTooLarge,
            BodyTimeout,
            UnreadableBody,
            MissingHeader,
            InvalidHeader,
            MissingSignature,
            InvalidSignature,
            StaleTimestamp,
            MalformedBody,
            InvalidField,
            UnknownSource,
            NotFound,
            AdminDisabled,
            InvalidToken,
            ReloadRefused,
            NothingInShadow,
            Unavailable,
            Overloaded,
            StoreUnavailable,
        ];
        let mut codes: Vec<&str> = kinds.iter().map(|k| k.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
    }
}
