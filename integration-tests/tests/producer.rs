//! The producer against the embedded Kinesis.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use integration_tests::{LocalAws, resources, unique_name};
use kpl::shard_map::ShardMap;
use kpl::{AddError, Producer, ProducerConfig, RecordError, UserRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_across_four_shards_arrive_exactly_once_in_the_named_shard() {
    const RECORDS: usize = 100_000;
    let aws = LocalAws::start().await.expect("local AWS");
    let client = aws.kinesis_client();
    let stream = unique_name("kpl-100k");
    resources::create_stream(&client, &stream, 4)
        .await
        .expect("stream");

    // Load the shard map at start: records that arrive before it go
    // unaggregated once their buffering time is up.
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .streams([stream.as_str()])
        .build()
        .expect("producer");
    let warm_up = producer
        .add_user_record(UserRecord::new(&stream, "warm-up", "x"))
        .await
        .expect("accepted");
    warm_up.await.expect("warm-up record stored");
    let mut pending = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        // Mixed sizes: mostly small, some up to 20 KB; a few explicit hash keys.
        let size = match i % 100 {
            0 => 20_000,
            1..=9 => 2_000,
            _ => 8 + (i * 7919) % 300,
        };
        let mut data = format!("{i:08}:").into_bytes();
        data.resize(size, b'a' + (i % 26) as u8);
        let mut record = UserRecord::new(&stream, format!("pk-{}", i % 1_000), data);
        if i.is_multiple_of(50) {
            record = record.with_explicit_hash_key((i as u128) << 100);
        }
        pending.push(producer.add_user_record(record).await.expect("accepted"));
    }
    let mut expected_shard = HashMap::new();
    for (i, result) in futures::future::join_all(pending)
        .await
        .into_iter()
        .enumerate()
    {
        let result = result.unwrap_or_else(|e| panic!("record {i} failed: {e}"));
        assert!(
            !result.attempts.is_empty()
                && result.attempts.last().is_some_and(|a| a.error.is_none())
        );
        expected_shard.insert(
            i,
            (
                result.shard_id,
                result.sequence_number,
                result.sub_sequence_number,
            ),
        );
    }
    producer.shutdown().await.expect("shutdown");

    let shards = client
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .expect("ListShards")
        .shards()
        .to_vec();
    let map = ShardMap::from_shards(&shards).expect("shard map");
    let stored = resources::read_stream(&client, &stream)
        .await
        .expect("read back");
    let mut seen = HashSet::new();
    let mut kinesis_records: HashMap<String, HashSet<String>> = HashMap::new();
    for stored in stored
        .iter()
        .filter(|s| s.record.partition_key != "warm-up")
    {
        let (shard_id, sequence, user) =
            (&stored.shard_id, &stored.sequence_number, &stored.record);
        let id: usize = std::str::from_utf8(&user.data[..8])
            .expect("utf-8")
            .parse()
            .expect("record id");
        assert!(seen.insert(id), "record {id} delivered twice");
        let (named_shard, named_sequence, named_sub) = &expected_shard[&id];
        assert_eq!(
            named_shard, shard_id,
            "record {id} is in the shard its result named"
        );
        assert_eq!(named_sequence, sequence);
        assert_eq!(*named_sub, user.sub_sequence_number);
        // Every user record lies in its shard's hash range: no aggregate spans two shards.
        // (GetRecords does not return explicit hash keys: derive it from the id.)
        let hash = if id.is_multiple_of(50) {
            (id as u128) << 100
        } else {
            kpl::hash_key::partition_key_hash(&user.partition_key)
        };
        if let Some(ehk) = &user.explicit_hash_key {
            assert_eq!(
                ehk,
                &hash.to_string(),
                "record {id} kept its explicit hash key"
            );
        }
        let index = map.shard_for(hash).expect("hash in a shard");
        assert_eq!(
            &**map.shard_id(index),
            shard_id,
            "record {id} outside its shard's range"
        );
        kinesis_records
            .entry(shard_id.clone())
            .or_default()
            .insert(sequence.clone());
    }
    assert_eq!(seen.len(), RECORDS, "every record arrived");
    let kinesis_total: usize = kinesis_records.values().map(HashSet::len).sum();
    assert!(
        kinesis_total < RECORDS / 10,
        "records were aggregated: {kinesis_total} Kinesis records"
    );
    assert_eq!(kinesis_records.len(), 4, "all four shards used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_fails_records_at_once_with_the_record_handed_back() {
    let aws = LocalAws::start().await.expect("local AWS");
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");
    let started = Instant::now();
    let pending = producer
        .add_user_record(UserRecord::new("no-such-stream", "pk", "payload"))
        .await
        .expect("accepted");
    match pending.await {
        Err(RecordError::Failed {
            record,
            code,
            attempts,
            ..
        }) => {
            assert_eq!(code, "ResourceNotFoundException");
            assert_eq!(record.data().as_ref(), b"payload");
            assert_eq!(attempts.len(), 1);
        }
        other => panic!("expected a non-retryable failure, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    producer.shutdown().await.expect("shutdown");
}

/// A TCP server that accepts connections and never answers: a stalled endpoint.
async fn stalled_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_stalled_endpoint_records_expire_within_their_ttl_and_the_buffer_pushes_back() {
    let (url, server) = stalled_endpoint().await;
    let endpoints = integration_tests::Endpoints {
        kinesis: url.clone(),
        s3: url.clone(),
        dynamodb: url,
    };
    let config = ProducerConfig {
        record_ttl: Duration::from_secs(2),
        request_timeout: Duration::from_millis(300),
        max_outstanding_records: 50,
        ..Default::default()
    };
    let producer = Producer::builder()
        .sdk_config(&endpoints.sdk_config())
        .config(config)
        .build()
        .expect("producer");
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..50 {
        pending.push(
            producer
                .try_add_user_record(UserRecord::new("s", format!("k{i}"), "x"))
                .expect("below the bound"),
        );
    }
    assert_eq!(producer.outstanding_records(), 50);
    match producer.try_add_user_record(UserRecord::new("s", "k", "over")) {
        Err(AddError::BufferFull {
            record,
            outstanding_records,
        }) => {
            assert_eq!(record.data().as_ref(), b"over");
            assert_eq!(outstanding_records, 50);
        }
        other => panic!("expected BufferFull, got {other:?}"),
    }
    // add_user_record waits at the bound...
    let blocked = tokio::time::timeout(
        Duration::from_millis(300),
        producer.add_user_record(UserRecord::new("s", "k", "wait")),
    )
    .await;
    assert!(
        blocked.is_err(),
        "add_user_record waits while the buffer is full"
    );

    for result in futures::future::join_all(pending).await {
        match result {
            Err(RecordError::Expired { attempts, .. }) => assert!(!attempts.is_empty()),
            other => panic!("expected Expired, got {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
    // ...and goes on once records complete.
    let later = tokio::time::timeout(
        Duration::from_secs(1),
        producer.add_user_record(UserRecord::new("s", "k", "now")),
    )
    .await
    .expect("room again");
    assert!(later.is_ok());
    producer
        .shutdown()
        .await
        .expect("shutdown resolves every record");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_three_times_a_shards_limit_everything_arrives_and_the_limiter_adapts() {
    use integration_tests::embedded::LocalAwsOptions;
    const THROTTLED: &str = "ProvisionedThroughputExceededException";
    let aws = LocalAws::start_with(LocalAwsOptions {
        enforce_kinesis_limits: true,
        ..Default::default()
    })
    .await
    .expect("local AWS");
    let client = aws.kinesis_client();
    let stream = unique_name("kpl-limits");
    resources::create_stream(&client, &stream, 1)
        .await
        .expect("stream");
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");

    // 3 MiB/s for 4 s into one shard whose limit is 1 MiB/s.
    let started = Instant::now();
    let mut pending = Vec::new();
    for tick in 0..40u32 {
        for i in 0..30u32 {
            let data = vec![b'x'; 10 * 1024];
            let record = UserRecord::new(&stream, format!("k-{tick}-{i}"), data);
            pending.push((
                Instant::now(),
                producer.add_user_record(record).await.expect("accepted"),
            ));
        }
        tokio::time::sleep_until((started + Duration::from_millis(100) * (tick + 1)).into()).await;
    }
    let adapted_after = started + Duration::from_secs(2);
    let (mut early, mut late, mut late_throttled) = (0, 0, 0);
    for (added, result) in pending {
        let result = result.await.expect("every record is delivered");
        let throttled = result
            .attempts
            .iter()
            .filter(|a| a.error.as_ref().is_some_and(|e| e.code == THROTTLED))
            .count();
        if added < adapted_after {
            early += 1;
        } else {
            late += result.attempts.len();
            late_throttled += throttled;
        }
    }
    producer.shutdown().await.expect("shutdown");
    assert!(early > 0 && late > 0);
    let ratio = late_throttled as f64 / late as f64;
    assert!(
        ratio < 0.05,
        "{late_throttled} of {late} attempts throttled after adaptation ({:.1} %)",
        ratio * 100.0
    );
}

/// Issue 11: with `aggregation_max_size` at 1 MiB, a 700,000-byte record
/// under a 256-character key, a 347,000-byte one and 100 small ones made an
/// aggregate of 1 MiB whose partition key took it past the record limit
/// (1,048,830 bytes stored: the embedded Kinesis checks data alone; real
/// Kinesis refuses the entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_plus_its_partition_key_stays_within_the_record_limit() {
    const LIMIT: usize = 1_048_576;
    let aws = LocalAws::start().await.expect("local AWS");
    let client = aws.kinesis_client();
    let stream = unique_name("kpl-agg-limit");
    resources::create_stream(&client, &stream, 1)
        .await
        .expect("stream");
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .config(ProducerConfig {
            aggregation_max_size: LIMIT,
            ..Default::default()
        })
        .streams([stream.as_str()])
        .build()
        .expect("producer");
    let warm_up = producer
        .add_user_record(UserRecord::new(&stream, "warm-up", "x"))
        .await
        .expect("accepted");
    warm_up.await.expect("warm-up record stored");

    let mut records = vec![
        UserRecord::new(&stream, "k".repeat(256), vec![b'a'; 700_000]),
        UserRecord::new(&stream, "second", vec![b'b'; 347_000]),
    ];
    records.extend((0..100).map(|i| UserRecord::new(&stream, format!("small-{i}"), "small")));
    let mut pending = Vec::new();
    for record in records {
        pending.push(producer.add_user_record(record).await.expect("accepted"));
    }
    for (i, result) in futures::future::join_all(pending)
        .await
        .into_iter()
        .enumerate()
    {
        result.unwrap_or_else(|e| panic!("record {i} failed: {e}"));
    }
    producer.shutdown().await.expect("shutdown");

    let stored = resources::read_kinesis_records(&client, &stream)
        .await
        .expect("read back");
    let mut user_records = 0;
    for (_, record) in &stored {
        let key = record.partition_key().unwrap_or_default();
        let data = record.data().as_ref();
        assert!(
            data.len() + key.len() <= LIMIT,
            "a stored record of {} bytes of data + {} of partition key exceeds {LIMIT}",
            data.len(),
            key.len()
        );
        user_records +=
            kpl::aggregation::deaggregate(key, None, bytes::Bytes::copy_from_slice(data)).len();
    }
    assert_eq!(
        user_records, 103,
        "every record (and the warm-up) is stored"
    );
    resources::delete_stream(&client, &stream)
        .await
        .expect("delete");
}

/// Issue 11: a ValidationException about a long partition key came back as
/// its first 512 bytes, the echoed key only, without the constraint that
/// failed (at the end of the message).
///
/// The key is 256 four-byte characters: within AWS's limit, which is in
/// Unicode characters (and so within the producer's validation), but the
/// embedded Kinesis counts UTF-8 bytes and refuses it, echoing 1 KiB of key
/// before naming the constraint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_validation_error_keeps_the_constraint_that_failed() {
    let aws = LocalAws::start().await.expect("local AWS");
    let client = aws.kinesis_client();
    let stream = unique_name("kpl-long-error");
    resources::create_stream(&client, &stream, 1)
        .await
        .expect("stream");
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");
    let key = "😀".repeat(256);
    let pending = producer
        .add_user_record(UserRecord::new(&stream, key, "payload"))
        .await
        .expect("256 characters are a valid partition key");
    match pending.await {
        Err(RecordError::Failed { code, message, .. }) => {
            assert_eq!(code, "ValidationException");
            assert!(
                message.contains("Member must have length less than or equal to 256"),
                "the constraint is kept: {message}"
            );
            assert!(message.contains("bytes elided]"), "{message}");
            assert!(
                message.len() <= kpl::error::MAX_ERROR_MESSAGE,
                "{} bytes",
                message.len()
            );
        }
        other => panic!("expected the embedded Kinesis to refuse the key, got {other:?}"),
    }
    producer.shutdown().await.expect("shutdown");
    resources::delete_stream(&client, &stream)
        .await
        .expect("delete");
}

/// Records up to 10 MiB end to end, on real Kinesis: the embedded one caps
/// data at 1 MiB and PutRecords at 5 MiB whatever `UpdateMaxRecordSize` said.
/// Creates a one-shard stream, raises its record limit to 10 MiB, and deletes
/// it after (a few minutes of one shard). Run with AWS credentials and a
/// region in the environment:
///
/// ```sh
/// cargo test -p integration-tests --test producer -- --ignored --nocapture ten_mib_records_on_real_kinesis
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real AWS; see the doc comment for the command"]
async fn ten_mib_records_on_real_kinesis() {
    const LIMIT: usize = 10 << 20;
    let sdk_config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_kinesis::Client::new(&sdk_config);
    let stream = unique_name("kpl-10mib");
    resources::create_stream(&client, &stream, 1)
        .await
        .expect("stream");
    let arn = client
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .expect("DescribeStreamSummary")
        .stream_description_summary()
        .map(|s| s.stream_arn().to_owned())
        .expect("summary");
    client
        .update_max_record_size()
        .stream_arn(arn)
        .max_record_size_in_kib(10_240)
        .send()
        .await
        .expect("UpdateMaxRecordSize");
    resources::wait_for_stream(&client, &stream)
        .await
        .expect("active");

    let producer = Producer::builder()
        .sdk_config(&sdk_config)
        .config(ProducerConfig {
            aggregation_max_size: LIMIT,
            record_ttl: Duration::from_secs(120),
            request_timeout: Duration::from_secs(60),
            ..Default::default()
        })
        .streams([stream.as_str()])
        .build()
        .expect("producer");
    let key = "k".repeat(256);
    // Exactly the limit, then three that aggregate into one record near it.
    let mut records = vec![UserRecord::new(
        &stream,
        key.clone(),
        vec![b'a'; LIMIT - 256],
    )];
    records.extend(
        (0..3).map(|i| UserRecord::new(&stream, format!("third-{i}"), vec![b'b'; 3 << 20])),
    );
    let mut pending = Vec::new();
    for record in records {
        pending.push(producer.add_user_record(record).await.expect("accepted"));
    }
    match producer
        .add_user_record(UserRecord::new(&stream, key, vec![b'c'; LIMIT - 255]))
        .await
    {
        Err(AddError::Invalid(kpl::ValidationError::RecordTooLarge { max, .. })) => {
            assert_eq!(max, LIMIT);
        }
        other => panic!("one byte over 10 MiB must be refused, got {other:?}"),
    }
    for result in futures::future::join_all(pending).await {
        result.expect("stored");
    }
    producer.shutdown().await.expect("shutdown");

    let stored = resources::read_kinesis_records(&client, &stream)
        .await
        .expect("read back");
    let mut user_records = 0;
    for (_, record) in &stored {
        let key = record.partition_key().unwrap_or_default();
        let data = record.data().as_ref();
        assert!(data.len() + key.len() <= LIMIT);
        user_records +=
            kpl::aggregation::deaggregate(key, None, bytes::Bytes::copy_from_slice(data)).len();
    }
    assert_eq!(user_records, 4);
    resources::delete_stream(&client, &stream)
        .await
        .expect("delete");
}
