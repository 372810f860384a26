//! Uniquely named test resources, created ready to use and deleted after.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use bytes::Bytes;
use kpl::aggregation::{DeaggregatedRecord, deaggregate};

use crate::Error;

/// A name no other test (in this process or another) is using: the prefix,
/// the process id, a per-process counter and a random suffix. Valid as a
/// stream, table and bucket name (lowercase, digits and dashes).
///
/// ```
/// let a = integration_tests::unique_name("orders");
/// let b = integration_tests::unique_name("orders");
/// assert_ne!(a, b);
/// assert!(a.starts_with("orders-"));
/// ```
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{}-{n}-{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// Creates a stream with `shards` shards and waits until it is ACTIVE.
pub async fn create_stream(
    client: &aws_sdk_kinesis::Client,
    name: &str,
    shards: i32,
) -> Result<(), Error> {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .map_err(|e| Error::aws("CreateStream", e))?;
    wait_for_stream(client, name).await
}

/// Waits (up to 60 s) until a stream is ACTIVE.
pub async fn wait_for_stream(client: &aws_sdk_kinesis::Client, name: &str) -> Result<(), Error> {
    for _ in 0..600 {
        let out = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .map_err(|e| Error::aws("DescribeStreamSummary", e))?;
        if out.stream_description_summary().map(|s| s.stream_status())
            == Some(&StreamStatus::Active)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Error::Timeout(format!("stream {name} to become ACTIVE")))
}

/// Deletes a stream (and its consumers), ignoring "not found".
pub async fn delete_stream(client: &aws_sdk_kinesis::Client, name: &str) -> Result<(), Error> {
    match client
        .delete_stream()
        .stream_name(name)
        .enforce_consumer_deletion(true)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(Error::aws("DeleteStream", e)),
    }
}

/// Creates a bucket.
pub async fn create_bucket(client: &aws_sdk_s3::Client, name: &str) -> Result<(), Error> {
    client
        .create_bucket()
        .bucket(name)
        .send()
        .await
        .map_err(|e| Error::aws("CreateBucket", e))?;
    Ok(())
}

/// A new stream of `shards` shards and a new bucket, both with unique names,
/// on the back ends `sdk_config` points at: the set-up of every archive test.
pub async fn stream_and_bucket(
    sdk_config: &aws_config::SdkConfig,
    shards: i32,
) -> Result<(String, String), Error> {
    let (stream, bucket) = (unique_name("stream"), unique_name("bucket"));
    create_stream(&aws_sdk_kinesis::Client::new(sdk_config), &stream, shards).await?;
    create_bucket(&crate::embedded::s3_client(sdk_config), &bucket).await?;
    Ok((stream, bucket))
}

/// Every object key under `prefix`, in S3's (lexicographic) order.
pub async fn list_keys(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, Error> {
    let mut keys = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| Error::aws("ListObjectsV2", e))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
    }
    Ok(keys)
}

/// An object's bytes.
pub async fn get_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, Error> {
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| Error::aws("GetObject", e))?;
    let body = object
        .body
        .collect()
        .await
        .map_err(|e| Error::aws("GetObject body", e))?;
    Ok(body.into_bytes().to_vec())
}

/// Deletes every object of a bucket, then the bucket.
pub async fn delete_bucket(client: &aws_sdk_s3::Client, name: &str) -> Result<(), Error> {
    let mut pages = client
        .list_objects_v2()
        .bucket(name)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| Error::aws("ListObjectsV2", e))?;
        for object in page.contents() {
            if let Some(key) = object.key() {
                client
                    .delete_object()
                    .bucket(name)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| Error::aws("DeleteObject", e))?;
            }
        }
    }
    client
        .delete_bucket()
        .bucket(name)
        .send()
        .await
        .map_err(|e| Error::aws("DeleteBucket", e))?;
    Ok(())
}

/// Deletes a table, ignoring "not found".
pub async fn delete_table(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), Error> {
    match client.delete_table().table_name(name).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(Error::aws("DeleteTable", e)),
    }
}

/// A user record read back from a stream.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// Shard it was read from.
    pub shard_id: String,
    /// Sequence number of the Kinesis record that carried it.
    pub sequence_number: String,
    /// The deaggregated user record.
    pub record: DeaggregatedRecord,
}

/// Reads every shard of a stream from TRIM_HORIZON to its current end and
/// deaggregates what it finds.
pub async fn read_stream(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<StoredRecord>, Error> {
    let mut out = Vec::new();
    for (shard_id, record) in read_kinesis_records(client, stream).await? {
        let data = Bytes::copy_from_slice(record.data().as_ref());
        for user in deaggregate(record.partition_key().unwrap_or_default(), None, data) {
            out.push(StoredRecord {
                shard_id: shard_id.clone(),
                sequence_number: record.sequence_number().to_owned(),
                record: user,
            });
        }
    }
    Ok(out)
}

/// Reads every shard of a stream from TRIM_HORIZON to its current end: the
/// Kinesis records as stored (aggregates not unpacked), each with its shard
/// id.
pub async fn read_kinesis_records(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<(String, aws_sdk_kinesis::types::Record)>, Error> {
    let shards = kpl::shard_map::list_shards(client, stream)
        .await
        .map_err(|e| Error::aws("ListShards", e))?;
    let mut out = Vec::new();
    for shard in shards {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .map_err(|e| Error::aws("GetShardIterator", e))?
            .shard_iterator;
        while let Some(current) = iterator {
            let page = client
                .get_records()
                .shard_iterator(current)
                .limit(10_000)
                .send()
                .await
                .map_err(|e| Error::aws("GetRecords", e))?;
            // An empty page means the end of what is there now.
            iterator = if page.records().is_empty() {
                None
            } else {
                page.next_shard_iterator
            };
            out.extend(
                page.records
                    .into_iter()
                    .map(|record| (shard.shard_id().to_owned(), record)),
            );
        }
    }
    Ok(out)
}

/// Splits a shard in the middle of its hash key range and waits until the
/// stream is ACTIVE again.
pub async fn split_shard(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shard_id: &str,
) -> Result<(), Error> {
    let shards = kpl::shard_map::list_shards(client, stream)
        .await
        .map_err(|e| Error::aws("ListShards", e))?;
    let range = shards
        .iter()
        .find(|s| s.shard_id() == shard_id)
        .and_then(|s| s.hash_key_range())
        .ok_or_else(|| Error::Timeout(format!("shard {shard_id} in {stream}")))?;
    let start: u128 = range.starting_hash_key().parse().unwrap_or(0);
    let end: u128 = range.ending_hash_key().parse().unwrap_or(u128::MAX);
    let middle = start + (end - start) / 2 + 1;
    client
        .split_shard()
        .stream_name(stream)
        .shard_to_split(shard_id)
        .new_starting_hash_key(middle.to_string())
        .send()
        .await
        .map_err(|e| Error::aws("SplitShard", e))?;
    wait_for_stream(client, stream).await
}

/// Merges two adjacent shards and waits until the stream is ACTIVE again.
pub async fn merge_shards(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &str,
    adjacent: &str,
) -> Result<(), Error> {
    client
        .merge_shards()
        .stream_name(stream)
        .shard_to_merge(shard)
        .adjacent_shard_to_merge(adjacent)
        .send()
        .await
        .map_err(|e| Error::aws("MergeShards", e))?;
    wait_for_stream(client, stream).await
}

/// Sleeps until every record written before the call has an arrival time
/// before the second the call returns in: the embedded Kinesis keeps arrival
/// times in whole seconds, rounded to the nearest, so a test that starts
/// reading at a time (or at LATEST) waits this long after its last earlier
/// write (1.6 to 2.6 s).
pub async fn sleep_past_arrival_times() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let after =
        std::time::Duration::from_secs(now.as_secs() + 2) + std::time::Duration::from_millis(600);
    tokio::time::sleep(after.saturating_sub(now)).await;
}

/// Items a lease table can hold besides readable leases: a KCL 3.5
/// worker-metrics row and leader lock item (`entityType` other than `LEASE`,
/// no `checkpoint`), and a hand-edited lease `shardId-000000000009` whose
/// `leaseCounter` is a string.
pub fn foreign_lease_table_items()
-> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    use aws_sdk_dynamodb::types::AttributeValue;
    use std::collections::HashMap;
    let s = |v: &str| AttributeValue::S(v.into());
    let n = |v: &str| AttributeValue::N(v.into());
    vec![
        HashMap::from([
            ("leaseKey".to_owned(), s("java-worker-1")),
            ("entityType".to_owned(), s("WORKER_METRIC_STATS")),
            ("lut".to_owned(), n("1764400000")),
            ("sut".to_owned(), n("1764400000")),
        ]),
        HashMap::from([
            ("leaseKey".to_owned(), s("Leader")),
            ("entityType".to_owned(), s("LEADER")),
            ("ownerName".to_owned(), s("java-worker-1")),
            ("leaseDuration".to_owned(), n("120000")),
        ]),
        HashMap::from([
            ("leaseKey".to_owned(), s("shardId-000000000009")),
            ("leaseCounter".to_owned(), s("seven")),
            ("checkpoint".to_owned(), s("TRIM_HORIZON")),
        ]),
    ]
}

/// Puts `records` (partition key, data) into `stream` with `kpl`
/// (aggregation on, rate limit opened, as the benchmarks fill their
/// streams) and returns once every one is stored; how many.
///
/// # Panics
/// When the producer refuses a record or cannot store it: a benchmark's
/// set-up has nothing to fall back on.
pub async fn put_all(
    sdk_config: &aws_config::SdkConfig,
    stream: &str,
    records: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> usize {
    let producer = kpl::Producer::builder()
        .sdk_config(sdk_config)
        .config(kpl::ProducerConfig {
            rate_limit: 1_000_000,
            ..kpl::ProducerConfig::default()
        })
        .streams([stream.to_owned()])
        .build()
        .expect("producer");
    // Results are awaited as they come, by a task of their own.
    let (pending, mut results) = tokio::sync::mpsc::channel::<kpl::PendingResult>(100_000);
    let collector = tokio::spawn(async move {
        let mut stored = 0;
        while let Some(result) = results.recv().await {
            result.await.expect("stored");
            stored += 1;
        }
        stored
    });
    for (key, data) in records {
        let record = kpl::UserRecord::new(stream, key, data);
        let result = producer.add_user_record(record).await.expect("accepted");
        if pending.send(result).await.is_err() {
            break;
        }
    }
    drop(pending);
    let stored = collector.await.expect("collector");
    producer.shutdown().await.expect("producer shutdown");
    stored
}
