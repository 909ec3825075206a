//! The built-in `probe` destination: where synthetic tickets from `runlink canary probe` are
//! answered. Nothing leaves the process; the comment stays in the outbox row, marked
//! delivered, for `GET /v1/probes/{ticket}` to read back. It goes through the same queue,
//! worker and settling as a real comment, so a probe proves that path works too.

use async_trait::async_trait;

use super::pacer::{Pacer, PacingConfig};
use super::retry::{RetryPolicy, Verdict};
use super::{Attempt, Destination};
use crate::outbox::OutboxItem;

#[derive(Debug)]
pub struct ProbeSink {
    policy: RetryPolicy,
    pacer: Pacer,
}

impl ProbeSink {
    pub fn new(policy: RetryPolicy) -> Self {
        ProbeSink {
            policy,
            // Probes come a few at a time; the sink never throttles.
            pacer: Pacer::new(PacingConfig {
                rate_per_sec: 1000.0,
                burst: 1000,
                concurrency: 8,
                breaker_failures: u32::MAX,
                breaker_cooldown: std::time::Duration::from_secs(1),
            }),
        }
    }
}

#[async_trait]
impl Destination for ProbeSink {
    fn name(&self) -> &str {
        crate::ticket::PROBE_DESTINATION
    }

    fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    fn max_chars(&self) -> usize {
        65_536
    }

    async fn post(&self, _item: &OutboxItem) -> Attempt {
        Attempt {
            verdict: Verdict::Done,
            status: None,
            detail: String::new(),
            uncertain: false,
        }
    }

    async fn has_marker(&self, _item: &OutboxItem, _marker: &str) -> Option<bool> {
        Some(false)
    }
}
