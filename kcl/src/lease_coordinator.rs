//! The lease coordinator: renews the leases this worker holds, fences the
//! ones it could not renew in time, takes new ones, and releases them (the
//! Java KCL's `DynamoDBLeaseCoordinator`, with its renewer and taker).
//!
//! - Renewals run in a task of their own (the renewer), every renewal
//!   interval, concurrently and each bounded by that interval: a slow scan
//!   of the table, a stalled call or a busy processor delays no renewal.
//! - Fencing by local deadline: a lease not renewed for three quarters of
//!   `failover_time` (measured from when its last successful renewal was
//!   sent) is given up — no further batch is delivered and its processor
//!   gets `lease_lost` (a `process_records` call already running is not
//!   interrupted) — before any other worker can see it expired (they wait a
//!   full `failover_time` from when they saw its counter move).
//! - A lease released because its processor ended (gave up, failed) is not
//!   taken again by this worker for `release_cooldown`, so a failing shard
//!   does not spin on one worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use crate::checkpoint::ExtendedSequenceNumber;
use crate::lease::{HeldLease, Lease, LeaseError, LeaseScan, LeaseTable, LeaseTaker, Renewal};
use crate::metrics as m;
use crate::shard_consumer::Stop;

/// A lease this worker holds, and its shard consumer once started.
pub(crate) struct Held {
    pub(crate) lease: Arc<HeldLease>,
    pub(crate) stop: watch::Sender<Stop>,
    pub(crate) task: Option<AbortHandle>,
}

/// Longest a processor has to finish a graceful handoff (the Java KCL
/// 3.x's `gracefulLeaseHandoffTimeoutMillis` default) before it is stopped
/// and the lease handed over anyway.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(30);

/// Timings of the coordinator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timings {
    pub(crate) failover: Duration,
    pub(crate) fence_after: Duration,
    pub(crate) renew_every: Duration,
    pub(crate) release_cooldown: Duration,
}

pub(crate) struct LeaseCoordinator {
    table: LeaseTable,
    worker_id: String,
    timings: Timings,
    taker: LeaseTaker,
    /// Leases held, by key.
    pub(crate) held: HashMap<String, Held>,
    /// Consumers of lost leases that have not stopped yet: never a second
    /// consumer for the same shard until the first has stopped.
    stopping: HashMap<String, AbortHandle>,
    /// Leases a leader asked this worker to hand over, and when it was
    /// first seen: their processors got `shutdown_requested`.
    handing_off: HashMap<String, Instant>,
    /// When this worker last looked for leases a leader assigned it.
    last_discovery: Option<Instant>,
    /// Leases released after their processor ended, and until when this
    /// worker leaves them to others.
    cooling: HashMap<String, Instant>,
    /// Consecutive processor failures (panics) per lease.
    failures: HashMap<String, u32>,
    /// The leases the renewer renews.
    renewing: Arc<Mutex<HashMap<String, Arc<HeldLease>>>>,
    renewer: JoinHandle<()>,
}

impl Drop for LeaseCoordinator {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// `now + after`, or a year from now when that overflows.
fn later(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

/// Renews the leases in `renewing` every `every`, concurrently, each renewal
/// bounded by `every`.
async fn renewer(renewing: Arc<Mutex<HashMap<String, Arc<HeldLease>>>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let leases: Vec<Arc<HeldLease>> = match renewing.lock() {
            Ok(renewing) => renewing.values().cloned().collect(),
            Err(_) => return,
        };
        let renewals = leases.into_iter().map(|lease| {
            let renewing = renewing.clone();
            async move {
            let outcome = tokio::time::timeout(every, lease.renew()).await;
            // Released meanwhile (its consumer ended): its owner condition
            // fails, which is no loss.
            let still = renewing
                .lock()
                .map(|r| r.contains_key(&lease.key()))
                .unwrap_or(false);
            if !still {
                return;
            }
            match outcome {
                Ok(Ok(Renewal::Renewed)) => {}
                Ok(Ok(Renewal::Contended)) => {
                    tracing::debug!(lease = %lease.key(), "lease counter moved under both renewal attempts");
                }
                Ok(Ok(Renewal::Lost)) => {
                    tracing::info!(lease = %lease.key(), "lease lost");
                    metrics::counter!(m::LEASES_LOST).increment(1);
                }
                Ok(Err(error)) => {
                    tracing::warn!(lease = %lease.key(), %error, "renewing a lease failed");
                }
                Err(_) => {
                    tracing::warn!(lease = %lease.key(), limit = ?every, "renewing a lease timed out");
                }
            }
            }
        });
        futures::future::join_all(renewals).await;
    }
}

impl LeaseCoordinator {
    pub(crate) fn new(
        table: LeaseTable,
        worker_id: &str,
        timings: Timings,
        max_leases: usize,
    ) -> Self {
        let renewing = Arc::new(Mutex::new(HashMap::new()));
        let renewer = tokio::spawn(renewer(renewing.clone(), timings.renew_every));
        Self {
            renewing,
            renewer,
            taker: LeaseTaker::new(worker_id, timings.failover, max_leases),
            table,
            worker_id: worker_id.to_owned(),
            timings,
            held: HashMap::new(),
            stopping: HashMap::new(),
            handing_off: HashMap::new(),
            last_discovery: None,
            cooling: HashMap::new(),
            failures: HashMap::new(),
        }
    }

    /// Records how a lease's consumer ended: a panic of its processor is
    /// logged with the shard's position and counted, and the lease is left
    /// to others (or to a later retry here) for a cooldown that doubles with
    /// each consecutive failure, up to 32 times `release_cooldown`.
    pub(crate) fn consumer_ended(&mut self, key: &str, panicked: bool) {
        if !panicked {
            self.failures.remove(key);
            return;
        }
        let failures = self.failures.entry(key.to_owned()).or_insert(0);
        *failures += 1;
        let backoff = self
            .timings
            .release_cooldown
            .checked_mul(2u32.pow((*failures - 1).min(5)))
            .unwrap_or(Duration::MAX);
        let position = self
            .held
            .get(key)
            .map(|h| h.lease.snapshot().checkpoint.to_string())
            .unwrap_or_default();
        metrics::counter!(m::PROCESSOR_FAILURES).increment(1);
        tracing::error!(lease = %key, checkpoint = %position, failures = *failures, retry_in = ?backoff,
            "the record processor panicked; the lease is released and the shard retried from its checkpoint later");
        self.cooling.insert(key.to_owned(), later(backoff));
    }

    fn stop_renewing(&self, key: &str) {
        if let Ok(mut renewing) = self.renewing.lock() {
            renewing.remove(key);
        }
    }

    /// Releases the leases whose consumer ended, and gives up those the
    /// renewer found lost or could not renew in time.
    pub(crate) async fn check_held(&mut self) {
        // Graceful handoffs a Java KCL 3.x leader asked for: the processor
        // gets `shutdown_requested` (it may checkpoint), then the lease goes
        // to its new owner when the consumer ends — or, if the processor
        // takes longer than the Java KCL's handoff timeout, it is stopped.
        let now = Instant::now();
        for (key, held) in &self.held {
            if !held.lease.is_handing_off() {
                continue;
            }
            let since = *self.handing_off.entry(key.clone()).or_insert_with(|| {
                let _ = held.stop.send(Stop::Shutdown);
                now
            });
            if now.saturating_duration_since(since) > HANDOFF_TIMEOUT
                && let Some(task) = &held.task
            {
                tracing::warn!(lease = %key, "the processor did not finish its handoff in time: stopped");
                task.abort();
            }
        }
        self.handing_off
            .retain(|key, _| self.held.contains_key(key));
        // Consumers that ended (shard end, lease lost, released, handed
        // over): hand the lease back, to be taken again if unfinished — not
        // by this worker for a while.
        let ended: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| match &h.task {
                Some(task) => task.is_finished(),
                // Not started yet (parents unfinished): nothing to wait for.
                None => h.lease.is_handing_off(),
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in ended {
            self.stop_renewing(&key);
            if let Some(held) = self.held.remove(&key) {
                let finished =
                    held.lease.snapshot().checkpoint == ExtendedSequenceNumber::SHARD_END;
                match held.lease.release().await {
                    // Given back by this worker: leave it to others a while
                    // (a shard end needs no pause: nobody reads it again).
                    Ok(true) if !finished => {
                        let until = later(self.timings.release_cooldown);
                        let entry = self.cooling.entry(key).or_insert(until);
                        *entry = (*entry).max(until);
                    }
                    // Another worker took it (a checkpoint found it taken):
                    // nothing to pause for.
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(lease = %key, %error, "releasing a lease failed; it will expire");
                    }
                }
            }
        }
        let now = Instant::now();
        let given_up: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.lease.is_fenced(now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in given_up {
            self.stop_renewing(&key);
            if let Some(held) = self.held.remove(&key) {
                if !held.lease.is_lost() {
                    tracing::warn!(lease = %key, fence_after = ?self.timings.fence_after,
                        "lease not renewed in time: its processor stops before another worker can take it");
                    metrics::counter!(m::LEASES_FENCED).increment(1);
                }
                let _ = held.stop.send(Stop::LeaseLost);
                if let Some(task) = held.task {
                    self.stopping.insert(key, task);
                }
            }
        }
        self.stopping.retain(|_, task| !task.is_finished());
        self.cooling.retain(|_, until| *until > now);
    }

    /// Scans the table and, in a fleet whose Java KCL 3.x leader assigns the
    /// leases (`follow_leader`), starts holding those assigned to this worker
    /// (owner this worker, no graceful-handoff mark), taking none on its
    /// own; otherwise takes what the taker plans. Returns the scan.
    pub(crate) async fn take_or_follow(
        &mut self,
        follow_leader: bool,
    ) -> Result<LeaseScan, LeaseError> {
        if !follow_leader {
            return self.take().await;
        }
        // As a Java KCL 3.x worker finds its leases: the index of leases by
        // owner, once per failover time, and GetItem for the new ones —
        // not a scan of the whole table every pass.
        let due = self
            .last_discovery
            .is_none_or(|at| at.elapsed() >= self.timings.failover);
        if due {
            self.last_discovery = Some(Instant::now());
            let keys = match self.table.lease_keys_owned_by(&self.worker_id).await? {
                Some(keys) => keys,
                // No index: find them in a scan.
                None => self
                    .table
                    .scan()
                    .await?
                    .leases
                    .into_iter()
                    .filter(|l| l.lease_owner.as_deref() == Some(self.worker_id.as_str()))
                    .map(|l| l.lease_key)
                    .collect(),
            };
            for key in keys {
                if self.held.contains_key(&key) || self.stopping.contains_key(&key) {
                    continue;
                }
                let Some(lease) = self.table.get_lease(&key).await? else {
                    continue;
                };
                let assigned = lease.lease_owner.as_deref() == Some(self.worker_id.as_str())
                    && lease.checkpoint_owner.is_none()
                    && lease.checkpoint != ExtendedSequenceNumber::SHARD_END;
                if assigned {
                    tracing::info!(lease = %key, worker = %self.worker_id, "lease assigned by the fleet's leader");
                    metrics::counter!(m::LEASES_TAKEN).increment(1);
                    self.hold(lease, Instant::now());
                }
            }
        }
        // The leases held, and the parents of those not started yet (a
        // child starts only once its parents reached SHARD_END).
        let mut scan = LeaseScan::default();
        let mut parents = Vec::new();
        for held in self.held.values() {
            let lease = held.lease.snapshot();
            if held.task.is_none() {
                parents.extend(lease.parent_shard_ids.iter().cloned());
            }
            scan.leases.push(lease);
        }
        for parent in parents {
            if let Some(lease) = self.table.get_lease(&parent).await? {
                scan.leases.push(lease);
            }
        }
        metrics::gauge!(m::LEASES_HELD).set(self.held.len() as f64);
        Ok(scan)
    }

    /// Starts holding (renewing) a lease this worker owns since `since`.
    fn hold(&mut self, lease: Lease, since: Instant) {
        let key = lease.lease_key.clone();
        let held = Arc::new(HeldLease::new(
            self.table.clone(),
            &self.worker_id,
            lease,
            since,
            self.timings.fence_after,
        ));
        if let Ok(mut renewing) = self.renewing.lock() {
            renewing.insert(key.clone(), held.clone());
        }
        self.held.insert(
            key,
            Held {
                lease: held,
                stop: watch::channel(Stop::Run).0,
                task: None,
            },
        );
    }

    /// Scans the table and takes what the taker plans; returns the scan.
    pub(crate) async fn take(&mut self) -> Result<LeaseScan, LeaseError> {
        let scan = self.table.scan().await?;
        let (held, stopping, cooling) = (&self.held, &self.stopping, &self.cooling);
        let plan = self
            .taker
            .plan_excluding(&scan.leases, Instant::now(), |key| {
                held.contains_key(key) || stopping.contains_key(key) || cooling.contains_key(key)
            });
        for key in plan.take.into_iter().chain(plan.steal) {
            let Some(lease) = scan.leases.iter().find(|l| l.lease_key == key) else {
                continue;
            };
            let mut lease = lease.clone();
            let sent_at = Instant::now();
            match self.table.take(&mut lease, &self.worker_id).await {
                Ok(true) => {
                    tracing::info!(lease = %key, worker = %self.worker_id, "lease taken");
                    metrics::counter!(m::LEASES_TAKEN).increment(1);
                    self.hold(lease, sent_at);
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(lease = %key, %error, "taking a lease failed"),
            }
        }
        metrics::gauge!(m::LEASES_HELD).set(self.held.len() as f64);
        Ok(scan)
    }

    /// Hands one held lease back (graceful shutdown, its processor done).
    pub(crate) async fn release(&mut self, key: &str) {
        self.stop_renewing(key);
        if let Some(held) = self.held.remove(key)
            && let Err(error) = held.lease.release().await
        {
            tracing::warn!(lease = %key, %error, "releasing a lease failed; it will expire");
        }
    }

    /// Graceful shutdown: hands every held lease back.
    pub(crate) async fn release_all(&mut self) {
        self.renewer.abort();
        let releases = self.held.drain().map(|(key, held)| async move {
            if let Err(error) = held.lease.release().await {
                tracing::warn!(lease = %key, %error, "releasing a lease failed; it will expire");
            }
        });
        futures::future::join_all(releases).await;
    }
}
