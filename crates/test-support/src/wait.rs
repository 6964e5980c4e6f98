//! Waiting for a condition with a deadline. The condition is polled with a short interval that
//! grows (2 ms doubling up to 50 ms), so a fast change is seen fast and a slow poll (a kubectl
//! run) is not repeated in a tight loop.

use std::future::Future;
use std::time::{Duration, Instant};

/// What a polled condition returns: `bool` (done or not) or `Option<T>` (done with a value).
pub trait Ready {
    type Value;
    fn ready(self) -> Option<Self::Value>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

struct Backoff {
    deadline: Instant,
    step: Duration,
}

impl Backoff {
    fn new(timeout: Duration) -> Self {
        Backoff { deadline: Instant::now() + timeout, step: Duration::from_millis(2) }
    }
    /// The pause before the next poll, or None when the deadline has passed.
    fn next(&mut self) -> Option<Duration> {
        if Instant::now() > self.deadline {
            return None;
        }
        let s = self.step;
        self.step = (self.step * 2).min(Duration::from_millis(50));
        Some(s)
    }
}

/// Polls `f` until it is ready or `timeout` passes; its value, or None on timeout.
pub fn eventually<R: Ready>(timeout: Duration, mut f: impl FnMut() -> R) -> Option<R::Value> {
    let mut b = Backoff::new(timeout);
    loop {
        if let Some(v) = f().ready() {
            return Some(v);
        }
        std::thread::sleep(b.next()?);
    }
}

/// Polls `f` until it is ready; panics naming `what` when `timeout` passes first.
pub fn until<R: Ready>(timeout: Duration, what: &str, f: impl FnMut() -> R) -> R::Value {
    eventually(timeout, f).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// [`until`] for an async condition, sleeping on the tokio timer between polls.
pub async fn until_async<R, Fut>(timeout: Duration, what: &str, mut f: impl FnMut() -> Fut) -> R::Value
where
    R: Ready,
    Fut: Future<Output = R>,
{
    let mut b = Backoff::new(timeout);
    loop {
        if let Some(v) = f().await.ready() {
            return v;
        }
        match b.next() {
            Some(pause) => tokio::time::sleep(pause).await,
            None => panic!("timed out after {timeout:?} waiting for {what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_timeouts() {
        let mut n = 0;
        assert_eq!(
            until(Duration::from_secs(5), "third poll", || {
                n += 1;
                (n == 3).then_some(n)
            }),
            3
        );
        assert_eq!(eventually(Duration::from_millis(30), || false), None);
        let r = std::panic::catch_unwind(|| until(Duration::from_millis(10), "never", || false));
        let msg = *r.unwrap_err().downcast::<String>().unwrap();
        assert!(msg.contains("waiting for never"), "{msg}");
    }

    #[tokio::test]
    async fn async_condition() {
        let start = Instant::now();
        until_async(Duration::from_secs(5), "40 ms", || async { start.elapsed() > Duration::from_millis(40) }).await;
        let r = tokio::spawn(until_async(Duration::from_millis(10), "never", || async { false })).await;
        assert!(r.unwrap_err().is_panic());
    }
}
