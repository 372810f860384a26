//! Throughput of the journal and the connector.
//!
//! `cargo bench -p connector-s3 --bench journal` runs three measurements and
//! prints one line each (median of `RUNS` runs):
//!
//! 1. `wal`: the journal's write path on one core — 100-byte records encoded
//!    into batches, gzip-compressed, checksummed and appended to the
//!    write-ahead log with one fsync per batch (the group commit).
//! 2. `journal`: the whole `Journal` (batching, log, uploads) against the
//!    embedded S3, from the first `put` to `close` returning.
//! 3. `connector`: records already in a 4-shard embedded Kinesis stream,
//!    archived by the connector (read, deaggregate, JSON lines, gzip, log,
//!    upload, checkpoint), from start to the last upload.

use std::time::{Duration, Instant};

use connector_s3::buffer::{Buffer, DiskBuffer, EntryMeta};
use connector_s3::compress::Compression;
use connector_s3::connector::S3Connector;
use connector_s3::journal::{Journal, JournalConfig};
use integration_tests::{LocalAws, resources, unique_name};

const RUNS: usize = 3;

/// 100-byte records with realistic variety (ids, a timestamp, a level).
fn record(i: u64) -> Vec<u8> {
    let mut line = format!(
        "{{\"id\":{i},\"ts\":{},\"user\":\"u{:05}\",\"lvl\":\"{}\",\"msg\":\"",
        1_700_000_000_000u64 + i * 7,
        i.wrapping_mul(2_654_435_761) % 100_000,
        ["info", "warn", "debug"][(i % 3) as usize]
    )
    .into_bytes();
    while line.len() < 98 {
        line.push(b'a' + (i.wrapping_mul(line.len() as u64 + 31) % 26) as u8);
    }
    line.extend_from_slice(b"\"}");
    line.truncate(100);
    line
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// The write path alone, on the calling thread.
fn wal(records: u64, batch: u64) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut buffer, _) = DiskBuffer::open(dir.path(), true).expect("buffer");
    let compression = Compression::GZIP;
    let started = Instant::now();
    let mut raw = Vec::with_capacity((batch * 101) as usize);
    let mut written = 0;
    while written < records {
        raw.clear();
        for i in written..(written + batch).min(records) {
            raw.extend_from_slice(&record(i));
            raw.push(b'\n');
        }
        let body = compression.compress(&raw).expect("gzip");
        let meta = EntryMeta {
            items: batch,
            raw_bytes: raw.len() as u64,
            records: batch,
            ..Default::default()
        };
        buffer.append(vec![(meta, body)]).expect("append");
        written += batch;
        if buffer.current().is_some_and(|c| c.bytes > 64 << 20) {
            let sealed = buffer.seal().expect("seal").expect("object");
            buffer.release(&sealed).expect("release");
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    (
        records as f64 / seconds,
        records as f64 * 100.0 / seconds / 1e6,
    )
}

async fn journal(aws: &LocalAws, records: u64) -> f64 {
    let bucket = unique_name("bench");
    resources::create_bucket(&aws.s3_client(), &bucket)
        .await
        .expect("bucket");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = JournalConfig::builder()
        .sdk_config(aws.sdk_config())
        .bucket(&bucket)
        .directory(dir.path())
        .id("bench")
        .build()
        .expect("config");
    let entries: Vec<bytes::Bytes> = (0..records).map(|i| record(i).into()).collect();
    let started = Instant::now();
    let journal = Journal::open(config).await.expect("open");
    for entry in entries {
        journal.put(entry).await.expect("put");
    }
    let stats = journal.close().await.expect("close");
    assert_eq!(stats.uploaded, records);
    records as f64 / started.elapsed().as_secs_f64()
}

async fn connector(aws: &LocalAws, stream: &str, records: u64, compression: Compression) -> f64 {
    let bucket = unique_name("bench");
    resources::create_bucket(&aws.s3_client(), &bucket)
        .await
        .expect("bucket");
    let dir = tempfile::tempdir().expect("tempdir");
    let connector = S3Connector::builder()
        .sdk_config(aws.sdk_config())
        .application_name(unique_name("bench"))
        .stream(stream)
        .bucket(&bucket)
        .buffer_dir(dir.path())
        .compression(compression)
        .max_object_age(Duration::from_secs(5))
        .consumer(|c| c.idle_time_between_reads = Duration::from_millis(100))
        .build()
        .expect("connector");
    let stats = connector.stats();
    let shutdown = connector.shutdown_handle();
    let started = Instant::now();
    let running = tokio::spawn(connector.run());
    while stats.snapshot().records_in < records {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Everything read: the rest is the final uploads.
    shutdown.graceful().await;
    let elapsed = started.elapsed().as_secs_f64();
    running.await.expect("join").expect("connector");
    assert_eq!(stats.snapshot().records_uploaded, records);
    records as f64 / elapsed
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wants = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    if wants("wal") {
        let runs: Vec<(f64, f64)> = (0..RUNS).map(|_| wal(2_000_000, 10_000)).collect();
        println!(
            "wal: 100-byte records, gzip-6, crc32c, fsync per 10,000-record batch, one core: median {:.0} records/s, {:.1} MB/s",
            median(runs.iter().map(|r| r.0).collect()),
            median(runs.iter().map(|r| r.1).collect()),
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let aws = LocalAws::start().await.expect("local AWS");
        if wants("journal") {
            let mut runs = Vec::new();
            for _ in 0..RUNS {
                runs.push(journal(&aws, 1_000_000).await);
            }
            println!(
                "journal: 1,000,000 100-byte records, put to close (uploads included): median {:.0} records/s",
                median(runs)
            );
        }
        if wants("connector") {
            let stream = unique_name("bench");
            resources::create_stream(&aws.kinesis_client(), &stream, 4)
                .await
                .expect("stream");
            let producer = kpl::Producer::builder()
                .sdk_config(aws.sdk_config())
                .streams([stream.clone()])
                .build()
                .expect("producer");
            let records = 500_000u64;
            let mut pending = Vec::new();
            for i in 0..records {
                pending.push(
                    producer
                        .add_user_record(kpl::UserRecord::new(&stream, format!("pk-{i}"), record(i)))
                        .await
                        .expect("accepted"),
                );
            }
            for result in pending {
                result.await.expect("stored");
            }
            for (name, compression) in [("gzip-6", Compression::GZIP), ("zstd-3", Compression::ZSTD), ("gzip-1", Compression::Gzip { level: 1 })] {
                let mut runs = Vec::new();
                for _ in 0..RUNS {
                    runs.push(connector(&aws, &stream, records, compression).await);
                }
                println!(
                    "connector ({name}): 500,000 100-byte records in 4 shards (KPL-aggregated) to S3: median {:.0} records/s",
                    median(runs)
                );
            }
        }
    });
}
