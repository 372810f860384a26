//! The S3 connector (in-process) under faults: S3 down, a full buffer disk
//! (issue 12). The run of two connector processes while a fifth of every
//! call fails is in `connector-s3/tests/binary.rs`.

use std::time::{Duration, Instant};

use connector_s3::compress::Compression;
use connector_s3::transform::JsonRecord;
use integration_tests::fault_proxy::FaultCounts;
use integration_tests::{Endpoints, FaultProxy, Faults, LocalAws, resources, unique_name};
use kpl::UserRecord;

mod common;

/// Every (shard, sequence, sub-sequence, data) archived under `prefix`.
async fn archived(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Vec<(String, String, u64, Vec<u8>)> {
    let mut rows = Vec::new();
    for key in resources::list_keys(s3, bucket, prefix)
        .await
        .expect("list")
    {
        let body = resources::get_object(s3, bucket, &key).await.expect("get");
        let text = Compression::from_key(&key)
            .decompress_all(&body)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        for line in String::from_utf8(text).expect("utf-8").lines() {
            let record: JsonRecord = serde_json::from_str(line).expect("a JSON line");
            rows.push((
                record.shard_id.clone(),
                record.sequence_number.clone(),
                record.sub_sequence_number,
                record.payload().expect("payload"),
            ));
        }
    }
    rows.sort();
    rows
}

/// Produces `count` records with `kpl` (partition keys `k{i % keys}`, data
/// from `data(i)`); returns (shard, sequence, sub-sequence, data), sorted.
async fn produce(
    aws: &LocalAws,
    stream: &str,
    count: usize,
    keys: usize,
    data: impl Fn(usize) -> Vec<u8>,
) -> Vec<(String, String, u64, Vec<u8>)> {
    let producer = common::producer(aws, stream);
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        let data = data(i);
        pending.push((
            data.clone(),
            producer
                .add_user_record(UserRecord::new(stream, format!("k{}", i % keys), data))
                .await
                .expect("accepted"),
        ));
    }
    let mut sent = Vec::with_capacity(count);
    for (data, result) in pending {
        let result = result.await.expect("stored");
        sent.push((
            result.shard_id,
            result.sequence_number,
            result.sub_sequence_number,
            data,
        ));
    }
    producer.shutdown().await.expect("producer shutdown");
    sent.sort();
    sent
}

/// Once S3 answers again: waits until `records` are uploaded (2 minutes at
/// most), stops the connector gracefully, and returns the archive's rows.
async fn finish_after_s3_returns(
    stats: &connector_s3::connector::ConnectorStats,
    shutdown: kcl::scheduler::ShutdownHandle,
    task: tokio::task::JoinHandle<Result<(), connector_s3::connector::ConnectorError>>,
    records: usize,
    aws: &LocalAws,
    bucket: &str,
) -> Vec<(String, String, u64, Vec<u8>)> {
    let started = Instant::now();
    while (stats.snapshot().records_uploaded as usize) < records {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not archived after S3 came back: {}",
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.graceful().await;
    task.await.expect("join").expect("connector");
    archived(&aws.s3_client(), bucket, "archive/").await
}

/// S3 down (every call refused with a 5xx) for a while: the connector keeps
/// reading only until its buffer bound, holds what it read on disk, and
/// uploads it all once S3 is back — nothing lost, nothing twice (issue 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_down_pauses_reading_at_the_buffer_bound_and_loses_nothing() {
    const RECORDS: usize = 100_000;
    let aws = LocalAws::start().await.expect("local AWS");
    let (stream, bucket) = resources::stream_and_bucket(aws.sdk_config(), 2)
        .await
        .expect("stream and bucket");
    let s3 = FaultProxy::start(&aws.endpoints().s3, Faults::default())
        .await
        .expect("proxy");
    let down = Faults {
        every_call: true,
        fail: 1.0,
        ..Faults::default()
    };
    s3.set_faults(down);
    let sent = produce(&aws, &stream, RECORDS, 97, |i| {
        // Enough that the records exceed the buffer bound many times over.
        format!(
            "{i:06}-{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        )
        .repeat(4)
        .into_bytes()
    })
    .await;

    let buffer = tempfile::tempdir().expect("dir");
    let s3_config = Endpoints {
        s3: s3.url().to_owned(),
        ..aws.endpoints().clone()
    }
    .sdk_config();
    let connector = common::connector(
        &aws,
        &unique_name("app"),
        &stream,
        &bucket,
        "archive",
        buffer.path(),
    )
    .s3_client(integration_tests::embedded::s3_client(&s3_config))
    .max_buffered_bytes(1 << 20)
    .max_object_bytes(256 << 10)
    .max_object_age(Duration::from_secs(1))
    .build()
    .expect("connector");
    let stats = connector.stats();
    let shutdown = connector.shutdown_handle();
    let task = tokio::spawn(connector.run());

    // While S3 is down: reading stops short of the whole stream, and the
    // buffered bytes stay within the bound.
    let down_for = Instant::now();
    let mut peak = 0;
    while down_for.elapsed() < Duration::from_secs(8) {
        let snapshot = stats.snapshot();
        peak = peak.max(snapshot.buffered_bytes);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let paused = stats.snapshot();
    assert_eq!(paused.records_uploaded, 0, "{paused}");
    assert!(paused.records_in > 0, "{paused}");
    assert!(
        (paused.records_in as usize) < RECORDS,
        "reading did not pause: {paused}"
    );
    assert!(
        peak <= 1 << 20,
        "buffered {peak} bytes over the 1 MiB bound"
    );
    let failed_calls = FaultCounts::get(&s3.counts().failed);

    s3.set_faults(Faults::default());
    let rows = finish_after_s3_returns(&stats, shutdown, task, RECORDS, &aws, &bucket).await;
    eprintln!(
        "Reliability: S3 down 8 s: {failed_calls} S3 calls refused, read {} of {RECORDS} records while down, peak buffered {peak} bytes (bound 1 MiB); after: {} archived in {} bytes",
        paused.records_in,
        rows.len(),
        stats.snapshot().bytes_uploaded
    );
    assert!(rows == sent, "every record once");
    aws.shutdown().await;
}

/// A small filesystem, mounted for the test (tmpfs; needs root) and
/// unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("mount -t tmpfs exited with {status}"));
        }
        Ok(Self { dir })
    }

    fn free_bytes(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.dir.path())
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(u64::MAX)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a failed test may still hold files open in it.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The buffer's disk fills up (S3 down, a 640 KiB filesystem under a 1 MiB
/// buffer bound): writes fail with ENOSPC, reading pauses and retries,
/// nothing crashes; once S3 is back, space frees and every record is
/// archived once (issue 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_buffer_disk_pauses_reading_and_loses_nothing() {
    const RECORDS: usize = 30_000;
    let disk = match SmallDisk::mount("640k") {
        Ok(disk) => disk,
        Err(error) => {
            panic!("this test mounts a small tmpfs and needs root (CI runs as root): {error}")
        }
    };
    let aws = LocalAws::start().await.expect("local AWS");
    let (stream, bucket) = resources::stream_and_bucket(aws.sdk_config(), 2)
        .await
        .expect("stream and bucket");
    let s3 = FaultProxy::start(&aws.endpoints().s3, Faults::default())
        .await
        .expect("proxy");
    s3.set_faults(Faults {
        every_call: true,
        fail: 1.0,
        ..Faults::default()
    });
    let sent = produce(&aws, &stream, RECORDS, 97, |i| {
        let random: String = (0..16)
            .map(|_| format!("{:016x}", rand::random::<u64>()))
            .collect();
        format!("{i:06}-{random}").into_bytes()
    })
    .await;

    let s3_config = Endpoints {
        s3: s3.url().to_owned(),
        ..aws.endpoints().clone()
    }
    .sdk_config();
    let connector = common::connector(
        &aws,
        &unique_name("app"),
        &stream,
        &bucket,
        "archive",
        disk.dir.path(),
    )
    .s3_client(integration_tests::embedded::s3_client(&s3_config))
    .max_buffered_bytes(1 << 20)
    .max_object_bytes(512 << 10)
    .max_object_age(Duration::from_secs(3))
    .consumer(|c| {
        c.failover_time = Duration::from_secs(2);
        c.shard_sync_interval = Duration::from_secs(1);
        c.idle_time_between_reads = Duration::from_millis(100);
        c.max_records = 500;
        c.max_prefetch_records = 1_000;
    })
    .build()
    .expect("connector");
    let stats = connector.stats();
    let shutdown = connector.shutdown_handle();
    let task = tokio::spawn(connector.run());

    let mut least_free = u64::MAX;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        least_free = least_free.min(disk.free_bytes());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let full = stats.snapshot();
    assert_eq!(full.records_uploaded, 0, "{full}");
    assert!((full.records_in as usize) < RECORDS, "{full}");
    assert!(!task.is_finished(), "the connector keeps running");

    s3.set_faults(Faults::default());
    let rows = finish_after_s3_returns(&stats, shutdown, task, RECORDS, &aws, &bucket).await;
    eprintln!(
        "Reliability: buffer disk 640 KiB, S3 down 6 s: least free {least_free} bytes, read {} of {RECORDS} records meanwhile; after: {} archived",
        full.records_in,
        rows.len()
    );
    assert!(rows == sent, "every record once");
    aws.shutdown().await;
}
