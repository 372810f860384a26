//! `kcl-multilang`: runs MultiLang record processors (amazon-kclpy,
//! aws-kcl, ...) on kcl leases, from a Java MultiLangDaemon properties file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use kcl::scheduler::Scheduler;
use kcl_multilang::config::{DaemonConfig, Loaded};
use kcl_multilang::processor::{ChildSettings, MultiLangProcessor};
use kcl_multilang::properties::Properties;
use kinesis_ops::log::LogFormat;

/// The KCL MultiLangDaemon without a JVM: the Java daemon's command line
/// and properties file.
#[derive(Debug, Parser)]
#[command(name = "kcl-multilang", version)]
struct Args {
    /// The properties file (the Java daemon's `--properties-file`).
    #[arg(short = 'p', long = "properties-file", value_name = "FILE")]
    properties_file: Option<PathBuf>,
    /// The properties file, given without the option (as the Java daemon
    /// also takes it).
    #[arg(value_name = "FILE", conflicts_with = "properties_file")]
    file: Option<PathBuf>,
    /// The Java daemon's logback.xml: not used here (logs go to stderr,
    /// filtered by RUST_LOG, in --log-format).
    #[arg(short = 'l', long = "log-configuration", value_name = "FILE")]
    log_configuration: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, default_value = "text", env = "KCL_MULTILANG_LOG_FORMAT")]
    log_format: LogFormat,
    /// Read and check the properties file, print the settings, and exit.
    #[arg(long)]
    check: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let started = Instant::now();
    let args = Args::parse();
    if let Err(error) = kinesis_ops::log::init(args.log_format, "info") {
        eprintln!("kcl-multilang: {error}");
        return std::process::ExitCode::FAILURE;
    }
    match run(args, started).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("kcl-multilang: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, started: Instant) -> anyhow::Result<()> {
    let path = args
        .properties_file
        .or(args.file)
        .context("no properties file: kcl-multilang --properties-file FILE")?;
    if args.log_configuration.is_some() {
        tracing::warn!(
            "--log-configuration (logback.xml) is not used: set RUST_LOG and --log-format"
        );
    }
    let Loaded {
        config,
        warnings,
        notes,
    } = load(&path)?;
    for warning in &warnings {
        tracing::warn!("{}: {warning}", path.display());
    }
    for note in &notes {
        tracing::info!("{}: {note}", path.display());
    }
    if args.check {
        println!("{config:#?}");
        return Ok(());
    }

    let sdk_config = {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        loader.load().await
    };
    let consumer = config.consumer_config();
    let kinesis = {
        let base = consumer.kinesis_timeouts.apply(&sdk_config);
        let mut builder = aws_sdk_kinesis::config::Builder::from(&base);
        if let Some(url) = &config.kinesis_endpoint {
            builder = builder.endpoint_url(url);
        }
        aws_sdk_kinesis::Client::from_conf(builder.build())
    };
    let dynamodb = {
        let base = consumer.dynamodb_timeouts.apply(&sdk_config);
        let mut builder = aws_sdk_dynamodb::config::Builder::from(&base);
        if let Some(url) = &config.dynamodb_endpoint {
            builder = builder.endpoint_url(url);
        }
        aws_sdk_dynamodb::Client::from_conf(builder.build())
    };
    let settings = Arc::new(ChildSettings {
        command: config.executable.clone(),
        base_dir: path.parent().map(Path::to_path_buf),
        timeout: config.timeout,
        forward_empty_batches: config.call_process_records_even_for_empty_record_list,
        restart_backoff: config.child_restart_backoff,
    });
    let scheduler = Scheduler::with_clients(kinesis, dynamodb, consumer, move |_shard: &str| {
        MultiLangProcessor::new(settings.clone())
    });
    let shutdown = scheduler.shutdown_handle();
    tracing::info!(
        stream = %config.stream_name,
        application = %config.application_name,
        worker = %config.worker_id,
        command = ?config.executable,
        startup_ms = started.elapsed().as_millis() as u64,
        "kcl-multilang started"
    );
    let mut running = tokio::spawn(scheduler.run());
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = &mut running => {
            return result.context("the scheduler task failed")?.context("the consumer stopped");
        }
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down gracefully"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down gracefully"),
    }
    // Every child's shutdownRequested, then the lease releases, bounded by
    // shutdownGraceMillis inside the scheduler; a second signal cuts it.
    tokio::select! {
        () = shutdown.graceful() => {}
        _ = sigterm.recv() => anyhow::bail!("a second SIGTERM during the graceful shutdown"),
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted during the graceful shutdown"),
    }
    running
        .await
        .context("the scheduler task failed")?
        .context("the consumer stopped")?;
    tracing::info!("kcl-multilang stopped");
    Ok(())
}

fn load(path: &Path) -> anyhow::Result<Loaded> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading the properties file {}", path.display()))?;
    let text = kcl_multilang::properties::decode(&bytes);
    let properties = Properties::parse(&text).with_context(|| format!("{}", path.display()))?;
    DaemonConfig::from_properties(&properties)
        .with_context(|| format!("{}: the configuration is refused", path.display()))
}
