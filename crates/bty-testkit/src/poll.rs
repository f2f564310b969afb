//! Waiting for a condition, with a deadline and a message that says what
//! never happened.

use std::future::Future;
use std::time::{Duration, Instant};

/// Poll `check` every `every` until it returns `Ok(Some(v))`, then return
/// `v`; an `Err` from `check` ends the wait with that error, and so does
/// the deadline (`timed out waiting for {what}`).
pub async fn try_until<T, F, Fut>(
    limit: Duration,
    every: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() > end {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Poll `check` every 100 ms until it returns `Some(v)`, then return `v`;
/// panics with `timed out waiting for {what}` after `limit`.
pub async fn until<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let every = Duration::from_millis(100);
    match try_until(limit, every, what, || {
        let f = check();
        async move { Ok(f.await) }
    })
    .await
    {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}
