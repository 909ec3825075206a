//! Tickets typed in by hand: the JSON shape of the `runlink match` contract
//! (`{"title", "body", "labels", "annotations", "alertname"}`, all optional), used by the CLI
//! tools and by `POST /v1/match` to preview a decision without posting anything.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::ticket::{DeliveryId, SourceKind, Ticket, TicketId};

#[derive(Debug, Default, Clone, Deserialize)]
pub struct ManualTicket {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub alertname: Option<String>,
}

impl ManualTicket {
    /// `n` names the ticket (`manual:n`), e.g. its line number in an input file.
    pub fn into_ticket(self, n: usize) -> Ticket {
        let id = format!("manual:{n}");
        Ticket {
            id: TicketId::parse(id.clone()).expect("non-empty id"),
            source: SourceKind::Manual,
            delivery: DeliveryId::parse(id).expect("non-empty id"),
            title: self.title,
            body: self.body,
            labels: self.labels,
            annotations: self.annotations,
            alertname: self.alertname,
            reply: None,
            query: None,
        }
    }
}
