//! A lease as a DynamoDB item, attribute for attribute as the Java KCL 2.x
//! writes it (`DynamoDBLeaseSerializer`).

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::LeaseError;
use crate::checkpoint::{ExtendedSequenceNumber, Position};

pub(crate) const LEASE_KEY: &str = "leaseKey";
pub(crate) const LEASE_OWNER: &str = "leaseOwner";
pub(crate) const LEASE_COUNTER: &str = "leaseCounter";
pub(crate) const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
pub(crate) const CHECKPOINT: &str = "checkpoint";
pub(crate) const CHECKPOINT_SUB: &str = "checkpointSubSequenceNumber";
pub(crate) const PENDING_CHECKPOINT: &str = "pendingCheckpoint";
pub(crate) const PENDING_CHECKPOINT_SUB: &str = "pendingCheckpointSubSequenceNumber";
pub(crate) const PENDING_CHECKPOINT_STATE: &str = "pendingCheckpointState";
pub(crate) const PARENT_SHARD_IDS: &str = "parentShardId";
pub(crate) const CHILD_SHARD_IDS: &str = "childShardIds";
pub(crate) const STARTING_HASH_KEY: &str = "startingHashKey";
pub(crate) const ENDING_HASH_KEY: &str = "endingHashKey";
pub(crate) const STREAM_NAME: &str = "streamName";
pub(crate) const SHARD_ID: &str = "shardId";
/// KCL 3.5+: what an item of the lease table is (`LEASE`, `LEADER`,
/// `WORKER_METRIC_STATS`, …); absent on leases written by older versions.
pub(crate) const ENTITY_TYPE: &str = "entityType";
/// The Java KCL 3.x's graceful-handoff mark: the worker that still owns a
/// lease's checkpoint while its `leaseOwner` is already the new worker
/// (`DynamoDBLeaseSerializer.CHECKPOINT_OWNER`).
pub(crate) const CHECKPOINT_OWNER: &str = "checkpointOwner";
/// The Java KCL 3.x's per-lease throughput (N, KB/s), written on renewals
/// and read by its leader to balance leases.
pub(crate) const THROUGHPUT_KBPS: &str = "throughputKBps";

/// One shard lease.
///
/// ```
/// use kcl::checkpoint::ExtendedSequenceNumber;
/// use kcl::lease::Lease;
/// let lease = Lease::new("shardId-000000000000", ExtendedSequenceNumber::TRIM_HORIZON);
/// let item = lease.to_item();
/// assert_eq!(item["checkpoint"].as_s().unwrap(), "TRIM_HORIZON");
/// assert_eq!(Lease::from_item(&item).unwrap(), lease);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `leaseKey` (S): the shard id, or `account:stream:creationEpoch:shardId`
    /// for multi-stream applications.
    pub lease_key: String,
    /// `leaseOwner` (S): the worker holding it; absent when free.
    pub lease_owner: Option<String>,
    /// `leaseCounter` (N): bumped by every renewal and update; other workers
    /// judge a lease expired when it stops moving.
    pub lease_counter: u64,
    /// `checkpoint` (S) and `checkpointSubSequenceNumber` (N).
    pub checkpoint: ExtendedSequenceNumber,
    /// `pendingCheckpoint` (S) and `pendingCheckpointSubSequenceNumber` (N).
    pub pending_checkpoint: Option<ExtendedSequenceNumber>,
    /// `pendingCheckpointState` (B): application state saved with a prepared
    /// checkpoint.
    pub pending_checkpoint_state: Option<Vec<u8>>,
    /// `ownerSwitchesSinceCheckpoint` (N).
    pub owner_switches_since_checkpoint: u64,
    /// `parentShardId` (SS): the shard's parents.
    pub parent_shard_ids: Vec<String>,
    /// `childShardIds` (SS): the shard's children, once it has ended.
    pub child_shard_ids: Vec<String>,
    /// `startingHashKey` / `endingHashKey` (S): the shard's hash key range.
    pub hash_key_range: Option<(String, String)>,
    /// `streamName` (S), multi-stream applications only: the stream
    /// identifier `account:stream:creationEpoch`.
    pub stream_identifier: Option<String>,
    /// `shardId` (S), multi-stream applications only.
    pub shard_id: Option<String>,
    /// `checkpointOwner` (S), Java KCL 3.x: set only while a lease is being
    /// handed over gracefully (the worker that still processes it, while
    /// `lease_owner` is already the next one). Read, never written by this
    /// crate but removed when a lease is taken, as the Java KCL 3.x's take
    /// and assignment remove it.
    pub checkpoint_owner: Option<String>,
}

impl Lease {
    /// A free lease at `checkpoint`, counter 0.
    pub fn new(lease_key: impl Into<String>, checkpoint: ExtendedSequenceNumber) -> Self {
        Self {
            lease_key: lease_key.into(),
            lease_owner: None,
            lease_counter: 0,
            checkpoint,
            pending_checkpoint: None,
            pending_checkpoint_state: None,
            owner_switches_since_checkpoint: 0,
            parent_shard_ids: Vec::new(),
            child_shard_ids: Vec::new(),
            hash_key_range: None,
            stream_identifier: None,
            shard_id: None,
            checkpoint_owner: None,
        }
    }

    /// A multi-stream lease: key `account:stream:creationEpoch:shardId`, as
    /// the Java KCL builds it.
    pub fn multi_stream(
        stream_identifier: &str,
        shard_id: &str,
        checkpoint: ExtendedSequenceNumber,
    ) -> Self {
        let mut lease = Self::new(format!("{stream_identifier}:{shard_id}"), checkpoint);
        lease.stream_identifier = Some(stream_identifier.to_owned());
        lease.shard_id = Some(shard_id.to_owned());
        lease
    }

    /// The shard this lease is for.
    pub fn shard(&self) -> &str {
        self.shard_id.as_deref().unwrap_or(&self.lease_key)
    }

    /// The stream name, for a multi-stream lease.
    pub fn stream(&self) -> Option<&str> {
        let identifier = self.stream_identifier.as_deref()?;
        let mut parts = identifier.split(':');
        parts.next()?;
        parts.next()
    }

    /// The lease key of another shard of the same stream (a parent or child).
    pub fn sibling_key(&self, shard_id: &str) -> String {
        match &self.stream_identifier {
            Some(identifier) => format!("{identifier}:{shard_id}"),
            None => shard_id.to_owned(),
        }
    }

    /// The item as the Java KCL writes it. Empty sets are left out (DynamoDB
    /// refuses empty string sets).
    pub fn to_item(&self) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::new();
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let n = |v: u64| AttributeValue::N(v.to_string());
        item.insert(LEASE_KEY.into(), s(&self.lease_key));
        if let Some(owner) = &self.lease_owner {
            item.insert(LEASE_OWNER.into(), s(owner));
        }
        item.insert(LEASE_COUNTER.into(), n(self.lease_counter));
        item.insert(
            OWNER_SWITCHES.into(),
            n(self.owner_switches_since_checkpoint),
        );
        item.insert(CHECKPOINT.into(), s(self.checkpoint.position().as_str()));
        item.insert(
            CHECKPOINT_SUB.into(),
            n(self.checkpoint.sub_sequence_number()),
        );
        if let Some(pending) = &self.pending_checkpoint {
            item.insert(PENDING_CHECKPOINT.into(), s(pending.position().as_str()));
            item.insert(
                PENDING_CHECKPOINT_SUB.into(),
                n(pending.sub_sequence_number()),
            );
        }
        if let Some(state) = &self.pending_checkpoint_state {
            item.insert(
                PENDING_CHECKPOINT_STATE.into(),
                AttributeValue::B(Blob::new(state.clone())),
            );
        }
        if !self.parent_shard_ids.is_empty() {
            item.insert(
                PARENT_SHARD_IDS.into(),
                AttributeValue::Ss(self.parent_shard_ids.clone()),
            );
        }
        if !self.child_shard_ids.is_empty() {
            item.insert(
                CHILD_SHARD_IDS.into(),
                AttributeValue::Ss(self.child_shard_ids.clone()),
            );
        }
        if let Some((start, end)) = &self.hash_key_range {
            item.insert(STARTING_HASH_KEY.into(), s(start));
            item.insert(ENDING_HASH_KEY.into(), s(end));
        }
        if let Some(identifier) = &self.stream_identifier {
            item.insert(STREAM_NAME.into(), s(identifier));
        }
        if let Some(shard_id) = &self.shard_id {
            item.insert(SHARD_ID.into(), s(shard_id));
        }
        item
    }

    /// Whether an item of the lease table is a lease: the Java KCL 3.5+
    /// keeps its leader lock, migration state and worker metrics in the same
    /// table, tagged with an `entityType` other than `LEASE`
    /// (`leases/EntityType.java`); an item without `entityType` is a lease, as
    /// `DynamoDBLeaseSerializer.fromDynamoRecord` reads it.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use aws_sdk_dynamodb::types::AttributeValue;
    /// use kcl::lease::Lease;
    /// let mut item = HashMap::from([("leaseKey".to_owned(), AttributeValue::S("worker-1".into()))]);
    /// assert!(Lease::is_lease_item(&item));
    /// item.insert("entityType".into(), AttributeValue::S("WORKER_METRIC_STATS".into()));
    /// assert!(!Lease::is_lease_item(&item));
    /// ```
    pub fn is_lease_item(item: &HashMap<String, AttributeValue>) -> bool {
        match item.get(ENTITY_TYPE) {
            None | Some(AttributeValue::Null(_)) => true,
            Some(AttributeValue::S(kind)) => kind == "LEASE",
            Some(_) => false,
        }
    }

    /// Reads an item written by this crate or by the Java KCL (attributes it
    /// does not know, such as KCL 3.x's `throughputKBps`, are ignored).
    ///
    /// `pendingCheckpointState` is read as binary, as the Java KCL's update
    /// path writes it; its create path (`toDynamoRecord`) writes a number (the
    /// checkpoint's sub-sequence number, not the state), which is read as no
    /// state — the Java KCL's own reader finds no bytes there either.
    ///
    /// # Errors
    ///
    /// [`LeaseError::InvalidItem`] naming the attribute when an attribute
    /// has the wrong type or `checkpoint` is missing. Callers scanning a
    /// table check [`Lease::is_lease_item`] first.
    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Self, LeaseError> {
        let lease_key = match item.get(LEASE_KEY) {
            Some(AttributeValue::S(key)) => key.clone(),
            _ => {
                return Err(LeaseError::InvalidItem {
                    lease_key: String::new(),
                    attribute: LEASE_KEY,
                    problem: "is missing or not a string",
                });
            }
        };
        let invalid = |attribute: &'static str, problem: &'static str| LeaseError::InvalidItem {
            lease_key: lease_key.clone(),
            attribute,
            problem,
        };
        let string = |name: &'static str| -> Result<Option<String>, LeaseError> {
            match item.get(name) {
                None | Some(AttributeValue::Null(_)) => Ok(None),
                Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
                Some(_) => Err(invalid(name, "is not a string")),
            }
        };
        let number = |name: &'static str| -> Result<Option<u64>, LeaseError> {
            match item.get(name) {
                None | Some(AttributeValue::Null(_)) => Ok(None),
                Some(AttributeValue::N(v)) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| invalid(name, "is not a whole number")),
                Some(_) => Err(invalid(name, "is not a number")),
            }
        };
        let set = |name: &'static str| -> Result<Vec<String>, LeaseError> {
            match item.get(name) {
                None | Some(AttributeValue::Null(_)) => Ok(Vec::new()),
                Some(AttributeValue::Ss(v)) => Ok(v.clone()),
                Some(_) => Err(invalid(name, "is not a string set")),
            }
        };
        let checkpoint = string(CHECKPOINT)?.ok_or_else(|| invalid(CHECKPOINT, "is missing"))?;
        let pending_checkpoint = string(PENDING_CHECKPOINT)?
            .map(|p| {
                Ok::<_, LeaseError>(ExtendedSequenceNumber::from_parts(
                    Position::parse(&p),
                    number(PENDING_CHECKPOINT_SUB)?.unwrap_or(0),
                ))
            })
            .transpose()?;
        let pending_checkpoint_state = match item.get(PENDING_CHECKPOINT_STATE) {
            None | Some(AttributeValue::Null(_)) => None,
            Some(AttributeValue::B(blob)) => Some(blob.as_ref().to_vec()),
            // The Java KCL's create path writes a number here (see above).
            Some(AttributeValue::N(_)) => None,
            Some(_) => return Err(invalid(PENDING_CHECKPOINT_STATE, "is not binary")),
        };
        let hash_key_range = match (string(STARTING_HASH_KEY)?, string(ENDING_HASH_KEY)?) {
            (Some(start), Some(end)) => Some((start, end)),
            _ => None,
        };
        Ok(Self {
            lease_owner: string(LEASE_OWNER)?,
            lease_counter: number(LEASE_COUNTER)?.unwrap_or(0),
            checkpoint: ExtendedSequenceNumber::from_parts(
                Position::parse(&checkpoint),
                number(CHECKPOINT_SUB)?.unwrap_or(0),
            ),
            pending_checkpoint,
            pending_checkpoint_state,
            owner_switches_since_checkpoint: number(OWNER_SWITCHES)?.unwrap_or(0),
            parent_shard_ids: set(PARENT_SHARD_IDS)?,
            child_shard_ids: set(CHILD_SHARD_IDS)?,
            hash_key_range,
            stream_identifier: string(STREAM_NAME)?,
            shard_id: string(SHARD_ID)?,
            checkpoint_owner: string(CHECKPOINT_OWNER)?,
            lease_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_lease_round_trips_through_an_item() {
        let lease = Lease {
            lease_key: "shardId-000000000003".into(),
            lease_owner: Some("worker-1".into()),
            lease_counter: 42,
            checkpoint: ExtendedSequenceNumber::new("4959033827149025660855969253836157", 7),
            pending_checkpoint: Some(ExtendedSequenceNumber::new(
                "4959033827149025660855969253836160",
                0,
            )),
            pending_checkpoint_state: Some(b"s3://bucket/key".to_vec()),
            owner_switches_since_checkpoint: 2,
            parent_shard_ids: vec!["shardId-000000000000".into(), "shardId-000000000001".into()],
            child_shard_ids: vec!["shardId-000000000005".into()],
            hash_key_range: Some(("0".into(), "170141183460469231731687303715884105727".into())),
            stream_identifier: None,
            shard_id: None,
            checkpoint_owner: None,
        };
        let item = lease.to_item();
        assert!(matches!(item["leaseCounter"], AttributeValue::N(ref n) if n == "42"));
        assert!(matches!(item["parentShardId"], AttributeValue::Ss(ref s) if s.len() == 2));
        assert!(matches!(
            item["pendingCheckpointState"],
            AttributeValue::B(_)
        ));
        assert_eq!(Lease::from_item(&item).unwrap(), lease);
    }

    #[test]
    fn multi_stream_leases_carry_the_stream_identifier() {
        let lease = Lease::multi_stream(
            "123456789012:orders:1700000000",
            "shardId-000000000001",
            ExtendedSequenceNumber::LATEST,
        );
        assert_eq!(
            lease.lease_key,
            "123456789012:orders:1700000000:shardId-000000000001"
        );
        assert_eq!(lease.stream(), Some("orders"));
        assert_eq!(lease.shard(), "shardId-000000000001");
        assert_eq!(
            lease.sibling_key("shardId-000000000000"),
            "123456789012:orders:1700000000:shardId-000000000000"
        );
        let item = lease.to_item();
        assert_eq!(
            item["streamName"].as_s().unwrap(),
            "123456789012:orders:1700000000"
        );
        assert_eq!(item["shardId"].as_s().unwrap(), "shardId-000000000001");
        assert_eq!(Lease::from_item(&item).unwrap(), lease);
    }

    #[test]
    fn malformed_items_are_typed_errors() {
        let mut item = Lease::new("k", ExtendedSequenceNumber::LATEST).to_item();
        item.insert("leaseCounter".into(), AttributeValue::S("x".into()));
        assert!(matches!(
            Lease::from_item(&item),
            Err(LeaseError::InvalidItem {
                attribute: "leaseCounter",
                ..
            })
        ));
        assert!(Lease::from_item(&HashMap::new()).is_err());
    }

    /// The Java KCL's `toDynamoRecord` writes `pendingCheckpointState` as a
    /// number when it creates a lease with a pending checkpoint; the update
    /// path writes binary. Both are leases.
    #[test]
    fn pending_checkpoint_state_written_as_a_number_is_read() {
        let mut item = Lease::new("shardId-000000000001", ExtendedSequenceNumber::LATEST).to_item();
        item.insert(PENDING_CHECKPOINT.into(), AttributeValue::S("4959".into()));
        item.insert(PENDING_CHECKPOINT_SUB.into(), AttributeValue::N("0".into()));
        item.insert(
            PENDING_CHECKPOINT_STATE.into(),
            AttributeValue::N("0".into()),
        );
        let lease = Lease::from_item(&item).expect("a lease");
        assert_eq!(lease.pending_checkpoint_state, None);
        assert_eq!(
            lease.pending_checkpoint,
            Some(ExtendedSequenceNumber::new("4959", 0))
        );
    }

    #[test]
    fn items_of_other_entity_types_are_not_leases() {
        let mut item = HashMap::from([
            (LEASE_KEY.to_owned(), AttributeValue::S("worker-1".into())),
            (ENTITY_TYPE.to_owned(), AttributeValue::S("LEASE".into())),
        ]);
        assert!(Lease::is_lease_item(&item));
        for other in ["WORKER_METRIC_STATS", "LEADER", "CLIENT_VERSION_MIGRATION"] {
            item.insert(ENTITY_TYPE.into(), AttributeValue::S(other.into()));
            assert!(!Lease::is_lease_item(&item), "{other}");
        }
    }
}
