//! Liveness and readiness, as `/health/live` and `/health/ready` answer them.
//!
//! - **Live**: the process loop is running: it called [`Health::beat`]
//!   within the last `live_within`, and has not reported that it stopped
//!   ([`Health::stopped`]). A process that is not live should be restarted.
//! - **Ready**: every dependency the process registered with
//!   [`Health::expect`] answered recently (its last probe succeeded, within
//!   its `stale_after`), and no condition added with
//!   [`Health::add_condition`] (such as "a shard is stuck in a permanent
//!   error") objects. A process that is not ready is alive but cannot do its
//!   work: alert, do not restart.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A condition of readiness: `Some(reason)` while the process is not ready.
type Condition = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// The process's health, shared by the code that reports it and the
/// listener that answers it. Cloning shares it.
///
/// ```
/// use std::time::Duration;
/// use kinesis_ops::health::Health;
/// let health = Health::new(Duration::from_secs(30));
/// health.beat();
/// assert!(health.live().ok);
/// health.expect("s3", Duration::from_secs(15));
/// assert!(!health.ready().ok, "no answer from S3 yet");
/// health.succeeded("s3");
/// assert!(health.ready().ok);
/// health.failed("s3", "connection refused");
/// let status = health.ready();
/// assert!(!status.ok && status.reason.contains("connection refused"));
/// health.add_condition("shards", || Some("shardId-000000000001: access denied".into()));
/// health.succeeded("s3");
/// assert!(health.ready().reason.contains("access denied"));
/// ```
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("live", &self.live())
            .field("ready", &self.ready())
            .finish()
    }
}

struct Inner {
    live_within: Duration,
    last_beat: Mutex<Instant>,
    stopped: Mutex<Option<String>>,
    checks: Mutex<BTreeMap<String, Check>>,
    conditions: Mutex<Vec<(String, Condition)>>,
}

struct Check {
    stale_after: Duration,
    registered: Instant,
    last_ok: Option<Instant>,
    /// The last failure, if it came after the last success.
    failing: Option<(Instant, String)>,
}

/// What a health endpoint answers: 200 when `ok`, 503 otherwise, with
/// [`Status::to_json`] as the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Live (or ready).
    pub ok: bool,
    /// Why not, or what was checked: short, for people.
    pub reason: String,
    /// Each check's state, by name.
    pub checks: BTreeMap<String, String>,
}

impl Status {
    /// `{"status":"ok"|"unavailable","reason":"...","checks":{...}}`.
    ///
    /// ```
    /// let status = kinesis_ops::health::Status { ok: false, reason: "s3: timed out".into(), checks: Default::default() };
    /// let json: serde_json::Value = serde_json::from_str(&status.to_json()).unwrap();
    /// assert_eq!(json["status"], "unavailable");
    /// ```
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "status": if self.ok { "ok" } else { "unavailable" },
            "reason": self.reason,
            "checks": self.checks,
        })
        .to_string()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn secs(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

impl Health {
    /// Live while [`Health::beat`] is called at least every `live_within`.
    pub fn new(live_within: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                live_within,
                last_beat: Mutex::new(Instant::now()),
                stopped: Mutex::new(None),
                checks: Mutex::new(BTreeMap::new()),
                conditions: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The process loop is running.
    pub fn beat(&self) {
        *lock(&self.inner.last_beat) = Instant::now();
    }

    /// The process loop has ended (not live from now on).
    pub fn stopped(&self, reason: impl Into<String>) {
        *lock(&self.inner.stopped) = Some(reason.into());
    }

    /// Whether the process loop is running.
    pub fn live(&self) -> Status {
        let since = lock(&self.inner.last_beat).elapsed();
        let checks = BTreeMap::from([("loop".to_owned(), format!("beat {} ago", secs(since)))]);
        if let Some(reason) = lock(&self.inner.stopped).clone() {
            return Status {
                ok: false,
                reason: format!("stopped: {reason}"),
                checks,
            };
        }
        if since > self.inner.live_within {
            return Status {
                ok: false,
                reason: format!("the process loop has not run for {}", secs(since)),
                checks,
            };
        }
        Status {
            ok: true,
            reason: "running".into(),
            checks,
        }
    }

    /// Readiness requires `name` to have answered (a [`Health::succeeded`]
    /// not followed by a [`Health::failed`]) within the last `stale_after`.
    pub fn expect(&self, name: &str, stale_after: Duration) {
        lock(&self.inner.checks).insert(
            name.to_owned(),
            Check {
                stale_after,
                registered: Instant::now(),
                last_ok: None,
                failing: None,
            },
        );
    }

    /// `name` answered.
    pub fn succeeded(&self, name: &str) {
        if let Some(check) = lock(&self.inner.checks).get_mut(name) {
            check.last_ok = Some(Instant::now());
            check.failing = None;
        }
    }

    /// `name` failed to answer, with `error`.
    pub fn failed(&self, name: &str, error: impl std::fmt::Display) {
        if let Some(check) = lock(&self.inner.checks).get_mut(name) {
            // Failing since the first failure; the latest error says why.
            let since = check
                .failing
                .as_ref()
                .map_or_else(Instant::now, |(since, _)| *since);
            check.failing = Some((since, error.to_string()));
        }
    }

    /// Readiness also requires `condition` to return `None`; `Some(reason)`
    /// makes the process not ready, for that reason.
    pub fn add_condition(
        &self,
        name: &str,
        condition: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) {
        lock(&self.inner.conditions).push((name.to_owned(), Arc::new(condition)));
    }

    /// Whether the process can do its work.
    pub fn ready(&self) -> Status {
        let mut reasons = Vec::new();
        let mut states = BTreeMap::new();
        for (name, check) in lock(&self.inner.checks).iter() {
            let state = match (&check.failing, check.last_ok) {
                (Some((since, error)), _) => {
                    let state = format!("failing for {}: {error}", secs(since.elapsed()));
                    reasons.push(format!("{name}: {state}"));
                    state
                }
                (None, Some(ok)) if ok.elapsed() <= check.stale_after => {
                    format!("answered {} ago", secs(ok.elapsed()))
                }
                (None, Some(ok)) => {
                    let state = format!("no answer for {}", secs(ok.elapsed()));
                    reasons.push(format!("{name}: {state}"));
                    state
                }
                (None, None) => {
                    let state = format!(
                        "no answer yet ({} since start)",
                        secs(check.registered.elapsed())
                    );
                    reasons.push(format!("{name}: {state}"));
                    state
                }
            };
            states.insert(name.clone(), state);
        }
        let conditions: Vec<(String, Condition)> = lock(&self.inner.conditions).clone();
        for (name, condition) in conditions {
            match condition() {
                Some(reason) => {
                    reasons.push(format!("{name}: {reason}"));
                    states.insert(name, reason);
                }
                None => {
                    states.insert(name, "ok".into());
                }
            }
        }
        let live = self.live();
        if !live.ok {
            reasons.insert(0, live.reason);
        }
        Status {
            ok: reasons.is_empty(),
            reason: if reasons.is_empty() {
                "ready".into()
            } else {
                reasons.join("; ")
            },
            checks: states,
        }
    }

    /// Probes `name` every `every` until dropped or aborted: each call of
    /// `probe` that returns `Ok` within `timeout` is a
    /// [`Health::succeeded`], any other a [`Health::failed`]. Registers the
    /// check ([`Health::expect`]) with a `stale_after` of two rounds. Spawn
    /// it and keep its handle: aborting the handle stops it.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let health = kinesis_ops::health::Health::new(Duration::from_secs(30));
    /// let probe = tokio::spawn(health.clone().probe("disk", Duration::from_secs(5), Duration::from_secs(2), || async {
    ///     tokio::fs::metadata("/var/lib").await.map(|_| ())
    /// }));
    /// // ... at shutdown:
    /// probe.abort();
    /// ```
    pub async fn probe<F, Fut, E>(self, name: &str, every: Duration, timeout: Duration, probe: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        self.expect(name, every * 2 + timeout);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match tokio::time::timeout(timeout, probe()).await {
                Ok(Ok(())) => self.succeeded(name),
                Ok(Err(error)) => self.failed(name, error),
                Err(_) => self.failed(name, format!("no answer within {}", secs(timeout))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_goes_stale_and_a_silent_loop_is_not_live() {
        let health = Health::new(Duration::from_millis(50));
        health.expect("lease_table", Duration::from_millis(50));
        health.succeeded("lease_table");
        assert!(health.ready().ok);
        std::thread::sleep(Duration::from_millis(80));
        let ready = health.ready();
        assert!(!ready.ok);
        assert!(
            ready.reason.contains("lease_table: no answer for"),
            "{ready:?}"
        );
        assert!(!health.live().ok, "no beat for 80 ms");
        health.beat();
        assert!(health.live().ok);
        health.stopped("the connector failed");
        assert!(health.live().reason.contains("the connector failed"));
    }

    #[test]
    fn a_failure_is_dated_from_the_first_and_says_the_latest_error() {
        let health = Health::new(Duration::from_secs(30));
        health.expect("s3", Duration::from_secs(30));
        health.failed("s3", "timed out");
        std::thread::sleep(Duration::from_millis(120));
        health.failed("s3", "connection refused");
        let ready = health.ready();
        assert!(ready.reason.contains("connection refused"), "{ready:?}");
        assert!(!ready.reason.contains("failing for 0.0 s"), "{ready:?}");
        health.succeeded("s3");
        assert!(health.ready().ok);
    }

    #[tokio::test]
    async fn a_probe_that_hangs_fails_at_its_timeout() {
        let health = Health::new(Duration::from_secs(30));
        let probe = tokio::spawn(health.clone().probe(
            "s3",
            Duration::from_secs(1),
            Duration::from_millis(300),
            std::future::pending::<Result<(), String>>,
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ready = health.ready();
        assert!(ready.reason.contains("s3: failing for"), "{ready:?}");
        assert!(ready.reason.contains("no answer within 0.3 s"), "{ready:?}");
        probe.abort();
    }
}
