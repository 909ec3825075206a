//! Inbound webhooks, one file per source. Every source has the same parts: read the body
//! (bounded), verify the sender, parse the JSON into typed values, turn it into a `Ticket`, and
//! hand it to the pipeline. The answer tells the sender what to do next: 2xx only once the
//! ticket is durable, 4xx for "do not retry", 503 + `Retry-After` for "try again later".

pub mod alertmanager;
pub mod generic;
pub mod github;
pub mod grafana;
pub mod jira;
pub mod manual;
pub mod opsgenie;
pub mod pagerduty;
pub mod servicenow;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::outbox::AcceptOutcome;
use crate::pipeline::PipelineError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("cannot read request body: {0}")]
    Body(String),
    #[error("missing header `{0}`")]
    MissingHeader(&'static str),
    #[error("header `{header}`: {message}")]
    BadHeader {
        header: &'static str,
        message: String,
    },
    #[error("missing signature header `{0}`")]
    MissingSignature(&'static str),
    #[error("signature in `{0}` does not match the body")]
    BadSignature(&'static str),
    #[error("malformed body: {0}")]
    Malformed(String),
    #[error("field `{field}`: {message}")]
    InvalidField { field: String, message: String },
    #[error("ticket could not be stored, try again later")]
    Unavailable(#[source] PipelineError),
    #[error("too many deliveries pending ({pending}), try again later")]
    Overloaded { pending: i64 },
    #[error("no source named `{0}` is configured")]
    UnknownSource(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: String,
    code: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

impl IngestError {
    fn code(&self) -> &'static str {
        match self {
            IngestError::TooLarge { .. } => "payload_too_large",
            IngestError::Body(_) => "unreadable_body",
            IngestError::MissingHeader(_) => "missing_header",
            IngestError::BadHeader { .. } => "invalid_header",
            IngestError::MissingSignature(_) => "missing_signature",
            IngestError::BadSignature(_) => "invalid_signature",
            IngestError::Malformed(_) => "malformed_body",
            IngestError::InvalidField { .. } => "invalid_field",
            IngestError::Unavailable(_) => "unavailable",
            IngestError::Overloaded { .. } => "overloaded",
            IngestError::UnknownSource(_) => "unknown_source",
        }
    }
}

impl ResponseError for IngestError {
    fn status_code(&self) -> StatusCode {
        match self {
            IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::UnknownSource(_) => StatusCode::NOT_FOUND,
            IngestError::MissingSignature(_) | IngestError::BadSignature(_) => {
                StatusCode::UNAUTHORIZED
            }
            IngestError::Unavailable(_) | IngestError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let kind = if status.is_server_error() {
            "internal"
        } else if status == StatusCode::UNAUTHORIZED {
            "auth"
        } else {
            "invalid_request"
        };
        if let IngestError::Unavailable(cause) = self {
            tracing::error!(error = %cause, "ticket not stored");
        } else {
            tracing::warn!(error = %self, "webhook rejected");
        }
        let mut response = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Senders retry after this; a little spread keeps them from coming back as one.
            let secs = 5 + rand::random_range(0..5u32);
            response.insert_header(("Retry-After", secs.to_string()));
        }
        response.json(ErrorBody {
            message: self.to_string(),
            code: self.code(),
            kind,
        })
    }
}

/// Reads the body, refusing it as soon as it passes `limit`, so an oversized or endless body
/// costs at most `limit` bytes of memory.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, IngestError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| IngestError::Body(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(IngestError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

pub fn header<'a>(
    req: &'a HttpRequest,
    name: &'static str,
) -> Result<Option<&'a str>, IngestError> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(Some)
            .map_err(|_| IngestError::BadHeader {
                header: name,
                message: "is not visible ASCII".into(),
            }),
    }
}

pub fn required_header<'a>(
    req: &'a HttpRequest,
    name: &'static str,
) -> Result<&'a str, IngestError> {
    header(req, name)?.ok_or(IngestError::MissingHeader(name))
}

/// Constant-time comparison of secrets, so a wrong token's timing says nothing about the
/// right one.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a hex HMAC-SHA256 of `body` in constant time.
pub fn verify_hmac_sha256(secret: &[u8], body: &[u8], hex_signature: &str) -> bool {
    let Ok(expected) = hex::decode(hex_signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

pub fn sign_hmac_sha256(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `Authorization: Bearer <token>`, when a token is configured.
pub fn check_bearer(
    req: &HttpRequest,
    token: Option<&crate::config::Secret>,
) -> Result<(), IngestError> {
    let Some(token) = token else {
        return Ok(());
    };
    let header =
        header(req, "Authorization")?.ok_or(IngestError::MissingSignature("Authorization"))?;
    let given = header
        .strip_prefix("Bearer ")
        .ok_or(IngestError::BadSignature("Authorization"))?;
    if constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(IngestError::BadSignature("Authorization"))
    }
}

/// `X-Hub-Signature-256: sha256=<hex>` style signatures (GitHub, Jira), when a secret is set.
pub fn check_prefixed_hmac(
    req: &HttpRequest,
    name: &'static str,
    secret: Option<&crate::config::Secret>,
    body: &[u8],
) -> Result<(), IngestError> {
    let Some(secret) = secret else {
        return Ok(());
    };
    let header = header(req, name)?.ok_or(IngestError::MissingSignature(name))?;
    let hex = header
        .strip_prefix("sha256=")
        .ok_or(IngestError::BadSignature(name))?;
    if verify_hmac_sha256(secret.expose().as_bytes(), body, hex) {
        Ok(())
    } else {
        Err(IngestError::BadSignature(name))
    }
}

/// A delivery id from a header the sender sets per delivery (and repeats on retries).
pub fn delivery_header(
    req: &HttpRequest,
    name: &'static str,
) -> Result<Option<crate::ticket::DeliveryId>, IngestError> {
    header(req, name)?
        .map(|raw| {
            crate::ticket::DeliveryId::parse(raw).map_err(|e| IngestError::BadHeader {
                header: name,
                message: e.to_string(),
            })
        })
        .transpose()
}

/// For senders with no delivery id: the same body is the same delivery.
pub fn body_digest(body: &[u8]) -> crate::ticket::DeliveryId {
    use sha2::Digest;
    let digest = hex::encode(&Sha256::digest(body)[..16]);
    crate::ticket::DeliveryId::parse(digest).expect("a hex digest is a valid id")
}

pub fn invalid_field(field: impl Into<String>, message: impl ToString) -> IngestError {
    IngestError::InvalidField {
        field: field.into(),
        message: message.to_string(),
    }
}

/// `key:value` and `key=value` tags (`service:checkout`) become label pairs, the way teams
/// encode alert labels in tags; other tags become labels with an empty value.
pub fn tag_labels<'a>(
    tags: impl IntoIterator<Item = &'a str>,
) -> std::collections::BTreeMap<String, String> {
    tags.into_iter()
        .map(|tag| match tag.split_once([':', '=']) {
            Some((k, v)) if !k.trim().is_empty() => (k.trim().to_lowercase(), v.trim().to_string()),
            _ => (tag.trim().to_string(), String::new()),
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// Hands one ticket to the pipeline and answers its sender.
pub async fn accept_one(
    state: &crate::app::AppState,
    ticket: crate::ticket::Ticket,
) -> Result<(HttpResponse, &'static str), IngestError> {
    tracing::Span::current().record("ticket", ticket.id.as_str());
    let ticket_id = ticket.id.to_string();
    let outcome = state
        .pipeline
        .accept(ticket)
        .await
        .map_err(IngestError::Unavailable)?;
    Ok((
        accepted_response(outcome, &ticket_id),
        outcome_word(outcome),
    ))
}

/// Parses JSON into `T`, naming the path of the field that is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, IngestError> {
    // Tracking the path costs on every field; only a body that fails needs it.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || path == "." {
            IngestError::Malformed(inner.to_string())
        } else {
            IngestError::InvalidField {
                field: path,
                message: inner.to_string(),
            }
        }
    })
}

#[derive(Serialize)]
struct Ack<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// The outcome word used in responses and metrics.
pub fn outcome_word(outcome: AcceptOutcome) -> &'static str {
    match outcome {
        AcceptOutcome::Stored => "accepted",
        AcceptOutcome::DuplicateDelivery => "duplicate",
        AcceptOutcome::AlreadyEnriched => "already_enriched",
        AcceptOutcome::CapReached => "cap_reached",
    }
}

pub fn accepted_response(outcome: AcceptOutcome, ticket: &str) -> HttpResponse {
    let status = if outcome == AcceptOutcome::Stored {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let word = outcome_word(outcome);
    HttpResponse::build(status).json(Ack {
        status: word,
        ticket: Some(ticket),
        reason: None,
    })
}

/// A 2xx for events runlink does not act on, so the sender does not retry them.
pub fn ignored_response(reason: &str) -> HttpResponse {
    HttpResponse::Ok().json(Ack {
        status: "ignored",
        ticket: None,
        reason: Some(reason),
    })
}

/// Runs one source's handler with what every source shares: the backpressure check before
/// anything is read, and metrics for the outcome and latency.
pub async fn guarded<F>(
    source: &'static str,
    state: &crate::app::AppState,
    handler: F,
) -> Result<HttpResponse, IngestError>
where
    F: std::future::Future<Output = Result<(HttpResponse, &'static str), IngestError>>,
{
    let started = std::time::Instant::now();
    let result = if state.shedding() {
        Err(IngestError::Overloaded {
            pending: state.metrics.pending(),
        })
    } else {
        handler.await
    };
    let outcome = match &result {
        Ok((_, word)) => word,
        Err(IngestError::Overloaded { .. }) => "shed",
        Err(e) => e.code(),
    };
    state.metrics.webhook(source, outcome);
    state
        .metrics
        .ingest_seconds
        .get_or_create(&crate::metrics::Source {
            source: source.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    result.map(|(response, _)| response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_round_trips_and_rejects_tampering() {
        let sig = sign_hmac_sha256(b"s3cret", b"{\"a\":1}");
        assert!(verify_hmac_sha256(b"s3cret", b"{\"a\":1}", &sig));
        assert!(!verify_hmac_sha256(b"s3cret", b"{\"a\":2}", &sig));
        assert!(!verify_hmac_sha256(b"other", b"{\"a\":1}", &sig));
        assert!(!verify_hmac_sha256(b"s3cret", b"{\"a\":1}", "zz"));
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        number: u64,
    }

    #[test]
    fn json_errors_name_the_field() {
        let err = parse_json::<Outer>(br#"{"inner":{"number":"x"}}"#).unwrap_err();
        assert!(err.to_string().contains("inner.number"), "{err}");
        let err = parse_json::<Outer>(br#"{"inner":{}}"#).unwrap_err();
        assert!(err.to_string().contains("number"), "{err}");
        let err = parse_json::<Outer>(b"{not json").unwrap_err();
        assert!(matches!(err, IngestError::Malformed(_)), "{err}");
    }
}
