//! A `kcl` consumer that only counts, as `KclConsumer --count N` (the Java
//! KCL's harness in `interop/java/kcl`) and `python/kclrs_count.py` do: the
//! process the consumer benchmark (`benches/consumer_peers.rs`) measures
//! beside theirs. Polling, TRIM_HORIZON, a checkpoint after each batch.
//!
//! `kcl_count STREAM APP N [IDLE_MS]`; endpoints, region and credentials
//! the standard way. Once N records were delivered it prints
//! `{"event":"drained","records":N,"seconds_to_first":..,"seconds_to_all":..}`
//! (seconds since it started), shuts down gracefully and exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kcl::processor::*;
use kcl::retrieval::StartingPosition;
use kcl::scheduler::{ConsumerConfig, Scheduler};

struct Counter {
    count: Arc<AtomicU64>,
}

impl RecordProcessor for Counter {
    async fn initialize(&mut self, _: InitializationInput) {}
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        self.count
            .fetch_add(input.records.len() as u64, Ordering::Relaxed);
        let _ = checkpointer.checkpoint().await;
    }
    async fn lease_lost(&mut self) {}
    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint_shard_end().await;
    }
    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint().await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [stream, app, target, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: kcl_count STREAM APP N [IDLE_MS]");
    };
    let target: u64 = target.parse()?;
    let idle: u64 = rest.first().map(|v| v.parse()).transpose()?.unwrap_or(200);
    let sdk_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let mut config = ConsumerConfig::new(app, stream, format!("kcl-count-{}", std::process::id()));
    config.initial_position = StartingPosition::TrimHorizon;
    config.idle_time_between_reads = Duration::from_millis(idle);
    config.shard_sync_interval = Duration::from_secs(1);
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    let scheduler = Scheduler::new(&sdk_config, config, move |_: &str| Counter {
        count: counted.clone(),
    });
    let shutdown = scheduler.shutdown_handle();
    let running = tokio::spawn(scheduler.run());
    let mut first = None;
    loop {
        let now = count.load(Ordering::Relaxed);
        if now > 0 && first.is_none() {
            first = Some(started.elapsed());
        }
        if now >= target {
            println!(
                r#"{{"event":"drained","records":{now},"seconds_to_first":{:.3},"seconds_to_all":{:.3}}}"#,
                first.unwrap_or_default().as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.graceful().await;
    running.await??;
    Ok(())
}
