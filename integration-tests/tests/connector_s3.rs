//! The S3 connector (library) against the embedded back ends.

use std::time::Duration;

use connector_s3::compress::Compression;
use connector_s3::key::{DEFAULT_TEMPLATE, KeyTemplate};
use connector_s3::transform::JsonRecord;
use integration_tests::{LocalAws, resources, unique_name};
use kpl::{Producer, UserRecord};

mod common;

/// (shard, sequence, sub-sequence, data)
type Row = (String, String, u64, Vec<u8>);

fn payload(i: usize) -> Vec<u8> {
    match i % 3 {
        0 => format!(
            r#"{{"n":{i},"kind":"json","pad":"{}"}}"#,
            "x".repeat(i % 50)
        )
        .into_bytes(),
        1 => format!("text record {i} {}", "y".repeat(i % 60)).into_bytes(),
        _ => {
            let mut bytes = vec![0xff, 0x00, (i % 251) as u8];
            bytes.extend_from_slice(&(i as u64).to_le_bytes());
            bytes
        }
    }
}

async fn produce(producer: &Producer, stream: &str, range: std::ops::Range<usize>) -> Vec<Row> {
    let mut pending = Vec::with_capacity(range.len());
    for i in range {
        let data = payload(i);
        let result = producer
            .add_user_record(UserRecord::new(
                stream,
                format!("pk-{}", i % 997),
                data.clone(),
            ))
            .await
            .expect("accepted");
        pending.push((data, result));
    }
    let mut rows = Vec::with_capacity(pending.len());
    for (data, result) in pending {
        let result = result.await.expect("stored");
        rows.push((
            result.shard_id,
            result.sequence_number,
            result.sub_sequence_number,
            data,
        ));
    }
    rows
}

/// Every record in every object under `prefix`, by key.
async fn read_archive(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Vec<(String, Vec<JsonRecord>)> {
    let mut objects = Vec::new();
    for key in resources::list_keys(s3, bucket, prefix)
        .await
        .expect("list")
    {
        let body = resources::get_object(s3, bucket, &key).await.expect("get");
        let text = Compression::from_key(&key)
            .decompress_all(&body)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let records = String::from_utf8(text)
            .expect("utf-8")
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{key}: {e}: {line}")))
            .collect();
        objects.push((key, records));
    }
    objects
}

fn rows(objects: &[(String, Vec<JsonRecord>)]) -> Vec<Row> {
    let mut rows: Vec<Row> = objects
        .iter()
        .flat_map(|(_, records)| records)
        .map(|r| {
            (
                r.shard_id.clone(),
                r.sequence_number.clone(),
                r.sub_sequence_number,
                r.payload().expect("payload"),
            )
        })
        .collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archives_200k_records_exactly_once() {
    let aws = LocalAws::start().await.expect("local AWS");
    let (stream, bucket) = resources::stream_and_bucket(aws.sdk_config(), 4)
        .await
        .expect("stream and bucket");
    let mut sent = produce(&common::producer(&aws, &stream), &stream, 0..200_000).await;
    sent.sort();

    let buffer = tempfile::tempdir().expect("tempdir");
    let app = unique_name("archiver");
    let connector = common::connector(&aws, &app, &stream, &bucket, "archive", buffer.path())
        .max_object_records(15_000)
        .max_object_age(Duration::from_secs(2))
        .build()
        .expect("connector");
    let snapshot = common::run_until_uploaded(connector, 200_000, Duration::from_secs(240)).await;
    assert_eq!(snapshot.records_uploaded, 200_000, "{snapshot}");

    let objects = read_archive(&aws.s3_client(), &bucket, "archive/").await;
    assert!(objects.len() >= 14, "{} objects", objects.len());
    let template = KeyTemplate::new("archive", DEFAULT_TEMPLATE).expect("template");
    for (key, records) in &objects {
        let parsed = template
            .parse_key(key)
            .unwrap_or_else(|| panic!("{key} follows the template"));
        let first = &records[0];
        assert_eq!(parsed.stream.as_deref(), Some(stream.as_str()));
        assert_eq!(parsed.shard.as_deref(), Some(first.shard_id.as_str()));
        assert_eq!(
            parsed.first_seq,
            Some((first.sequence_number.clone(), first.sub_sequence_number)),
            "{key}"
        );
        assert!(key.ends_with(".jsonl.gz"));
        // Every record of an object is from one shard, in order.
        assert!(records.iter().all(|r| r.shard_id == first.shard_id));
    }
    let archived = rows(&objects);
    assert_eq!(archived.len(), sent.len());
    assert!(archived == sent, "the archive differs from what was sent");
    aws.shutdown().await;
}

/// Objects are valid for the standard tools, and each compression works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn objects_open_with_zcat_and_zstd() {
    let aws = LocalAws::start().await.expect("local AWS");
    let (stream, bucket) = resources::stream_and_bucket(aws.sdk_config(), 1)
        .await
        .expect("stream and bucket");
    let sent = produce(&common::producer(&aws, &stream), &stream, 0..3_000).await;
    for (compression, prefix) in [
        (Compression::GZIP, "gz"),
        (Compression::ZSTD, "zst"),
        (Compression::None, "plain"),
    ] {
        let buffer = tempfile::tempdir().expect("tempdir");
        let app = unique_name("tools");
        let connector = common::connector(&aws, &app, &stream, &bucket, prefix, buffer.path())
            .compression(compression)
            .max_object_records(1_000)
            .max_object_age(Duration::from_secs(1))
            .build()
            .expect("connector");
        common::run_until_uploaded(connector, 3_000, Duration::from_secs(60)).await;

        let keys = resources::list_keys(&aws.s3_client(), &bucket, &format!("{prefix}/"))
            .await
            .expect("list");
        assert!(keys.len() >= 3, "{keys:?}");
        let mut lines = 0;
        for key in &keys {
            assert!(
                key.ends_with(&format!(".jsonl{}", compression.extension())),
                "{key}"
            );
            let body = resources::get_object(&aws.s3_client(), &bucket, key)
                .await
                .expect("get");
            let dir = tempfile::tempdir().expect("tempdir");
            let file = dir.path().join("object");
            std::fs::write(&file, &body).expect("write");
            let output = match compression {
                Compression::Gzip { .. } => std::process::Command::new("zcat").arg(&file).output(),
                Compression::Zstd { .. } => std::process::Command::new("zstd")
                    .args(["-d", "-c"])
                    .arg(&file)
                    .output(),
                Compression::None => std::process::Command::new("cat").arg(&file).output(),
            }
            .expect("the tool runs");
            assert!(
                output.status.success(),
                "{key}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let text = String::from_utf8(output.stdout).expect("utf-8");
            for line in text.lines() {
                let record: JsonRecord = serde_json::from_str(line).expect("a JSON line");
                assert_eq!(record.stream, stream);
                lines += 1;
            }
        }
        assert_eq!(lines, sent.len(), "{prefix}");
    }
    aws.shutdown().await;
}

/// A lease left with a prepared checkpoint (a previous owner died between
/// `prepare_checkpoint` and `checkpoint`): its object is adopted when it
/// exists, and redone with exactly the prepared records when it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prepared_checkpoint_is_adopted_or_redone() {
    use kcl::checkpoint::ExtendedSequenceNumber;
    use kcl::lease::{Lease, LeaseTable};

    let aws = LocalAws::start().await.expect("local AWS");
    let (stream, bucket) = resources::stream_and_bucket(aws.sdk_config(), 1)
        .await
        .expect("stream and bucket");
    let mut sent = produce(&common::producer(&aws, &stream), &stream, 0..1_000).await;
    sent.sort_by(|a, b| {
        ExtendedSequenceNumber::new(a.1.clone(), a.2)
            .cmp(&ExtendedSequenceNumber::new(b.1.clone(), b.2))
    });
    let prepared_at = ExtendedSequenceNumber::new(sent[499].1.clone(), sent[499].2);
    let shard = sent[0].0.clone();

    for (prefix, object_exists) in [("adopt", true), ("redo", false)] {
        let app = unique_name(prefix);
        let table = LeaseTable::new(aws.dynamodb_client(), &app);
        table.create_if_missing().await.expect("table");
        let prepared_key = format!("dead-owner/{prefix}.jsonl.gz");
        let mut lease = Lease::new(&shard, ExtendedSequenceNumber::TRIM_HORIZON);
        lease.lease_owner = Some("dead-worker".into());
        lease.pending_checkpoint = Some(prepared_at.clone());
        lease.pending_checkpoint_state = Some(prepared_key.clone().into_bytes());
        table.create_lease_if_absent(&lease).await.expect("lease");
        if object_exists {
            aws.s3_client()
                .put_object()
                .bucket(&bucket)
                .key(&prepared_key)
                .body(
                    Compression::GZIP
                        .compress(b"the dead owner's object\n")
                        .unwrap()
                        .into(),
                )
                .send()
                .await
                .expect("put");
        }
        let buffer = tempfile::tempdir().expect("tempdir");
        let connector = common::connector(&aws, &app, &stream, &bucket, prefix, buffer.path())
            .max_object_age(Duration::from_secs(1))
            .build()
            .expect("connector");
        let expected = if object_exists { 500 } else { 1_000 };
        let snapshot =
            common::run_until_uploaded(connector, expected, Duration::from_secs(60)).await;

        let objects = read_archive(&aws.s3_client(), &bucket, &format!("{prefix}/")).await;
        let archived = rows(&objects);
        let mut wanted: Vec<Row> = sent[500..].to_vec();
        wanted.sort();
        assert!(
            archived == wanted,
            "{prefix}: {} records archived after the prepared ones",
            archived.len()
        );
        if object_exists {
            assert_eq!(snapshot.objects_adopted, 1);
        } else {
            // The redone object is exactly what the dead owner prepared,
            // under the key it prepared.
            let redone = read_archive(&aws.s3_client(), &bucket, &prepared_key).await;
            let mut first = rows(&redone);
            first.sort_by(|a, b| {
                ExtendedSequenceNumber::new(a.1.clone(), a.2)
                    .cmp(&ExtendedSequenceNumber::new(b.1.clone(), b.2))
            });
            assert_eq!(
                first,
                sent[..500],
                "the prepared records, under {prepared_key}"
            );
        }
        let lease = table.get_lease(&shard).await.expect("get").expect("lease");
        assert!(
            lease.pending_checkpoint.is_none(),
            "{prefix}: the pending checkpoint is cleared"
        );
    }
    aws.shutdown().await;
}

/// A buffer of the caller's (here the in-memory one) in place of the disk
/// buffer: the same archive, and nothing written under the buffer directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_users_buffer_replaces_the_disk_buffer() {
    use connector_s3::buffer::{Buffer, MemoryBuffer};

    let aws = LocalAws::start().await.expect("local AWS");
    let (stream, bucket) = resources::stream_and_bucket(aws.sdk_config(), 2)
        .await
        .expect("stream and bucket");
    let mut sent = produce(&common::producer(&aws, &stream), &stream, 0..3_000).await;
    sent.sort();
    let buffer = tempfile::tempdir().expect("tempdir");
    let app = unique_name("memory");
    let connector = common::connector(&aws, &app, &stream, &bucket, "mem", buffer.path())
        .buffer(|_dir| Ok(Box::new(MemoryBuffer::default()) as Box<dyn Buffer>))
        .max_object_records(1_000)
        .max_object_age(Duration::from_secs(1))
        .build()
        .expect("connector");
    common::run_until_uploaded(connector, 3_000, Duration::from_secs(60)).await;
    let archived = rows(&read_archive(&aws.s3_client(), &bucket, "mem/").await);
    assert!(archived == sent, "{} records archived", archived.len());
    let on_disk = std::fs::read_dir(buffer.path())
        .expect("buffer dir")
        .flatten()
        .count();
    assert_eq!(on_disk, 0, "no shard directory was written");
    aws.shutdown().await;
}

/// An object holds the records of one period of its key's time fields, even
/// when the connector catches up on a backlog spanning several periods: the
/// key's time prefix covers every record in the object (reading the archive
/// by time relies on it). Per-second keys make the periods short.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_object_never_spans_two_periods_of_its_key() {
    let aws = LocalAws::start().await.expect("local AWS");
    let (stream, bucket) = resources::stream_and_bucket(aws.sdk_config(), 1)
        .await
        .expect("stream and bucket");
    let producer = common::producer(&aws, &stream);
    let mut sent = Vec::new();
    // A backlog over about four seconds.
    for wave in 0..4 {
        sent.extend(produce(&producer, &stream, wave * 300..(wave + 1) * 300).await);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    sent.sort();
    let template =
        "{prefix}/{yyyy}/{MM}/{dd}/{HH}/{mm}/{ss}/{stream}-{shard}-{first_seq}.jsonl{ext}";
    let buffer = tempfile::tempdir().expect("tempdir");
    let app = unique_name("periods");
    let connector = common::connector(&aws, &app, &stream, &bucket, "periods", buffer.path())
        .key_template(template)
        // Neither size nor age cuts these objects (the backlog is read at
        // once); the age only completes the last one.
        .max_object_age(Duration::from_secs(5))
        .build()
        .expect("connector");
    common::run_until_uploaded(connector, 1_200, Duration::from_secs(60)).await;
    let objects = read_archive(&aws.s3_client(), &bucket, "periods/").await;
    assert!(
        objects.len() >= 4,
        "one object per second at least: {}",
        objects.len()
    );
    let keys = KeyTemplate::new("periods", template).expect("template");
    for (key, records) in &objects {
        for record in records {
            let arrival = record.arrival().expect("arrival time");
            assert!(
                key.starts_with(&keys.time_prefix(arrival)),
                "{key} holds a record that arrived at {arrival}"
            );
        }
    }
    assert!(rows(&objects) == sent, "exactly once");
    aws.shutdown().await;
}

/// A bucket that does not exist is an error no retry fixes: after a few
/// attempts each shard's processor stops, says what to fix, and its lease is
/// released (the shard is not held silently); once the bucket exists, the
/// shards are taken again and every record is archived once (issue 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_bucket_releases_the_leases_and_recovers_once_created() {
    let aws = LocalAws::start().await.expect("local AWS");
    // moto: the embedded S3 creates a missing bucket on the first PutObject.
    let moto = integration_tests::ExternalAws::connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let s3 = moto.s3_client();
    let kinesis = aws.kinesis_client();
    let stream = unique_name("no-bucket");
    resources::create_stream(&kinesis, &stream, 2)
        .await
        .expect("stream");
    let bucket = unique_name("later");
    let mut sent = produce(&common::producer(&aws, &stream), &stream, 0..2_000).await;
    sent.sort();
    let buffer = tempfile::tempdir().expect("tempdir");
    let app = unique_name("archiver");
    let connector = common::connector(&aws, &app, &stream, &bucket, "archive", buffer.path())
        .s3_client(s3.clone())
        .max_object_age(Duration::from_millis(500))
        .consumer(|c| {
            c.failover_time = Duration::from_secs(2);
            c.shard_sync_interval = Duration::from_secs(1);
            c.idle_time_between_reads = Duration::from_millis(100);
            c.release_cooldown = Duration::from_secs(1);
        })
        .build()
        .expect("connector");
    let stats = connector.stats();
    let shutdown = connector.shutdown_handle();
    let running = tokio::spawn(connector.run());

    // Both shards fail permanently, say why, and their leases are released.
    let table = kcl::lease::LeaseTable::new(aws.dynamodb_client(), &app);
    let started = std::time::Instant::now();
    let mut released = false;
    loop {
        let failing = stats.shards_in_permanent_error();
        if failing.len() == 2 {
            assert!(
                failing
                    .iter()
                    .all(|(_, e)| e.contains("NoSuchBucket") && e.contains("check `bucket`")),
                "{failing:?}"
            );
            let leases = table.list_leases().await.expect("leases");
            released |= leases.iter().any(|l| l.lease_owner.is_none());
            if released {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the shards never failed permanently with their leases released: {:?} {}",
            stats.shards_in_permanent_error(),
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats.snapshot().records_uploaded, 0);

    resources::create_bucket(&s3, &bucket)
        .await
        .expect("bucket");
    let started = std::time::Instant::now();
    while stats.snapshot().records_uploaded < 2_000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not recovered: {}",
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.graceful().await;
    running.await.expect("join").expect("connector");
    assert!(
        stats.shards_in_permanent_error().is_empty(),
        "{:?}",
        stats.shards_in_permanent_error()
    );
    let archived = rows(&read_archive(&s3, &bucket, "archive/").await);
    assert!(archived == sent, "every record once");
    resources::delete_bucket(&s3, &bucket)
        .await
        .expect("cleanup");
    aws.shutdown().await;
}
