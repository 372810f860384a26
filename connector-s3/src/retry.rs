//! Retrying an operation with backoff until it succeeds or the caller gives
//! up — written once, used by every upload path.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Runs `op` until it succeeds, sleeping with exponential backoff and jitter
/// (100 ms doubling to 30 s) between attempts. Before each retry
/// `keep_going()` is asked; when it says no, the last error is returned.
/// `on_retry` sees each failure (to log and count it).
pub async fn with_backoff<T, E, Fut>(
    mut op: impl FnMut() -> Fut,
    mut keep_going: impl FnMut() -> bool,
    mut on_retry: impl FnMut(&E, Duration),
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                if !keep_going() {
                    return Err(error);
                }
                on_retry(&error, delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_until_success_or_told_to_stop() {
        let mut calls = 0;
        let result: Result<u32, &str> = with_backoff(
            || {
                calls += 1;
                let n = calls;
                async move { if n < 4 { Err("no") } else { Ok(n) } }
            },
            || true,
            |_, _| {},
        )
        .await;
        assert_eq!(result, Ok(4));
        let retries = std::cell::Cell::new(0);
        let result: Result<(), &str> = with_backoff(
            || async { Err("no") },
            || retries.get() < 2,
            |_, _| retries.set(retries.get() + 1),
        )
        .await;
        assert_eq!((result, retries.get()), (Err("no"), 2));
    }
}
