//! The daemon's settings, read from the Java MultiLangDaemon's properties
//! keys (`MultiLangDaemonConfiguration`, KCL 2.x/3.x; sample.properties of
//! amazon-kclpy and aws-kcl), so a properties file works unchanged.
//!
//! Every key is accounted for: mapped onto [`kcl::scheduler::ConsumerConfig`]
//! or the child's settings, reported once at start as having no effect here
//! (a Java setting this daemon does not implement), or reported as unknown.
//! A value that does not parse is refused with the key's name.

use std::time::{Duration, SystemTime};

use kcl::retrieval::StartingPosition;
use kcl::scheduler::{ConsumerConfig, RetrievalMode};

use crate::properties::Properties;

/// Settings that map onto ours. Keys in the Java daemon's spelling.
pub const SUPPORTED_KEYS: &[&str] = &[
    "executableName",
    "streamName",
    "streamArn",
    "applicationName",
    "tableName",
    "initialPositionInStream",
    "initialPositionInStreamExtended",
    "regionName",
    "kinesisEndpoint",
    "dynamoDBEndpoint",
    "workerId",
    "failoverTimeMillis",
    "shardSyncIntervalMillis",
    "maxRecords",
    "idleTimeBetweenReadsInMillis",
    "callProcessRecordsEvenForEmptyRecordList",
    "maxLeasesForWorker",
    "retrievalMode",
    "consumerName",
    "timeoutInSeconds",
    "shutdownGraceMillis",
    "AwsCredentialsProvider",
    "processingLanguage",
    "metricsLevel",
    // Ours (not the Java daemon's): see `DaemonConfig::child_restart_backoff`.
    "childRestartBackoffMillis",
];

/// Java daemon settings this daemon accepts but does not implement: each
/// found in a file is reported once at start, with what happens instead.
pub const NO_EFFECT_KEYS: &[(&str, &str)] = &[
    (
        "AwsCredentialsProviderDynamoDB",
        "the default credential chain is used for every service",
    ),
    (
        "AwsCredentialsProviderCloudWatch",
        "the default credential chain is used for every service",
    ),
    (
        "metricsEnabledDimensions",
        "no CloudWatch metrics are published",
    ),
    (
        "metricsBufferTimeMillis",
        "no CloudWatch metrics are published",
    ),
    ("metricsMaxQueueSize", "no CloudWatch metrics are published"),
    (
        "parentShardPollIntervalMillis",
        "children start once their parents' leases reach SHARD_END, checked at each lease renewal",
    ),
    (
        "cleanupLeasesUponShardCompletion",
        "finished parents' leases are deleted once their children have started, as the Java default",
    ),
    (
        "taskBackoffTimeMillis",
        "a failed child is replaced after childRestartBackoffMillis",
    ),
    (
        "validateSequenceNumberBeforeCheckpointing",
        "a checkpoint is always checked against the records delivered",
    ),
    ("maxActiveThreads", "shards run as tasks, not threads"),
    (
        "maxLeasesToStealAtOneTime",
        "one lease is taken from another worker at a time",
    ),
    (
        "initialLeaseTableReadCapacity",
        "the lease table is created on demand (PAY_PER_REQUEST)",
    ),
    (
        "initialLeaseTableWriteCapacity",
        "the lease table is created on demand (PAY_PER_REQUEST)",
    ),
    (
        "billingMode",
        "the lease table is created on demand (PAY_PER_REQUEST)",
    ),
    (
        "skipShardSyncAtWorkerInitializationIfLeasesExist",
        "shards are synchronised at start",
    ),
    (
        "shardPrioritization",
        "shards are processed as their leases are taken",
    ),
    (
        "listShardsBackoffTimeInMillis",
        "ListShards is retried with the SDK's backoff",
    ),
    (
        "maxListShardsRetryAttempts",
        "ListShards is retried with the SDK's backoff",
    ),
    (
        "logWarningForTaskAfterMillis",
        "a child that does not answer is bounded by timeoutInSeconds",
    ),
    ("maxGetRecordsThreadPool", "reads are asynchronous"),
    ("retryGetRecordsInSeconds", "reads are asynchronous"),
    (
        "maxCacheByteSize",
        "the read-ahead is bounded at 8 MiB and 30,000 records per shard",
    ),
    (
        "maxRecordsCount",
        "the read-ahead is bounded at 8 MiB and 30,000 records per shard",
    ),
    (
        "maxPendingProcessRecordsInput",
        "the read-ahead is bounded at 8 MiB and 30,000 records per shard",
    ),
    (
        "ignoreUnexpectedChildShards",
        "child shards are always followed",
    ),
    (
        "leaseCleanupConfig",
        "finished leases are deleted once their children have started",
    ),
    (
        "clientVersionConfig",
        "kcl-multilang follows the KCL 2.x lease protocol",
    ),
    (
        "gracefulLeaseHandoffTimeoutMillis",
        "kcl-multilang follows the KCL 2.x lease protocol",
    ),
    (
        "isGracefulLeaseHandoffEnabled",
        "kcl-multilang follows the KCL 2.x lease protocol",
    ),
    (
        "leaseAssignmentIntervalMillis",
        "kcl-multilang follows the KCL 2.x lease protocol",
    ),
    (
        "migrateAllEntitiesToLeaseTable",
        "kcl-multilang follows the KCL 2.x lease protocol",
    ),
    (
        "tableMigrationCompleteBakeTimeSeconds",
        "kcl-multilang follows the KCL 2.x lease protocol",
    ),
];

/// The default graceful-shutdown bound when `shutdownGraceMillis` is unset
/// or 0. The Java daemon's default, 0, waits for nothing: its children are
/// cut off without `shutdownRequested` reaching them.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The default pause before a failed child's shard gets a new child.
pub const DEFAULT_CHILD_RESTART_BACKOFF: Duration = Duration::from_secs(10);

/// What the daemon runs, read from a properties file.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// The record processor's command line (`executableName`, split on
    /// blanks as the Java daemon splits it; runs of blanks count as one).
    pub executable: Vec<String>,
    /// The stream's name (`streamName`, or the name in `streamArn`).
    pub stream_name: String,
    /// The application (`applicationName`); the lease table is named after
    /// it unless `tableName` says otherwise.
    pub application_name: String,
    /// The lease table (`tableName`; default: the application name).
    pub table_name: String,
    /// `regionName`, or the region of `streamArn`; else the SDK's chain.
    pub region: Option<String>,
    /// `kinesisEndpoint` (an `https://` is added when it has no scheme).
    pub kinesis_endpoint: Option<String>,
    /// `dynamoDBEndpoint` (same form).
    pub dynamodb_endpoint: Option<String>,
    /// `workerId`; default: host name and a random suffix.
    pub worker_id: String,
    /// `initialPositionInStream` (+ `initialPositionInStreamExtended`, epoch
    /// seconds, for AT_TIMESTAMP). Default: LATEST.
    pub initial_position: StartingPosition,
    /// `failoverTimeMillis`. Default: 10 s.
    pub failover_time: Duration,
    /// `shardSyncIntervalMillis`. Default: 60 s.
    pub shard_sync_interval: Duration,
    /// `maxRecords`, 1–10,000. Default: 10,000.
    pub max_records: i32,
    /// `idleTimeBetweenReadsInMillis`. Default: kcl's (1.5 s).
    pub idle_time_between_reads: Option<Duration>,
    /// `callProcessRecordsEvenForEmptyRecordList`. Default: false.
    pub call_process_records_even_for_empty_record_list: bool,
    /// `maxLeasesForWorker`. Default: unlimited.
    pub max_leases_for_worker: usize,
    /// `retrievalMode`: POLLING, or FANOUT / DEFAULT (enhanced fan-out, as
    /// the Java KCL 2.x's default) through the consumer `consumerName`
    /// (default: the application name). Default: DEFAULT.
    pub retrieval: RetrievalMode,
    /// `timeoutInSeconds`: longest wait for a child's answer; a child that
    /// takes longer is killed and its shard alone restarts. Default: none
    /// (as in Java).
    pub timeout: Option<Duration>,
    /// `shutdownGraceMillis`: the bound of a graceful shutdown (every
    /// child's `shutdownRequested`, then the lease releases). Default (also
    /// for 0): [`DEFAULT_SHUTDOWN_GRACE`].
    pub shutdown_grace: Duration,
    /// `childRestartBackoffMillis` (this daemon's own key): how long a shard
    /// whose child failed waits before a new child starts on it (the lease
    /// is released and not retaken by this worker meanwhile). Default:
    /// [`DEFAULT_CHILD_RESTART_BACKOFF`].
    pub child_restart_backoff: Duration,
}

/// A properties file that does not make a configuration. Each names the key
/// to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required key is missing.
    #[error("{key} is required: {what}")]
    Missing {
        /// The key.
        key: &'static str,
        /// What it is for.
        what: &'static str,
    },
    /// A value does not parse.
    #[error("{key} = {value:?}: {expected}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The value found.
        value: String,
        /// What the key takes.
        expected: String,
    },
}

/// A configuration and what to say about the file at start.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The settings.
    pub config: DaemonConfig,
    /// One message per key that has no effect, is unknown, or is repeated.
    pub warnings: Vec<String>,
    /// Keys accepted without effect that need no warning
    /// (`processingLanguage`), said at INFO.
    pub notes: Vec<String>,
}

impl DaemonConfig {
    /// Reads a configuration from a properties file's entries.
    ///
    /// ```
    /// use kcl_multilang::{config::DaemonConfig, properties::Properties};
    /// let properties = Properties::parse(
    ///     "executableName = python3 app.py\nstreamName = orders\napplicationName = app\n\
    ///      failoverTimeMillis = 20000\nsomeTypo = 1\n",
    /// ).unwrap();
    /// let loaded = DaemonConfig::from_properties(&properties).unwrap();
    /// assert_eq!(loaded.config.executable, ["python3", "app.py"]);
    /// assert_eq!(loaded.config.failover_time.as_secs(), 20);
    /// assert!(loaded.warnings[0].contains("someTypo"));
    /// ```
    ///
    /// # Errors
    /// [`ConfigError`] naming the key that is missing or malformed.
    pub fn from_properties(properties: &Properties) -> Result<Loaded, ConfigError> {
        let mut warnings = Vec::new();
        let mut notes = Vec::new();
        for (key, lines) in properties.repeated_keys() {
            warnings.push(format!(
                "{key} is set {} times (lines {lines:?}); the last one counts",
                lines.len()
            ));
        }
        let mut reported = std::collections::HashSet::new();
        for entry in properties.entries() {
            let key = entry.key.as_str();
            if SUPPORTED_KEYS.contains(&key) || !reported.insert(key) {
                continue;
            }
            if let Some((_, instead)) = NO_EFFECT_KEYS.iter().find(|(k, _)| *k == key) {
                warnings.push(format!(
                    "{key} (line {}) is a Java daemon setting kcl-multilang does not implement; ignored: {instead}",
                    entry.line
                ));
            } else {
                let hint = SUPPORTED_KEYS
                    .iter()
                    .chain(NO_EFFECT_KEYS.iter().map(|(k, _)| k))
                    .find(|known| {
                        known.eq_ignore_ascii_case(key)
                            || strsim::levenshtein(
                                &known.to_ascii_lowercase(),
                                &key.to_ascii_lowercase(),
                            ) <= 2
                    })
                    .map(|known| format!(" (did you mean {known}?)"))
                    .unwrap_or_default();
                warnings.push(format!(
                    "{key} (line {}) is not a MultiLangDaemon setting; ignored{hint}",
                    entry.line
                ));
            }
        }
        let get = |key: &str| properties.get(key).filter(|v| !v.is_empty());

        let executable: Vec<String> = get("executableName")
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        if executable.is_empty() {
            return Err(ConfigError::Missing {
                key: "executableName",
                what: "the record processor's command line, e.g. `python3 sample_kclpy_app.py`",
            });
        }

        let arn = get("streamArn").map(parse_stream_arn).transpose()?;
        let stream_name = match (get("streamName"), &arn) {
            (Some(name), Some(arn)) if name != arn.name => {
                return Err(ConfigError::Invalid {
                    key: "streamArn",
                    value: arn.arn.clone(),
                    expected: format!("a stream ARN naming the stream of streamName ({name})"),
                });
            }
            (_, Some(arn)) => arn.name.clone(),
            (Some(name), None) => name.to_owned(),
            (None, None) => {
                return Err(ConfigError::Missing {
                    key: "streamName",
                    what: "the stream to consume (or streamArn)",
                });
            }
        };
        let application_name = get("applicationName")
            .ok_or(ConfigError::Missing {
                key: "applicationName",
                what: "the application's name, which also names its lease table",
            })?
            .to_owned();
        let table_name = get("tableName").unwrap_or(&application_name).to_owned();

        let initial_position = match get("initialPositionInStream") {
            None => StartingPosition::Latest,
            Some(v) if v.eq_ignore_ascii_case("LATEST") => StartingPosition::Latest,
            Some(v) if v.eq_ignore_ascii_case("TRIM_HORIZON") => StartingPosition::TrimHorizon,
            Some(v) if v.eq_ignore_ascii_case("AT_TIMESTAMP") => {
                let key = "initialPositionInStreamExtended";
                let value = get(key).ok_or(ConfigError::Missing {
                    key,
                    what: "the timestamp (epoch seconds) AT_TIMESTAMP starts at",
                })?;
                let at = value
                    .parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .and_then(|since| SystemTime::UNIX_EPOCH.checked_add(since))
                    .ok_or_else(|| invalid(key, value, "epoch seconds, e.g. 1732838400"))?;
                StartingPosition::AtTimestamp(at)
            }
            Some(v) => {
                return Err(invalid(
                    "initialPositionInStream",
                    v,
                    "LATEST, TRIM_HORIZON or AT_TIMESTAMP",
                ));
            }
        };

        let region = get("regionName")
            .map(str::to_owned)
            .or_else(|| arn.as_ref().map(|a| a.region.clone()));
        let kinesis_endpoint = get("kinesisEndpoint").map(endpoint_url);
        let dynamodb_endpoint = get("dynamoDBEndpoint").map(endpoint_url);
        let worker_id = get("workerId")
            .map(str::to_owned)
            .unwrap_or_else(default_worker_id);

        let millis = |key: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            match get(key) {
                None => Ok(default),
                Some(v) => positive(key, v, "a whole number of milliseconds above 0")
                    .map(Duration::from_millis),
            }
        };
        let failover_time = millis("failoverTimeMillis", Duration::from_secs(10))?;
        let shard_sync_interval = millis("shardSyncIntervalMillis", Duration::from_secs(60))?;
        let idle_time_between_reads = match get("idleTimeBetweenReadsInMillis") {
            None => None,
            Some(v) => Some(Duration::from_millis(non_negative(
                "idleTimeBetweenReadsInMillis",
                v,
                "a whole number of milliseconds",
            )?)),
        };
        let max_records = match get("maxRecords") {
            None => 10_000,
            Some(v) => positive("maxRecords", v, "a whole number from 1 to 10000")
                .ok()
                .filter(|n| *n <= 10_000)
                .ok_or_else(|| invalid("maxRecords", v, "a whole number from 1 to 10000"))?
                as i32,
        };
        let call_process_records_even_for_empty_record_list =
            match get("callProcessRecordsEvenForEmptyRecordList") {
                None => false,
                Some(v) => boolean("callProcessRecordsEvenForEmptyRecordList", v)?,
            };
        let max_leases_for_worker = match get("maxLeasesForWorker") {
            None => usize::MAX,
            Some(v) => positive("maxLeasesForWorker", v, "a whole number above 0")? as usize,
        };
        let consumer_name = get("consumerName").unwrap_or(&application_name).to_owned();
        let retrieval = match get("retrievalMode") {
            Some(v) if v.eq_ignore_ascii_case("POLLING") => RetrievalMode::Polling,
            None => RetrievalMode::FanOut { consumer_name },
            Some(v) if v.eq_ignore_ascii_case("FANOUT") || v.eq_ignore_ascii_case("DEFAULT") => {
                RetrievalMode::FanOut { consumer_name }
            }
            Some(v) => return Err(invalid("retrievalMode", v, "POLLING, FANOUT or DEFAULT")),
        };
        let timeout = match get("timeoutInSeconds") {
            None => None,
            Some(v) => Some(Duration::from_secs(positive(
                "timeoutInSeconds",
                v,
                "a whole number of seconds above 0",
            )?)),
        };
        let shutdown_grace = match get("shutdownGraceMillis") {
            None => DEFAULT_SHUTDOWN_GRACE,
            Some(v) => {
                match non_negative("shutdownGraceMillis", v, "a whole number of milliseconds")? {
                    0 => DEFAULT_SHUTDOWN_GRACE,
                    n => Duration::from_millis(n),
                }
            }
        };
        let child_restart_backoff =
            millis("childRestartBackoffMillis", DEFAULT_CHILD_RESTART_BACKOFF)?;

        if let Some(provider) = get("AwsCredentialsProvider") {
            let default = [
                "DefaultCredentialsProvider",
                "DefaultAWSCredentialsProviderChain",
            ];
            if !default.iter().any(|d| provider.ends_with(d)) {
                warnings.push(format!(
                    "AwsCredentialsProvider = {provider}: kcl-multilang uses the default credential chain \
                     (environment, profile, web identity, container and instance credentials)"
                ));
            }
        }
        if let Some(level) = get("metricsLevel")
            && !level.eq_ignore_ascii_case("NONE")
        {
            warnings.push(format!(
                "metricsLevel = {level}: kcl-multilang publishes no CloudWatch metrics (ignored)"
            ));
        }
        if let Some(language) = get("processingLanguage") {
            notes.push(format!(
                "processingLanguage = {language} only named the language in the Java daemon's user agent"
            ));
        }

        Ok(Loaded {
            config: DaemonConfig {
                executable,
                stream_name,
                application_name,
                table_name,
                region,
                kinesis_endpoint,
                dynamodb_endpoint,
                worker_id,
                initial_position,
                failover_time,
                shard_sync_interval,
                max_records,
                idle_time_between_reads,
                call_process_records_even_for_empty_record_list,
                max_leases_for_worker,
                retrieval,
                timeout,
                shutdown_grace,
                child_restart_backoff,
            },
            warnings,
            notes,
        })
    }

    /// The consumer's settings. `process_empty_batches` is always on: a
    /// shard whose child failed must be handed back even when no record
    /// arrives (empty batches reach the child only when
    /// `callProcessRecordsEvenForEmptyRecordList` says so).
    pub fn consumer_config(&self) -> ConsumerConfig {
        let mut config = ConsumerConfig::new(
            self.table_name.clone(),
            self.stream_name.clone(),
            self.worker_id.clone(),
        );
        config.initial_position = self.initial_position;
        config.failover_time = self.failover_time;
        config.shard_sync_interval = self.shard_sync_interval;
        config.max_records = self.max_records;
        if let Some(idle) = self.idle_time_between_reads {
            config.idle_time_between_reads = idle;
        }
        config.max_leases_per_worker = self.max_leases_for_worker;
        config.retrieval = self.retrieval.clone();
        config.process_empty_batches = true;
        config.release_cooldown = self.child_restart_backoff;
        config.shutdown_timeout = self.shutdown_grace;
        config
    }
}

struct StreamArn {
    arn: String,
    region: String,
    name: String,
}

/// `arn:<partition>:kinesis:<region>:<account>:stream/<name>`.
fn parse_stream_arn(arn: &str) -> Result<StreamArn, ConfigError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, "kinesis", region, _, resource] if !region.is_empty() => {
            match resource.strip_prefix("stream/") {
                Some(name) if !name.is_empty() && !name.contains('/') => Ok(StreamArn {
                    arn: arn.to_owned(),
                    region: (*region).to_owned(),
                    name: name.to_owned(),
                }),
                _ => Err(invalid("streamArn", arn, STREAM_ARN_FORM)),
            }
        }
        _ => Err(invalid("streamArn", arn, STREAM_ARN_FORM)),
    }
}

const STREAM_ARN_FORM: &str = "arn:aws:kinesis:<region>:<account>:stream/<name>";

/// An endpoint as the Java daemon takes it: a URL, or a host name (HTTPS);
/// the old `url^region` form keeps its URL part.
fn endpoint_url(value: &str) -> String {
    let url = value.split('^').next().unwrap_or(value).trim();
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("https://{url}")
    }
}

fn default_worker_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!("{host}:{:016x}", rand::random::<u64>())
}

fn invalid(key: &'static str, value: &str, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

fn non_negative(key: &'static str, value: &str, expected: &str) -> Result<u64, ConfigError> {
    value
        .parse::<u64>()
        .map_err(|_| invalid(key, value, expected))
}

fn positive(key: &'static str, value: &str, expected: &str) -> Result<u64, ConfigError> {
    non_negative(key, value, expected)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| invalid(key, value, expected))
}

/// Booleans as Java's BeanUtils converter reads them.
fn boolean(key: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "on" | "1" => Ok(true),
        "false" | "no" | "n" | "off" | "0" => Ok(false),
        _ => Err(invalid(key, value, "true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "executableName = python3 app.py\nstreamName = s\napplicationName = a\n";

    fn load(extra: &str) -> Result<Loaded, ConfigError> {
        DaemonConfig::from_properties(&Properties::parse(&format!("{MINIMAL}{extra}")).unwrap())
    }

    #[test]
    fn the_kclpy_sample_properties_load_with_only_a_note() {
        let sample = "\
executableName = sample_kclpy_app.py
streamArn = arn:aws:kinesis:us-east-5:000000000000:stream/kclpysample
streamName = kclpysample
applicationName = PythonKCLSample
AwsCredentialsProvider = DefaultCredentialsProvider
processingLanguage = python/3.8
initialPositionInStream = TRIM_HORIZON
regionName = us-east-1
";
        let loaded = DaemonConfig::from_properties(&Properties::parse(sample).unwrap()).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.notes.len(), 1);
        let config = loaded.config;
        assert_eq!(config.stream_name, "kclpysample");
        assert_eq!(config.region.as_deref(), Some("us-east-1"));
        assert_eq!(config.initial_position, StartingPosition::TrimHorizon);
        assert_eq!(
            config.retrieval,
            RetrievalMode::FanOut {
                consumer_name: "PythonKCLSample".into()
            }
        );
        assert_eq!(config.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
    }

    #[test]
    fn settings_map_onto_the_consumer() {
        let loaded = load(
            "failoverTimeMillis = 2000\nshardSyncIntervalMillis = 500\nmaxRecords = 100\n\
             idleTimeBetweenReadsInMillis = 0\ncallProcessRecordsEvenForEmptyRecordList = TRUE\n\
             maxLeasesForWorker = 3\nretrievalMode = POLLING\ntimeoutInSeconds = 7\n\
             shutdownGraceMillis = 1500\nchildRestartBackoffMillis = 250\nworkerId = w1\n\
             tableName = t\ndynamoDBEndpoint = http://127.0.0.1:8000\nkinesisEndpoint = kinesis.example\n",
        )
        .unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let config = loaded.config;
        let consumer = config.consumer_config();
        assert_eq!(consumer.application_name, "t");
        assert_eq!(consumer.worker_id, "w1");
        assert_eq!(consumer.failover_time, Duration::from_secs(2));
        assert_eq!(consumer.shard_sync_interval, Duration::from_millis(500));
        assert_eq!(consumer.max_records, 100);
        assert_eq!(consumer.idle_time_between_reads, Duration::ZERO);
        assert_eq!(consumer.max_leases_per_worker, 3);
        assert_eq!(consumer.retrieval, RetrievalMode::Polling);
        assert_eq!(consumer.shutdown_timeout, Duration::from_millis(1500));
        assert_eq!(consumer.release_cooldown, Duration::from_millis(250));
        assert!(consumer.process_empty_batches);
        assert!(config.call_process_records_even_for_empty_record_list);
        assert_eq!(config.timeout, Some(Duration::from_secs(7)));
        assert_eq!(
            config.kinesis_endpoint.as_deref(),
            Some("https://kinesis.example")
        );
        assert_eq!(
            config.dynamodb_endpoint.as_deref(),
            Some("http://127.0.0.1:8000")
        );
    }

    #[test]
    fn unknown_and_unimplemented_keys_are_reported_once_each() {
        let loaded = load(
            "failoverTimeMilis = 1\nmaxActiveThreads = 4\nmaxActiveThreads = 5\nmetricsLevel = SUMMARY\n\
             failovertimemillis = 3\n",
        )
        .unwrap();
        let warnings = loaded.warnings.join("\n");
        assert!(warnings.contains("failoverTimeMilis (line 4) is not a MultiLangDaemon setting"));
        assert!(
            warnings.contains("(did you mean failoverTimeMillis?)"),
            "{warnings}"
        );
        assert!(warnings.contains("maxActiveThreads is set 2 times"));
        assert_eq!(warnings.matches("maxActiveThreads (line").count(), 1);
        assert!(warnings.contains("metricsLevel = SUMMARY"));
    }

    #[test]
    fn malformed_values_are_refused_with_the_key() {
        for (extra, key) in [
            ("failoverTimeMillis = ten\n", "failoverTimeMillis"),
            ("failoverTimeMillis = 0\n", "failoverTimeMillis"),
            ("maxRecords = 10001\n", "maxRecords"),
            (
                "initialPositionInStream = OLDEST\n",
                "initialPositionInStream",
            ),
            (
                "initialPositionInStream = AT_TIMESTAMP\ninitialPositionInStreamExtended = yesterday\n",
                "initialPositionInStreamExtended",
            ),
            (
                "callProcessRecordsEvenForEmptyRecordList = maybe\n",
                "callProcessRecordsEvenForEmptyRecordList",
            ),
            ("retrievalMode = PUSH\n", "retrievalMode"),
            (
                "streamArn = arn:aws:kinesis:us-east-1:1:table/x\n",
                "streamArn",
            ),
            (
                "streamArn = arn:aws:kinesis:us-east-1:1:stream/other\n",
                "streamArn",
            ),
            ("timeoutInSeconds = -1\n", "timeoutInSeconds"),
            (
                "initialPositionInStream = AT_TIMESTAMP\ninitialPositionInStreamExtended = 1e300\n",
                "initialPositionInStreamExtended",
            ),
            (
                "initialPositionInStream = AT_TIMESTAMP\ninitialPositionInStreamExtended = NaN\n",
                "initialPositionInStreamExtended",
            ),
        ] {
            let error = load(extra).unwrap_err();
            assert!(error.to_string().starts_with(key), "{extra:?}: {error}");
        }
        let missing =
            DaemonConfig::from_properties(&Properties::parse("streamName = s\n").unwrap());
        assert!(matches!(
            missing,
            Err(ConfigError::Missing {
                key: "executableName",
                ..
            })
        ));
        let at = load("initialPositionInStream = AT_TIMESTAMP\n").unwrap_err();
        assert!(matches!(
            at,
            ConfigError::Missing {
                key: "initialPositionInStreamExtended",
                ..
            }
        ));
    }

    #[test]
    fn a_stream_arn_names_the_stream_and_the_region() {
        let loaded = DaemonConfig::from_properties(
            &Properties::parse(
                "executableName = x\napplicationName = a\nstreamArn = arn:aws:kinesis:eu-west-1:123456789012:stream/orders\n",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(loaded.config.stream_name, "orders");
        assert_eq!(loaded.config.region.as_deref(), Some("eu-west-1"));
    }
}
