//! `connector-s3 replay`: read a slice of the archive back — select by time,
//! stream, shard and sequence, filter by text, regex or field — and publish
//! it to a stream through `kpl`, write it as JSON lines, or count it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use clap::Args;
use connector_s3::archive::{ArchiveItem, ArchiveReader, ArchivedLine, Selection};
use connector_s3::key::{DEFAULT_TEMPLATE, KeyTemplate};
use kcl::checkpoint::ExtendedSequenceNumber;
use tokio::io::AsyncWriteExt;

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Read bucket, prefix and key template from this connector config.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The archive's bucket (default: the config's).
    #[arg(long)]
    bucket: Option<String>,
    /// The archive's key prefix (default: the config's).
    #[arg(long)]
    prefix: Option<String>,
    /// The archive's key template (default: the config's, or the connector's default).
    #[arg(long)]
    key_template: Option<String>,
    /// Records that arrived at or after this time (RFC 3339, or 2026-01-20T00:00Z, or 2026-01-20).
    #[arg(long)]
    from: Option<String>,
    /// Records that arrived before this time.
    #[arg(long)]
    to: Option<String>,
    /// Only this stream.
    #[arg(long)]
    stream: Option<String>,
    /// Only this shard.
    #[arg(long)]
    shard: Option<String>,
    /// Only records after this position (SEQUENCE or SEQUENCE-SUBSEQUENCE): a catch-up read.
    #[arg(long)]
    after: Option<String>,
    /// Only records up to and including this position.
    #[arg(long)]
    until: Option<String>,
    /// Only lines containing this text (as zgrep -F).
    #[arg(long, group = "filter")]
    grep: Option<String>,
    /// Only lines matching this regular expression.
    #[arg(long, group = "filter")]
    regex: Option<String>,
    /// Only records whose JSON field (dotted path, e.g. partition_key or data.customer) equals VALUE.
    #[arg(long, group = "filter", value_name = "PATH=VALUE")]
    field: Option<String>,
    /// Publish the matching records to this stream, with their partition (and explicit hash) keys.
    #[arg(long, group = "sink")]
    to_stream: Option<String>,
    /// Write the matching records as JSON lines to FILE, or `-` for stdout.
    #[arg(long, group = "sink", value_name = "FILE")]
    output: Option<String>,
    /// Only count the matching records.
    #[arg(long, group = "sink")]
    dry_run: bool,
    /// Objects downloaded in parallel.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Stop at the first corrupt or unreadable object (default: report and skip it).
    #[arg(long)]
    strict: bool,
    /// Address buckets path-style.
    #[arg(long)]
    force_path_style: bool,
}

/// Parses RFC 3339, `YYYY-MM-DDTHH:MM[Z]` or `YYYY-MM-DD` as UTC.
pub fn parse_time(value: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(value) {
        return Ok(time.with_timezone(&Utc));
    }
    let trimmed = value.trim_end_matches('Z');
    for format in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H"] {
        if let Ok(time) = NaiveDateTime::parse_from_str(trimmed, format) {
            return Ok(time.and_utc());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(trimmed, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    bail!("{value:?} is not a time (RFC 3339, 2026-01-20T00:00Z or 2026-01-20)")
}

fn parse_position(value: &str) -> anyhow::Result<ExtendedSequenceNumber> {
    let (sequence, sub) = value.split_once('-').unwrap_or((value, "0"));
    if sequence.is_empty() || !sequence.bytes().all(|b| b.is_ascii_digit()) {
        bail!("{value:?} is not a sequence number");
    }
    Ok(ExtendedSequenceNumber::new(
        sequence,
        sub.parse()
            .with_context(|| format!("{value:?}: bad sub-sequence number"))?,
    ))
}

enum LineFilter {
    All,
    Text(String),
    Regex(regex::Regex),
    Field(Vec<String>, String),
}

impl LineFilter {
    fn keep(&self, line: &ArchivedLine) -> bool {
        match self {
            LineFilter::All => true,
            LineFilter::Text(text) => line.line.contains(text.as_str()),
            LineFilter::Regex(regex) => regex.is_match(&line.line),
            LineFilter::Field(path, value) => {
                let Ok(json) = serde_json::from_str::<serde_json::Value>(&line.line) else {
                    return false;
                };
                let mut at = &json;
                for part in path {
                    match at.get(part.as_str()) {
                        Some(next) => at = next,
                        None => return false,
                    }
                }
                match at {
                    serde_json::Value::String(s) => s == value,
                    other => value
                        .parse::<serde_json::Value>()
                        .is_ok_and(|v| v == *other),
                }
            }
        }
    }
}

enum Sink {
    Stream(
        kpl::Producer,
        String,
        tokio::task::JoinHandle<(u64, u64)>,
        tokio::sync::mpsc::Sender<kpl::PendingResult>,
    ),
    /// Written through the blocking pool (tokio's File), never on a worker.
    Output(tokio::io::BufWriter<tokio::fs::File>),
    Count,
}

#[derive(Default)]
struct Progress {
    objects_done: u64,
    objects_total: u64,
    bytes_done: u64,
    bytes_total: u64,
    lines: u64,
    matched: u64,
    failed: Vec<(String, String)>,
    /// Matching records that could not be published (skipped).
    bad_records: u64,
    last_done: Option<String>,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let file_config = match &args.config {
        Some(path) => Some(crate::config::load(Some(path))?),
        None => None,
    };
    let bucket = args
        .bucket
        .clone()
        .or_else(|| file_config.as_ref().map(|c| c.bucket.clone()))
        .context("--bucket (or --config) is required")?;
    let prefix = args
        .prefix
        .clone()
        .or_else(|| file_config.as_ref().map(|c| c.prefix.clone()))
        .unwrap_or_default();
    let template = args
        .key_template
        .clone()
        .or_else(|| file_config.as_ref().and_then(|c| c.key_template.clone()))
        .unwrap_or_else(|| DEFAULT_TEMPLATE.to_owned());
    let template = KeyTemplate::new(&prefix, &template)?;
    let selection = Selection {
        from: args.from.as_deref().map(parse_time).transpose()?,
        to: args.to.as_deref().map(parse_time).transpose()?,
        stream: args.stream.clone(),
        shard: args.shard.clone(),
        after: args.after.as_deref().map(parse_position).transpose()?,
        until: args.until.as_deref().map(parse_position).transpose()?,
    };
    let filter = match (&args.grep, &args.regex, &args.field) {
        (Some(text), _, _) => LineFilter::Text(text.clone()),
        (_, Some(re), _) => LineFilter::Regex(regex::Regex::new(re).context("--regex")?),
        (_, _, Some(field)) => {
            let (path, value) = field.split_once('=').context("--field wants PATH=VALUE")?;
            LineFilter::Field(
                path.split('.').map(str::to_owned).collect(),
                value.to_owned(),
            )
        }
        _ => LineFilter::All,
    };
    let sdk_config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let force_path_style = args.force_path_style
        || file_config.as_ref().and_then(|c| c.force_path_style) == Some(true);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk_config)
            .force_path_style(force_path_style)
            .build(),
    );
    let mut sink = match (&args.to_stream, &args.output, args.dry_run) {
        (Some(stream), _, _) => {
            let producer = kpl::Producer::builder()
                .sdk_config(&sdk_config)
                .streams([stream.clone()])
                .build()
                .context("cannot start the producer")?;
            let (results_tx, mut results) =
                tokio::sync::mpsc::channel::<kpl::PendingResult>(100_000);
            let waiter = tokio::spawn(async move {
                let (mut ok, mut failed) = (0, 0);
                while let Some(result) = results.recv().await {
                    match result.await {
                        Ok(_) => ok += 1,
                        Err(error) => {
                            failed += 1;
                            tracing::error!(%error, "a record could not be published");
                        }
                    }
                }
                (ok, failed)
            });
            Sink::Stream(producer, stream.clone(), waiter, results_tx)
        }
        (None, Some(path), _) if path == "-" => {
            use std::os::fd::AsFd;
            let stdout = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .context("cannot use stdout")?;
            Sink::Output(tokio::io::BufWriter::new(tokio::fs::File::from_std(
                std::fs::File::from(stdout),
            )))
        }
        (None, Some(path), _) => Sink::Output(tokio::io::BufWriter::new(
            tokio::fs::File::create(path)
                .await
                .with_context(|| format!("cannot create {path}"))?,
        )),
        (None, None, true) => Sink::Count,
        (None, None, false) => {
            bail!("say where matching records go: --to-stream, --output or --dry-run")
        }
    };

    // Ctrl-C from here on stops the replay cleanly, with a report.
    let (interrupt_tx, mut interrupt) = tokio::sync::watch::channel(false);
    let signals = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = interrupt_tx.send(true);
        }
    });
    let reader = ArchiveReader::new(s3, &bucket, template).with_concurrency(args.concurrency);
    let started = Instant::now();
    let objects = tokio::select! {
        objects = reader.list(&selection) => objects?,
        _ = interrupt.changed() => {
            eprintln!("replay interrupted while listing the archive: nothing was read");
            bail!("interrupted");
        }
    };
    let mut progress = Progress {
        objects_total: objects.len() as u64,
        bytes_total: objects.iter().map(|o| o.size).sum(),
        ..Default::default()
    };
    eprintln!(
        "replay: {} objects ({} bytes) in s3://{bucket}/{prefix} may hold the selection",
        progress.objects_total, progress.bytes_total
    );
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(progress.bytes_total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {msg} [{elapsed_precise}, ETA {eta}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut items = reader.read(objects, selection);
    let mut last_report = Instant::now();
    let mut interrupted = false;
    let mut fatal = None;
    loop {
        let item = tokio::select! {
            item = items.recv() => item,
            _ = interrupt.changed() => {
                interrupted = true;
                None
            }
        };
        let Some(item) = item else { break };
        match item {
            ArchiveItem::Record(line) => {
                if !filter.keep(&line) {
                    continue;
                }
                progress.matched += 1;
                match &mut sink {
                    Sink::Stream(producer, stream, _, results) => {
                        // A record that cannot be published is reported and
                        // skipped: stopping here would drop the records the
                        // producer has already accepted.
                        let record = &line.record;
                        let user_record = record
                            .payload()
                            .map_err(|error| format!("bad payload: {error}"))
                            .and_then(|payload| {
                                let user_record = kpl::UserRecord::new(
                                    stream.as_str(),
                                    record.partition_key.as_str(),
                                    payload,
                                );
                                match &record.explicit_hash_key {
                                    Some(ehk) => {
                                        user_record.with_explicit_hash_key_str(ehk).map_err(
                                            |error| format!("bad explicit hash key {ehk}: {error}"),
                                        )
                                    }
                                    None => Ok(user_record),
                                }
                            });
                        let pending = match user_record {
                            Ok(user_record) => producer
                                .add_user_record(user_record)
                                .await
                                .map_err(|error| format!("not accepted: {error}")),
                            Err(error) => Err(error),
                        };
                        match pending {
                            Ok(pending) => {
                                let _ = results.send(pending).await;
                            }
                            Err(error) => {
                                progress.bad_records += 1;
                                eprintln!(
                                    "replay: skipping record {}/{} of {}: {error}",
                                    record.sequence_number, record.sub_sequence_number, line.key
                                );
                            }
                        }
                    }
                    Sink::Output(out) => {
                        out.write_all(line.line.as_bytes()).await?;
                        out.write_all(b"\n").await?;
                    }
                    Sink::Count => {}
                }
            }
            ArchiveItem::ObjectDone { key, bytes, lines } => {
                progress.objects_done += 1;
                progress.bytes_done += bytes;
                progress.lines += lines;
                progress.last_done = Some(key);
            }
            ArchiveItem::ObjectFailed { key, bytes, error } => {
                progress.objects_done += 1;
                progress.bytes_done += bytes;
                eprintln!("replay: skipping an object: {error}");
                progress.failed.push((key, error.to_string()));
                if args.strict {
                    fatal = Some(error);
                    break;
                }
            }
        }
        if let Some(bar) = &bar {
            bar.set_position(progress.bytes_done);
            bar.set_message(format!(
                "objects {}/{}, matched {}",
                progress.objects_done, progress.objects_total, progress.matched
            ));
        } else if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "replay: objects {}/{}, bytes {}/{}, matched {}, {:.0} records/s",
                progress.objects_done,
                progress.objects_total,
                progress.bytes_done,
                progress.bytes_total,
                progress.matched,
                progress.matched as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    drop(items);
    signals.abort();
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let published = match sink {
        Sink::Stream(producer, _, waiter, results) => {
            drop(results);
            producer.flush_all().await.ok();
            let counts = waiter.await.unwrap_or((0, 0));
            producer.shutdown().await.ok();
            Some(counts)
        }
        Sink::Output(mut out) => {
            out.flush().await?;
            None
        }
        Sink::Count => None,
    };
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "replay {}: {}/{} objects, {} bytes, {} lines read, {} matched{}, {} failed objects, {:.1} s ({:.0} matched/s)",
        if interrupted {
            "interrupted"
        } else if fatal.is_some() {
            "stopped"
        } else {
            "done"
        },
        progress.objects_done,
        progress.objects_total,
        progress.bytes_done,
        progress.lines,
        progress.matched,
        match published {
            Some((ok, failed)) => format!(
                ", {ok} published, {} not published",
                failed + progress.bad_records
            ),
            None => String::new(),
        },
        progress.failed.len(),
        elapsed,
        progress.matched as f64 / elapsed.max(1e-9),
    );
    for (_, error) in &progress.failed {
        eprintln!("  failed: {error}");
    }
    if interrupted {
        match &progress.last_done {
            Some(key) => eprintln!("replay: the last object read completely was {key}"),
            None => eprintln!("replay: no object was read completely"),
        }
        bail!("interrupted");
    }
    if let Some(error) = fatal {
        return Err(error).context("--strict: stopping at a failed object");
    }
    if let Some((_, failed)) = published
        && failed + progress.bad_records > 0
    {
        bail!(
            "{} records could not be published",
            failed + progress.bad_records
        );
    }
    Ok(())
}
