//! The public producer handle and the background task that drives the core.
//!
//! One task per producer owns the [`Core`]; PutRecords calls run as tasks of
//! a `JoinSet` it owns (at most `max_connections` at once), and shard maps are
//! loaded the same way. No thread per request, no child process. Dropping
//! every handle without `shutdown` still completes every accepted record.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata};
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use crate::config::ProducerConfig;
use crate::error::{
    AddError, BuildError, MAX_ERROR_MESSAGE, ProducerError, RecordError, elide_middle,
};
use crate::limits::{
    DEFAULT_MAX_RECORD_SIZE, LARGE_MAX_REQUEST_SIZE, MAX_RECORD_SIZE_CEILING, StreamLimits,
    describe_stream_limits,
};
use crate::metrics as m;
use crate::pipeline::{Core, EntryOutcome, Pending, Request, RequestOutcome};
use crate::record::{UserRecord, UserRecordResult};
use crate::shard_map::{ShardMap, list_shards};

/// Request-level error codes that retrying cannot fix.
const PERMANENT_REQUEST_ERRORS: &[&str] = &[
    "ResourceNotFoundException",
    "ValidationException",
    "InvalidArgumentException",
    "AccessDeniedException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSAccessDeniedException",
    "KMSNotFoundException",
    "KMSOptInRequired",
    "UnrecognizedClientException",
];

// `Add` is by far the most frequent command; boxing it would cost an
// allocation per record.
#[allow(clippy::large_enum_variant)]
enum Command {
    Add(Pending),
    /// Meet a stream now: load its shard map and limits.
    Preload(Arc<str>),
    Flush,
    FlushAll(oneshot::Sender<()>),
    Shutdown,
}

/// An asynchronous Kinesis producer. Cheap to clone; every clone feeds the
/// same background task.
///
/// ```no_run
/// # async fn demo(sdk_config: aws_config::SdkConfig) -> Result<(), Box<dyn std::error::Error>> {
/// use kpl::{Producer, ProducerConfig, UserRecord};
///
/// let producer = Producer::builder()
///     .sdk_config(&sdk_config)
///     .config(ProducerConfig::default())
///     .build()?;
/// // Waits only while the backpressure bound is reached.
/// let pending = producer.add_user_record(UserRecord::new("orders", "customer-42", "hello")).await?;
/// let result = pending.await?;
/// println!("stored in {} as {}/{}", result.shard_id, result.sequence_number, result.sub_sequence_number);
/// producer.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

struct Shared {
    config: Arc<ProducerConfig>,
    limits: Arc<LimitsTable>,
    commands: mpsc::UnboundedSender<Command>,
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    closed: AtomicBool,
    driver: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("outstanding_records", &self.outstanding_records())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Producer`].
#[derive(Debug, Default)]
#[must_use]
pub struct ProducerBuilder {
    client: Option<aws_sdk_kinesis::Client>,
    config: ProducerConfig,
    streams: Vec<String>,
}

impl ProducerBuilder {
    /// Use this AWS configuration (region, credentials, endpoints). The
    /// producer builds its own Kinesis client from it, with the SDK's retries
    /// turned off: the producer retries per record, until each record's TTL.
    pub fn sdk_config(mut self, sdk_config: &aws_config::SdkConfig) -> Self {
        let conf = aws_sdk_kinesis::config::Builder::from(sdk_config)
            .retry_config(RetryConfig::disabled())
            .build();
        self.client = Some(aws_sdk_kinesis::Client::from_conf(conf));
        self
    }

    /// Use this Kinesis client as it is (its own retry settings apply on top
    /// of the producer's).
    pub fn client(mut self, client: aws_sdk_kinesis::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Producer settings. Default: [`ProducerConfig::default`].
    pub fn config(mut self, config: ProducerConfig) -> Self {
        self.config = config;
        self
    }

    /// Streams to load shard maps for at start, before their first record,
    /// so that early records are aggregated too (records that arrive before
    /// their stream's map wait for it at most `record_max_buffered_time`, then
    /// go unaggregated). Optional: any stream can be written to.
    pub fn streams<S: Into<String>>(mut self, streams: impl IntoIterator<Item = S>) -> Self {
        self.streams.extend(streams.into_iter().map(Into::into));
        self
    }

    /// Starts the producer's background task on the current tokio runtime.
    pub fn build(self) -> Result<Producer, BuildError> {
        let client = self.client.ok_or(BuildError::MissingAwsConfig)?;
        validate(&self.config)?;
        let config = Arc::new(self.config);
        let (commands, receiver) = mpsc::unbounded_channel();
        let mut core = Core::new(config.clone());
        for stream in &self.streams {
            core.preload(stream);
        }
        let limits = Arc::new(LimitsTable::default());
        let driver = tokio::spawn(drive(
            core,
            client,
            receiver,
            config.clone(),
            limits.clone(),
        ));
        Ok(Producer {
            shared: Arc::new(Shared {
                limits,
                records: Arc::new(Semaphore::new(config.max_outstanding_records)),
                bytes: Arc::new(Semaphore::new(config.max_outstanding_bytes)),
                config,
                commands,
                closed: AtomicBool::new(false),
                driver: Mutex::new(Some(driver)),
            }),
        })
    }
}

fn validate(config: &ProducerConfig) -> Result<(), BuildError> {
    let invalid = |what: &str| Err(BuildError::InvalidConfig(what.to_owned()));
    if !(64..=MAX_RECORD_SIZE_CEILING).contains(&config.aggregation_max_size) {
        return invalid("aggregation_max_size must be within 64..=10485760");
    }
    if !(1..=500).contains(&config.collection_max_count) {
        return invalid("collection_max_count must be within 1..=500");
    }
    if !(1..=LARGE_MAX_REQUEST_SIZE).contains(&config.collection_max_size) {
        return invalid("collection_max_size must be within 1..=10485760");
    }
    if config.aggregation_max_count == 0 || config.max_connections == 0 || config.rate_limit == 0 {
        return invalid("aggregation_max_count, max_connections and rate_limit must be positive");
    }
    if config.max_outstanding_records == 0
        || config.max_outstanding_bytes < config.max_user_record_size.min(DEFAULT_MAX_RECORD_SIZE)
    {
        return invalid(
            "max_outstanding_records must be positive and max_outstanding_bytes at least 1 MiB or max_user_record_size",
        );
    }
    if !(1..=MAX_RECORD_SIZE_CEILING).contains(&config.max_user_record_size) {
        return invalid("max_user_record_size must be within 1..=10485760");
    }
    if config.record_ttl.is_zero() || config.request_timeout.is_zero() {
        return invalid("record_ttl and request_timeout must be positive");
    }
    Ok(())
}

impl Producer {
    /// A builder; set `sdk_config` (or `client`) and optionally `config`.
    pub fn builder() -> ProducerBuilder {
        ProducerBuilder::default()
    }

    /// Accepts a user record, waiting while the backpressure bound
    /// (`max_outstanding_records` / `max_outstanding_bytes`) is reached. The
    /// returned [`PendingResult`] resolves to the record's final result.
    ///
    /// A record over 1 MiB (data plus partition key) for a stream whose limit
    /// is not known yet also waits for the stream's limit to be read (at most
    /// a few `request_timeout`s; see [`crate::limits`]).
    pub async fn add_user_record(&self, record: UserRecord) -> Result<PendingResult, AddError> {
        let max = match self.known_max_record_size(&record) {
            Some(max) => max,
            None => self.wait_max_record_size(&record).await,
        };
        record.validate(max)?;
        let shared = &self.shared;
        let closed = |record: UserRecord| AddError::ShutDown {
            record: Box::new(record),
        };
        if shared.closed.load(Ordering::Acquire) {
            return Err(closed(record));
        }
        let Ok(records) = shared.records.clone().acquire_owned().await else {
            return Err(closed(record));
        };
        let Ok(bytes) = shared
            .bytes
            .clone()
            .acquire_many_owned(byte_permits(&record))
            .await
        else {
            return Err(closed(record));
        };
        self.enqueue(record, records, bytes)
    }

    /// Accepts a user record if the backpressure bound allows it now; never
    /// waits. At the bound, fails with [`AddError::BufferFull`], handing the
    /// record back.
    ///
    /// A record over 1 MiB for a stream whose limit is not known yet is held
    /// to 1 MiB (and the limit is read for the next one): name such streams
    /// with [`ProducerBuilder::streams`] to know their limits from the start.
    pub fn try_add_user_record(&self, record: UserRecord) -> Result<PendingResult, AddError> {
        let max = match self.known_max_record_size(&record) {
            Some(max) => max,
            None => {
                let _ = self
                    .shared
                    .commands
                    .send(Command::Preload(Arc::from(record.stream())));
                self.max_record_size(StreamLimits::default())
            }
        };
        record.validate(max)?;
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(AddError::ShutDown {
                record: Box::new(record),
            });
        }
        let full = |record: UserRecord| AddError::BufferFull {
            record: Box::new(record),
            outstanding_records: self.outstanding_records(),
        };
        let Ok(records) = shared.records.clone().try_acquire_owned() else {
            return Err(full(record));
        };
        let Ok(bytes) = shared
            .bytes
            .clone()
            .try_acquire_many_owned(byte_permits(&record))
        else {
            return Err(full(record));
        };
        self.enqueue(record, records, bytes)
    }

    /// The largest record accepted for a stream with these limits.
    fn max_record_size(&self, limits: StreamLimits) -> usize {
        let config = &self.shared.config;
        limits
            .max_record_size()
            .min(config.max_user_record_size)
            .min(config.max_outstanding_bytes)
    }

    /// The largest record accepted for the record's stream, when that does
    /// not depend on a limit not read yet.
    fn known_max_record_size(&self, record: &UserRecord) -> Option<usize> {
        let floor = self.max_record_size(StreamLimits::default());
        if record.size() <= floor {
            // Every stream takes 1 MiB: no need to look the stream up.
            return Some(floor);
        }
        let limits = self.shared.limits.get(record.stream())?;
        Some(self.max_record_size(limits))
    }

    /// Has the stream's limits read, and waits for them (or for their
    /// default, if they cannot be read in time).
    async fn wait_max_record_size(&self, record: &UserRecord) -> usize {
        let shared = &self.shared;
        let mut changed = shared.limits.changed.subscribe();
        let stream: Arc<str> = Arc::from(record.stream());
        if shared
            .commands
            .send(Command::Preload(stream.clone()))
            .is_err()
        {
            // Shut down: the record is refused as such after validation.
            return self.max_record_size(StreamLimits::default());
        }
        // The load's own bound (its attempts, each within request_timeout),
        // and a second to spare.
        let bound = shared.config.request_timeout * LIMITS_ATTEMPTS + Duration::from_secs(1);
        let wait = async {
            loop {
                if let Some(limits) = shared.limits.get(&stream) {
                    return limits;
                }
                if changed.changed().await.is_err() {
                    return StreamLimits::default();
                }
            }
        };
        let limits = tokio::time::timeout(bound, wait).await.unwrap_or_default();
        self.max_record_size(limits)
    }

    fn enqueue(
        &self,
        record: UserRecord,
        records: tokio::sync::OwnedSemaphorePermit,
        bytes: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<PendingResult, AddError> {
        let now = Instant::now();
        let (reply, receiver) = oneshot::channel();
        let pending = Pending {
            hash_key: 0,
            arrival: now,
            expires: now + self.shared.config.record_ttl,
            since: now,
            attempts: Vec::new(),
            reply: Some(reply),
            epoch: 0,
            _permits: Some((records, bytes)),
            record,
        };
        match self.shared.commands.send(Command::Add(pending)) {
            Ok(()) => {
                metrics::counter!(m::USER_RECORDS_RECEIVED).increment(1);
                Ok(PendingResult { receiver })
            }
            Err(mpsc::error::SendError(command)) => {
                let record = match command {
                    Command::Add(pending) => Box::new(pending.record),
                    _ => unreachable_record(),
                };
                Err(AddError::ShutDown { record })
            }
        }
    }

    /// Starts sending everything buffered now, without waiting for deadlines.
    pub fn flush(&self) {
        let _ = self.shared.commands.send(Command::Flush);
    }

    /// Flushes, then resolves once every record accepted before the call has
    /// its final result.
    pub async fn flush_all(&self) -> Result<(), ProducerError> {
        let (done, wait) = oneshot::channel();
        self.shared
            .commands
            .send(Command::FlushAll(done))
            .map_err(|_| ProducerError::Stopped)?;
        wait.await.map_err(|_| ProducerError::Stopped)
    }

    /// User records accepted and not yet completed.
    pub fn outstanding_records(&self) -> usize {
        self.shared.config.max_outstanding_records - self.shared.records.available_permits()
    }

    /// Refuses new records, sends everything buffered at once, waits until
    /// every accepted record has its final result (at most its TTL), then
    /// stops the background task. Every [`PendingResult`] is resolved when
    /// this returns.
    pub async fn shutdown(&self) -> Result<(), ProducerError> {
        self.shared.closed.store(true, Ordering::Release);
        let _ = self.shared.commands.send(Command::Shutdown);
        let driver = self.shared.driver.lock().await.take();
        if let Some(driver) = driver {
            driver.await.map_err(|_| ProducerError::Stopped)?;
        }
        self.shared.records.close();
        self.shared.bytes.close();
        Ok(())
    }
}

/// Each stream's limits as last read, for the handles' validation; the
/// driver writes them.
#[derive(Debug, Default)]
struct LimitsTable {
    /// Held only to copy a value in or out, never across an await.
    known: std::sync::RwLock<HashMap<Arc<str>, StreamLimits>>,
    /// Bumped after every write, for handles waiting for a stream's limits.
    changed: tokio::sync::watch::Sender<u64>,
}

impl LimitsTable {
    fn get(&self, stream: &str) -> Option<StreamLimits> {
        let known = self
            .known
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        known.get(stream).copied()
    }

    fn set(&self, stream: Arc<str>, limits: StreamLimits) {
        self.known
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(stream, limits);
        self.changed.send_modify(|version| *version += 1);
    }
}

/// Never constructed: `enqueue` only sends `Command::Add`.
fn unreachable_record() -> Box<UserRecord> {
    Box::new(UserRecord::new("", "", bytes::Bytes::new()))
}

fn byte_permits(record: &UserRecord) -> u32 {
    u32::try_from(record.size().max(1)).unwrap_or(u32::MAX)
}

/// The result of one user record, delivered when it is final.
///
/// Awaiting it is optional: a record is sent whether or not anybody waits.
#[derive(Debug)]
#[must_use = "await it to learn whether the record was stored"]
pub struct PendingResult {
    receiver: oneshot::Receiver<Result<UserRecordResult, RecordError>>,
}

impl Future for PendingResult {
    type Output = Result<UserRecordResult, RecordError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|result| result.unwrap_or(Err(RecordError::ProducerStopped { record: None })))
    }
}

/// The background task: feeds commands into the core, sends its requests,
/// loads shard maps, and wakes up at the core's deadlines.
async fn drive(
    mut core: Core,
    client: aws_sdk_kinesis::Client,
    mut commands: mpsc::UnboundedReceiver<Command>,
    config: Arc<ProducerConfig>,
    limits: Arc<LimitsTable>,
) {
    let mut requests: JoinSet<(Request, RequestOutcome)> = JoinSet::new();
    let mut loads = Loads::default();
    let mut refresh = tokio::time::interval(config.shard_map_refresh_interval);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    let mut inbox_open = true;

    loop {
        let now = Instant::now();
        if stopping {
            core.flush(now);
        } else {
            core.poll(now);
        }
        for stream in core.wanted_maps() {
            loads.start(&client, stream, config.request_timeout);
        }
        while requests.len() < config.max_connections {
            let Some(mut request) = core.take_request() else {
                break;
            };
            request.started = Some(Instant::now());
            metrics::counter!(m::REQUESTS).increment(1);
            let client = client.clone();
            let timeout = config.request_timeout;
            let span = tracing::debug_span!("put_records", stream = %request.stream, records = request.entries.len());
            requests.spawn(
                async move {
                    let outcome = put_records(&client, &mut request, timeout).await;
                    (request, outcome)
                }
                .instrument(span),
            );
        }
        metrics::gauge!(m::OUTSTANDING).set(core.outstanding() as f64);
        if (stopping || !inbox_open) && core.outstanding() == 0 && requests.is_empty() {
            break;
        }
        let wakeup = core.next_wakeup();
        tokio::select! {
            Some(done) = requests.join_next(), if !requests.is_empty() => match done {
                Ok((request, outcome)) => core.on_response(request, outcome, Instant::now()),
                Err(error) => tracing::error!(%error, "PutRecords task failed"),
            },
            command = commands.recv(), if inbox_open => match command {
                Some(command) => {
                    stopping |= apply(&mut core, command);
                    // Take what else is queued in one go: fewer wake-ups.
                    for _ in 0..4096 {
                        match commands.try_recv() {
                            Ok(command) => stopping |= apply(&mut core, command),
                            Err(_) => break,
                        }
                    }
                }
                None => {
                    // Every handle is gone: finish what was accepted.
                    inbox_open = false;
                    stopping = true;
                }
            },
            Some(loaded) = loads.set.join_next(), if !loads.set.is_empty() => match loaded {
                Ok(Loaded::Map(stream, map)) => {
                    loads.maps.remove(&stream);
                    if let Some(map) = map {
                        core.set_shard_map(&stream, map, Instant::now());
                    }
                }
                Ok(Loaded::Limits(stream, read)) => {
                    loads.limits.remove(&stream);
                    let known = limits.get(&stream);
                    let read = match read {
                        Ok(read) => Some(read),
                        Err(error) if known.is_none() => {
                            tracing::warn!(%stream, %error, "DescribeStreamSummary failed; holding the stream to the default limits (1 MiB records, 5 MiB PutRecords)");
                            Some(StreamLimits::default())
                        }
                        Err(error) => {
                            tracing::debug!(%stream, %error, "DescribeStreamSummary failed; keeping the stream's limits");
                            None
                        }
                    };
                    if let Some(read) = read.filter(|read| known != Some(*read)) {
                        tracing::debug!(%stream, max_record_size = read.max_record_size(), "stream limits (1 MiB records when DescribeStreamSummary reports no MaxRecordSizeInKiB)");
                        core.set_stream_limits(&stream, read);
                        limits.set(stream, read);
                    }
                }
                Err(error) => tracing::error!(%error, "loading a stream's shard map or limits failed"),
            },
            _ = refresh.tick() => {
                for stream in core.stream_names() {
                    loads.start(&client, stream, config.request_timeout);
                }
            },
            () = sleep_until(wakeup) => {},
        }
    }
    loads.set.abort_all();
    core.abandon();
    tracing::debug!("producer stopped");
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Applies one command; returns whether it asks to stop.
fn apply(core: &mut Core, command: Command) -> bool {
    let now = Instant::now();
    match command {
        Command::Add(pending) => core.add(pending),
        Command::Preload(stream) => core.preload(&stream),
        Command::Flush => core.flush(now),
        Command::FlushAll(waiter) => core.flush_all(waiter, now),
        Command::Shutdown => return true,
    }
    false
}

/// What a load task brings back.
enum Loaded {
    Map(Arc<str>, Option<ShardMap>),
    Limits(Arc<str>, Result<StreamLimits, String>),
}

/// The shard-map and limits loads in flight, at most one of each per stream.
#[derive(Default)]
struct Loads {
    set: JoinSet<Loaded>,
    maps: HashSet<Arc<str>>,
    limits: HashSet<Arc<str>>,
}

impl Loads {
    /// Starts loading the stream's shard map and its limits, unless they
    /// are being loaded.
    fn start(&mut self, client: &aws_sdk_kinesis::Client, stream: Arc<str>, timeout: Duration) {
        if self.limits.insert(stream.clone()) {
            let (client, stream) = (client.clone(), stream.clone());
            self.set.spawn(async move {
                let read = load_stream_limits(&client, &stream, timeout).await;
                Loaded::Limits(stream, read)
            });
        }
        if self.maps.insert(stream.clone()) {
            let client = client.clone();
            self.set.spawn(async move {
                let (stream, map) = load_shard_map(client, stream).await;
                Loaded::Map(stream, map)
            });
        }
    }
}

/// Attempts at reading a stream's limits.
const LIMITS_ATTEMPTS: u32 = 3;

/// Reads a stream's limits (DescribeStreamSummary), each attempt within
/// `timeout`, [`LIMITS_ATTEMPTS`] attempts unless the error is one retrying
/// cannot fix (access denied, no such stream). The default limits when the
/// answer does not report them.
async fn load_stream_limits(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    timeout: Duration,
) -> Result<StreamLimits, String> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        let error =
            match tokio::time::timeout(timeout, describe_stream_limits(client, stream)).await {
                Ok(Ok(limits)) => return Ok(limits),
                Ok(Err(error)) => {
                    let code = error.code().unwrap_or_default();
                    let message =
                        elide_middle(&DisplayErrorContext(&error).to_string(), MAX_ERROR_MESSAGE)
                            .into_owned();
                    if matches!(code, "AccessDeniedException" | "ResourceNotFoundException") {
                        return Err(message);
                    }
                    message
                }
                Err(_) => format!("no answer within {timeout:?}"),
            };
        if attempt == LIMITS_ATTEMPTS {
            return Err(error);
        }
        tracing::debug!(%stream, attempt, %error, "DescribeStreamSummary failed");
        attempt += 1;
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
}

/// Loads a stream's shard map, retrying with backoff (1 s to 30 s) a few
/// times; `None` if it still fails (records then go unaggregated and the map
/// is retried at the next refresh).
async fn load_shard_map(
    client: aws_sdk_kinesis::Client,
    stream: Arc<str>,
) -> (Arc<str>, Option<ShardMap>) {
    let mut delay = Duration::from_secs(1);
    for attempt in 1..=5 {
        match list_shards(&client, &stream).await {
            Ok(shards) => match ShardMap::from_shards(&shards) {
                Ok(map) => return (stream, Some(map)),
                Err(error) => tracing::warn!(%stream, %error, "unusable shard map"),
            },
            Err(error) => tracing::warn!(%stream, attempt, error = %error, "ListShards failed"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay.mul_f64(1.5)).min(Duration::from_secs(30));
    }
    (stream, None)
}

/// Sends one PutRecords call and classifies what came back.
async fn put_records(
    client: &aws_sdk_kinesis::Client,
    request: &mut Request,
    timeout: Duration,
) -> RequestOutcome {
    let entries = match request.sdk_entries() {
        Ok(entries) => entries,
        Err(error) => {
            return RequestOutcome::Failed {
                code: "InvalidRequest".into(),
                message: error.to_string(),
                retryable: false,
            };
        }
    };
    let call = client
        .put_records()
        .stream_name(&*request.stream)
        .set_records(Some(entries))
        .send();
    match tokio::time::timeout(timeout, call).await {
        Err(_) => RequestOutcome::Failed {
            code: "RequestTimeout".into(),
            message: format!("no answer within {timeout:?}"),
            retryable: true,
        },
        Ok(Err(error)) => {
            let code = error.code().unwrap_or("TransportError").to_owned();
            let mut message = error
                .message()
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string());
            if let Some(source) = std::error::Error::source(&error) {
                message = format!("{message}: {source}");
            }
            let retryable = !PERMANENT_REQUEST_ERRORS.contains(&code.as_str());
            RequestOutcome::Failed {
                code,
                message,
                retryable,
            }
        }
        Ok(Ok(output)) => RequestOutcome::Entries(
            output
                .records()
                .iter()
                .map(|result| {
                    match (
                        result.error_code(),
                        result.sequence_number(),
                        result.shard_id(),
                    ) {
                        (None, Some(sequence_number), Some(shard_id)) => EntryOutcome::Put {
                            sequence_number: sequence_number.to_owned(),
                            shard_id: shard_id.to_owned(),
                        },
                        (code, _, _) => EntryOutcome::Failed {
                            code: code.unwrap_or("MissingResult").to_owned(),
                            message: result.error_message().unwrap_or_default().to_owned(),
                        },
                    }
                })
                .collect(),
        ),
    }
}
