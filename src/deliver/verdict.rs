//! What one attempt means for its item, decided without I/O: the settle the store records,
//! the audit event beside it, and what the pacer learns. The worker only carries it out.

use super::Attempt;
use super::pacer::Feedback;
use super::retry::{RetryPolicy, Verdict};
use crate::audit::{AttemptOutcome, AuditEvent};
use crate::outbox::{OutboxItem, Settle};

/// An attempt's result for the store.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Settled {
    pub(super) settle: Settle,
    pub(super) outcome: AttemptOutcome,
    pub(super) event: AuditEvent,
}

/// A retry while attempts remain (after the policy's backoff, or the destination's
/// `Retry-After`), a dead letter once they are spent or the answer says never; the audit
/// event carries the reason and the start of the destination's answer.
pub(super) fn settle(
    attempt: &Attempt,
    item: &OutboxItem,
    policy: &RetryPolicy,
    now_ms: i64,
) -> Settled {
    let attempt_no = item.attempts + 1;
    let (settle, outcome, reason) = match &attempt.verdict {
        Verdict::Done => (Settle::Delivered, AttemptOutcome::Delivered, String::new()),
        Verdict::Retry { reason, after } if attempt_no < policy.max_attempts => {
            let delay = policy.delay(attempt_no, *after);
            (
                Settle::RetryAt {
                    at_ms: now_ms + delay.as_millis() as i64,
                    error: reason.clone(),
                    uncertain: attempt.uncertain,
                },
                AttemptOutcome::Retry,
                reason.clone(),
            )
        }
        Verdict::Retry { reason, .. } | Verdict::GiveUp { reason } => {
            let error = if matches!(attempt.verdict, Verdict::Retry { .. }) {
                format!("{reason} (after {attempt_no} attempts)")
            } else {
                reason.clone()
            };
            (
                Settle::Dead {
                    error: error.clone(),
                },
                AttemptOutcome::Dead,
                error,
            )
        }
    };
    let detail = match (reason.is_empty(), attempt.detail.is_empty()) {
        (_, true) => reason,
        (true, false) => attempt.detail.clone(),
        (false, false) => format!("{reason}: {}", attempt.detail),
    };
    let event = AuditEvent::DeliveryAttempt {
        delivery_key: item.delivery_key.clone(),
        destination: item.destination.clone(),
        attempt: attempt_no,
        outcome,
        status: attempt.status,
        detail,
    };
    Settled {
        settle,
        outcome,
        event,
    }
}

/// What the destination's pacer learns from an answer: a failure (with its `Retry-After`)
/// slows it down; a refusal that retrying cannot fix says nothing about its rate.
pub(super) fn feedback(attempt: &Attempt) -> Feedback {
    match &attempt.verdict {
        Verdict::Done => Feedback::Success,
        Verdict::Retry { after, .. } => Feedback::Failure { after: *after },
        Verdict::GiveUp { .. } => Feedback::Neutral,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ticket::{ReplyTarget, TicketId};

    fn item(attempts: u32) -> OutboxItem {
        OutboxItem {
            id: 1,
            delivery_key: "k".into(),
            ticket: TicketId::parse("github:acme/ops#1").unwrap(),
            destination: "github".into(),
            target: ReplyTarget::GithubIssue {
                owner: "acme".into(),
                repo: "ops".into(),
                number: 1,
            },
            body: String::new(),
            attempts,
            uncertain: false,
            created_ms: 0,
            lease_until_ms: 0,
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            max_attempts: 3,
        }
    }

    fn attempt(verdict: Verdict, detail: &str) -> Attempt {
        Attempt {
            verdict,
            status: Some(503),
            detail: detail.into(),
            uncertain: true,
        }
    }

    #[test]
    fn a_retry_while_attempts_remain_waits_at_least_what_the_destination_asked() {
        let retry = attempt(
            Verdict::Retry {
                reason: "HTTP 503".into(),
                after: Some(Duration::from_secs(7)),
            },
            "busy",
        );
        let settled = settle(&retry, &item(0), &policy(), 1_000);
        let Settle::RetryAt {
            at_ms,
            error,
            uncertain,
        } = &settled.settle
        else {
            panic!("expected a retry, got {:?}", settled.settle);
        };
        assert!(*at_ms >= 8_000, "{at_ms}");
        assert_eq!(error, "HTTP 503");
        assert!(uncertain);
        assert_eq!(settled.outcome, AttemptOutcome::Retry);
        let AuditEvent::DeliveryAttempt {
            attempt, detail, ..
        } = &settled.event
        else {
            panic!("expected a delivery attempt event");
        };
        assert_eq!(*attempt, 1);
        assert_eq!(detail, "HTTP 503: busy");
    }

    #[test]
    fn the_last_attempt_and_a_refusal_are_dead_letters_that_say_why() {
        let retry = attempt(
            Verdict::Retry {
                reason: "HTTP 503".into(),
                after: None,
            },
            "",
        );
        let last = settle(&retry, &item(2), &policy(), 0);
        assert_eq!(
            last.settle,
            Settle::Dead {
                error: "HTTP 503 (after 3 attempts)".into()
            }
        );
        let refused = attempt(
            Verdict::GiveUp {
                reason: "HTTP 404".into(),
            },
            "Not Found",
        );
        let dead = settle(&refused, &item(0), &policy(), 0);
        assert_eq!(
            dead.settle,
            Settle::Dead {
                error: "HTTP 404".into()
            }
        );
        assert_eq!(feedback(&refused), Feedback::Neutral);
    }

    #[test]
    fn a_delivery_is_settled_delivered_with_the_destination_answer() {
        let done = attempt(Verdict::Done, "");
        let settled = settle(&done, &item(1), &policy(), 0);
        assert_eq!(settled.settle, Settle::Delivered);
        assert_eq!(settled.outcome, AttemptOutcome::Delivered);
        assert_eq!(feedback(&done), Feedback::Success);
    }
}
