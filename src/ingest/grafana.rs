//! Grafana alerting webhooks (notification version 1, the Alertmanager shape). The sender
//! proves itself with a bearer token (the contact point's "Authorization header"), or with an
//! HMAC-SHA256 of the body in `X-Grafana-Alerting-Signature`; when a timestamp header is
//! configured the HMAC covers `timestamp:body`, and stale timestamps are refused so a
//! captured request cannot be replayed later.

use actix_web::HttpRequest;

use super::{Inbound, IngestError, Source};
use crate::config::GrafanaSource;
use crate::ticket::SourceKind;

/// How far a signed timestamp may be from our clock.
const MAX_SKEW_SECS: i64 = 300;

fn verify(req: &HttpRequest, config: &GrafanaSource, body: &[u8]) -> Result<(), IngestError> {
    if let Some(token) = &config.token
        && super::header(req, "Authorization")?.is_some()
    {
        return super::check_bearer(req, Some(token));
    }
    let Some(secret) = &config.secret else {
        // A token is configured but none was sent.
        return super::check_bearer(req, config.token.as_ref());
    };
    let name = config.signature_header;
    let signature = super::header(req, name)?.ok_or(IngestError::MissingSignature(name))?;
    let signed = match &config.timestamp_header {
        Some(ts_name) => {
            let ts = super::required_header(req, ts_name)?;
            let secs: i64 = ts.trim().parse().map_err(|_| IngestError::BadHeader {
                header: ts_name,
                message: "is not a Unix timestamp".into(),
            })?;
            if (chrono::Utc::now().timestamp() - secs).abs() > MAX_SKEW_SECS {
                return Err(IngestError::StaleTimestamp {
                    header: ts_name,
                    max_skew_secs: MAX_SKEW_SECS,
                });
            }
            [ts.trim().as_bytes(), b":", body].concat()
        }
        None => body.to_vec(),
    };
    if super::verify_hmac_sha256(secret.expose().as_bytes(), &signed, signature) {
        Ok(())
    } else {
        Err(IngestError::BadSignature(name))
    }
}

/// `POST /webhooks/grafana`.
#[derive(Debug)]
pub struct Grafana(pub GrafanaSource);

impl Source for Grafana {
    fn name(&self) -> &'static str {
        "grafana"
    }

    fn unauthenticated(&self) -> Option<String> {
        (self.0.token.is_none() && self.0.secret.is_none())
            .then(|| "sources.grafana.token (or secret)".into())
    }

    fn parse(&self, req: &HttpRequest, body: &[u8]) -> Result<Inbound, IngestError> {
        verify(req, &self.0, body)?;
        super::alertmanager::parse_notification(body, SourceKind::Grafana)
    }
}
