//! Produce aggregated records into a stream, read them back, deaggregate.
//!
//! ```text
//! cargo run -p examples --example produce_consume            # embedded back ends
//! cargo run -p examples --example produce_consume -- --use-env   # real AWS / AWS_ENDPOINT_URL_*
//! ```
//!
//! Records are grouped per shard (by hash key against the shard map) and
//! aggregated in the KPL format, so that no aggregate spans two shards, then
//! read back with GetRecords and deaggregated.

use std::collections::BTreeMap;

use anyhow::Context;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, Shard, ShardIteratorType};
use bytes::Bytes;
use kpl::aggregation::{AggregateBuilder, deaggregate};
use kpl::hash_key::hash_key;

const RECORDS: usize = 2_000;
const SHARDS: i32 = 2;
const AGGREGATE_MAX: usize = 51_200;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    examples::init_tracing();
    let backend = examples::Backend::from_args().await?;
    println!("Using {}", backend.describe());
    let kinesis = aws_sdk_kinesis::Client::new(&backend.sdk_config);
    let stream = integration_tests::unique_name("example");
    integration_tests::resources::create_stream(&kinesis, &stream, SHARDS).await?;
    println!("Created stream {stream} with {SHARDS} shards");

    let result = run(&kinesis, &stream).await;
    integration_tests::resources::delete_stream(&kinesis, &stream).await?;
    result
}

async fn run(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> anyhow::Result<()> {
    let shards = kinesis.list_shards().stream_name(stream).send().await?.shards().to_vec();

    // Aggregate per shard: an aggregate is routed by one hash key, so all its
    // user records must fall into the same shard's range.
    let mut per_shard: BTreeMap<String, AggregateBuilder> = BTreeMap::new();
    let mut entries = Vec::new();
    for i in 0..RECORDS {
        let partition_key = format!("customer-{}", i % 97);
        let data = Bytes::from(format!(r#"{{"order":{i},"customer":"{partition_key}","amount":{}}}"#, i * 7 % 500));
        let shard = shard_for(&shards, hash_key(&partition_key, None)).context("hash key outside every shard")?;
        let builder = per_shard.entry(shard).or_default();
        if !builder.try_add(&partition_key, None, &data, AGGREGATE_MAX) {
            entries.extend(builder.take());
            builder.add(&partition_key, None, &data);
        }
    }
    entries.extend(per_shard.values_mut().filter_map(AggregateBuilder::take));

    for chunk in entries.chunks(500) {
        let request = chunk
            .iter()
            .map(|record| {
                PutRecordsRequestEntry::builder()
                    .partition_key(&record.partition_key)
                    .set_explicit_hash_key(record.explicit_hash_key.clone())
                    .data(record.data.to_vec().into())
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = kinesis.put_records().stream_name(stream).set_records(Some(request)).send().await?;
        anyhow::ensure!(out.failed_record_count().unwrap_or(0) == 0, "some records failed: {out:?}");
    }
    println!("Produced {RECORDS} user records in {} Kinesis records", entries.len());

    let mut total = 0;
    for shard in &shards {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator;
        let mut in_shard = 0;
        let mut samples = Vec::new();
        while let Some(current) = iterator {
            let out = kinesis.get_records().shard_iterator(current).send().await?;
            for record in out.records() {
                let users = deaggregate(
                    record.partition_key().unwrap_or_default(),
                    None,
                    Bytes::copy_from_slice(record.data().as_ref()),
                );
                for user in users {
                    if samples.len() < 2 {
                        samples.push(format!(
                            "  {} sub {} key {}: {}",
                            record.sequence_number(),
                            user.sub_sequence_number,
                            user.partition_key,
                            String::from_utf8_lossy(&user.data)
                        ));
                    }
                    in_shard += 1;
                }
            }
            iterator = if out.records().is_empty() { None } else { out.next_shard_iterator };
        }
        println!("Consumed {in_shard} user records from {}", shard.shard_id());
        for sample in samples {
            println!("{sample}");
        }
        total += in_shard;
    }
    anyhow::ensure!(total == RECORDS, "consumed {total} of {RECORDS} records");
    println!("All {RECORDS} records came back.");
    Ok(())
}

fn shard_for(shards: &[Shard], hash: u128) -> Option<String> {
    shards.iter().find_map(|shard| {
        let range = shard.hash_key_range()?;
        let start: u128 = range.starting_hash_key().parse().ok()?;
        let end: u128 = range.ending_hash_key().parse().ok()?;
        (start..=end).contains(&hash).then(|| shard.shard_id().to_owned())
    })
}
