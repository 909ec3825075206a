//! The retry policy, kept apart from the clients (the vector habit): it only classifies an
//! answer as done, retry (with a reason and maybe a server-given delay) or give up, and says
//! how long to back off. Clients stay dumb; every destination gets the same judgement.

use std::time::Duration;

use rand::RngExt;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Done,
    Retry {
        reason: String,
        /// The destination said when to come back (`Retry-After`, rate-limit reset).
        after: Option<Duration>,
    },
    GiveUp {
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    pub max_attempts: u32,
}

impl RetryPolicy {
    pub fn classify(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
        if status.is_success() {
            return Verdict::Done;
        }
        let after = server_delay(headers);
        let code = status.as_u16();
        let rate_limited = code == 403
            && (after.is_some()
                || headers
                    .get("x-ratelimit-remaining")
                    .and_then(|v| v.to_str().ok())
                    == Some("0"));
        match code {
            408 | 429 => Verdict::Retry {
                reason: format!("HTTP {code}"),
                after,
            },
            // GitHub signals its secondary rate limits with 403 plus rate-limit headers.
            403 if rate_limited => Verdict::Retry {
                reason: "HTTP 403 rate limited".into(),
                after,
            },
            501 => Verdict::GiveUp {
                reason: "HTTP 501 not implemented".into(),
            },
            500..=599 => Verdict::Retry {
                reason: format!("HTTP {code}"),
                after,
            },
            _ => Verdict::GiveUp {
                reason: format!("HTTP {code}"),
            },
        }
    }

    /// Network failures: timeouts and refused connections are worth another try; a request we
    /// could not even build is not.
    pub fn classify_error(&self, error: &reqwest::Error) -> Verdict {
        if error.is_builder() {
            Verdict::GiveUp {
                reason: format!("request: {error}"),
            }
        } else {
            Verdict::Retry {
                reason: format!("network: {}", error_chain(error)),
                after: None,
            }
        }
    }

    /// Capped exponential backoff with full jitter: a uniform delay in `[0, min(cap,
    /// base * 2^attempt)]`, so a thousand items that failed together do not come back together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(20)))
            .min(self.cap);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ms.max(1)))
    }

    /// When to try again after attempt number `attempt` (1-based) failed.
    pub fn delay(&self, attempt: u32, server_said: Option<Duration>) -> Duration {
        match server_said {
            // The server's word is a floor; a little jitter spreads the herd behind it.
            Some(after) => after + Duration::from_millis(rand::rng().random_range(0..=250)),
            None => self.backoff(attempt),
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// `Retry-After` (seconds or HTTP date), else a rate-limit reset time (epoch seconds).
pub fn server_delay(headers: &HeaderMap) -> Option<Duration> {
    if let Some(value) = headers.get("retry-after").and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        if let Ok(secs) = value.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(when) = httpdate_parse(value) {
            return Some(when);
        }
    }
    for name in ["x-ratelimit-reset", "ratelimit-reset"] {
        if let Some(reset) = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
        {
            let now = chrono::Utc::now().timestamp();
            // Epoch seconds when large, a delta in seconds when small (IETF draft style).
            let secs = if reset > 1_000_000_000 {
                reset - now
            } else {
                reset
            };
            return Some(Duration::from_secs(secs.max(0) as u64));
        }
    }
    None
}

fn httpdate_parse(value: &str) -> Result<Duration, chrono::ParseError> {
    let when = chrono::DateTime::parse_from_rfc2822(value)?;
    let delta = when.timestamp() - chrono::Utc::now().timestamp();
    Ok(Duration::from_secs(delta.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            max_attempts: 5,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn success_is_done() {
        assert_eq!(
            policy().classify(StatusCode::CREATED, &HeaderMap::new()),
            Verdict::Done
        );
    }

    #[test]
    fn throttling_and_server_errors_retry() {
        for code in [408, 429, 500, 502, 503, 504] {
            let v = policy().classify(StatusCode::from_u16(code).unwrap(), &HeaderMap::new());
            assert!(matches!(v, Verdict::Retry { .. }), "{code}: {v:?}");
        }
    }

    #[test]
    fn client_errors_and_501_give_up() {
        for code in [400, 401, 403, 404, 422, 501] {
            let v = policy().classify(StatusCode::from_u16(code).unwrap(), &HeaderMap::new());
            assert!(matches!(v, Verdict::GiveUp { .. }), "{code}: {v:?}");
        }
    }

    #[test]
    fn retry_after_seconds_is_honoured() {
        let v = policy().classify(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "7")]),
        );
        assert_eq!(
            v,
            Verdict::Retry {
                reason: "HTTP 429".into(),
                after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn github_secondary_rate_limit_403_retries_at_reset() {
        let reset = (chrono::Utc::now().timestamp() + 30).to_string();
        let v = policy().classify(
            StatusCode::FORBIDDEN,
            &headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset),
            ]),
        );
        match v {
            Verdict::Retry { after: Some(d), .. } => {
                assert!(d.as_secs() >= 28 && d.as_secs() <= 30)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backoff_stays_under_the_growing_ceiling_and_the_cap() {
        let p = policy();
        for attempt in 0..30 {
            let ceiling = (100u64 << attempt.min(20)).min(10_000);
            for _ in 0..20 {
                assert!(p.backoff(attempt).as_millis() as u64 <= ceiling.max(1));
            }
        }
    }

    #[test]
    fn backoff_is_jittered() {
        let p = policy();
        let delays: std::collections::HashSet<_> = (0..50).map(|_| p.backoff(6)).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}
