//! `connector-s3 status`: the lease table of an application, one row per
//! shard. Reads only.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use aws_sdk_kinesis::types::ShardIteratorType;
use clap::Args;
use kcl::checkpoint::Position;
use kcl::lease::{Lease, LeaseTable};
use serde::Serialize;

#[derive(Args, Debug)]
#[command(after_long_help = "\
RENEWAL: a lease item holds no renewal time: the KCL judges a lease by \
watching its leaseCounter move. `status` reads the table twice, --watch-ms \
apart, and reports \"renewed within Xs\" when the counter moved between the \
reads and \"not renewed in Xs\" when it did not (a lease not renewed for \
the failover time is taken over by another worker).

LAG: how long ago the first record after the checkpoint arrived in the \
shard (one GetRecords with limit 1 after the checkpoint); 0 when there is \
none (caught up, or the shard ended). Not MillisBehindLatest, which not every \
back end reports. \"-\" when it cannot be known (AT_TIMESTAMP checkpoints, \
a single-stream lease without --stream).

Works on lease tables written by the Java KCL as well; items that are not \
leases (entityType other than LEASE) are skipped.")]
pub struct StatusArgs {
    /// The connector's configuration file (application_name, streams).
    #[arg(long, short, conflicts_with = "application")]
    config: Option<PathBuf>,
    /// The application (the lease table's name), without a config file.
    #[arg(long)]
    application: Option<String>,
    /// The stream of single-stream leases (keys that are a shard id alone),
    /// without a config file.
    #[arg(long, requires = "application")]
    stream: Option<String>,
    /// Milliseconds between the two reads of the table that tell renewed
    /// leases from stale ones.
    #[arg(long, default_value_t = 1_000)]
    watch_ms: u64,
    /// Print JSON (`{"application", "rows": [...], "workers": {...}}`)
    /// instead of a table.
    #[arg(long)]
    json: bool,
}

/// One shard's lease.
#[derive(Debug, Serialize)]
struct Row {
    stream: Option<String>,
    shard: String,
    lease_key: String,
    owner: Option<String>,
    lease_counter: u64,
    /// Whether the counter moved between the two reads (None: free lease).
    renewed: Option<bool>,
    renewal: String,
    checkpoint: String,
    checkpoint_sub_sequence_number: u64,
    pending_checkpoint: Option<String>,
    /// The pending checkpoint's state: the connector stores the key of the
    /// object it is about to upload.
    pending_object: Option<String>,
    parents: Vec<String>,
    /// Milliseconds since the first record after the checkpoint arrived.
    lag_ms: Option<u64>,
    /// Why the lag is unknown.
    lag_note: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    application: String,
    watch_ms: u64,
    rows: Vec<Row>,
    /// Leases per owner.
    workers: BTreeMap<String, usize>,
    /// Keys of lease items that could not be read.
    unreadable: Vec<String>,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let (application, stream) = match (&args.config, &args.application) {
        (_, Some(application)) => (application.clone(), args.stream.clone()),
        (Some(path), None) => {
            let config = crate::config::load(Some(path))?;
            let stream = (config.streams.len() == 1).then(|| config.streams[0].clone());
            (config.application_name, stream)
        }
        (None, None) => {
            bail!("name the application: --config FILE, or --application NAME [--stream NAME]")
        }
    };
    // A back end that does not answer ends the command with an error
    // instead of hanging it.
    let sdk_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
        .load()
        .await;
    let table = LeaseTable::new(aws_sdk_dynamodb::Client::new(&sdk_config), &application);
    let kinesis = aws_sdk_kinesis::Client::new(&sdk_config);
    let watch = Duration::from_millis(args.watch_ms);
    let first = table
        .scan()
        .await
        .with_context(|| format!("reading the lease table {application}"))?;
    tokio::time::sleep(watch).await;
    let second = table
        .scan()
        .await
        .with_context(|| format!("reading the lease table {application}"))?;
    let counters: HashMap<&str, u64> = first
        .leases
        .iter()
        .map(|lease| (lease.lease_key.as_str(), lease.lease_counter))
        .collect();
    let mut rows = Vec::new();
    let mut workers = BTreeMap::new();
    for lease in &second.leases {
        let renewed = lease.lease_owner.as_ref().map(|_| {
            counters
                .get(lease.lease_key.as_str())
                .is_none_or(|before| *before != lease.lease_counter)
        });
        let seconds = watch.as_secs_f64();
        let renewal = match renewed {
            None => "free".to_owned(),
            Some(true) => format!("renewed within {seconds:.1}s"),
            Some(false) => format!("not renewed in {seconds:.1}s"),
        };
        if let Some(owner) = &lease.lease_owner {
            *workers.entry(owner.clone()).or_default() += 1;
        }
        let stream = lease.stream().map(str::to_owned).or_else(|| stream.clone());
        let (lag_ms, lag_note) = match &stream {
            Some(stream) => match lag(&kinesis, stream, lease).await {
                Ok(Some(lag)) => (Some(lag.as_millis() as u64), None),
                Ok(None) => (None, Some("unknown for this checkpoint".to_owned())),
                Err(error) => (None, Some(error)),
            },
            None => (None, Some("no stream named (--stream)".to_owned())),
        };
        rows.push(Row {
            stream,
            shard: lease.shard().to_owned(),
            lease_key: lease.lease_key.clone(),
            owner: lease.lease_owner.clone(),
            lease_counter: lease.lease_counter,
            renewed,
            renewal,
            checkpoint: lease.checkpoint.position().as_str().to_owned(),
            checkpoint_sub_sequence_number: lease.checkpoint.sub_sequence_number(),
            pending_checkpoint: lease.pending_checkpoint.as_ref().map(|p| p.to_string()),
            pending_object: lease
                .pending_checkpoint_state
                .as_ref()
                .map(|state| String::from_utf8_lossy(state).into_owned()),
            parents: lease.parent_shard_ids.clone(),
            lag_ms,
            lag_note,
        });
    }
    rows.sort_by(|a, b| (&a.stream, &a.shard).cmp(&(&b.stream, &b.shard)));
    let report = Report {
        application,
        watch_ms: args.watch_ms,
        rows,
        workers,
        unreadable: second.unreadable,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table_text(&report));
    }
    Ok(())
}

/// How long ago the first record after the lease's checkpoint arrived:
/// `Some(0)` when there is none, `None` when it cannot be known. A
/// checkpoint inside an aggregate (the KCL's sub-sequence number) leaves
/// the aggregate's later sub-records to process: the read starts at the
/// checkpoint's record, and counts it when it holds sub-records after the
/// checkpoint.
async fn lag(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    lease: &Lease,
) -> Result<Option<Duration>, String> {
    let request = kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(lease.shard());
    let checkpoint = lease.checkpoint.position();
    let request = match checkpoint {
        Position::ShardEnd | Position::Latest => return Ok(Some(Duration::ZERO)),
        Position::AtTimestamp => return Ok(None),
        Position::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        Position::Sequence(sequence) => request
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number(sequence),
    };
    let mut iterator = request
        .send()
        .await
        .map_err(|error| kcl::error_chain(&error))?
        .shard_iterator;
    // An empty answer with records further on (Kinesis skips over gaps a
    // few at a time) is followed a few times.
    for _ in 0..5 {
        let Some(current) = iterator else {
            return Ok(Some(Duration::ZERO));
        };
        let answer = kinesis
            .get_records()
            .shard_iterator(current)
            .limit(2)
            .send()
            .await
            .map_err(|error| kcl::error_chain(&error))?;
        let unprocessed = answer.records.iter().find(|record| {
            if Some(record.sequence_number.as_str()) != lease.checkpoint.sequence_number() {
                return true;
            }
            let users = kcl::deaggregate(
                record.partition_key.as_deref().unwrap_or_default(),
                None,
                bytes::Bytes::from(record.data.clone().into_inner()),
            );
            users.len() as u64 > lease.checkpoint.sub_sequence_number() + 1
        });
        if let Some(record) = unprocessed {
            let arrived = record
                .approximate_arrival_timestamp
                .and_then(|t| SystemTime::try_from(t).ok());
            return Ok(arrived.map(|arrived| {
                SystemTime::now()
                    .duration_since(arrived)
                    .unwrap_or_default()
            }));
        }
        if answer.records.is_empty() && answer.millis_behind_latest.unwrap_or(0) == 0 {
            return Ok(Some(Duration::ZERO));
        }
        iterator = answer.next_shard_iterator;
    }
    Ok(Some(Duration::ZERO))
}

fn lag_text(row: &Row) -> String {
    match row.lag_ms {
        Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
        None => "-".to_owned(),
    }
}

fn table_text(report: &Report) -> String {
    let headers = [
        "STREAM",
        "SHARD",
        "OWNER",
        "RENEWAL",
        "CHECKPOINT",
        "PENDING",
        "PARENTS",
        "LAG",
    ];
    let cells: Vec<[String; 8]> = report
        .rows
        .iter()
        .map(|row| {
            let checkpoint = match row.checkpoint_sub_sequence_number {
                0 => row.checkpoint.clone(),
                sub => format!("{}/{sub}", row.checkpoint),
            };
            let pending = match (&row.pending_checkpoint, &row.pending_object) {
                (Some(checkpoint), Some(object)) => format!("{checkpoint} {object}"),
                (Some(checkpoint), None) => checkpoint.clone(),
                _ => "-".to_owned(),
            };
            [
                row.stream.clone().unwrap_or_else(|| "-".into()),
                row.shard.clone(),
                row.owner.clone().unwrap_or_else(|| "-".into()),
                row.renewal.clone(),
                checkpoint,
                pending,
                if row.parents.is_empty() {
                    "-".into()
                } else {
                    row.parents.join(",")
                },
                lag_text(row),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        line.trim_end().to_owned() + "\n"
    };
    let mut text = format!("application {}\n", report.application);
    text.push_str(&line(&headers.map(str::to_owned)));
    for row in &cells {
        text.push_str(&line(row));
    }
    let workers: Vec<String> = report
        .workers
        .iter()
        .map(|(worker, leases)| format!("{worker}={leases}"))
        .collect();
    text.push_str(&format!(
        "{} leases; held per worker: {}\n",
        report.rows.len(),
        if workers.is_empty() {
            "none".to_owned()
        } else {
            workers.join(" ")
        }
    ));
    if !report.unreadable.is_empty() {
        text.push_str(&format!(
            "unreadable lease items (skipped): {}\n",
            report.unreadable.join(", ")
        ));
    }
    text
}
