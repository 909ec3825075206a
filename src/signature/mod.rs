//! The alarm signature: what identifies "the same alarm" across tickets. Two tickets from one
//! alert rule differ in hosts, IPs, pod hashes, numbers and times; the signature replaces those
//! volatile parts by class tokens so both tickets get one signature (for coalescing and for
//! delivery keys) and the search sees only the words that describe the condition.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::memo::Memo;
use crate::ticket::Ticket;

mod alertname;
mod normalize;
mod promql;
#[cfg(test)]
mod tests;
mod words;

use alertname::*;
use normalize::*;
use promql::*;

pub use alertname::extract_alertname;
pub use normalize::{DEFAULT_RULES, NormalizeRule, Normalizer, RuleError, strip_class_tokens};
pub use promql::metric_names;
pub use words::{split_identifier, split_words};

fn format_key(
    alertname: Option<&str>,
    service: Option<&str>,
    namespace: Option<&str>,
    title: &str,
) -> String {
    format!(
        "{}|{}|{}|{}",
        alertname.unwrap_or(""),
        service.unwrap_or(""),
        namespace.unwrap_or(""),
        title.to_lowercase()
    )
}

/// What a ticket is about, stripped of what varies between two firings of the same alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmSignature {
    pub alertname: Option<String>,
    pub service: Option<String>,
    pub namespace: Option<String>,
    pub instance: Option<String>,
    /// The normalized title: the part of the signature that identifies the alarm.
    pub title: String,
    /// Title, summary, description and body, normalized: what the search reads.
    pub text: String,
    /// Metric names from the alert's query, split into words (`node filesystem avail bytes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
}

impl AlarmSignature {
    pub fn of(ticket: &Ticket, normalizer: &Normalizer) -> Self {
        let mut text = String::new();
        let mut seen: Vec<&str> = Vec::new();
        for part in [
            Some(ticket.title.as_str()),
            ticket.annotations.get("summary").map(String::as_str),
            ticket.annotations.get("message").map(String::as_str),
            ticket.annotations.get("description").map(String::as_str),
            Some(ticket.body.as_str()),
        ]
        .into_iter()
        .flatten()
        {
            // The title is often repeated as the summary: once is enough to normalize.
            if !part.trim().is_empty() && !seen.contains(&part) {
                seen.push(part);
                text.push_str(part);
                text.push('\n');
            }
        }
        let all = |keys: &[&str]| {
            first_value(&ticket.labels, keys).or_else(|| first_value(&ticket.annotations, keys))
        };
        AlarmSignature {
            alertname: extract_alertname(ticket),
            service: all(SERVICE_KEYS),
            namespace: all(&["namespace"]),
            instance: all(INSTANCE_KEYS),
            title: normalizer.normalize(&ticket.title),
            text: normalizer.normalize(&text),
            metrics: ticket
                .query
                .as_deref()
                .map(|query| METRIC_NAMES.get(query, metric_names))
                .unwrap_or_default(),
        }
    }

    /// The stable identity of this alarm, used in delivery keys and for coalescing.
    /// The instance is left out on purpose: the same alarm on two hosts is one signature.
    pub fn key(&self) -> String {
        format_key(
            self.alertname.as_deref(),
            self.service.as_deref(),
            self.namespace.as_deref(),
            &self.title,
        )
    }

    /// `AlarmSignature::of(ticket, normalizer).key()` without normalizing the ticket's text:
    /// what a webhook needs before it is answered (its delivery key) costs a fraction of the
    /// whole signature, which is left to the match behind the ingest log.
    pub fn key_of(ticket: &Ticket, normalizer: &Normalizer) -> String {
        let all = |keys: &[&str]| {
            first_value(&ticket.labels, keys).or_else(|| first_value(&ticket.annotations, keys))
        };
        format_key(
            extract_alertname(ticket).as_deref(),
            all(SERVICE_KEYS).as_deref(),
            all(&["namespace"]).as_deref(),
            &normalizer.normalize(&ticket.title),
        )
    }

    /// Everything a match decision depends on: two tickets with the same match key get the
    /// same runbooks, so one search can answer both.
    pub fn match_key(&self) -> String {
        let mut hash = Sha256::new();
        for part in [
            self.alertname.as_deref().unwrap_or(""),
            &self.text,
            &self.metrics.join(" "),
        ] {
            hash.update(part.as_bytes());
            hash.update([0u8]);
        }
        hex::encode(&hash.finalize()[..16])
    }

    /// A short fixed-length digest of `key()`, safe to put in a marker or a URL.
    pub fn digest(&self) -> String {
        let hash = Sha256::digest(self.key().as_bytes());
        hex::encode(&hash[..12])
    }

    /// The words a search should use: the alert name split into words plus the text with
    /// class tokens removed.
    pub fn search_text(&self) -> String {
        let mut out = String::new();
        if let Some(name) = &self.alertname {
            out.push_str(&split_identifier(name));
            out.push(' ');
        }
        out.push_str(&strip_class_tokens(&self.text));
        out
    }

    /// The words of the metric names, for a weaker second query: metrics say what was
    /// measured, but their words (`bytes`, `total`, `status`) are shared by many runbooks.
    pub fn metric_text(&self) -> String {
        self.metrics
            .iter()
            .map(|m| m.replace(['_', ':'], " "))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for AlarmSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.alertname {
            write!(f, "{name}")?;
            if let Some(service) = &self.service {
                write!(f, "/{service}")?;
            }
            write!(f, ": ")?;
        }
        f.write_str(&self.title)
    }
}
