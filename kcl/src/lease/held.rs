//! A lease this worker holds: the one local view of it that renewals and
//! checkpoints share, and the local deadline that fences its processor.
//!
//! No lock is held across a DynamoDB call: each write starts from a copy of
//! the lease and merges its outcome back. Two writes with the same expected
//! counter (a renewal racing a checkpoint) cannot both pass their condition,
//! so a failed condition is never taken at its word: the item is read again
//! and the lease is lost only if another worker owns it now. The same read
//! recognises a write that was applied but whose answer was lost (a timeout,
//! a retried request), as the Java KCL's `DynamoDBLeaseRefresher` does.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Lease, LeaseError, LeaseTable};
use crate::checkpoint::ExtendedSequenceNumber;

/// How many times a checkpoint is written again after its condition failed
/// on a lease that is still ours (a renewal moved the counter meanwhile).
const CHECKPOINT_ATTEMPTS: usize = 3;

/// A held lease, shared by the lease coordinator and the shard's checkpointer.
///
/// The fence runs from when the last successful renewal (or take, or
/// checkpoint — each bumps the counter) was *sent*: other workers start their
/// failover clock no earlier than when they see that counter.
#[derive(Debug)]
pub(crate) struct HeldLease {
    table: LeaseTable,
    worker_id: String,
    /// Delivery stops when the last renewal started this long ago.
    fence_after: Duration,
    state: Mutex<State>,
    /// A renewal found another owner.
    lost: AtomicBool,
    /// Bytes of records delivered since the last renewal, for the
    /// `throughputKBps` a Java KCL 3.x leader balances by.
    delivered_bytes: AtomicU64,
    /// A Java KCL 3.x leader assigned the lease to another worker with this
    /// one as its `checkpointOwner`: hand it over gracefully.
    handoff: AtomicBool,
}

#[derive(Debug, Clone)]
struct State {
    lease: Lease,
    /// When the last write that proved the lease ours was sent.
    renewed_at: Instant,
    /// The throughput reported at the last renewal (KB/s), and since when
    /// the bytes now counted were delivered.
    throughput_kbps: Option<f64>,
    measured_since: Instant,
}

/// What a renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// The lease is still ours and its counter moved.
    Renewed,
    /// The lease is still ours, but its counter moved under both attempts
    /// (not renewed this time; the fence decides).
    Contended,
    /// Another worker owns it now (or it is gone).
    Lost,
}

impl HeldLease {
    /// A lease just taken (at `taken_at`, when the take was sent), fenced
    /// `fence_after` after its last successful renewal.
    pub(crate) fn new(
        table: LeaseTable,
        worker_id: &str,
        lease: Lease,
        taken_at: Instant,
        fence_after: Duration,
    ) -> Self {
        Self {
            table,
            worker_id: worker_id.to_owned(),
            fence_after,
            state: Mutex::new(State {
                lease,
                renewed_at: taken_at,
                throughput_kbps: None,
                measured_since: taken_at,
            }),
            lost: AtomicBool::new(false),
            delivered_bytes: AtomicU64::new(0),
            handoff: AtomicBool::new(false),
        }
    }

    /// Counts bytes of records handed to the processor.
    pub(crate) fn record_delivered(&self, bytes: u64) {
        self.delivered_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The throughput to report with a renewal: the bytes delivered since
    /// the last one, per second, in KB/s, averaged with the previous figure
    /// (the Java KCL 3.x's exponential moving average, alpha 0.5).
    fn next_throughput(&self, now: Instant) -> f64 {
        let bytes = self.delivered_bytes.swap(0, Ordering::Relaxed);
        let mut state = self.state();
        let seconds = now
            .saturating_duration_since(state.measured_since)
            .as_secs_f64()
            .max(0.001);
        let current = bytes as f64 / 1024.0 / seconds;
        let average = match state.throughput_kbps {
            Some(previous) => 0.5 * current + 0.5 * previous,
            None => current,
        };
        state.throughput_kbps = Some(average);
        state.measured_since = now;
        average
    }

    /// Whether a leader asked this worker to hand the lease over (graceful
    /// handoff): its processor should get `shutdown_requested`, then the
    /// lease goes to its new owner ([`release`](Self::release) does it).
    pub(crate) fn is_handing_off(&self) -> bool {
        self.handoff.load(Ordering::Relaxed)
    }

    /// Whether a renewal found the lease owned by another worker.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of the lease as last known.
    pub(crate) fn snapshot(&self) -> Lease {
        self.state().lease.clone()
    }

    /// The lease key.
    pub(crate) fn key(&self) -> String {
        self.state().lease.lease_key.clone()
    }

    /// Whether this worker must stop delivering the shard's records: a
    /// renewal found another owner, or the last successful renewal is so old
    /// that another worker may soon consider the lease expired (lease
    /// fencing by local deadline).
    pub(crate) fn is_fenced(&self, now: Instant) -> bool {
        self.is_lost() || now.saturating_duration_since(self.state().renewed_at) >= self.fence_after
    }

    /// Merges a copy back: counters only grow. `renewed` is when a write
    /// that succeeded was sent — the only moment known to be no later than
    /// the counter change other workers watch (a re-read proves the lease
    /// ours, but not since when: it never moves the fence).
    fn merge(&self, copy: &Lease, renewed: Option<Instant>, update: impl FnOnce(&mut Lease)) {
        let mut state = self.state();
        if copy.lease_counter >= state.lease.lease_counter {
            state.lease.lease_counter = copy.lease_counter;
        }
        if let Some(sent_at) = renewed
            && sent_at > state.renewed_at
        {
            state.renewed_at = sent_at;
        }
        update(&mut state.lease);
    }

    /// Re-reads the item after a failed condition: `Some(item)` while this
    /// worker still owns it, or is asked to hand it over (its
    /// `checkpointOwner`: it keeps renewing and may checkpoint until then).
    async fn reread(&self) -> Result<Option<Lease>, LeaseError> {
        let key = self.key();
        let current = self.table.get_lease(&key).await?;
        let me = Some(self.worker_id.as_str());
        Ok(current.filter(|l| {
            let handoff = l.checkpoint_owner.as_deref() == me && l.lease_owner.as_deref() != me;
            if handoff && !self.handoff.swap(true, Ordering::Relaxed) {
                tracing::info!(lease = %l.lease_key, to = ?l.lease_owner,
                    "the fleet's leader moves this lease: handing it over gracefully");
            }
            l.lease_owner.as_deref() == me || handoff
        }))
    }

    /// Renews the lease: bumps its counter if it is still ours. A failed
    /// condition on a lease still ours (a checkpoint moved the counter, or
    /// an earlier renewal was applied and its answer lost) is followed by
    /// one more renewal at the counter read back; only a renewal that
    /// succeeds moves the fence.
    pub(crate) async fn renew(&self) -> Result<Renewal, LeaseError> {
        let throughput = self.next_throughput(Instant::now());
        for _ in 0..2 {
            let sent_at = Instant::now();
            let mut copy = self.snapshot();
            if self
                .table
                .renew_with(
                    &mut copy,
                    &self.worker_id,
                    Some(throughput),
                    self.is_handing_off(),
                )
                .await?
            {
                self.merge(&copy, Some(sent_at), |_| {});
                return Ok(Renewal::Renewed);
            }
            match self.reread().await? {
                Some(current) => self.merge(&current, None, |_| {}),
                None => {
                    self.lost.store(true, Ordering::Relaxed);
                    return Ok(Renewal::Lost);
                }
            }
        }
        Ok(Renewal::Contended)
    }

    /// Writes a checkpoint (and optionally a prepared one with its state).
    /// `Ok(false)` when another worker owns the lease.
    pub(crate) async fn checkpoint(
        &self,
        checkpoint: &ExtendedSequenceNumber,
        pending: Option<(&ExtendedSequenceNumber, Option<&[u8]>)>,
    ) -> Result<bool, LeaseError> {
        let apply = |lease: &mut Lease| {
            lease.checkpoint = checkpoint.clone();
            lease.owner_switches_since_checkpoint = 0;
            lease.pending_checkpoint = pending.map(|(prepared, _)| prepared.clone());
            lease.pending_checkpoint_state =
                pending.and_then(|(_, state)| state.map(<[u8]>::to_vec));
        };
        for _ in 0..CHECKPOINT_ATTEMPTS {
            let sent_at = Instant::now();
            let mut copy = self.snapshot();
            if self
                .table
                .checkpoint(&mut copy, &self.worker_id, checkpoint, pending)
                .await?
            {
                self.merge(&copy, Some(sent_at), apply);
                return Ok(true);
            }
            let Some(current) = self.reread().await? else {
                return Ok(false);
            };
            let written = current.checkpoint == *checkpoint
                && current.pending_checkpoint.as_ref() == pending.map(|(p, _)| p)
                && current.pending_checkpoint_state.as_deref()
                    == pending.and_then(|(_, state)| state);
            self.merge(&current, None, |_| {});
            if written {
                // Applied, and its answer lost.
                metrics::counter!(crate::metrics::CHECKPOINTS).increment(1);
                self.merge(&current, None, apply);
                return Ok(true);
            }
            // Ours, with a counter a renewal moved: write again.
        }
        Err(LeaseError::Contended {
            lease_key: self.key(),
            attempts: CHECKPOINT_ATTEMPTS,
        })
    }

    /// Hands the lease back (graceful shutdown, a processor that ended), or
    /// completes the graceful handoff a leader asked for.
    pub(crate) async fn release(&self) -> Result<bool, LeaseError> {
        let mut copy = self.snapshot();
        if self.is_handing_off() {
            return self
                .table
                .complete_handoff(&mut copy, &self.worker_id)
                .await;
        }
        self.table.evict(&mut copy, &self.worker_id).await
    }
}
