//! Per-address limit on redemptions: at most N in any sliding minute.
//!
//! The limit lives in memory, so each server process counts on its own; two servers on one
//! database allow twice as many attempts between them.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window the limit counts over.
const WINDOW: Duration = Duration::from_secs(60);

/// Addresses tracked before stale ones are swept out.
const SWEEP_AT: usize = 4096;

// TODO(proxy): the limit is in memory and keyed by the TCP peer, so servers sharing a database
// count separately and clients behind one reverse proxy share a budget. Acceptable while the
// companion runs as one process on a trusted network; a shared limit would live in the store.
/// Counts recent attempts per client address.
#[derive(Debug)]
pub struct RateLimiter {
    limit: usize,
    hits: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl RateLimiter {
    /// Allow `per_minute` attempts per address; 0 turns the limit off.
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            limit: usize::try_from(per_minute).unwrap_or(usize::MAX),
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Record an attempt from `addr` at `now`, or refuse it with the seconds to wait.
    ///
    /// A refused attempt is not recorded, so a client that waits as told gets through.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), u64> {
        if self.limit == 0 {
            return Ok(());
        }
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        if hits.len() >= SWEEP_AT {
            hits.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < WINDOW)
            });
        }
        let times = hits.entry(addr).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            times.pop_front();
        }
        if times.len() >= self.limit {
            let oldest = times.front().copied().unwrap_or(now);
            let wait = WINDOW.saturating_sub(now.duration_since(oldest));
            // Round up so that a client retrying on time is never refused again.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(seconds.max(1));
        }
        times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn allows_the_limit_then_says_how_long_to_wait() {
        let limiter = RateLimiter::new(3);
        let start = Instant::now();
        for i in 0..3 {
            limiter.check(ME, start + Duration::from_secs(i)).unwrap();
        }
        assert_eq!(limiter.check(ME, start + Duration::from_secs(10)), Err(50));
        limiter
            .check(OTHER, start + Duration::from_secs(10))
            .unwrap();
    }

    #[test]
    fn the_window_slides() {
        let limiter = RateLimiter::new(2);
        let start = Instant::now();
        limiter.check(ME, start).unwrap();
        limiter.check(ME, start + Duration::from_secs(30)).unwrap();
        assert!(limiter.check(ME, start + Duration::from_secs(59)).is_err());
        limiter.check(ME, start + Duration::from_secs(60)).unwrap();
        assert_eq!(
            limiter.check(ME, start + Duration::from_millis(60_500)),
            Err(30)
        );
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limiter = RateLimiter::new(0);
        let now = Instant::now();
        for _ in 0..1000 {
            limiter.check(ME, now).unwrap();
        }
    }
}
