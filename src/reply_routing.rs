//! `[[routes]]`: where a ticket's enrichment goes when that is not the system it came from.
//! Routes are tried in order; the first whose source matches and whose target the ticket
//! provides wins. Without a match the ticket is answered where it came from (its own reply
//! target), which for Alertmanager and Grafana alerts means nowhere unless a route says so.

use crate::config::{Route, RouteTarget};
use crate::ticket::{ReplyTarget, Ticket};

#[derive(Debug, Clone, Default)]
pub struct ReplyRouter {
    routes: Vec<Route>,
}

/// Where a ticket goes, and what was wrong on the way (an annotation naming an issue in a
/// shape the destination cannot take), for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub target: Option<ReplyTarget>,
    pub problems: Vec<String>,
}

/// The name routes use for a ticket's source: the ticket id's scope (`alertmanager`,
/// `generic.chatops`).
pub(crate) fn source_name(ticket: &Ticket) -> &str {
    ticket
        .id
        .as_str()
        .split_once(':')
        .map(|(scope, _)| scope)
        .unwrap_or(ticket.source.as_str())
}

impl ReplyRouter {
    pub fn new(routes: Vec<Route>) -> Self {
        ReplyRouter { routes }
    }

    pub fn resolve(&self, ticket: &Ticket) -> Resolution {
        let source = source_name(ticket);
        let mut problems = Vec::new();
        for route in &self.routes {
            if route.source.as_deref().is_some_and(|s| s != source) {
                continue;
            }
            let raw = match &route.target {
                RouteTarget::Annotation(name) => ticket.annotations.get(name),
                RouteTarget::Label(name) => ticket.labels.get(name),
                RouteTarget::Fixed(target) => Some(target),
            };
            let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
                continue;
            };
            match ReplyTarget::parse(&route.destination, raw) {
                Ok(target) => {
                    return Resolution {
                        target: Some(target),
                        problems,
                    };
                }
                Err(e) => problems.push(format!("route to {}: {e}", route.destination)),
            }
        }
        Resolution {
            target: ticket.reply.clone(),
            problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::{DeliveryId, SourceKind, TicketId};

    fn ticket(id: &str, annotations: &[(&str, &str)]) -> Ticket {
        Ticket {
            id: TicketId::parse(id).unwrap(),
            source: SourceKind::Alertmanager,
            delivery: DeliveryId::parse("d").unwrap(),
            title: "t".into(),
            body: String::new(),
            labels: Default::default(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            alertname: None,
            reply: None,
            query: None,
        }
    }

    fn route(source: Option<&str>, destination: &str, target: RouteTarget) -> Route {
        Route {
            source: source.map(String::from),
            destination: destination.into(),
            target,
        }
    }

    #[test]
    fn the_first_route_whose_target_the_ticket_has_wins() {
        let router = ReplyRouter::new(vec![
            route(Some("github"), "jira", RouteTarget::Fixed("NEVER-1".into())),
            route(
                Some("alertmanager"),
                "jira",
                RouteTarget::Annotation("ticket".into()),
            ),
            route(None, "pagerduty", RouteTarget::Fixed("PABC".into())),
        ]);
        let with = ticket("alertmanager:fp@t", &[("ticket", "OPS-7")]);
        assert_eq!(
            router.resolve(&with).target,
            Some(ReplyTarget::JiraIssue {
                key: "OPS-7".into()
            })
        );
        let without = ticket("alertmanager:fp@t", &[]);
        assert_eq!(
            router.resolve(&without).target,
            Some(ReplyTarget::PagerdutyIncident { id: "PABC".into() })
        );
    }

    #[test]
    fn a_malformed_annotation_is_reported_and_skipped() {
        let router = ReplyRouter::new(vec![route(
            None,
            "jira",
            RouteTarget::Annotation("ticket".into()),
        )]);
        let resolution = router.resolve(&ticket("alertmanager:x", &[("ticket", "not a key")]));
        assert_eq!(resolution.target, None);
        assert_eq!(resolution.problems.len(), 1, "{resolution:?}");
    }

    #[test]
    fn generic_sources_are_named_by_their_id_scope() {
        let t = ticket("generic.chatops:42", &[]);
        assert_eq!(source_name(&t), "generic.chatops");
    }
}
