//! Copying an upstream body into a fill under the fill's clock: the whole
//! fill must end by `cache.fill_timeout`, and every `cache.fill_rate_window`
//! must bring `cache.fill_min_rate`, so a drip-feeding upstream never holds
//! the clients waiting on it for longer than that.

use std::pin::pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};

use super::{FillError, FillProducer, MinRate, UpstreamFailure};

impl FillProducer {
    /// Writes `body` into the fill until it ends, or fails with why it was cut.
    /// The caller then commits, or fails the fill with the error.
    pub async fn pump<S, E>(&mut self, body: S) -> Result<(), FillError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let limits = self.limits;
        let mut body = pin!(body);
        let mut expired = pin!(expiry(limits.timeout.map(|t| self.started + t)));
        let mut pace = Pace::new(limits.min_rate);
        loop {
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                () = &mut expired => {
                    return Err(FillError::TimedOut(limits.timeout.unwrap_or_default()));
                }
                () = pace.tick() => {
                    pace.check()?;
                    continue;
                }
            };
            match chunk {
                None => return Ok(()),
                Some(Err(error)) => {
                    return Err(FillError::Upstream(UpstreamFailure::new(
                        None,
                        error.to_string(),
                    )));
                }
                Some(Ok(chunk)) => {
                    pace.received(chunk.len() as u64);
                    self.write(chunk).await?;
                }
            }
        }
    }
}

async fn expiry(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Bytes received in the current rate window.
struct Pace {
    rule: Option<(MinRate, tokio::time::Interval)>,
    received: u64,
}

impl Pace {
    fn new(min_rate: Option<MinRate>) -> Pace {
        let rule = min_rate.map(|rate| {
            let mut windows = tokio::time::interval_at(Instant::now() + rate.window, rate.window);
            windows.set_missed_tick_behavior(MissedTickBehavior::Delay);
            (rate, windows)
        });
        Pace { rule, received: 0 }
    }

    async fn tick(&mut self) {
        match &mut self.rule {
            Some((_, windows)) => {
                windows.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    fn received(&mut self, n: u64) {
        self.received += n;
    }

    /// A window has passed: it must have brought enough.
    fn check(&mut self) -> Result<(), FillError> {
        let received = std::mem::take(&mut self.received);
        match &self.rule {
            Some((rate, _)) if received < rate.per_window() => Err(FillError::TooSlow {
                bytes_per_second: rate.bytes_per_second,
                window: rate.window,
            }),
            _ => Ok(()),
        }
    }
}
