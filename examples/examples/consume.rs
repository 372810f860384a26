//! A consumer: a `RecordProcessor` run by the lease-based `Scheduler`.
//!
//! ```text
//! cargo run -p examples --example consume                 # embedded back ends
//! cargo run -p examples --example consume -- --use-env    # real AWS / AWS_ENDPOINT_URL_*
//! ```
//!
//! Produces 1,000 records into a 2-shard stream, then consumes them: the
//! scheduler creates the lease table, takes both shard leases, runs one
//! processor per shard, and on graceful shutdown lets each processor
//! checkpoint and hands the leases back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kcl::processor::{Checkpointer, InitializationInput, ProcessRecordsInput, RecordProcessor};
use kcl::retrieval::StartingPosition;
use kcl::scheduler::{ConsumerConfig, Scheduler};
use kpl::{Producer, UserRecord};

const RECORDS: usize = 1_000;

/// Counts records and checkpoints after every batch.
struct CountingProcessor {
    shard: String,
    consumed: Arc<AtomicUsize>,
}

impl RecordProcessor for CountingProcessor {
    async fn initialize(&mut self, input: InitializationInput) {
        println!(
            "{}: starting at {}",
            input.shard_id, input.extended_sequence_number
        );
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        if let Some(first) = input.records.first() {
            println!(
                "{}: {} records, first {}/{}: {}",
                self.shard,
                input.records.len(),
                first.sequence_number,
                first.sub_sequence_number,
                String::from_utf8_lossy(&first.data)
            );
        }
        self.consumed
            .fetch_add(input.records.len(), Ordering::Relaxed);
        if let Err(error) = checkpointer.checkpoint().await {
            eprintln!("{}: checkpoint failed: {error}", self.shard);
        }
    }

    async fn lease_lost(&mut self) {
        println!("{}: lease lost", self.shard);
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        // Children start only after this checkpoint.
        if let Err(error) = checkpointer.checkpoint_shard_end().await {
            eprintln!("{}: SHARD_END checkpoint failed: {error}", self.shard);
        }
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint().await;
        println!("{}: checkpointed at shutdown", self.shard);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    examples::init_tracing();
    let backend = examples::Backend::from_args().await?;
    println!("Using {}", backend.describe());
    let kinesis = aws_sdk_kinesis::Client::new(&backend.sdk_config);
    let stream = integration_tests::unique_name("example");
    integration_tests::resources::create_stream(&kinesis, &stream, 2).await?;

    let producer = Producer::builder()
        .sdk_config(&backend.sdk_config)
        .build()?;
    for i in 0..RECORDS {
        let record = UserRecord::new(
            &stream,
            format!("device-{}", i % 31),
            format!("reading {i}"),
        );
        // Not awaited one by one: flush_all below waits for every result.
        drop(producer.add_user_record(record).await?);
    }
    producer.flush_all().await?;
    producer.shutdown().await?;
    println!("Produced {RECORDS} records into {stream}");

    let consumed = Arc::new(AtomicUsize::new(0));
    let mut config = ConsumerConfig::new(format!("{stream}-app"), &stream, "example-worker");
    config.initial_position = StartingPosition::TrimHorizon;
    config.failover_time = Duration::from_secs(3);
    config.idle_time_between_reads = Duration::from_millis(200);
    let counter = consumed.clone();
    let scheduler = Scheduler::new(&backend.sdk_config, config, move |shard: &str| {
        CountingProcessor {
            shard: shard.to_owned(),
            consumed: counter.clone(),
        }
    });
    let shutdown = scheduler.shutdown_handle();
    let running = tokio::spawn(scheduler.run());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while consumed.load(Ordering::Relaxed) < RECORDS && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.graceful().await;
    running.await??;
    let total = consumed.load(Ordering::Relaxed);
    println!("Consumed {total} records; leases handed back.");
    integration_tests::resources::delete_stream(&kinesis, &stream).await?;
    anyhow::ensure!(total == RECORDS, "consumed {total} of {RECORDS}");
    Ok(())
}
