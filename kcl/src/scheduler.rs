//! The scheduler: the worker loop that wires the roles together — shard sync
//! ([`crate::shard_sync`]), lease renewal and taking, one shard consumer
//! ([`crate::shard_consumer`]) per held lease, graceful shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::checkpoint::ExtendedSequenceNumber;
use crate::fleet::{Fleet, FleetState, Layout, LeaderWatch};
use crate::lease::{Lease, LeaseError, LeaseScan, LeaseTable};
use crate::lease_coordinator::{LeaseCoordinator, Timings};
use crate::processor::RecordProcessor;
use crate::retrieval::{StartingPosition, register_consumer};
use crate::shard_consumer::{self, ShardContext, Stop};
use crate::shard_sync::{self, ShardSyncer};
use crate::timeouts::ApiTimeouts;

/// The fleet's KCL 3.x state as a background task sees it: whether a Java
/// leader assigns the leases now (client version 3.x and its lock alive).
/// Its task publishes this worker's metrics row too, and is aborted when
/// the monitor is dropped.
struct FleetMonitor {
    /// `None` until the first look at the fleet.
    follow: watch::Receiver<Option<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl FleetMonitor {
    fn spawn(fleet: Fleet, table: LeaseTable, every: Duration) -> Self {
        let (tx, follow) = watch::channel(None);
        let task = tokio::spawn(async move {
            let mut watch = LeaderWatch::default();
            let mut layout_seen = None;
            let mut tick = 0u64;
            let mut known: Option<FleetState> = None;
            loop {
                // The migration state changes rarely: read every 5th tick
                // (the metrics row and the leader's liveness every tick).
                let state = match known.clone().filter(|_| !tick.is_multiple_of(5)) {
                    Some(state) => Ok(state),
                    None => fleet.state().await,
                };
                tick += 1;
                match state {
                    Ok(state) => {
                        known = Some(state.clone());
                        table.tag_new_leases(state.layout == Layout::LeaseTable);
                        if layout_seen.as_ref() != Some(&state) {
                            tracing::info!(layout = ?state.layout, version = ?state.version, "fleet state");
                            layout_seen = Some(state.clone());
                        }
                        if let Err(error) = fleet.publish_metrics(&state.layout).await {
                            tracing::warn!(%error, "publishing this worker's metrics row failed");
                        }
                        let alive = match fleet.leader(&state.layout).await {
                            Ok(leader) => watch.observe(leader, Instant::now()),
                            Err(_) => false,
                        };
                        let _ = tx.send(Some(state.version.leader_assigns() && alive));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "reading the fleet's state failed");
                        // Not known: as a 2.x fleet (the taker), but known.
                        tx.send_if_modified(|follow| {
                            let first = follow.is_none();
                            follow.get_or_insert(false);
                            first
                        });
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
        Self { follow, task }
    }

    fn follow_leader(&self) -> bool {
        self.follow.borrow().unwrap_or(false)
    }

    /// Waits (at most `bound`) for the first look at the fleet, so that a
    /// worker joining a fleet whose Java leader assigns the leases does not
    /// take any on its own first.
    async fn ready(&mut self, bound: Duration) {
        let _ = tokio::time::timeout(bound, self.follow.wait_for(Option::is_some)).await;
    }
}

impl Drop for FleetMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Consecutive lease-table passes (one every third of the failover time)
/// failing with an error no retry fixes (the table deleted, access denied)
/// before the scheduler stops and returns it: its leases are fenced by then,
/// so it processes nothing, and an operator must act.
const PERMANENT_PASSES: usize = 5;

/// Attempts to create or describe the lease table at start.
const CREATE_ATTEMPTS: usize = 10;

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
    /// Default: 10 s. Leases are renewed every third of it; a lease this
    /// worker could not renew for three quarters of it is given up (its
    /// processor gets `lease_lost`) before another worker can take it.
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
    /// How long this worker leaves a lease to others after releasing it
    /// because its processor ended without finishing the shard (it gave the
    /// lease back, or panicked — then the pause doubles with each
    /// consecutive panic, up to 32 times this). Default: 10 s.
    pub release_cooldown: Duration,
    /// Longest graceful shutdown: processors' `shutdown_requested` and the
    /// release of the leases. On time-out the processors are stopped where
    /// they are (no record is lost: checkpoints never pass unprocessed
    /// records) and the leases expire. Default: 30 s.
    pub shutdown_timeout: Duration,
    /// How long the lease table must keep failing with an error no retry
    /// fixes (deleted, access denied) — and on at least 5 passes in a row —
    /// before [`Scheduler::run`] stops with it: long enough to ride out an
    /// IAM change that is still propagating. Default: 60 s.
    pub lease_table_error_grace: Duration,
    /// How often this worker refreshes its `WorkerMetricStats` row and looks
    /// at the fleet's KCL 3.x state (client version, leader lock), in a
    /// table a Java KCL 3.x fleet uses; nothing is written to a KCL 2.x
    /// table. Default: 30 s ([`crate::fleet::METRICS_INTERVAL`], the Java
    /// KCL 3.x's own period).
    pub fleet_interval: Duration,
    /// Timeouts of the lease table's client. Default:
    /// [`ApiTimeouts::DYNAMODB`] (connect 3 s, attempt 5 s, operation 15 s).
    pub dynamodb_timeouts: ApiTimeouts,
    /// Timeouts of the Kinesis client. Default: [`ApiTimeouts::KINESIS`]
    /// (connect 3 s, attempt 10 s, operation 30 s).
    pub kinesis_timeouts: ApiTimeouts,
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
            release_cooldown: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            lease_table_error_grace: Duration::from_secs(60),
            fleet_interval: crate::fleet::METRICS_INTERVAL,
            dynamodb_timeouts: ApiTimeouts::DYNAMODB,
            kinesis_timeouts: ApiTimeouts::KINESIS,
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
    /// A scheduler using clients built from `sdk_config`, with the
    /// timeouts of [`ConsumerConfig::dynamodb_timeouts`] and
    /// [`ConsumerConfig::kinesis_timeouts`] where `sdk_config` sets none.
    pub fn new(sdk_config: &aws_config::SdkConfig, config: ConsumerConfig, factory: F) -> Self {
        let kinesis = aws_sdk_kinesis::Client::new(&config.kinesis_timeouts.apply(sdk_config));
        let dynamodb = aws_sdk_dynamodb::Client::new(&config.dynamodb_timeouts.apply(sdk_config));
        Self::with_clients(kinesis, dynamodb, config, factory)
    }

    /// A scheduler using the caller's clients as they are (their endpoints,
    /// credentials and timeouts; [`ConsumerConfig::dynamodb_timeouts`] and
    /// [`ConsumerConfig::kinesis_timeouts`] are not applied): for a Kinesis
    /// and a lease table reached through different endpoints or accounts.
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
    /// # fn demo(sdk_config: aws_config::SdkConfig) {
    /// use kcl::scheduler::{ConsumerConfig, Scheduler};
    /// use kcl::timeouts::ApiTimeouts;
    /// let kinesis = aws_sdk_kinesis::Client::from_conf(
    ///     aws_sdk_kinesis::config::Builder::from(&ApiTimeouts::KINESIS.apply(&sdk_config))
    ///         .endpoint_url("https://kinesis.eu-west-1.amazonaws.com")
    ///         .build(),
    /// );
    /// let dynamodb = aws_sdk_dynamodb::Client::new(&ApiTimeouts::DYNAMODB.apply(&sdk_config));
    /// let config = ConsumerConfig::new("my-app", "orders", "worker-1");
    /// let scheduler = Scheduler::with_clients(kinesis, dynamodb, config, |_shard: &str| P);
    /// # }
    /// ```
    pub fn with_clients(
        kinesis: aws_sdk_kinesis::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        config: ConsumerConfig,
        factory: F,
    ) -> Self {
        let table = LeaseTable::new(dynamodb, &config.application_name);
        Self {
            kinesis,
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

    /// Runs until a graceful shutdown is requested.
    ///
    /// # Errors
    /// [`ConsumerError::Lease`] when the lease table cannot be created at
    /// start, or keeps failing with an error no retry fixes (deleted, access
    /// denied: [`LeaseError::permanent`]) on 5 consecutive passes (a pass
    /// every third of the failover time) and for
    /// [`ConsumerConfig::lease_table_error_grace`]; the processors get
    /// `shutdown_requested` first. [`ConsumerError::Retrieval`] when an
    /// enhanced fan-out consumer cannot be registered.
    pub async fn run(self) -> Result<(), ConsumerError> {
        let result = self.run_inner().await;
        let _ = self.shutdown_done.send(true);
        result
    }

    async fn run_inner(&self) -> Result<(), ConsumerError> {
        self.create_table().await?;
        let mut consumer_arns = HashMap::new();
        if let RetrievalMode::FanOut { consumer_name } = &self.config.retrieval {
            for stream in &self.config.streams {
                let arn = register_consumer(&self.kinesis, stream, consumer_name).await?;
                consumer_arns.insert(stream.clone(), arn);
            }
        }
        // A failover time too short to tick on is raised to 3 ms.
        let failover = self.config.failover_time.max(Duration::from_millis(3));
        let timings = Timings {
            failover,
            fence_after: failover - failover / 4,
            renew_every: failover / 3,
            release_cooldown: self.config.release_cooldown,
        };
        let mut coordinator = LeaseCoordinator::new(
            self.table.clone(),
            &self.config.worker_id,
            timings,
            self.config.max_leases_per_worker,
        );
        // Owns every shard consumer: if this future is dropped (an abrupt
        // stop), they stop too, and their leases expire for others to take.
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut task_keys: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut last_sync: Option<Instant> = None;
        let mut shutdown = self.shutdown_request.subscribe();
        // The fleet's KCL 3.x state, refreshed (with this worker's metrics
        // row) by a task of its own, ended with this function.
        let mut fleet = FleetMonitor::spawn(
            Fleet::new(
                self.table.client().clone(),
                self.table.name(),
                &self.config.worker_id,
            ),
            self.table.clone(),
            self.config.fleet_interval,
        );
        fleet.ready(self.config.dynamodb_timeouts.operation).await;
        // Lease-table errors no retry fixes, on consecutive passes.
        let mut permanent: Option<(usize, Instant, LeaseError)> = None;
        let mut tick = tokio::time::interval(timings.renew_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            // One pass, cut short by a shutdown request (every write in it
            // is conditional, so stopping anywhere is safe).
            let pass = async {
                while let Some(joined) = tasks.try_join_next_with_id() {
                    let (id, panicked) = match joined {
                        Ok((id, ())) => (id, false),
                        Err(error) => (error.id(), error.is_panic()),
                    };
                    if let Some(key) = task_keys.remove(&id) {
                        coordinator.consumer_ended(&key, panicked);
                    }
                }
                coordinator.check_held().await;
                // In a fleet whose Java leader assigns the leases, the leader
                // also synchronises shards and the worker reads only its own
                // leases (no scan to sync against, or to clean up from).
                let follow_leader = fleet.follow_leader();
                if !follow_leader
                    && last_sync.is_none_or(|at| at.elapsed() >= self.config.shard_sync_interval)
                {
                    match self.shard_syncer().sync(&self.config.streams).await {
                        Ok(()) => last_sync = Some(Instant::now()),
                        Err(error) => tracing::warn!(%error, "shard sync failed"),
                    }
                }
                let scan = match coordinator.take_or_follow(follow_leader).await {
                    Ok(scan) => {
                        permanent = None;
                        scan
                    }
                    Err(error) => {
                        match error.permanent() {
                            Some(fix) => {
                                let (attempts, since) = permanent
                                    .as_ref()
                                    .map_or((1, Instant::now()), |(n, since, _)| (n + 1, *since));
                                tracing::error!(%error, fix, attempt = attempts, failing_for = ?since.elapsed(),
                                    "the lease table cannot be used");
                                permanent = Some((attempts, since, error));
                            }
                            None => {
                                permanent = None;
                                tracing::warn!(%error, "scanning the lease table failed");
                            }
                        }
                        return;
                    }
                };
                self.start_consumers(
                    &mut coordinator,
                    &scan,
                    &mut tasks,
                    &mut task_keys,
                    &consumer_arns,
                );
                if !follow_leader
                    && let Err(error) = shard_sync::delete_finished_leases(&self.table, &scan).await
                {
                    tracing::warn!(%error, "deleting finished leases failed");
                }
            };
            tokio::select! {
                () = pass => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            if permanent.as_ref().is_some_and(|(n, since, _)| {
                *n >= PERMANENT_PASSES && since.elapsed() >= self.config.lease_table_error_grace
            }) {
                metrics::counter!(crate::metrics::PERMANENT_ERRORS).increment(1);
                break;
            }
        }
        // Graceful, within shutdown_timeout: let every processor checkpoint,
        // then hand the leases over. On time-out the consumers are stopped
        // where they are: their checkpoints never passed unprocessed
        // records, and the leases expire for other workers.
        for held in coordinator.held.values() {
            let _ = held.stop.send(Stop::Shutdown);
        }
        // Each lease is handed back as soon as its processor is done, so
        // that one slow processor delays only its own shard.
        let graceful = async {
            while let Some(joined) = tasks.join_next_with_id().await {
                let id = match &joined {
                    Ok((id, ())) => *id,
                    Err(error) => error.id(),
                };
                if let Some(key) = task_keys.remove(&id) {
                    coordinator.release(&key).await;
                }
            }
            coordinator.release_all().await;
        };
        if tokio::time::timeout(self.config.shutdown_timeout, graceful)
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?self.config.shutdown_timeout,
                "graceful shutdown timed out; processors stopped where they were, leases left to expire");
            tasks.abort_all();
        }
        match permanent {
            // The error that stopped the worker, for the caller to show.
            Some((n, since, error))
                if n >= PERMANENT_PASSES
                    && since.elapsed() >= self.config.lease_table_error_grace =>
            {
                Err(error.into())
            }
            _ => Ok(()),
        }
    }

    /// Creates the lease table if missing, retrying errors a retry may fix
    /// (throttling, 5xx, timeouts) for about a minute with warnings; an
    /// error no retry fixes (access denied, invalid credentials) is
    /// returned at once.
    async fn create_table(&self) -> Result<(), LeaseError> {
        let mut pause = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            match self.table.create_if_missing().await {
                Ok(_) => return Ok(()),
                Err(error) if error.permanent().is_some() || attempt >= CREATE_ATTEMPTS => {
                    return Err(error);
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, of = CREATE_ATTEMPTS, retry_in = ?pause,
                        "the lease table could not be created or described");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                    attempt += 1;
                }
            }
        }
    }

    /// Starts a shard consumer for each held lease whose parents have
    /// finished (a parent without a lease is done or was never to be read;
    /// an unreadable one is not known to be done).
    fn start_consumers(
        &self,
        coordinator: &mut LeaseCoordinator,
        scan: &LeaseScan,
        tasks: &mut JoinSet<()>,
        task_keys: &mut HashMap<tokio::task::Id, String>,
        consumer_arns: &HashMap<String, String>,
    ) {
        let finished = |key: &str| {
            !scan.unreadable.iter().any(|k| k == key)
                && scan
                    .leases
                    .iter()
                    .find(|l| l.lease_key == key)
                    .is_none_or(|l| l.checkpoint == ExtendedSequenceNumber::SHARD_END)
        };
        for (key, held) in coordinator.held.iter_mut() {
            if held.task.is_some() {
                continue;
            }
            let lease = held.lease.snapshot();
            if !lease
                .parent_shard_ids
                .iter()
                .all(|parent| finished(&lease.sibling_key(parent)))
            {
                continue;
            }
            let stream = self.stream_of(&lease);
            let processor = (self.factory)(&lease.lease_key);
            let context = ShardContext {
                lease: held.lease.clone(),
                kinesis: self.kinesis.clone(),
                config: self.config.clone(),
                consumer_arn: consumer_arns.get(&stream).cloned(),
                stream,
            };
            let task = tasks.spawn(shard_consumer::run(
                processor,
                context,
                held.stop.subscribe(),
            ));
            task_keys.insert(task.id(), key.clone());
            held.task = Some(task);
        }
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
