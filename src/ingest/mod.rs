//! Inbound webhooks, one file per source. Every source does the same two things behind the
//! `Source` trait: verify the sender, and parse the JSON into typed values that become
//! `Ticket`s. Reading the body, storing the tickets and answering the sender are the HTTP
//! layer's (`crate::http::webhooks`), the same for every source.

pub mod alertmanager;
pub mod generic;
pub mod github;
pub mod grafana;
pub mod jira;
pub mod manual;
pub mod opsgenie;
pub mod pagerduty;
pub mod servicenow;

#[cfg(test)]
mod fuzz;

use actix_web::HttpRequest;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::ticket::Ticket;

/// What a webhook carried, once its sender is verified and its body parsed.
#[derive(Debug)]
pub enum Inbound {
    /// One ticket, answered with its own outcome. Boxed: a ticket is large and moves
    /// through here once per webhook.
    Ticket(Box<Ticket>),
    /// A notification of several alerts: the firing ones become tickets, the resolved ones
    /// are only recorded.
    Alerts {
        firing: Vec<Ticket>,
        resolved: Vec<Ticket>,
    },
    /// A ticket comment whose first line is a `/runlink` command (`crate::feedback`).
    Command(Box<crate::feedback::CommentCommand>),
    /// A `/runlink` command runlink cannot read: answered 2xx (retrying will not help)
    /// with the reason.
    BadCommand(String),
    /// An event runlink does not act on (a ping, an edit, its own comment): answered 2xx so
    /// the sender does not retry it.
    Ignored(&'static str),
}

/// One kind of sender. `admit` runs before the body is read (checks that need the headers
/// only, so an unauthenticated sender costs no body read); `parse` verifies what needs the
/// body and turns it into tickets.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// The name in metrics and logs (`github`, `generic`).
    fn name(&self) -> &'static str;

    fn admit(&self, _req: &HttpRequest) -> Result<(), IngestError> {
        Ok(())
    }

    /// The configuration key that would authenticate this source, when none is set: it
    /// takes webhooks from anyone, which the operator is told the first time it does.
    fn unauthenticated(&self) -> Option<String>;

    fn parse(&self, req: &HttpRequest, body: &[u8]) -> Result<Inbound, IngestError>;
}

/// Why a source refused a webhook: something about the request itself, so the sender is
/// told not to retry it as it is (the HTTP layer picks the status).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
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
    /// A token or password, compared whole: there is no body to sign.
    #[error("credentials in `{0}` are not the configured ones")]
    BadCredentials(&'static str),
    /// No credentials at all, on a source that takes them in several places.
    #[error("missing credentials: {0}")]
    MissingCredentials(&'static str),
    #[error("timestamp in `{header}` is more than {max_skew_secs} s from this server's clock")]
    StaleTimestamp {
        header: &'static str,
        max_skew_secs: i64,
    },
    #[error("malformed body: {0}")]
    Malformed(String),
    #[error("field `{field}`: {message}")]
    InvalidField { field: String, message: String },
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

/// Every source `[sources]` configures, one value per sender kind, and the generic ones by
/// name. Built once at start-up; the HTTP layer mounts one path per source.
#[derive(Debug)]
pub struct SourceSet {
    pub github: github::Github,
    pub alertmanager: alertmanager::Alertmanager,
    pub grafana: grafana::Grafana,
    pub pagerduty: pagerduty::Pagerduty,
    pub jira: jira::Jira,
    pub opsgenie: opsgenie::Opsgenie,
    pub servicenow: servicenow::Servicenow,
    pub generic: GenericSources,
}

/// The `sources.generic.<name>` sources, by name.
#[derive(Debug, Default)]
pub struct GenericSources(std::collections::BTreeMap<String, generic::Generic>);

impl GenericSources {
    pub fn get(&self, name: &str) -> Option<&generic::Generic> {
        self.0.get(name)
    }
}

impl SourceSet {
    pub fn new(config: &crate::config::Sources, marker: &crate::render::MarkerKey) -> Self {
        SourceSet {
            github: github::Github {
                secret: config.github_secret.clone(),
                marker: marker.clone(),
            },
            alertmanager: alertmanager::Alertmanager {
                token: config.alertmanager_token.clone(),
            },
            grafana: grafana::Grafana(config.grafana.clone()),
            pagerduty: pagerduty::Pagerduty {
                secrets: config.pagerduty_secrets.clone(),
                marker: marker.clone(),
            },
            jira: jira::Jira {
                secret: config.jira_secret.clone(),
                marker: marker.clone(),
            },
            opsgenie: opsgenie::Opsgenie {
                config: config.opsgenie.clone(),
                marker: marker.clone(),
            },
            servicenow: servicenow::Servicenow {
                auth: config.servicenow.clone(),
                marker: marker.clone(),
            },
            generic: GenericSources(
                config
                    .generic
                    .iter()
                    .map(|(name, source)| {
                        (
                            name.clone(),
                            generic::Generic {
                                name: name.clone(),
                                config: source.clone(),
                                marker: marker.clone(),
                            },
                        )
                    })
                    .collect(),
            ),
        }
    }
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
        .ok_or(IngestError::BadCredentials("Authorization"))?;
    if constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(IngestError::BadCredentials("Authorization"))
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

/// What a comment event carries when its text is a command: `None` for an ordinary
/// comment and for runlink's own (its marker verifies), so neither ever acts.
pub fn comment_command(
    text: &str,
    marker: &crate::render::MarkerKey,
) -> Option<Result<crate::feedback::Command, crate::feedback::CommandError>> {
    if marker.is_own(text) {
        return None;
    }
    crate::feedback::parse_command(text)
}

/// The `Inbound` for a comment event: a command, a command runlink cannot read, or an
/// ordinary comment to ignore.
pub fn command_inbound(
    text: &str,
    marker: &crate::render::MarkerKey,
    build: impl FnOnce(crate::feedback::Command) -> Result<crate::feedback::CommentCommand, IngestError>,
) -> Result<Inbound, IngestError> {
    match comment_command(text, marker) {
        None => Ok(Inbound::Ignored("comment is not a /runlink command")),
        Some(Err(error)) => Ok(Inbound::BadCommand(error.to_string())),
        Some(Ok(command)) => Ok(Inbound::Command(Box::new(build(command)?))),
    }
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
    struct Outer {
        inner: Inner,
    }
    #[derive(Debug, serde::Deserialize)]
    struct Inner {
        number: u64,
    }

    #[test]
    fn json_errors_name_the_field() {
        let ok = parse_json::<Outer>(br#"{"inner":{"number":7}}"#).unwrap();
        assert_eq!(ok.inner.number, 7);
        let err = parse_json::<Outer>(br#"{"inner":{"number":"x"}}"#).unwrap_err();
        assert!(err.to_string().contains("inner.number"), "{err}");
        let err = parse_json::<Outer>(br#"{"inner":{}}"#).unwrap_err();
        assert!(err.to_string().contains("number"), "{err}");
        let err = parse_json::<Outer>(b"{not json").unwrap_err();
        assert!(matches!(err, IngestError::Malformed(_)), "{err}");
    }
}
