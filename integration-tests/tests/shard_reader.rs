//! Reading shards: deaggregation with sub-sequence numbers, resuming in the
//! middle of an aggregate, and shard end with the children found.

use integration_tests::{ExternalAws, LocalAws, resources, unique_name};
use kcl::checkpoint::ExtendedSequenceNumber;
use kcl::retrieval::{Batch, ConsumerRecord, ShardReader, StartingPosition};
use kpl::{Producer, UserRecord};

async fn read_to_end(reader: &mut ShardReader) -> (Vec<ConsumerRecord>, Vec<String>) {
    let mut records = Vec::new();
    for _ in 0..1_000 {
        let Batch {
            records: batch,
            shard_end,
            ..
        } = reader.next_batch().await.expect("batch");
        let empty = batch.is_empty();
        records.extend(batch);
        if let Some(children) = shard_end {
            return (records, children);
        }
        if empty {
            return (records, Vec::new());
        }
    }
    panic!("shard never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_come_back_with_their_sub_sequence_numbers_and_resume_mid_aggregate() {
    let aws = LocalAws::start().await.expect("local AWS");
    let client = aws.kinesis_client();
    let stream = unique_name("reader");
    resources::create_stream(&client, &stream, 1)
        .await
        .expect("stream");
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");
    let mut pending = Vec::new();
    for i in 0..1_000 {
        pending.push(
            producer
                .add_user_record(UserRecord::new(
                    &stream,
                    format!("k{}", i % 13),
                    format!("r{i:04}"),
                ))
                .await
                .expect("accepted"),
        );
    }
    let results: Vec<_> = futures::future::join_all(pending)
        .await
        .into_iter()
        .map(|r| r.expect("stored"))
        .collect();
    producer.shutdown().await.expect("shutdown");
    let shard = results[0].shard_id.clone();

    let mut reader = ShardReader::new(
        client.clone(),
        &stream,
        &shard,
        ExtendedSequenceNumber::TRIM_HORIZON,
        StartingPosition::TrimHorizon,
    );
    let (records, _) = read_to_end(&mut reader).await;
    assert_eq!(records.len(), 1_000);
    for (i, (record, result)) in records.iter().zip(&results).enumerate() {
        assert_eq!(record.data.as_ref(), format!("r{i:04}").as_bytes());
        assert_eq!(record.sequence_number, result.sequence_number, "record {i}");
        assert_eq!(
            record.sub_sequence_number, result.sub_sequence_number,
            "record {i}"
        );
    }

    // Checkpointed at the fourth sub-record of an aggregate: resume at the fifth.
    let middle = records
        .iter()
        .position(|r| r.aggregated && r.sub_sequence_number == 3)
        .expect("an aggregate with at least four records");
    let mut resumed = ShardReader::new(
        client,
        &stream,
        &shard,
        records[middle].extended_sequence_number(),
        StartingPosition::TrimHorizon,
    );
    let (rest, _) = read_to_end(&mut resumed).await;
    assert_eq!(
        rest.first(),
        records.get(middle + 1),
        "resumes at the next sub-record"
    );
    assert_eq!(rest.len(), records.len() - middle - 1);
}

async fn split_and_read_parent(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> (usize, Vec<String>) {
    resources::create_stream(client, stream, 1)
        .await
        .expect("stream");
    let parent = kpl::shard_map::list_shards(client, stream)
        .await
        .expect("ListShards")[0]
        .shard_id()
        .to_owned();
    client
        .put_record()
        .stream_name(stream)
        .partition_key("k")
        .data(aws_sdk_kinesis::primitives::Blob::new(
            b"before the split".to_vec(),
        ))
        .send()
        .await
        .expect("PutRecord");
    resources::split_shard(client, stream, &parent)
        .await
        .expect("SplitShard");
    let mut reader = ShardReader::new(
        client.clone(),
        stream,
        &parent,
        ExtendedSequenceNumber::TRIM_HORIZON,
        StartingPosition::TrimHorizon,
    );
    let mut records = 0;
    for _ in 0..100 {
        let batch = reader.next_batch().await.expect("batch");
        records += batch.records.len();
        if let Some(children) = batch.shard_end {
            let mut children = children;
            children.sort();
            return (records, children);
        }
    }
    panic!("the parent never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_parent_ends_and_its_children_are_found_on_the_embedded_kinesis() {
    // ferrokinesis returns no ChildShards: the reader falls back to ListShards.
    let aws = LocalAws::start().await.expect("local AWS");
    let (records, children) =
        split_and_read_parent(&aws.kinesis_client(), &unique_name("split")).await;
    assert_eq!(records, 1);
    assert_eq!(children.len(), 2, "{children:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_parent_ends_with_child_shards_on_kinesis_local() {
    let aws = ExternalAws::connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = aws.kinesis_client();
    let stream = unique_name("split");
    let (records, children) = split_and_read_parent(&client, &stream).await;
    assert_eq!(records, 1);
    assert_eq!(children.len(), 2, "{children:?}");
    resources::delete_stream(&client, &stream)
        .await
        .expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_ahead_stops_at_its_bound_until_batches_are_processed() {
    use kcl::retrieval::Prefetcher;
    use std::time::Duration;
    let aws = LocalAws::start().await.expect("local AWS");
    let client = aws.kinesis_client();
    let stream = unique_name("prefetch");
    resources::create_stream(&client, &stream, 1)
        .await
        .expect("stream");
    for i in 0..100 {
        client
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("k{i}"))
            .data(aws_sdk_kinesis::primitives::Blob::new(
                format!("r{i}").into_bytes(),
            ))
            .send()
            .await
            .expect("PutRecord");
    }
    let shard = kpl::shard_map::list_shards(&client, &stream)
        .await
        .expect("ListShards")[0]
        .shard_id()
        .to_owned();
    let reader = ShardReader::new(
        client,
        &stream,
        &shard,
        ExtendedSequenceNumber::TRIM_HORIZON,
        StartingPosition::TrimHorizon,
    )
    .with_limit(5);
    let mut prefetcher = Prefetcher::spawn(
        kcl::retrieval::Source::Polling(reader),
        12,
        1 << 20,
        Duration::from_millis(50),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Without processing anything, at most 12 records are held.
    let mut held = Vec::new();
    while let Ok(Some(next)) =
        tokio::time::timeout(Duration::from_millis(200), prefetcher.next()).await
    {
        held.push(next.expect("batch"));
    }
    let records: usize = held.iter().map(|p| p.batch.records.len()).sum();
    assert!(records > 0 && records <= 12, "{records} records read ahead");

    // Processing (dropping) them lets the rest through.
    drop(held);
    let mut total = records;
    while total < 100 {
        let next = tokio::time::timeout(Duration::from_secs(5), prefetcher.next())
            .await
            .expect("more batches")
            .expect("not ended")
            .expect("batch");
        total += next.batch.records.len();
    }
    assert_eq!(total, 100);
}

/// A reader at the tip of a shard sees every record while eight writers
/// write to it. Kinesis makes records visible in sequence order; the
/// embedded ferrokinesis 0.7.0 does not (it numbers a write's records before
/// storing them), and lost about 3% of these records to the reader until
/// `LocalAws` serialised its writes. Every consumer test rests on this.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_at_the_tip_sees_every_record_of_concurrent_writers() {
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::PutRecordsRequestEntry;
    use std::collections::BTreeSet;

    let aws = LocalAws::start().await.expect("local AWS");
    let client = aws.kinesis_client();
    let stream = unique_name("tail");
    resources::create_stream(&client, &stream, 1)
        .await
        .expect("stream");
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let (client, stream) = (client.clone(), stream.clone());
            tokio::spawn(async move {
                let mut written = Vec::new();
                for call in 0..60 {
                    let entries = (0..50)
                        .map(|i| {
                            PutRecordsRequestEntry::builder()
                                .partition_key(format!("{writer}-{call}-{i}"))
                                .data(Blob::new(vec![b'x'; 100]))
                                .build()
                                .expect("entry")
                        })
                        .collect();
                    let out = client
                        .put_records()
                        .stream_name(&stream)
                        .set_records(Some(entries))
                        .send()
                        .await
                        .expect("PutRecords");
                    assert_eq!(out.failed_record_count(), Some(0));
                    written.extend(
                        out.records()
                            .iter()
                            .filter_map(|r| r.sequence_number().map(str::to_owned)),
                    );
                }
                written
            })
        })
        .collect();

    let shard = "shardId-000000000000";
    let mut reader = ShardReader::new(
        client.clone(),
        &stream,
        shard,
        ExtendedSequenceNumber::TRIM_HORIZON,
        StartingPosition::TrimHorizon,
    );
    let mut seen = BTreeSet::new();
    let mut quiet = 0;
    while quiet < 3 {
        let batch = reader.next_batch().await.expect("batch");
        let idle = batch.records.is_empty();
        seen.extend(batch.records.into_iter().map(|r| r.sequence_number));
        if idle {
            // Only count quiet reads once every writer is done.
            if writers.iter().all(|w| w.is_finished()) {
                quiet += 1;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    let mut written = BTreeSet::new();
    for writer in writers {
        written.extend(writer.await.expect("writer"));
    }
    assert_eq!(written.len(), 8 * 60 * 50);
    let missed = written.difference(&seen).count();
    assert_eq!(missed, 0, "the tailing reader missed {missed} records");
}

/// An iterator that expired while the processor was busy is renewed at the
/// last record read: the reader goes on with the next record, nothing
/// skipped and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_iterator_is_renewed_after_the_last_record_read() {
    let aws = LocalAws::start_with(integration_tests::embedded::LocalAwsOptions {
        iterator_ttl_seconds: 1,
        ..Default::default()
    })
    .await
    .expect("local AWS");
    let client = aws.kinesis_client();
    let stream = unique_name("expiry");
    resources::create_stream(&client, &stream, 1)
        .await
        .expect("stream");
    let mut sent = Vec::new();
    for i in 0..20 {
        let out = client
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("k{i}"))
            .data(aws_sdk_kinesis::primitives::Blob::new(format!("r{i:02}")))
            .send()
            .await
            .expect("PutRecord");
        sent.push(out.sequence_number().to_owned());
    }
    // An iterator taken alongside the reader's, to show that it expires.
    let witness = client
        .get_shard_iterator()
        .stream_name(&stream)
        .shard_id("shardId-000000000000")
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("GetShardIterator")
        .shard_iterator
        .expect("iterator");
    let mut reader = ShardReader::new(
        client.clone(),
        &stream,
        "shardId-000000000000",
        ExtendedSequenceNumber::TRIM_HORIZON,
        StartingPosition::TrimHorizon,
    )
    .with_limit(5);
    let mut read: Vec<String> = Vec::new();
    let first = reader.next_batch().await.expect("first batch");
    assert_eq!(first.records.len(), 5);
    read.extend(first.records.into_iter().map(|r| r.sequence_number));
    // Longer than the iterator lives.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let expired = client
        .get_records()
        .shard_iterator(witness)
        .send()
        .await
        .expect_err("expired");
    assert!(
        expired
            .as_service_error()
            .is_some_and(|e| e.is_expired_iterator_exception()),
        "{expired:?}"
    );
    for _ in 0..20 {
        if read.len() >= sent.len() {
            break;
        }
        let batch = reader.next_batch().await.expect("a batch after expiry");
        read.extend(batch.records.into_iter().map(|r| r.sequence_number));
    }
    assert_eq!(read, sent, "every record once, in order");
}

/// Puts `count` plain records numbered from `first`; returns their data.
async fn put_plain(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    first: usize,
    count: usize,
) -> Vec<String> {
    let mut sent = Vec::new();
    for i in first..first + count {
        let data = format!("r{i:03}");
        client
            .put_record()
            .stream_name(stream)
            .partition_key(format!("k{i}"))
            .data(aws_sdk_kinesis::primitives::Blob::new(data.clone()))
            .send()
            .await
            .expect("PutRecord");
        sent.push(data);
    }
    sent
}

fn data_of(records: &[ConsumerRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect()
}

/// A shard started at LATEST whose iterator expires before any record came
/// is not resolved at LATEST again: the records written in between are read
/// (issue 11, defect 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_iterator_at_latest_does_not_skip_records_written_meanwhile() {
    let aws = LocalAws::start_with(integration_tests::embedded::LocalAwsOptions {
        iterator_ttl_seconds: 1,
        ..Default::default()
    })
    .await
    .expect("local AWS");
    let client = aws.kinesis_client();
    let stream = unique_name("latest-expiry");
    resources::create_stream(&client, &stream, 1)
        .await
        .expect("stream");
    put_plain(&client, &stream, 0, 3).await;
    // The embedded Kinesis keeps arrival times in whole seconds.
    resources::sleep_past_arrival_times().await;
    let mut reader = ShardReader::new(
        client.clone(),
        &stream,
        "shardId-000000000000",
        ExtendedSequenceNumber::LATEST,
        StartingPosition::Latest,
    );
    let first = reader.next_batch().await.expect("first batch");
    assert!(first.records.is_empty(), "LATEST: nothing older");
    let sent = put_plain(&client, &stream, 3, 5).await;
    // Longer than the iterator lives.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let mut read = Vec::new();
    for _ in 0..20 {
        if read.len() >= sent.len() {
            break;
        }
        read.extend(data_of(&reader.next_batch().await.expect("batch").records));
    }
    assert_eq!(read, sent, "the records written before the renewal, once");
}

/// A fan-out subscription at LATEST that ends before any record came is
/// renewed at its continuation, not at LATEST again (issue 11, defect 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_subscription_at_latest_does_not_skip_records_written_meanwhile() {
    let aws = LocalAws::start_with(integration_tests::embedded::LocalAwsOptions {
        subscription_millis: 1_000,
        ..Default::default()
    })
    .await
    .expect("local AWS");
    let client = aws.kinesis_client();
    let stream = unique_name("latest-efo");
    resources::create_stream(&client, &stream, 1)
        .await
        .expect("stream");
    put_plain(&client, &stream, 0, 3).await;
    let consumer_arn = kcl::retrieval::register_consumer(&client, &stream, "renewal")
        .await
        .expect("consumer");
    let mut reader = kcl::retrieval::FanOutReader::new(
        client.clone(),
        &stream,
        consumer_arn,
        "shardId-000000000000",
        ExtendedSequenceNumber::LATEST,
        StartingPosition::Latest,
    );
    let mut read = data_of(&reader.next_batch().await.expect("first batch").records);
    let started = std::time::Instant::now();
    while reader.is_subscribed() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the subscription never ended"
        );
        read.extend(data_of(&reader.next_batch().await.expect("batch").records));
    }
    assert!(read.is_empty(), "LATEST: nothing older, got {read:?}");
    // Written while no subscription is open.
    let sent = put_plain(&client, &stream, 3, 5).await;
    let started = std::time::Instant::now();
    while read.len() < sent.len() && started.elapsed() < std::time::Duration::from_secs(10) {
        read.extend(data_of(&reader.next_batch().await.expect("batch").records));
    }
    assert_eq!(read, sent, "the records written before the renewal, once");
}
