//! Shard sync: creating leases for the shards of the consumed streams.
//!
//! Which shards get a lease, and where each starts, follows the Java KCL's
//! `HierarchicalShardSyncer` (`NonEmptyLeaseTableSynchronizer`):
//!
//! - only open shards without a lease are considered, with their ancestors;
//! - an open shard descends from a shard that is (or will be) read when an
//!   ancestor has a lease, or when the initial position is TRIM_HORIZON or
//!   AT_TIMESTAMP; then leases are created for its ancestors too, and it
//!   starts at TRIM_HORIZON (its parents' records come first) — or at
//!   AT_TIMESTAMP, for an application that starts at a timestamp;
//! - otherwise it starts at the initial position.
//!
//! So a new application at LATEST on a resharded stream reads only the open
//! shards, from their tip; one at AT_TIMESTAMP reads every shard from the
//! timestamp (closed shards older than it end at once); and a closed shard
//! whose lease was deleted after its children started is never given a new
//! lease (which would read it again).

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{Shard, ShardFilter, ShardFilterType};

use crate::checkpoint::ExtendedSequenceNumber;
use crate::lease::{Lease, LeaseError, LeaseTable};
use crate::retrieval::StartingPosition;

/// Creates the leases of new shards, stream by stream.
#[derive(Debug, Clone)]
pub(crate) struct ShardSyncer {
    kinesis: aws_sdk_kinesis::Client,
    table: LeaseTable,
    initial: StartingPosition,
    multi_stream: bool,
}

impl ShardSyncer {
    pub(crate) fn new(
        kinesis: aws_sdk_kinesis::Client,
        table: LeaseTable,
        initial: StartingPosition,
        multi_stream: bool,
    ) -> Self {
        Self {
            kinesis,
            table,
            initial,
            multi_stream,
        }
    }

    /// Creates leases for the shards of `streams` that need one.
    pub(crate) async fn sync(&self, streams: &[String]) -> Result<(), LeaseError> {
        let scan = self.table.scan().await?;
        // Unreadable items count as leases: never replaced.
        let existing: HashSet<String> = scan
            .leases
            .into_iter()
            .map(|l| l.lease_key)
            .chain(scan.unreadable)
            .collect();
        for stream in streams {
            let identifier = if self.multi_stream {
                Some(self.stream_identifier(stream).await?)
            } else {
                None
            };
            self.sync_stream(stream, identifier.as_deref(), &existing)
                .await?;
        }
        Ok(())
    }

    /// `account:stream:creationEpoch`, as the Java KCL identifies streams in
    /// multi-stream lease keys.
    async fn stream_identifier(&self, stream: &str) -> Result<String, LeaseError> {
        let out = self
            .kinesis
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .map_err(|e| LeaseError::uncoded("DescribeStreamSummary", e))?;
        let summary = out.stream_description_summary();
        let account = summary
            .and_then(|s| s.stream_arn().split(':').nth(4))
            .unwrap_or_default();
        let epoch = summary.map_or(0, |s| s.stream_creation_timestamp().secs());
        Ok(format!("{account}:{stream}:{epoch}"))
    }

    async fn sync_stream(
        &self,
        stream: &str,
        identifier: Option<&str>,
        existing: &HashSet<String>,
    ) -> Result<(), LeaseError> {
        let shards = kpl::shard_map::list_shards(&self.kinesis, stream)
            .await
            .map_err(|e| LeaseError::uncoded("ListShards", e))?;
        let key = |shard_id: &str| match identifier {
            Some(identifier) => format!("{identifier}:{shard_id}"),
            None => shard_id.to_owned(),
        };
        let mut plan = new_leases(&shards, |id| existing.contains(&key(id)), self.initial);
        // A new application at a timestamp leases only the shards open at
        // that time, as the Java KCL lists them for an empty table
        // (ShardFilter AT_TIMESTAMP); their descendants follow as they are
        // reached. Back ends that ignore the filter list every shard.
        let new_stream = !shards.iter().any(|s| existing.contains(&key(s.shard_id())));
        if let (true, StartingPosition::AtTimestamp(at)) = (new_stream, self.initial) {
            let filter = ShardFilter::builder()
                .r#type(ShardFilterType::AtTimestamp)
                .timestamp(DateTime::from(at))
                .build()
                .map_err(|e| LeaseError::uncoded("ListShards", e))?;
            let open_then: HashSet<String> =
                kpl::shard_map::list_shards_filtered(&self.kinesis, stream, filter)
                    .await
                    .map_err(|e| LeaseError::uncoded("ListShards", e))?
                    .iter()
                    .map(|s| s.shard_id().to_owned())
                    .collect();
            plan.retain(|(shard, _)| open_then.contains(shard.shard_id()));
        }
        for (shard, checkpoint) in plan {
            let mut lease = match identifier {
                Some(identifier) => Lease::multi_stream(identifier, shard.shard_id(), checkpoint),
                None => Lease::new(shard.shard_id(), checkpoint),
            };
            lease.parent_shard_ids = parents(shard, &shards);
            lease.child_shard_ids = shards
                .iter()
                .filter(|s| parents(s, &shards).iter().any(|p| p == shard.shard_id()))
                .map(|s| s.shard_id().to_owned())
                .collect();
            if let Some(range) = shard.hash_key_range() {
                lease.hash_key_range = Some((
                    range.starting_hash_key().to_owned(),
                    range.ending_hash_key().to_owned(),
                ));
            }
            if self.table.create_lease_if_absent(&lease).await? {
                tracing::info!(lease = %lease.lease_key, checkpoint = %lease.checkpoint, "lease created");
            }
        }
        Ok(())
    }
}

/// Deletes the leases of finished shards (SHARD_END, released) once all
/// their children have started (checkpointed a record or ended), as the
/// Java KCL's `cleanupLeasesOfFinishedShards` does.
pub(crate) async fn delete_finished_leases(
    table: &LeaseTable,
    scan: &crate::lease::LeaseScan,
) -> Result<(), LeaseError> {
    let leases = &scan.leases;
    for lease in leases
        .iter()
        .filter(|l| l.checkpoint == ExtendedSequenceNumber::SHARD_END && l.lease_owner.is_none())
    {
        let children_started = !lease.child_shard_ids.is_empty()
            && lease.child_shard_ids.iter().all(|child| {
                leases
                    .iter()
                    .find(|l| l.lease_key == lease.sibling_key(child))
                    .is_some_and(|l| {
                        l.checkpoint.sequence_number().is_some()
                            || l.checkpoint == ExtendedSequenceNumber::SHARD_END
                    })
            });
        if children_started {
            table.delete_lease(lease).await?;
        }
    }
    Ok(())
}

/// A shard's parents that are still listed (expired ones are gone).
fn parents(shard: &Shard, shards: &[Shard]) -> Vec<String> {
    [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
        .into_iter()
        .flatten()
        .filter(|p| shards.iter().any(|s| s.shard_id() == *p))
        .map(str::to_owned)
        .collect()
}

fn is_open(shard: &Shard) -> bool {
    shard
        .sequence_number_range()
        .and_then(|r| r.ending_sequence_number())
        .is_none()
}

fn initial_checkpoint(initial: StartingPosition) -> ExtendedSequenceNumber {
    match initial {
        StartingPosition::TrimHorizon => ExtendedSequenceNumber::TRIM_HORIZON,
        StartingPosition::Latest => ExtendedSequenceNumber::LATEST,
        StartingPosition::AtTimestamp(_) => ExtendedSequenceNumber::AT_TIMESTAMP,
    }
}

/// The shards that need a new lease and the checkpoint each starts at,
/// parents before children (ordered by starting sequence number, so that a
/// sync cut short never leaves a child without its parent's lease). See the
/// module documentation for the rules.
fn new_leases(
    shards: &[Shard],
    has_lease: impl Fn(&str) -> bool,
    initial: StartingPosition,
) -> Vec<(&Shard, ExtendedSequenceNumber)> {
    let by_id: HashMap<&str, &Shard> = shards.iter().map(|s| (s.shard_id(), s)).collect();
    // Open shards with an open parent: the listing raced a reshard.
    let inconsistent: HashSet<&str> = shards
        .iter()
        .filter(|s| {
            is_open(s)
                && parents(s, shards)
                    .iter()
                    .any(|p| by_id.get(p.as_str()).is_some_and(|p| is_open(p)))
        })
        .map(|s| s.shard_id())
        .collect();
    let mut search = Ancestry {
        shards,
        has_lease: &has_lease,
        initial,
        memo: HashMap::new(),
        new: BTreeMap::new(),
    };
    for shard in shards.iter().filter(|s| is_open(s)) {
        let id = shard.shard_id();
        if has_lease(id) || inconsistent.contains(id) {
            continue;
        }
        let descendant = search.is_descendant(id);
        let checkpoint = if descendant && !matches!(initial, StartingPosition::AtTimestamp(_)) {
            ExtendedSequenceNumber::TRIM_HORIZON
        } else {
            initial_checkpoint(initial)
        };
        search.new.insert(id.to_owned(), checkpoint);
    }
    let mut plan: Vec<(&Shard, ExtendedSequenceNumber)> = search
        .new
        .into_iter()
        .filter_map(|(id, checkpoint)| Some((*by_id.get(id.as_str())?, checkpoint)))
        .collect();
    let start = |s: &Shard| {
        let sequence = s
            .sequence_number_range()
            .map_or("", |r| r.starting_sequence_number())
            .trim_start_matches('0');
        (sequence.len(), sequence.to_owned())
    };
    plan.sort_by(|a, b| {
        start(a.0)
            .cmp(&start(b.0))
            .then_with(|| a.0.shard_id().cmp(b.0.shard_id()))
    });
    plan
}

/// The Java KCL's `checkIfDescendantAndAddNewLeasesForAncestors`, memoised.
struct Ancestry<'a, F> {
    shards: &'a [Shard],
    has_lease: &'a F,
    initial: StartingPosition,
    memo: HashMap<String, bool>,
    new: BTreeMap<String, ExtendedSequenceNumber>,
}

impl<F: Fn(&str) -> bool> Ancestry<'_, F> {
    /// Whether `shard_id` is (or descends from) a shard that is or will be
    /// read; adds leases for the ancestors that need one.
    fn is_descendant(&mut self, shard_id: &str) -> bool {
        if let Some(known) = self.memo.get(shard_id) {
            return *known;
        }
        let Some(shard) = self.shards.iter().find(|s| s.shard_id() == shard_id) else {
            return false;
        };
        let mut descendant = false;
        if (self.has_lease)(shard_id) {
            descendant = true;
        } else {
            let parents = parents(shard, self.shards);
            let mut read_parents = HashSet::new();
            for parent in &parents {
                if self.is_descendant(parent) {
                    descendant = true;
                    read_parents.insert(parent.clone());
                }
            }
            if descendant {
                for parent in parents.iter().filter(|p| !(self.has_lease)(p)) {
                    let checkpoint = if read_parents.contains(parent)
                        && !matches!(self.initial, StartingPosition::AtTimestamp(_))
                    {
                        ExtendedSequenceNumber::TRIM_HORIZON
                    } else {
                        initial_checkpoint(self.initial)
                    };
                    self.new.insert(parent.clone(), checkpoint);
                }
            } else if !matches!(self.initial, StartingPosition::Latest) {
                // TRIM_HORIZON and AT_TIMESTAMP read every shard.
                descendant = true;
            }
        }
        self.memo.insert(shard_id.to_owned(), descendant);
        descendant
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use aws_sdk_kinesis::types::{HashKeyRange, SequenceNumberRange};

    use super::*;

    /// A shard `id` with parents, open or closed, starting at `start`.
    fn shard(id: u32, parents: &[u32], open: bool, start: u32) -> Shard {
        let name = |n: u32| format!("shardId-{n:012}");
        let mut range = SequenceNumberRange::builder().starting_sequence_number(start.to_string());
        if !open {
            range = range.ending_sequence_number((start + 99).to_string());
        }
        Shard::builder()
            .shard_id(name(id))
            .set_parent_shard_id(parents.first().map(|p| name(*p)))
            .set_adjacent_parent_shard_id(parents.get(1).map(|p| name(*p)))
            .hash_key_range(
                HashKeyRange::builder()
                    .starting_hash_key("0")
                    .ending_hash_key("1")
                    .build()
                    .expect("range"),
            )
            .sequence_number_range(range.build().expect("range"))
            .build()
            .expect("shard")
    }

    /// The Java KCL's example (`NonEmptyLeaseTableSynchronizer` javadoc):
    ///
    /// ```text
    /// 0 1 2 3 4   5   - shards till epoch 102
    /// \ / \ / |   |
    ///  6   7  4   5   - shards from epoch 103 - 205
    ///   \ /   |  / \
    ///    8    4 9  10 - shards from epoch 206 (open)
    /// ```
    fn java_example() -> Vec<Shard> {
        vec![
            shard(0, &[], false, 0),
            shard(1, &[], false, 0),
            shard(2, &[], false, 0),
            shard(3, &[], false, 0),
            shard(4, &[], true, 0),
            shard(5, &[], false, 0),
            shard(6, &[0, 1], false, 103),
            shard(7, &[2, 3], false, 103),
            shard(8, &[6, 7], true, 206),
            shard(9, &[5], true, 206),
            shard(10, &[5], true, 206),
        ]
    }

    fn plan(
        shards: &[Shard],
        leases: &[u32],
        initial: StartingPosition,
    ) -> Vec<(u32, ExtendedSequenceNumber)> {
        let keys: HashSet<String> = leases.iter().map(|n| format!("shardId-{n:012}")).collect();
        new_leases(shards, |id| keys.contains(id), initial)
            .into_iter()
            .map(|(s, c)| (s.shard_id()[8..].parse().expect("number"), c))
            .collect()
    }

    #[test]
    fn the_java_kcl_example_with_leases_for_3_4_5() {
        let mut got = plan(&java_example(), &[3, 4, 5], StartingPosition::Latest);
        got.sort_by_key(|(id, _)| *id);
        let th = ExtendedSequenceNumber::TRIM_HORIZON;
        let latest = ExtendedSequenceNumber::LATEST;
        // 2 is not a descendant of a leased shard: it starts at LATEST,
        // as the Java KCL's javadoc says of a non-descendant parent.
        assert_eq!(
            got,
            vec![
                (2, latest.clone()),
                (6, latest.clone()),
                (7, th.clone()),
                (8, th.clone()),
                (9, th.clone()),
                (10, th.clone()),
            ]
        );
        let ids: Vec<u32> = plan(&java_example(), &[3, 4, 5], StartingPosition::Latest)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let position = |id: u32| ids.iter().position(|i| *i == id).expect("planned");
        assert!(position(7) < position(8), "parents first: {ids:?}");
    }

    #[test]
    fn a_new_application_at_latest_leases_only_the_open_shards() {
        let got = plan(&java_example(), &[], StartingPosition::Latest);
        let latest = ExtendedSequenceNumber::LATEST;
        assert_eq!(
            got,
            vec![
                (4, latest.clone()),
                (8, latest.clone()),
                (9, latest.clone()),
                (10, latest.clone()),
            ]
        );
    }

    #[test]
    fn a_new_application_at_trim_horizon_leases_every_shard_from_the_start() {
        let got = plan(&java_example(), &[], StartingPosition::TrimHorizon);
        assert_eq!(got.len(), 11);
        assert!(
            got.iter()
                .all(|(_, c)| *c == ExtendedSequenceNumber::TRIM_HORIZON)
        );
    }

    #[test]
    fn a_new_application_at_a_timestamp_starts_every_shard_at_it() {
        let got = plan(
            &java_example(),
            &[],
            StartingPosition::AtTimestamp(SystemTime::UNIX_EPOCH),
        );
        assert_eq!(got.len(), 11);
        assert!(
            got.iter()
                .all(|(_, c)| *c == ExtendedSequenceNumber::AT_TIMESTAMP)
        );
    }

    /// A parent whose lease was deleted after its children started is not
    /// leased again (it would be read a second time).
    #[test]
    fn a_finished_parent_is_not_leased_again() {
        let shards = vec![
            shard(0, &[], false, 0),
            shard(1, &[0], true, 100),
            shard(2, &[0], true, 100),
        ];
        for initial in [
            StartingPosition::TrimHorizon,
            StartingPosition::Latest,
            StartingPosition::AtTimestamp(SystemTime::UNIX_EPOCH),
        ] {
            assert_eq!(plan(&shards, &[1, 2], initial), vec![], "{initial:?}");
        }
    }

    #[test]
    fn children_listed_while_their_parent_is_open_wait() {
        let shards = vec![shard(0, &[], true, 0), shard(1, &[0], true, 100)];
        assert_eq!(
            plan(&shards, &[0], StartingPosition::TrimHorizon),
            vec![],
            "the child of an open parent is left for the next sync"
        );
    }
}
