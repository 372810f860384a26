//! The binary's configuration: a TOML file, every key overridable by an
//! environment variable `CONNECTOR_S3_<KEY>` (upper case).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use connector_s3::compress::Compression;
use connector_s3::emit::ServerSideEncryption;
use kcl::retrieval::StartingPosition;
use serde::Deserialize;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Bool,
    List,
}

/// Every key: name, kind, default (as shown in --help), meaning.
pub const KEYS: &[(&str, Kind, &str, &str)] = &[
    (
        "application_name",
        Kind::Str,
        "(required)",
        "KCL application name; also the DynamoDB lease table's name",
    ),
    (
        "streams",
        Kind::List,
        "(required)",
        "streams to archive (TOML list, or comma-separated in the environment)",
    ),
    ("bucket", Kind::Str, "(required)", "S3 bucket"),
    (
        "prefix",
        Kind::Str,
        "\"\"",
        "key prefix every object is under",
    ),
    (
        "key_template",
        Kind::Str,
        "\"{prefix}/{yyyy}/{MM}/{dd}/{HH}/{stream}-{shard}-{first_seq}.jsonl{ext}\"",
        "object key template; fields: prefix yyyy MM dd HH mm ss date stream shard first_seq ext (time of the first record, UTC); needs {shard} and {first_seq}",
    ),
    (
        "compression",
        Kind::Str,
        "\"gzip\"",
        "gzip, gzip:<0-9>, zstd, zstd:<1-22> or none",
    ),
    (
        "format",
        Kind::Str,
        "\"json\"",
        "json (one JSON object per record) or raw (payload + delimiter)",
    ),
    (
        "delimiter",
        Kind::Str,
        "\"\\n\"",
        "written after each payload with format = raw",
    ),
    (
        "max_object_bytes",
        Kind::Int,
        "67108864",
        "upload an object once its compressed size reaches this",
    ),
    (
        "max_object_records",
        Kind::Int,
        "1000000",
        "upload an object once it covers this many records",
    ),
    (
        "max_object_age_secs",
        Kind::Int,
        "60",
        "upload an object once it is this old",
    ),
    (
        "max_buffered_bytes",
        Kind::Int,
        "536870912",
        "most bytes buffered over all shards; reading waits beyond it",
    ),
    (
        "buffer_dir",
        Kind::Str,
        "\"connector-s3-buffer\"",
        "directory of the shards' disk buffers",
    ),
    (
        "fsync",
        Kind::Bool,
        "true",
        "fsync every batch written to the buffer",
    ),
    (
        "worker_id",
        Kind::Str,
        "(the hostname)",
        "this worker's id, unique among the application's workers, stable across restarts",
    ),
    (
        "initial_position",
        Kind::Str,
        "\"trim_horizon\"",
        "where shards without a checkpoint start: trim_horizon, latest, or an RFC 3339 time",
    ),
    (
        "multipart_threshold",
        Kind::Int,
        "16777216",
        "objects at least this large are uploaded in parts (at most 5 GiB, S3's largest PutObject, unless objects stay smaller)",
    ),
    (
        "part_size",
        Kind::Int,
        "8388608",
        "multipart part size: 5 MiB to 5 GiB, and large enough for max_object_bytes + 1 GiB (one batch) in 10,000 parts",
    ),
    (
        "sse",
        Kind::Str,
        "\"bucket-default\"",
        "server-side encryption: bucket-default, aes256 or aws:kms",
    ),
    (
        "sse_kms_key_id",
        Kind::Str,
        "(AWS managed key)",
        "KMS key id or ARN; only with sse = aws:kms",
    ),
    (
        "force_path_style",
        Kind::Bool,
        "false",
        "address buckets path-style (some S3-compatible stores need it)",
    ),
    (
        "failover_time_ms",
        Kind::Int,
        "10000",
        "a lease not renewed for this long is taken over",
    ),
    (
        "idle_time_between_reads_ms",
        Kind::Int,
        "1000",
        "pause after a read that returned nothing",
    ),
    (
        "max_records",
        Kind::Int,
        "10000",
        "most records per GetRecords",
    ),
    (
        "fan_out_consumer",
        Kind::Str,
        "(none: polling)",
        "read with enhanced fan-out through this stream consumer",
    ),
    (
        "stats_interval_secs",
        Kind::Int,
        "30",
        "seconds between stats log lines (0: none)",
    ),
    (
        "exit_on_permanent_error_secs",
        Kind::Int,
        "120",
        "exit with an error (status 1) when for this long every shard this process takes keeps stopping on an error no retry fixes (missing bucket, denied access, unusable buffer directory) and no other shard is processed (0: never)",
    ),
    (
        "log_format",
        Kind::Str,
        "\"text\"",
        "text (colours only on a terminal) or json (one JSON object per line, with the event's fields and its spans': stream, shard)",
    ),
    (
        "metrics_listen",
        Kind::Str,
        "(off)",
        "address of an HTTP listener (e.g. 127.0.0.1:9102) serving /metrics (Prometheus text format), /health/live and /health/ready",
    ),
    (
        "health_check_interval_ms",
        Kind::Int,
        "5000",
        "with metrics_listen: how often the lease table and S3 are asked whether they answer (/health/ready is 503 when one has not answered in two intervals, or its last answer was an error)",
    ),
    (
        "cloudwatch_metrics",
        Kind::Bool,
        "false",
        "also publish the metrics to CloudWatch (PutMetricData, batched), under the Java KCL's names where one exists (RecordsProcessed, MillisBehindLatest, CurrentLeases, ...)",
    ),
    (
        "cloudwatch_namespace",
        Kind::Str,
        "(application_name, as the KCL)",
        "the CloudWatch namespace",
    ),
    (
        "cloudwatch_interval_secs",
        Kind::Int,
        "60",
        "seconds between CloudWatch rounds (and one more at exit)",
    ),
];

/// The settings, after file and environment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub application_name: String,
    pub streams: Vec<String>,
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    pub key_template: Option<String>,
    pub compression: Option<String>,
    pub format: Option<String>,
    pub delimiter: Option<String>,
    pub max_object_bytes: Option<u64>,
    pub max_object_records: Option<u64>,
    pub max_object_age_secs: Option<u64>,
    pub max_buffered_bytes: Option<u64>,
    pub buffer_dir: Option<PathBuf>,
    pub fsync: Option<bool>,
    pub worker_id: Option<String>,
    pub initial_position: Option<String>,
    pub multipart_threshold: Option<u64>,
    pub part_size: Option<u64>,
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub force_path_style: Option<bool>,
    pub failover_time_ms: Option<u64>,
    pub idle_time_between_reads_ms: Option<u64>,
    pub max_records: Option<i32>,
    pub fan_out_consumer: Option<String>,
    pub stats_interval_secs: Option<u64>,
    pub exit_on_permanent_error_secs: Option<u64>,
    pub log_format: Option<String>,
    pub metrics_listen: Option<String>,
    pub health_check_interval_ms: Option<u64>,
    pub cloudwatch_metrics: Option<bool>,
    pub cloudwatch_namespace: Option<String>,
    pub cloudwatch_interval_secs: Option<u64>,
}

/// The --help text describing every key.
pub fn keys_help() -> String {
    let mut help = String::from(
        "CONFIGURATION KEYS (TOML file; each also set by the environment variable CONNECTOR_S3_<KEY>,\n\
         which wins over the file). AWS endpoints, region and credentials come the standard AWS way\n\
         (AWS_REGION, AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3, AWS_PROFILE, ...).\n\n",
    );
    for (name, _, default, meaning) in KEYS {
        help.push_str(&format!(
            "  {name}\n      {meaning}\n      default: {default}\n"
        ));
    }
    help
}

/// Reads the file (if any) and applies the environment.
pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    let mut table = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            toml::from_str::<toml::Table>(&text)
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?
        }
        None => toml::Table::new(),
    };
    for (name, kind, _, _) in KEYS {
        let var = format!("CONNECTOR_S3_{}", name.to_ascii_uppercase());
        let Ok(value) = std::env::var(&var) else {
            continue;
        };
        let value = match kind {
            Kind::Str => toml::Value::String(value),
            Kind::Int => toml::Value::Integer(
                value
                    .trim()
                    .parse()
                    .with_context(|| format!("{var}={value:?} is not an integer"))?,
            ),
            Kind::Bool => toml::Value::Boolean(match value.trim() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => bail!("{var}={value:?} is not a boolean"),
            }),
            Kind::List => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            ),
        };
        table.insert((*name).to_owned(), value);
    }
    let config: Config = table
        .try_into()
        .context("invalid configuration (see `connector-s3 --help` for the keys)")?;
    if config.streams.is_empty() {
        bail!("`streams` names no stream");
    }
    Ok(config)
}

impl Config {
    pub fn compression(&self) -> anyhow::Result<Compression> {
        match &self.compression {
            None => Ok(Compression::default()),
            Some(name) => Compression::parse(name).with_context(|| {
                format!(
                    "compression {name:?}: expected gzip, gzip:<0-9>, zstd, zstd:<1-22> or none"
                )
            }),
        }
    }

    pub fn initial_position(&self) -> anyhow::Result<StartingPosition> {
        Ok(match self.initial_position.as_deref() {
            None | Some("trim_horizon" | "TRIM_HORIZON") => StartingPosition::TrimHorizon,
            Some("latest" | "LATEST") => StartingPosition::Latest,
            Some(time) => {
                let time: chrono::DateTime<chrono::Utc> = time.parse().with_context(|| {
                    format!("initial_position {time:?}: expected trim_horizon, latest or an RFC 3339 time")
                })?;
                StartingPosition::AtTimestamp(SystemTime::from(time))
            }
        })
    }

    pub fn sse(&self) -> anyhow::Result<ServerSideEncryption> {
        let kms = matches!(self.sse.as_deref(), Some("aws:kms" | "kms" | "sse-kms"));
        if let (false, Some(key)) = (kms, &self.sse_kms_key_id) {
            bail!(
                "sse_kms_key_id {key:?} is given but sse is {:?}: a KMS key is used only with sse = \"aws:kms\" (set that, or drop sse_kms_key_id)",
                self.sse.as_deref().unwrap_or("bucket-default")
            );
        }
        Ok(match self.sse.as_deref() {
            None | Some("bucket-default" | "none") => ServerSideEncryption::BucketDefault,
            Some("aes256" | "AES256" | "sse-s3") => ServerSideEncryption::S3,
            Some("aws:kms" | "kms" | "sse-kms") => ServerSideEncryption::Kms {
                key_id: self.sse_kms_key_id.clone(),
            },
            Some(other) => bail!("sse {other:?}: expected bucket-default, aes256 or aws:kms"),
        })
    }

    pub fn log_format(&self) -> anyhow::Result<kinesis_ops::log::LogFormat> {
        Ok(match &self.log_format {
            None => kinesis_ops::log::LogFormat::Text,
            Some(format) => format.parse()?,
        })
    }

    pub fn max_object_age(&self) -> Duration {
        Duration::from_secs(self.max_object_age_secs.unwrap_or(60))
    }
}
