//! The scheduler: the worker loop that wires the roles together — shard sync
//! ([`crate::shard_sync`]), lease renewal and taking, one shard consumer
//! ([`crate::shard_consumer`]) per held lease, graceful shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, watch};
use tokio::task::{AbortHandle, JoinSet};

use crate::checkpoint::ExtendedSequenceNumber;
use crate::lease::{Lease, LeaseError, LeaseTable, LeaseTaker};
use crate::metrics as m;
use crate::processor::RecordProcessor;
use crate::retrieval::{StartingPosition, register_consumer};
use crate::shard_consumer::{self, ShardContext, Stop};
use crate::shard_sync::ShardSyncer;

/// Consumer settings. Defaults as the Java KCL's unless noted.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Application name; also the lease table's name.
    pub application_name: String,
    /// The streams to consume (one, unless built with
    /// [`ConsumerConfig::multi_stream`]).
    pub streams: Vec<String>,
    /// Use the Java KCL's multi-stream lease keys
    /// (`account:stream:creationEpoch:shardId`). Set by `multi_stream`.
    pub multi_stream: bool,
    /// This worker's id (unique among the application's workers).
    pub worker_id: String,
    /// Where shards without a checkpoint start. Default: LATEST.
    pub initial_position: StartingPosition,
    /// A lease whose counter does not move for this long is expired.
    /// Default: 10 s. Leases are renewed every third of it.
    pub failover_time: Duration,
    /// Most leases this worker holds. Default: unlimited.
    pub max_leases_per_worker: usize,
    /// Pause after a GetRecords that returned nothing. Default: 1.5 s.
    pub idle_time_between_reads: Duration,
    /// How often the shard list is synchronised into leases. Default: 60 s.
    pub shard_sync_interval: Duration,
    /// Most records per GetRecords. Default: 10,000.
    pub max_records: i32,
    /// Most fetched, unprocessed records held per shard (read-ahead bound).
    /// Default: 30,000 (three full batches, as the Java KCL's
    /// `maxPendingProcessRecordsInput`).
    pub max_prefetch_records: usize,
    /// Most fetched, unprocessed bytes held per shard. Default: 8 MiB (the
    /// Java KCL's `maxByteSize`).
    pub max_prefetch_bytes: usize,
    /// How records are read. Default: polling (enhanced fan-out costs extra
    /// per consumer and shard-hour; choose it for lower latency or when
    /// several applications read the same stream).
    pub retrieval: RetrievalMode,
    /// Call `process_records` also when a read returned no records, so a
    /// processor can act on time (flush a buffer by age) on an idle shard.
    /// Default: false (the Java KCL's `callProcessRecordsEvenForEmptyRecordList`).
    pub process_empty_batches: bool,
}

/// How a consumer reads its shards.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RetrievalMode {
    /// GetRecords polling, shared 2 MB/s per shard with other readers.
    #[default]
    Polling,
    /// Enhanced fan-out through a registered stream consumer of this name
    /// (registered at start if missing): 2 MB/s per shard of its own.
    FanOut {
        /// The stream consumer's name.
        consumer_name: String,
    },
}

impl ConsumerConfig {
    /// Settings with the defaults.
    pub fn new(
        application_name: impl Into<String>,
        stream_name: impl Into<String>,
        worker_id: impl Into<String>,
    ) -> Self {
        Self {
            application_name: application_name.into(),
            streams: vec![stream_name.into()],
            multi_stream: false,
            worker_id: worker_id.into(),
            initial_position: StartingPosition::Latest,
            failover_time: Duration::from_secs(10),
            max_leases_per_worker: usize::MAX,
            idle_time_between_reads: Duration::from_millis(1_500),
            shard_sync_interval: Duration::from_secs(60),
            max_records: 10_000,
            max_prefetch_records: 30_000,
            max_prefetch_bytes: 8 << 20,
            retrieval: RetrievalMode::Polling,
            process_empty_batches: false,
        }
    }

    /// Settings for an application that consumes several streams, with the
    /// Java KCL's multi-stream lease keys.
    pub fn multi_stream(
        application_name: impl Into<String>,
        streams: impl IntoIterator<Item = impl Into<String>>,
        worker_id: impl Into<String>,
    ) -> Self {
        let mut config = Self::new(application_name, String::new(), worker_id);
        config.streams = streams.into_iter().map(Into::into).collect();
        config.multi_stream = true;
        config
    }
}

/// Errors that stop the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The lease table could not be used.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The enhanced fan-out consumer could not be registered.
    #[error(transparent)]
    Retrieval(#[from] crate::retrieval::RetrievalError),
}

struct Held {
    lease: Arc<Mutex<Lease>>,
    stop: watch::Sender<Stop>,
    task: Option<AbortHandle>,
}

/// Asks a running scheduler to shut down gracefully.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    request: Arc<watch::Sender<bool>>,
    done: watch::Receiver<bool>,
}

impl ShutdownHandle {
    /// Calls `shutdown_requested` on every processor, releases the leases,
    /// and resolves when the scheduler has stopped.
    pub async fn graceful(&self) {
        let _ = self.request.send(true);
        let mut done = self.done.clone();
        let _ = done.wait_for(|done| *done).await;
    }
}

/// Runs record processors on the shards this worker holds leases for.
///
/// ```no_run
/// # use kcl::processor::*;
/// # struct P; impl RecordProcessor for P {
/// #   async fn initialize(&mut self, _: InitializationInput) {}
/// #   async fn process_records(&mut self, _: ProcessRecordsInput, _: &mut Checkpointer) {}
/// #   async fn lease_lost(&mut self) {}
/// #   async fn shard_ended(&mut self, c: &mut Checkpointer) { let _ = c.checkpoint_shard_end().await; }
/// #   async fn shutdown_requested(&mut self, _: &mut Checkpointer) {}
/// # }
/// # async fn demo(sdk_config: aws_config::SdkConfig) {
/// use kcl::scheduler::{ConsumerConfig, Scheduler};
/// let config = ConsumerConfig::new("my-app", "orders", "worker-1");
/// let scheduler = Scheduler::new(&sdk_config, config, |_shard: &str| P);
/// let shutdown = scheduler.shutdown_handle();
/// let running = tokio::spawn(scheduler.run());
/// shutdown.graceful().await;
/// # let _ = running.await; }
/// ```
pub struct Scheduler<F> {
    config: ConsumerConfig,
    kinesis: aws_sdk_kinesis::Client,
    table: LeaseTable,
    factory: Arc<F>,
    shutdown_request: Arc<watch::Sender<bool>>,
    shutdown_done: watch::Sender<bool>,
}

impl<F, P> Scheduler<F>
where
    F: Fn(&str) -> P + Send + Sync + 'static,
    P: RecordProcessor,
{
    /// A scheduler using clients built from `sdk_config`.
    pub fn new(sdk_config: &aws_config::SdkConfig, config: ConsumerConfig, factory: F) -> Self {
        let table = LeaseTable::new(
            aws_sdk_dynamodb::Client::new(sdk_config),
            &config.application_name,
        );
        Self {
            kinesis: aws_sdk_kinesis::Client::new(sdk_config),
            table,
            config,
            factory: Arc::new(factory),
            shutdown_request: Arc::new(watch::channel(false).0),
            shutdown_done: watch::channel(false).0,
        }
    }

    /// A handle to shut the scheduler down gracefully.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            request: self.shutdown_request.clone(),
            done: self.shutdown_done.subscribe(),
        }
    }

    /// Runs until a graceful shutdown is requested (or the table fails).
    pub async fn run(self) -> Result<(), ConsumerError> {
        let result = self.run_inner().await;
        let _ = self.shutdown_done.send(true);
        result
    }

    async fn run_inner(&self) -> Result<(), ConsumerError> {
        self.table.create_if_missing().await?;
        let mut consumer_arns = HashMap::new();
        if let RetrievalMode::FanOut { consumer_name } = &self.config.retrieval {
            for stream in &self.config.streams {
                let arn = register_consumer(&self.kinesis, stream, consumer_name).await?;
                consumer_arns.insert(stream.clone(), arn);
            }
        }
        let renew_every = self.config.failover_time / 3;
        let mut taker = LeaseTaker::new(
            &self.config.worker_id,
            self.config.failover_time,
            self.config.max_leases_per_worker,
        );
        let mut held: HashMap<String, Held> = HashMap::new();
        // Owns every shard task: if this future is dropped (an abrupt stop),
        // they stop too, and their leases expire for other workers to take.
        let mut tasks: JoinSet<()> = JoinSet::new();
        // Tasks of lost leases that have not stopped yet.
        let mut stopping: HashMap<String, AbortHandle> = HashMap::new();
        let mut last_sync: Option<Instant> = None;
        let mut shutdown = self.shutdown_request.subscribe();
        let mut tick = tokio::time::interval(renew_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            if last_sync.is_none_or(|at| at.elapsed() >= self.config.shard_sync_interval) {
                match self.shard_syncer().sync(&self.config.streams).await {
                    Ok(()) => last_sync = Some(Instant::now()),
                    Err(error) => tracing::warn!(%error, "shard sync failed"),
                }
            }
            while tasks.try_join_next().is_some() {}
            if let Err(error) = self
                .maintain(
                    &mut taker,
                    &mut held,
                    &mut tasks,
                    &consumer_arns,
                    &mut stopping,
                )
                .await
            {
                tracing::warn!(%error, "lease maintenance failed");
            }
        }
        // Graceful: let every processor checkpoint, then hand the leases over.
        for held_lease in held.values() {
            let _ = held_lease.stop.send(Stop::Shutdown);
        }
        while tasks.join_next().await.is_some() {}
        for (_, held_lease) in held.drain() {
            let mut lease = held_lease.lease.lock().await;
            let _ = self.table.evict(&mut lease, &self.config.worker_id).await;
        }
        Ok(())
    }

    /// Renews held leases, takes new ones, starts shard workers whose parents
    /// are done, and cleans up finished leases.
    async fn maintain(
        &self,
        taker: &mut LeaseTaker,
        held: &mut HashMap<String, Held>,
        tasks: &mut JoinSet<()>,
        consumer_arns: &HashMap<String, String>,
        stopping: &mut HashMap<String, AbortHandle>,
    ) -> Result<(), LeaseError> {
        let worker = self.config.worker_id.as_str();
        // Renew; drop what was lost or finished.
        let mut gone = Vec::new();
        let mut lost = Vec::new();
        for (key, held_lease) in held.iter() {
            let finished = held_lease
                .task
                .as_ref()
                .is_some_and(AbortHandle::is_finished);
            let mut lease = held_lease.lease.lock().await;
            if finished {
                // The processor ended (shard end, lease lost, or it gave the
                // lease back): release it, to be taken again if unfinished.
                let _ = self.table.evict(&mut lease, worker).await;
                gone.push(key.clone());
            } else if !self.table.renew(&mut lease, worker).await? {
                tracing::info!(lease = %key, %worker, "lease lost");
                metrics::counter!(m::LEASES_LOST).increment(1);
                let _ = held_lease.stop.send(Stop::LeaseLost);
                lost.push(key.clone());
            }
        }
        for key in gone {
            held.remove(&key);
        }
        // A lost lease's processor may still be finishing a batch: never run
        // a second one for the same shard until it has stopped.
        for key in lost {
            if let Some(Held {
                task: Some(task), ..
            }) = held.remove(&key)
            {
                stopping.insert(key, task);
            }
        }
        stopping.retain(|_, task| !task.is_finished());

        let scan = self.table.scan().await?;
        let leases = scan.leases;
        let plan = taker.plan(&leases, Instant::now());
        for key in plan.take.into_iter().chain(plan.steal) {
            if stopping.contains_key(&key) {
                continue;
            }
            let Some(lease) = leases.iter().find(|l| l.lease_key == key) else {
                continue;
            };
            let mut lease = lease.clone();
            if self.table.take(&mut lease, worker).await? {
                tracing::info!(lease = %key, %worker, "lease taken");
                metrics::counter!(m::LEASES_TAKEN).increment(1);
                let (stop, _) = watch::channel(Stop::Run);
                held.insert(
                    key,
                    Held {
                        lease: Arc::new(Mutex::new(lease)),
                        stop,
                        task: None,
                    },
                );
            }
        }

        metrics::gauge!(m::LEASES_HELD).set(held.len() as f64);

        // Start the shards whose parents have finished (a parent without a
        // lease is done or was never to be read; an unreadable one is not
        // known to be done).
        let finished = |key: &str| {
            !scan.unreadable.iter().any(|k| k == key)
                && leases
                    .iter()
                    .find(|l| l.lease_key == key)
                    .is_none_or(|l| l.checkpoint == ExtendedSequenceNumber::SHARD_END)
        };
        for held_lease in held.values_mut() {
            if held_lease.task.is_some() {
                continue;
            }
            let lease = held_lease.lease.lock().await.clone();
            if lease
                .parent_shard_ids
                .iter()
                .all(|parent| finished(&lease.sibling_key(parent)))
            {
                let stream = self.stream_of(&lease);
                let processor = (self.factory)(&lease.lease_key);
                let context = ShardContext {
                    table: self.table.clone(),
                    lease: held_lease.lease.clone(),
                    kinesis: self.kinesis.clone(),
                    config: self.config.clone(),
                    consumer_arn: consumer_arns.get(&stream).cloned(),
                    stream,
                };
                let task = tasks.spawn(shard_consumer::run(
                    processor,
                    context,
                    held_lease.stop.subscribe(),
                ));
                held_lease.task = Some(task);
            }
        }

        // Delete finished leases once all their children have started.
        for lease in leases.iter().filter(|l| {
            l.checkpoint == ExtendedSequenceNumber::SHARD_END && l.lease_owner.is_none()
        }) {
            let children_started = !lease.child_shard_ids.is_empty()
                && lease.child_shard_ids.iter().all(|child| {
                    leases
                        .iter()
                        .find(|l| l.lease_key == lease.sibling_key(child))
                        .is_some_and(|l| {
                            l.checkpoint.sequence_number().is_some()
                                || l.checkpoint == ExtendedSequenceNumber::SHARD_END
                        })
                });
            if children_started {
                self.table.delete_lease(lease).await?;
            }
        }
        Ok(())
    }

    fn shard_syncer(&self) -> ShardSyncer {
        ShardSyncer::new(
            self.kinesis.clone(),
            self.table.clone(),
            self.config.initial_position,
            self.config.multi_stream,
        )
    }

    /// The stream a lease belongs to.
    fn stream_of(&self, lease: &Lease) -> String {
        lease
            .stream()
            .map(str::to_owned)
            .or_else(|| self.config.streams.first().cloned())
            .unwrap_or_default()
    }
}
