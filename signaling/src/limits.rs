//! A per-connection token bucket. Pure: the caller passes the clock.

use std::time::Instant;

/// What the bucket says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Handle it.
    Yes,
    /// Refuse it with `rate_limited`; the connection stays.
    Refuse,
    /// Refused too many times in a row: close with 1008.
    Close,
}

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    strikes: u32,
    max_strikes: u32,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, max_strikes: u32, now: Instant) -> Self {
        let burst = burst.max(1.0);
        TokenBucket {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: now,
            strikes: 0,
            max_strikes,
        }
    }

    pub fn admit(&mut self, now: Instant) -> Admit {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            Admit::Yes
        } else {
            self.strikes += 1;
            if self.strikes > self.max_strikes {
                Admit::Close
            } else {
                Admit::Refuse
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_are_refused_and_floods_closed_then_the_rate_recovers() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5.0, 3, t0);
        for _ in 0..5 {
            assert_eq!(bucket.admit(t0), Admit::Yes);
        }
        assert_eq!(bucket.admit(t0), Admit::Refuse);
        assert_eq!(bucket.admit(t0), Admit::Refuse);
        assert_eq!(bucket.admit(t0), Admit::Refuse);
        assert_eq!(bucket.admit(t0), Admit::Close);
        let mut calm = TokenBucket::new(10.0, 5.0, 3, t0);
        for i in 0..100u32 {
            assert_eq!(
                calm.admit(t0 + Duration::from_millis(100) * i),
                Admit::Yes,
                "10/s is within the rate"
            );
        }
    }
}
