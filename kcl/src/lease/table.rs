//! Conditional operations on the lease table.
//!
//! Every change is conditioned the way the Java KCL conditions it, so that two
//! workers (in any language) never both believe they hold a lease: renewals
//! and checkpoints require the counter and owner the caller last saw, takes
//! require the counter, evictions the owner. A failed condition is not an
//! error: the operation returns `Ok(false)` and the caller has lost the race.

use std::collections::HashSet;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableStatus,
};

use super::item::*;
use super::{Lease, LeaseError};
use crate::checkpoint::ExtendedSequenceNumber;

/// A lease table.
///
/// ```no_run
/// # async fn demo(sdk_config: aws_config::SdkConfig) -> Result<(), kcl::lease::LeaseError> {
/// use kcl::checkpoint::ExtendedSequenceNumber;
/// use kcl::lease::{Lease, LeaseTable};
///
/// let table = LeaseTable::new(aws_sdk_dynamodb::Client::new(&sdk_config), "my-application");
/// table.create_if_missing().await?;
/// table.create_lease_if_absent(&Lease::new("shardId-000000000000", ExtendedSequenceNumber::TRIM_HORIZON)).await?;
/// for mut lease in table.list_leases().await? {
///     if lease.lease_owner.is_none() && table.take(&mut lease, "worker-1").await? {
///         println!("took {}", lease.lease_key);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LeaseTable {
    client: aws_sdk_dynamodb::Client,
    name: String,
    /// Keys of unreadable lease items already logged (each is logged once).
    reported: Arc<StdMutex<HashSet<String>>>,
    /// Tag new leases `entityType` `LEASE`, as the Java KCL 3.5 does in its
    /// single-table format (set when the fleet uses it).
    tag_entity_type: Arc<std::sync::atomic::AtomicBool>,
}

/// What a scan of the lease table found.
#[derive(Debug, Clone, Default)]
pub struct LeaseScan {
    /// Every lease that could be read.
    pub leases: Vec<Lease>,
    /// Keys of lease items that could not be read (a hand-edited attribute
    /// of the wrong type, say): they are neither taken nor replaced, and
    /// are logged once and counted in [`crate::metrics::UNREADABLE_LEASES`].
    pub unreadable: Vec<String>,
}

/// The Java KCL 3.x's index of leases by owner.
const OWNER_INDEX: &str = "LeaseOwnerToLeaseKeyIndex";

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

impl LeaseTable {
    /// The table `name` (the KCL names it after the application).
    pub fn new(client: aws_sdk_dynamodb::Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
            reported: Arc::default(),
            tag_entity_type: Arc::default(),
        }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether leases this table creates carry `entityType` `LEASE`: on in a
    /// Java KCL 3.5 fleet's single-table format (the scheduler sets it when
    /// it finds the fleet's migration state in the lease table), where the
    /// Java KCL tags its own leases so; off by default (the KCL 2.x schema).
    pub fn tag_new_leases(&self, tag: bool) {
        self.tag_entity_type
            .store(tag, std::sync::atomic::Ordering::Relaxed);
    }

    /// The DynamoDB client it uses.
    pub(crate) fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.client
    }

    /// Creates the table (hash key `leaseKey`, on-demand billing) unless it
    /// exists, and waits until it is ACTIVE. Returns whether it was created.
    pub async fn create_if_missing(&self) -> Result<bool, LeaseError> {
        let created = match self
            .client
            .create_table()
            .table_name(&self.name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(LEASE_KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| LeaseError::uncoded("CreateTable", e))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(LEASE_KEY)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| LeaseError::uncoded("CreateTable", e))?,
            )
            .send()
            .await
        {
            Ok(_) => true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
                false
            }
            Err(e) => return Err(LeaseError::dynamo("CreateTable", e)),
        };
        for _ in 0..600 {
            let described = self
                .client
                .describe_table()
                .table_name(&self.name)
                .send()
                .await;
            match described {
                Ok(out) => {
                    if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                        return Ok(created);
                    }
                }
                // Right after CreateTable, DescribeTable may not know the
                // table for a few seconds (eventual consistency): not yet.
                Err(e)
                    if created
                        && e.as_service_error()
                            .is_some_and(|e| e.is_resource_not_found_exception()) => {}
                Err(e) => return Err(LeaseError::dynamo("DescribeTable", e)),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(LeaseError::TableNotActive(self.name.clone()))
    }

    /// Writes a new lease unless one with its key exists. Returns whether it
    /// was written.
    pub async fn create_lease_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let mut item = lease.to_item();
        if self
            .tag_entity_type
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            item.insert(ENTITY_TYPE.to_owned(), s("LEASE"));
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#key)")
            .expression_attribute_names("#key", LEASE_KEY)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(LeaseError::dynamo("PutItem", e)),
        }
    }

    /// Every lease, read consistently (Scan, following pages). Items that are
    /// not leases (the Java KCL 3.x's leader, migration and worker-metrics
    /// items) and leases that cannot be read are left out: see
    /// [`LeaseTable::scan`].
    pub async fn list_leases(&self) -> Result<Vec<Lease>, LeaseError> {
        Ok(self.scan().await?.leases)
    }

    /// Every lease, read consistently (Scan, following pages), and the keys
    /// of lease items that could not be read. Items whose `entityType` says
    /// they are not leases are skipped ([`Lease::is_lease_item`]). One
    /// unreadable item never fails the scan: it is logged once (with its key
    /// and what is wrong), counted, and reported in [`LeaseScan::unreadable`].
    pub async fn scan(&self) -> Result<LeaseScan, LeaseError> {
        let mut scan = LeaseScan::default();
        let mut pages = self
            .client
            .scan()
            .table_name(&self.name)
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| LeaseError::dynamo("Scan", e))?;
            for item in page.items().iter().filter(|i| Lease::is_lease_item(i)) {
                match Lease::from_item(item) {
                    Ok(lease) => scan.leases.push(lease),
                    Err(error) => {
                        let key = match item.get(LEASE_KEY) {
                            Some(AttributeValue::S(key)) => key.clone(),
                            _ => String::new(),
                        };
                        self.report_unreadable(&key, &error);
                        scan.unreadable.push(key);
                    }
                }
            }
        }
        metrics::gauge!(crate::metrics::UNREADABLE_LEASES, "table" => self.name.clone())
            .set(scan.unreadable.len() as f64);
        Ok(scan)
    }

    /// The keys of the leases `owner` holds, from the Java KCL 3.x's index
    /// `LeaseOwnerToLeaseKeyIndex` (hash `leaseOwner`, range `leaseKey`,
    /// keys only), as a 3.x worker finds its leases
    /// (`DynamoDBLeaseDiscoverer`) instead of scanning the table. `None`
    /// when the table has no such index (a KCL 2.x table).
    pub async fn lease_keys_owned_by(
        &self,
        owner: &str,
    ) -> Result<Option<Vec<String>>, LeaseError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.name)
            .index_name(OWNER_INDEX)
            .key_condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", LEASE_OWNER)
            .expression_attribute_values(":owner", s(owner))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(page) => page,
                // No such index: a table the KCL 3.x never used.
                Err(e)
                    if e.as_service_error().is_some_and(|e| {
                        e.meta().code() == Some("ValidationException")
                            || e.is_resource_not_found_exception()
                    }) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(LeaseError::dynamo("Query", e)),
            };
            keys.extend(
                page.items()
                    .iter()
                    .filter_map(|item| match item.get(LEASE_KEY) {
                        Some(AttributeValue::S(key)) => Some(key.clone()),
                        _ => None,
                    }),
            );
        }
        Ok(Some(keys))
    }

    /// Logs an unreadable lease item the first time it is seen.
    fn report_unreadable(&self, key: &str, error: &LeaseError) {
        let first = self
            .reported
            .lock()
            .map(|mut reported| reported.insert(key.to_owned()))
            .unwrap_or(true);
        if first {
            tracing::error!(table = %self.name, lease = %key, %error,
                "a lease item cannot be read; it is skipped (neither taken nor replaced) until fixed");
        }
    }

    /// One lease, read consistently.
    pub async fn get_lease(&self, lease_key: &str) -> Result<Option<Lease>, LeaseError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .key(LEASE_KEY, s(lease_key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| LeaseError::dynamo("GetItem", e))?;
        out.item().map(Lease::from_item).transpose()
    }

    /// Renews a lease `owner` holds: bumps the counter if it is still the one
    /// in `lease` and the owner is unchanged. On success `lease` is updated.
    pub async fn renew(&self, lease: &mut Lease, owner: &str) -> Result<bool, LeaseError> {
        self.renew_reporting(lease, owner, None).await
    }

    /// [`renew`](Self::renew), also writing the shard's recent throughput
    /// (`throughputKBps`, KB/s), as a Java KCL 3.x worker does on each
    /// renewal for its leader's balancing. As the Java KCL 3.x, the renewal
    /// is refused while the lease carries a graceful-handoff mark
    /// (`checkpointOwner`): a leader has assigned it to another worker.
    pub async fn renew_reporting(
        &self,
        lease: &mut Lease,
        owner: &str,
        throughput_kbps: Option<f64>,
    ) -> Result<bool, LeaseError> {
        self.renew_with(lease, owner, throughput_kbps, false).await
    }

    /// [`renew_reporting`](Self::renew_reporting) by the worker handing the
    /// lease over (`handing_off`: its `checkpointOwner`), as the Java KCL
    /// 3.x's old owner keeps renewing until the transfer.
    pub(crate) async fn renew_with(
        &self,
        lease: &mut Lease,
        owner: &str,
        throughput_kbps: Option<f64>,
        handing_off: bool,
    ) -> Result<bool, LeaseError> {
        let condition = if handing_off {
            "#counter = :expected AND #cpowner = :owner"
        } else {
            "#counter = :expected AND #owner = :owner AND attribute_not_exists(#cpowner)"
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, s(&lease.lease_key))
            .condition_expression(condition)
            .expression_attribute_names("#counter", LEASE_COUNTER)
            .expression_attribute_names("#cpowner", CHECKPOINT_OWNER)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":expected", n(lease.lease_counter))
            .expression_attribute_values(":owner", s(owner));
        request = match throughput_kbps {
            Some(kbps) => request
                .update_expression("SET #counter = #counter + :one, #throughput = :throughput")
                .expression_attribute_names("#throughput", THROUGHPUT_KBPS)
                .expression_attribute_values(
                    ":throughput",
                    AttributeValue::N(format!("{:.3}", kbps.max(0.0))),
                ),
            None => request.update_expression("SET #counter = #counter + :one"),
        };
        if !handing_off {
            request = request.expression_attribute_names("#owner", LEASE_OWNER);
        }
        let result = request.send().await;
        self.applied("UpdateItem (renew)", result.map(|_| ()), || {
            lease.lease_counter += 1;
        })
    }

    /// Takes a lease for `new_owner` (free, expired, or stolen) if its counter
    /// is still the one in `lease`. An owner switch is counted only when the
    /// lease had another owner, as the Java KCL's
    /// `DynamoDBLeaseSerializer.getDynamoTakeLeaseUpdate` counts it (a first
    /// take of a free lease is not a switch); the counter condition makes the
    /// owner seen in `lease` the one replaced.
    pub async fn take(&self, lease: &mut Lease, new_owner: &str) -> Result<bool, LeaseError> {
        let switch = lease
            .lease_owner
            .as_deref()
            .is_some_and(|old| old != new_owner);
        // A take is a fresh assignment: a graceful-handoff mark left by a
        // Java KCL 3.x fleet goes (its `getDynamoTakeLeaseUpdate` removes it
        // too), or Java workers would keep waiting for a handoff.
        let update = if switch {
            "SET #counter = #counter + :one, #owner = :owner, \
             #switches = if_not_exists(#switches, :zero) + :one REMOVE #cpowner"
        } else {
            "SET #counter = #counter + :one, #owner = :owner REMOVE #cpowner"
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, s(&lease.lease_key))
            .update_expression(update)
            .condition_expression("#counter = :expected")
            .expression_attribute_names("#counter", LEASE_COUNTER)
            .expression_attribute_names("#owner", LEASE_OWNER)
            .expression_attribute_names("#cpowner", CHECKPOINT_OWNER)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":expected", n(lease.lease_counter))
            .expression_attribute_values(":owner", s(new_owner));
        if switch {
            request = request
                .expression_attribute_names("#switches", OWNER_SWITCHES)
                .expression_attribute_values(":zero", n(0));
        }
        let result = request.send().await;
        self.applied("UpdateItem (take)", result.map(|_| ()), || {
            lease.lease_counter += 1;
            lease.lease_owner = Some(new_owner.to_owned());
            lease.checkpoint_owner = None;
            if switch {
                lease.owner_switches_since_checkpoint += 1;
            }
        })
    }

    /// Completes a Java KCL 3.x graceful handoff `owner` was asked for (the
    /// lease's `checkpointOwner`): removes the mark and bumps the counter, so
    /// that the new owner (already its `leaseOwner`) starts, as
    /// `LeaseGracefulShutdownHandler` transfers it.
    pub async fn complete_handoff(
        &self,
        lease: &mut Lease,
        owner: &str,
    ) -> Result<bool, LeaseError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, s(&lease.lease_key))
            .update_expression("SET #counter = #counter + :one REMOVE #cpowner")
            .condition_expression("#cpowner = :owner")
            .expression_attribute_names("#counter", LEASE_COUNTER)
            .expression_attribute_names("#cpowner", CHECKPOINT_OWNER)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        self.applied("UpdateItem (complete handoff)", result.map(|_| ()), || {
            lease.lease_counter += 1;
            lease.checkpoint_owner = None;
        })
    }

    /// Gives a lease `owner` holds back (graceful hand-over): removes the
    /// owner and bumps the counter, if `owner` still holds it.
    pub async fn evict(&self, lease: &mut Lease, owner: &str) -> Result<bool, LeaseError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, s(&lease.lease_key))
            .update_expression("SET #counter = #counter + :one REMOVE #owner")
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#counter", LEASE_COUNTER)
            .expression_attribute_names("#owner", LEASE_OWNER)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        self.applied("UpdateItem (evict)", result.map(|_| ()), || {
            lease.lease_counter += 1;
            lease.lease_owner = None;
        })
    }

    /// Records a checkpoint (and optionally a prepared one with its state)
    /// on a lease `owner` holds with the counter in `lease`. Clears any
    /// pending checkpoint when `pending` is `None`, and resets the owner
    /// switch count, as the Java KCL does.
    pub async fn checkpoint(
        &self,
        lease: &mut Lease,
        owner: &str,
        checkpoint: &ExtendedSequenceNumber,
        pending: Option<(&ExtendedSequenceNumber, Option<&[u8]>)>,
    ) -> Result<bool, LeaseError> {
        let mut update = String::from(
            "SET #counter = #counter + :one, #cp = :cp, #cpsub = :cpsub, #switches = :zero",
        );
        let mut request = self
            .client
            .update_item()
            .table_name(&self.name)
            .key(LEASE_KEY, s(&lease.lease_key))
            // The owner, or the worker handing the lease over (it may
            // checkpoint in its shutdown_requested), as the Java KCL 3.x.
            .condition_expression("#counter = :expected AND (#owner = :owner OR #cpowner = :owner)")
            .expression_attribute_names("#counter", LEASE_COUNTER)
            .expression_attribute_names("#owner", LEASE_OWNER)
            .expression_attribute_names("#cpowner", CHECKPOINT_OWNER)
            .expression_attribute_names("#cp", CHECKPOINT)
            .expression_attribute_names("#cpsub", CHECKPOINT_SUB)
            .expression_attribute_names("#switches", OWNER_SWITCHES)
            .expression_attribute_names("#pcp", PENDING_CHECKPOINT)
            .expression_attribute_names("#pcpsub", PENDING_CHECKPOINT_SUB)
            .expression_attribute_names("#pstate", PENDING_CHECKPOINT_STATE)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":expected", n(lease.lease_counter))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":cp", s(checkpoint.position().as_str()))
            .expression_attribute_values(":cpsub", n(checkpoint.sub_sequence_number()));
        match pending {
            Some((prepared, state)) => {
                update.push_str(", #pcp = :pcp, #pcpsub = :pcpsub");
                request = request
                    .expression_attribute_values(":pcp", s(prepared.position().as_str()))
                    .expression_attribute_values(":pcpsub", n(prepared.sub_sequence_number()));
                match state {
                    Some(state) => {
                        update.push_str(", #pstate = :pstate");
                        request = request.expression_attribute_values(
                            ":pstate",
                            AttributeValue::B(Blob::new(state.to_vec())),
                        );
                    }
                    None => update.push_str(" REMOVE #pstate"),
                }
            }
            None => update.push_str(" REMOVE #pcp, #pcpsub, #pstate"),
        }
        let result = request.update_expression(update).send().await;
        self.applied("UpdateItem (checkpoint)", result.map(|_| ()), || {
            metrics::counter!(crate::metrics::CHECKPOINTS).increment(1);
            lease.lease_counter += 1;
            lease.checkpoint = checkpoint.clone();
            lease.owner_switches_since_checkpoint = 0;
            lease.pending_checkpoint = pending.map(|(prepared, _)| prepared.clone());
            lease.pending_checkpoint_state =
                pending.and_then(|(_, state)| state.map(<[u8]>::to_vec));
        })
    }

    /// Deletes a lease (after its shard ended and its children started).
    pub async fn delete_lease(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.client
            .delete_item()
            .table_name(&self.name)
            .key(LEASE_KEY, s(&lease.lease_key))
            .send()
            .await
            .map_err(|e| LeaseError::dynamo("DeleteItem", e))?;
        Ok(())
    }

    /// `Ok(true)` and the local update when the write was applied, `Ok(false)`
    /// when its condition failed, the error otherwise.
    fn applied<E>(
        &self,
        operation: &'static str,
        result: Result<(), aws_sdk_dynamodb::error::SdkError<E>>,
        on_success: impl FnOnce(),
    ) -> Result<bool, LeaseError>
    where
        E: std::error::Error
            + ConditionFailed
            + aws_sdk_dynamodb::error::ProvideErrorMetadata
            + 'static,
    {
        match result {
            Ok(()) => {
                on_success();
                Ok(true)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(ConditionFailed::condition_failed) =>
            {
                Ok(false)
            }
            Err(e) => Err(LeaseError::dynamo(operation, e)),
        }
    }
}

/// Service errors that can say "the condition failed".
trait ConditionFailed {
    /// Whether this is a ConditionalCheckFailedException.
    fn condition_failed(&self) -> bool;
}

impl ConditionFailed for aws_sdk_dynamodb::operation::update_item::UpdateItemError {
    fn condition_failed(&self) -> bool {
        self.is_conditional_check_failed_exception()
    }
}
