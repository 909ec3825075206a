//! The normalized ticket: what every source turns its webhook into, and the only shape of
//! ticket the core ever sees. Ids are newtypes so a delivery id cannot be passed where a
//! ticket id is expected.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Which system a ticket came from. Also the default destination of its enrichment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Github,
    Alertmanager,
    /// Typed in by a person: `runlink match`, `explain`, `test`.
    Manual,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Github => "github",
            SourceKind::Alertmanager => "alertmanager",
            SourceKind::Manual => "manual",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Rejects empty and absurdly long ids: they come from the outside world.
            pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidId> {
                let raw = raw.into();
                let trimmed = raw.trim();
                if trimmed.is_empty() {
                    return Err(InvalidId::Empty);
                }
                if trimmed.len() > 512 {
                    return Err(InvalidId::TooLong);
                }
                Ok($name(trimmed.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("is empty")]
    Empty,
    #[error("is longer than 512 characters")]
    TooLong,
}

string_id!(
    /// A ticket's identity, scoped by its source (`github:owner/repo#12`).
    TicketId
);
string_id!(
    /// The sender's id for one webhook delivery; a retry carries the same one.
    DeliveryId
);

/// Where the enrichment for a ticket is posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReplyTarget {
    GithubIssue {
        owner: String,
        repo: String,
        number: u64,
    },
}

impl ReplyTarget {
    pub fn destination(&self) -> &'static str {
        match self {
            ReplyTarget::GithubIssue { .. } => "github",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: TicketId,
    pub source: SourceKind,
    /// What dedups sender retries: the same delivery is stored once.
    pub delivery: DeliveryId,
    pub title: String,
    pub body: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub alertname: Option<String>,
    pub reply: Option<ReplyTarget>,
    /// The alert's query (PromQL) when the source carries it: its metric names say what
    /// was measured even when the text does not.
    #[serde(default)]
    pub query: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_trimmed_and_never_empty() {
        assert_eq!(TicketId::parse("  a#1 ").unwrap().as_str(), "a#1");
        assert_eq!(TicketId::parse("   "), Err(InvalidId::Empty));
        assert_eq!(DeliveryId::parse("x".repeat(600)), Err(InvalidId::TooLong));
    }

    #[test]
    fn reply_target_round_trips_through_json() {
        let target = ReplyTarget::GithubIssue {
            owner: "acme".into(),
            repo: "ops".into(),
            number: 7,
        };
        let json = serde_json::to_string(&target).unwrap();
        assert_eq!(serde_json::from_str::<ReplyTarget>(&json).unwrap(), target);
    }
}
