//! Retry delays: one doubling delay with a cap, for every loop that waits on something
//! that comes back (the engine, its socket, the store's disk, a registry).

use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Self {
        Backoff { next: first, cap }
    }

    /// The delay to wait now; the next one is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        d
    }

    /// Sleeps the next delay; false when `cancel` fired first.
    pub async fn sleep(&mut self, cancel: &CancellationToken) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(self.next_delay()) => true,
            _ = cancel.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![500, 1000, 2000, 3000, 3000]);
    }

    #[tokio::test]
    async fn a_cancelled_sleep_ends_at_once() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let t = std::time::Instant::now();
        assert!(!b.sleep(&cancel).await);
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
