//! The process's log format: `text` (colours only on a terminal) or `json`
//! (one JSON object per line).

use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only when stderr is a terminal
    /// (never in a file or a pipe).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's
    /// fields (`message` among them) at the top level, and the fields of the
    /// spans it happened in (`span`: the innermost, `spans`: all of them).
    Json,
}

impl FromStr for LogFormat {
    type Err = LogError;

    /// `text` or `json` (any case).
    ///
    /// ```
    /// use kinesis_ops::log::LogFormat;
    /// assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
    /// assert!("xml".parse::<LogFormat>().is_err());
    /// ```
    fn from_str(value: &str) -> Result<Self, LogError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(LogError::UnknownFormat(value.to_owned())),
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Not `text` or `json`.
    #[error("log format {0:?}: expected text or json")]
    UnknownFormat(String),
    /// Another global subscriber is installed already.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// Installs the global `tracing` subscriber writing to stderr in `format`,
/// filtered by `RUST_LOG` when set and by `default_filter` (such as
/// `"info"`) otherwise.
///
/// Only what the events and spans record is written: nothing here reads
/// the environment or configuration, so credentials reach a log line only
/// if some code logs them (none of kinesis-rs does).
///
/// ```
/// kinesis_ops::log::init(kinesis_ops::log::LogFormat::Text, "warn").unwrap();
/// // A second subscriber is refused.
/// assert!(kinesis_ops::log::init(kinesis_ops::log::LogFormat::Json, "warn").is_err());
/// ```
pub fn init(format: LogFormat, default_filter: &str) -> Result<(), LogError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    installed.map_err(|error| LogError::Install(error.to_string()))
}
