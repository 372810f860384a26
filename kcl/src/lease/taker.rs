//! Which leases a worker should take: the Java KCL 2.x algorithm, free of I/O.
//!
//! A lease is expired when its counter has not moved for the failover time on
//! *this* worker's clock (clocks of different machines are never compared).
//! Each worker aims at `ceil(active leases / workers)`, capped by its
//! maximum; it takes free and expired leases first, and when there are none,
//! steals one lease at a time from the most loaded worker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

use super::Lease;
use crate::checkpoint::ExtendedSequenceNumber;

/// What a worker should try to take after a scan of the lease table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TakePlan {
    /// Free or expired leases to take, by key.
    pub take: Vec<String>,
    /// A lease to steal from the most loaded worker, by key.
    pub steal: Option<String>,
}

/// Remembers when each lease's counter last moved, and plans takes.
///
/// ```
/// use std::time::{Duration, Instant};
/// use kcl::checkpoint::ExtendedSequenceNumber;
/// use kcl::lease::{Lease, LeaseTaker};
///
/// let mut taker = LeaseTaker::new("me", Duration::from_secs(10), 100);
/// let leases = vec![Lease::new("shard-0", ExtendedSequenceNumber::TRIM_HORIZON)];
/// assert_eq!(taker.plan(&leases, Instant::now()).take, vec!["shard-0".to_owned()]);
/// ```
#[derive(Debug, Clone)]
pub struct LeaseTaker {
    worker_id: String,
    failover: Duration,
    max_leases: usize,
    /// lease key → (counter last seen, when it was first seen at that value)
    seen: HashMap<String, (u64, Instant)>,
}

impl LeaseTaker {
    /// A taker for `worker_id`, with the failover time after which a lease
    /// whose counter does not move is expired, and the most leases this
    /// worker may hold.
    pub fn new(worker_id: impl Into<String>, failover: Duration, max_leases: usize) -> Self {
        Self {
            worker_id: worker_id.into(),
            failover,
            max_leases: max_leases.max(1),
            seen: HashMap::new(),
        }
    }

    /// Whether `lease` is expired as of `now` (free leases always are).
    pub fn is_expired(&self, lease: &Lease, now: Instant) -> bool {
        if lease.lease_owner.is_none() {
            return true;
        }
        match self.seen.get(&lease.lease_key) {
            Some(&(counter, since)) if counter == lease.lease_counter => {
                now.saturating_duration_since(since) > self.failover
            }
            _ => false,
        }
    }

    /// Records a fresh scan of the table and plans what to take.
    pub fn plan(&mut self, leases: &[Lease], now: Instant) -> TakePlan {
        self.plan_excluding(leases, now, |_| false)
    }

    /// [`plan`](Self::plan), never choosing a lease `excluded` names (one
    /// this worker leaves alone for a while): the slots go to the others.
    /// Excluded leases still count toward every worker's share.
    pub fn plan_excluding(
        &mut self,
        leases: &[Lease],
        now: Instant,
        excluded: impl Fn(&str) -> bool,
    ) -> TakePlan {
        self.observe(leases, now);
        // Finished shards need no worker.
        let active: Vec<&Lease> = leases
            .iter()
            .filter(|lease| lease.checkpoint != ExtendedSequenceNumber::SHARD_END)
            .collect();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        let mut available = Vec::new();
        for lease in &active {
            match (&lease.lease_owner, self.is_expired(lease, now)) {
                (Some(owner), false) => *counts.entry(owner.as_str()).or_default() += 1,
                _ if excluded(&lease.lease_key) => {}
                _ => available.push(lease.lease_key.clone()),
            }
        }
        let mine = counts.get(self.worker_id.as_str()).copied().unwrap_or(0);
        let workers = counts.len() + usize::from(!counts.contains_key(self.worker_id.as_str()));
        let target = active.len().div_ceil(workers.max(1)).min(self.max_leases);
        if mine >= target {
            return TakePlan::default();
        }
        let need = target - mine;
        available.shuffle(&mut rand::rng());
        if !available.is_empty() {
            available.truncate(need);
            return TakePlan {
                take: available,
                steal: None,
            };
        }
        // Nothing free: steal one lease from the most loaded worker, if it
        // holds more than its share.
        let most_loaded = counts
            .iter()
            .filter(|(owner, _)| **owner != self.worker_id)
            .max_by_key(|(owner, count)| (**count, std::cmp::Reverse(**owner)));
        let steal = most_loaded
            .filter(|(_, count)| **count > target)
            .and_then(|(owner, _)| {
                let mut theirs: Vec<&Lease> = active
                    .iter()
                    .copied()
                    // A lease in a Java KCL 3.x graceful handoff is on its
                    // way to another worker already.
                    .filter(|lease| {
                        lease.lease_owner.as_deref() == Some(*owner)
                            && lease.checkpoint_owner.is_none()
                            && !excluded(&lease.lease_key)
                    })
                    .collect();
                theirs.shuffle(&mut rand::rng());
                theirs.first().map(|lease| lease.lease_key.clone())
            });
        TakePlan {
            take: Vec::new(),
            steal,
        }
    }

    fn observe(&mut self, leases: &[Lease], now: Instant) {
        let mut seen = HashMap::with_capacity(leases.len());
        for lease in leases {
            let entry = match self.seen.get(&lease.lease_key) {
                Some(&(counter, since)) if counter == lease.lease_counter => (counter, since),
                _ => (lease.lease_counter, now),
            };
            seen.insert(lease.lease_key.clone(), entry);
        }
        self.seen = seen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_leases_leave_their_slot_to_others() {
        let mut taker = LeaseTaker::new("me", Duration::from_secs(10), 1);
        let leases = vec![lease("cooling", None, 0), lease("free", None, 0)];
        for _ in 0..20 {
            let plan = taker.plan_excluding(&leases, Instant::now(), |k| k == "cooling");
            assert_eq!(plan.take, vec!["free".to_owned()]);
        }
    }

    fn lease(key: &str, owner: Option<&str>, counter: u64) -> Lease {
        let mut lease = Lease::new(key, ExtendedSequenceNumber::TRIM_HORIZON);
        lease.lease_owner = owner.map(str::to_owned);
        lease.lease_counter = counter;
        lease
    }

    #[test]
    fn a_second_worker_gets_half_by_stealing_one_at_a_time() {
        let now = Instant::now();
        let mut taker = LeaseTaker::new("b", Duration::from_secs(10), 100);
        let mut leases: Vec<Lease> = (0..4)
            .map(|i| lease(&format!("s{i}"), Some("a"), 1))
            .collect();
        let plan = taker.plan(&leases, now);
        assert!(plan.take.is_empty());
        let stolen = plan.steal.expect("steals from the loaded worker");
        let index = leases
            .iter()
            .position(|l| l.lease_key == stolen)
            .expect("known");
        leases[index].lease_owner = Some("b".into());
        let plan = taker.plan(&leases, now);
        let stolen = plan.steal.expect("still below its share");
        let index = leases
            .iter()
            .position(|l| l.lease_key == stolen)
            .expect("known");
        leases[index].lease_owner = Some("b".into());
        assert_eq!(
            taker.plan(&leases, now),
            TakePlan::default(),
            "2/2: balanced"
        );
    }

    #[test]
    fn leases_whose_counter_stops_expire_after_the_failover_time() {
        let start = Instant::now();
        let mut taker = LeaseTaker::new("b", Duration::from_secs(10), 100);
        let leases = vec![lease("s0", Some("a"), 5), lease("s1", Some("b"), 9)];
        assert!(taker.plan(&leases, start).take.is_empty());
        let later = start + Duration::from_secs(11);
        // b renewed its own lease meanwhile; a did not.
        let leases = vec![lease("s0", Some("a"), 5), lease("s1", Some("b"), 10)];
        assert_eq!(taker.plan(&leases, later).take, vec!["s0".to_owned()]);
    }

    #[test]
    fn a_moving_counter_keeps_a_lease_alive_and_finished_leases_are_ignored() {
        let start = Instant::now();
        let mut taker = LeaseTaker::new("b", Duration::from_secs(10), 100);
        let mut done = lease("s9", None, 1);
        done.checkpoint = ExtendedSequenceNumber::SHARD_END;
        for step in 0..5u64 {
            let leases = vec![lease("s0", Some("a"), step), done.clone()];
            let plan = taker.plan(&leases, start + Duration::from_secs(step * 6));
            assert!(
                plan.take.is_empty() && plan.steal.is_none(),
                "step {step}: {plan:?}"
            );
        }
    }

    #[test]
    fn the_cap_limits_what_a_worker_takes() {
        let mut taker = LeaseTaker::new("a", Duration::from_secs(10), 3);
        let leases: Vec<Lease> = (0..10).map(|i| lease(&format!("s{i}"), None, 0)).collect();
        assert_eq!(taker.plan(&leases, Instant::now()).take.len(), 3);
    }
}
