//! Sign-in throttling per client address, beside the per-account lockout (`auth.rs`): an
//! address that fails to sign in `per_address_failures` times within `per_address_minutes` is
//! refused for the rest of that window before any password is checked, so one machine on the LAN
//! can neither guess through many accounts nor make the node hash passwords without end.
//!
//! Kept in memory, per node process: a restart forgets it (the per-account lockout, in the
//! database, does not). Written here rather than with a rate-limiting crate (governor and the
//! like) because what is counted is failures, not requests, and a success must not spend one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses remembered at most; past it the one with the oldest window is forgotten.
const MAX_ADDRESSES: usize = 10_000;

/// Failed sign-ins per client address.
#[derive(Debug)]
pub struct SignInThrottle {
    limit: u32,
    window: Duration,
    seen: Mutex<HashMap<String, (Instant, u32)>>,
}

impl SignInThrottle {
    /// `limit` failures per `window`; a limit of 0 turns it off.
    pub fn new(limit: u32, window: Duration) -> SignInThrottle {
        SignInThrottle {
            limit,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` when `address` has used up its failures.
    pub fn check(&self, address: &str) -> Result<(), u64> {
        if self.limit == 0 {
            return Ok(());
        }
        let seen = self.seen.lock().expect("throttle");
        match seen.get(address) {
            Some((start, n)) if *n >= self.limit && start.elapsed() < self.window => {
                Err((self.window - start.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed sign-in from `address`.
    pub fn failed(&self, address: &str) {
        if self.limit == 0 {
            return;
        }
        let mut seen = self.seen.lock().expect("throttle");
        if seen.len() >= MAX_ADDRESSES && !seen.contains_key(address) {
            seen.retain(|_, (start, _)| start.elapsed() < self.window);
            if seen.len() >= MAX_ADDRESSES
                && let Some(oldest) = seen
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(k, _)| k.clone())
            {
                seen.remove(&oldest);
            }
        }
        let entry = seen
            .entry(address.to_owned())
            .or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_failures_until_the_window_ends() {
        let t = SignInThrottle::new(3, Duration::from_millis(200));
        for _ in 0..3 {
            assert!(t.check("10.0.0.7").is_ok());
            t.failed("10.0.0.7");
        }
        assert!(t.check("10.0.0.7").is_err());
        assert!(
            t.check("10.0.0.8").is_ok(),
            "another address is not affected"
        );
        std::thread::sleep(Duration::from_millis(250));
        assert!(t.check("10.0.0.7").is_ok(), "the window ended");
        assert!(SignInThrottle::new(0, Duration::ZERO).check("x").is_ok());
    }
}
