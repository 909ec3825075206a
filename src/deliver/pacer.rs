//! Pacing for one destination: a token bucket (steady rate with a burst), a concurrency cap,
//! a pause when the destination says "come back later" (`Retry-After`, rate-limit reset), and
//! a circuit breaker that stops sending for a cool-down when the destination keeps failing.
//! During a failback storm this is what keeps runlink from becoming the second wave.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct PacingConfig {
    pub rate_per_sec: f64,
    pub burst: u32,
    pub concurrency: usize,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
}

#[derive(Debug)]
struct State {
    /// The rate in force: the configured one, lowered each time the destination throttles
    /// and raised back slowly on success (AIMD), so runlink settles just under what the
    /// destination really allows instead of bouncing off its limit.
    rate: f64,
    tokens: f64,
    refilled: Instant,
    paused_until: Option<Instant>,
    failures: u32,
    open_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Pacer {
    config: PacingConfig,
    state: Mutex<State>,
    slots: Semaphore,
}

/// What the last attempt told the pacer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Feedback {
    Success,
    /// The destination failed or throttled; `after` is its own "come back in".
    Failure {
        after: Option<Duration>,
    },
    /// A permanent refusal of this one request (4xx): says nothing about the destination.
    Neutral,
}

impl Pacer {
    pub fn new(config: PacingConfig) -> Self {
        let slots = Semaphore::new(config.concurrency.max(1));
        Pacer {
            state: Mutex::new(State {
                rate: config.rate_per_sec,
                tokens: f64::from(config.burst.max(1)),
                refilled: Instant::now(),
                paused_until: None,
                failures: 0,
                open_until: None,
            }),
            slots,
            config,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refill(&self, state: &mut State, now: Instant) {
        let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
        // The rate in force, not the configured one: after a throttle the bucket itself must
        // fill more slowly, or the lowered rate would only change how long waiters sleep.
        state.tokens =
            (state.tokens + elapsed * state.rate).min(f64::from(self.config.burst.max(1)));
        state.refilled = now;
    }

    /// How long until a send may start, given the state now (zero when one may start now).
    fn wait_in(state: &State, now: Instant) -> Duration {
        let blocked = [state.paused_until, state.open_until]
            .into_iter()
            .flatten()
            .map(|t| t.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        let for_token = if state.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - state.tokens) / state.rate.max(1e-6))
        };
        blocked.max(for_token)
    }

    /// How long until a send may start (zero when one may start now).
    pub fn wait_time(&self) -> Duration {
        let now = Instant::now();
        let mut state = self.lock();
        self.refill(&mut state, now);
        Self::wait_in(&state, now)
    }

    /// Holds every send until `until`: another replica was told to come back then.
    pub fn pause_until(&self, until: Instant) {
        let mut state = self.lock();
        state.paused_until = Some(state.paused_until.map_or(until, |p| p.max(until)));
    }

    /// About how many sends the bucket allows within `window` at the rate in force: a worker
    /// claims no more than this, so what it leases it can send before the lease runs out.
    pub fn sendable_within(&self, window: Duration) -> usize {
        let now = Instant::now();
        let mut state = self.lock();
        self.refill(&mut state, now);
        let blocked = Self::wait_in(&state, now);
        let usable = window.saturating_sub(blocked).as_secs_f64();
        (state.tokens.max(0.0) + usable * state.rate).floor() as usize
    }

    /// Waits for a token, for any pause or open breaker to end, and for a free slot.
    pub async fn acquire(&self) -> SemaphorePermit<'_> {
        let permit = self
            .slots
            .acquire()
            .await
            .expect("the pacer never closes its semaphore");
        loop {
            let wait = {
                let now = Instant::now();
                let mut state = self.lock();
                self.refill(&mut state, now);
                let wait = Self::wait_in(&state, now);
                if wait.is_zero() {
                    state.tokens -= 1.0;
                    None
                } else {
                    Some(wait.max(Duration::from_millis(1)))
                }
            };
            match wait {
                None => return permit,
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    pub fn record(&self, feedback: Feedback) {
        let now = Instant::now();
        let mut state = self.lock();
        match feedback {
            Feedback::Success => {
                state.failures = 0;
                state.open_until = None;
                let configured = self.config.rate_per_sec;
                state.rate = (state.rate + configured * 0.02).min(configured);
            }
            Feedback::Neutral => {}
            Feedback::Failure { after } => {
                if let Some(after) = after {
                    let until = now + after;
                    state.paused_until = Some(state.paused_until.map_or(until, |p| p.max(until)));
                    // Throttled: whatever is left in the bucket was too much.
                    state.rate = (state.rate * 0.7).max(self.config.rate_per_sec / 100.0);
                    state.tokens = state.tokens.min(1.0);
                }
                state.failures += 1;
                if state.failures >= self.config.breaker_failures.max(1) {
                    tracing::warn!(
                        failures = state.failures,
                        cooldown_ms = self.config.breaker_cooldown.as_millis() as u64,
                        "destination keeps failing: circuit open"
                    );
                    state.open_until = Some(now + self.config.breaker_cooldown);
                    // Half-open after the cool-down: one more failure opens it again.
                    state.failures = self.config.breaker_failures.saturating_sub(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer(rate: f64, burst: u32) -> Pacer {
        Pacer::new(PacingConfig {
            rate_per_sec: rate,
            burst,
            concurrency: 4,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(10),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_the_burst_then_the_rate() {
        let p = pacer(10.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            drop(p.acquire().await);
        }
        assert!(start.elapsed() < Duration::from_millis(5));
        for _ in 0..10 {
            drop(p.acquire().await);
        }
        // Ten more tokens at ten per second take about a second.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(950), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(1200), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_every_send() {
        let p = pacer(100.0, 10);
        p.record(Feedback::Failure {
            after: Some(Duration::from_secs(2)),
        });
        let start = Instant::now();
        drop(p.acquire().await);
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_lowers_the_rate_and_success_restores_it() {
        let p = pacer(10.0, 1);
        p.record(Feedback::Failure {
            after: Some(Duration::from_millis(1)),
        });
        tokio::time::advance(Duration::from_millis(5)).await;
        drop(p.acquire().await);
        let start = Instant::now();
        drop(p.acquire().await);
        // 7 per second now: one token takes about 143 ms instead of 100 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(140),
            "{:?}",
            start.elapsed()
        );
        for _ in 0..100 {
            p.record(Feedback::Success);
        }
        let start = Instant::now();
        drop(p.acquire().await);
        assert!(
            start.elapsed() <= Duration::from_millis(101),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_failures_open_the_breaker_and_success_closes_it() {
        let p = pacer(100.0, 10);
        for _ in 0..3 {
            p.record(Feedback::Failure { after: None });
        }
        assert!(p.wait_time() >= Duration::from_secs(9));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(p.wait_time(), Duration::ZERO);
        p.record(Feedback::Success);
        p.record(Feedback::Failure { after: None });
        assert_eq!(
            p.wait_time(),
            Duration::ZERO,
            "one failure after success is not enough"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_do_not_trip_the_breaker() {
        let p = pacer(100.0, 10);
        for _ in 0..10 {
            p.record(Feedback::Neutral);
        }
        assert_eq!(p.wait_time(), Duration::ZERO);
    }
}
