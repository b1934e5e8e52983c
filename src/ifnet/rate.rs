//! A packet-rate limit on a wire: a token bucket of frames, refilled at
//! `rate` frames per second up to `burst`, as root puts on a delegated
//! port so that one tenant cannot flood a shared switch. Time is the
//! sender's clock, passed in; a frame over the rate is dropped and
//! counted.

use smoltcp::time::Instant;

use super::wire::{LinkStage, StageReport, Verdict};

/// Why a frame over the rate is dropped (the counter's name).
pub const OVER_RATE: &str = "over the rate limit";

/// Millionths of a frame per token unit.
const UNIT: u64 = 1_000_000;

/// A token bucket of frames (see the module docs).
#[derive(Debug, Clone)]
pub struct RateLimit {
    name: String,
    rate: u64,
    burst: u64,
    /// Tokens, in millionths of a frame.
    tokens: u64,
    last: Option<Instant>,
    passed: u64,
    dropped: u64,
}

impl RateLimit {
    /// A limit of `rate` frames per second with bursts of `burst` frames
    /// (at least 1); the bucket starts full.
    pub fn new(name: impl Into<String>, rate: u64, burst: u64) -> RateLimit {
        let burst = burst.max(1);
        RateLimit {
            name: name.into(),
            rate,
            burst,
            tokens: burst.saturating_mul(UNIT),
            last: None,
            passed: 0,
            dropped: 0,
        }
    }

    /// The usual burst for a rate: a tenth of a second's frames, at least 32.
    pub fn default_burst(rate: u64) -> u64 {
        (rate / 10).max(32)
    }
}

impl LinkStage for RateLimit {
    fn name(&self) -> &'static str {
        "rate"
    }

    fn process(&mut self, now: Instant, _frame: &[u8]) -> Verdict {
        if let Some(last) = self.last {
            let us = (now - last).total_micros();
            // Instants from two clocks may step back a little: no refill.
            if now > last {
                self.tokens = self
                    .tokens
                    .saturating_add(us.saturating_mul(self.rate))
                    .min(self.burst.saturating_mul(UNIT));
            }
        }
        if self.last.is_none_or(|l| now > l) {
            self.last = Some(now);
        }
        if self.tokens >= UNIT {
            self.tokens -= UNIT;
            self.passed += 1;
            Verdict::Pass
        } else {
            self.dropped += 1;
            Verdict::Drop(OVER_RATE)
        }
    }

    fn report(&self) -> Option<StageReport> {
        let text = format!("rate {}/s burst {}", self.rate, self.burst);
        Some(StageReport {
            kind: "rate",
            name: self.name.clone(),
            description: text.clone(),
            passed: self.passed,
            drops: vec![(OVER_RATE, self.dropped)],
            checks: vec![(OVER_RATE, text)],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_rate_and_drops_the_rest() {
        let mut r = RateLimit::new("r", 1000, 10);
        let t0 = Instant::from_millis(5);
        // The full bucket: 10 at once, then nothing.
        let burst = (0..20)
            .filter(|_| r.process(t0, &[]) == Verdict::Pass)
            .count();
        assert_eq!(burst, 10);
        // One second later at 1000/s: refilled to the burst, not beyond.
        let t1 = t0 + smoltcp::time::Duration::from_secs(1);
        assert_eq!(
            (0..20)
                .filter(|_| r.process(t1, &[]) == Verdict::Pass)
                .count(),
            10
        );
        // A steady 1000/s for a second passes (almost) all of it; 4000/s
        // passes about a quarter.
        let mut ok = 0;
        for i in 1..=4000u64 {
            let t = t1 + smoltcp::time::Duration::from_micros(i * 250);
            ok += usize::from(r.process(t, &[]) == Verdict::Pass);
        }
        assert!((990..=1010).contains(&ok), "{ok}");
        let rep = r.report().unwrap();
        assert_eq!(rep.drops, vec![(OVER_RATE, 10 + 10 + (4000 - ok as u64))]);
        // A clock that steps back refills nothing and does not panic.
        let _ = r.process(t0, &[]);
    }
}
