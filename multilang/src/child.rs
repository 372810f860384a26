//! One record processor child process: launched from `executableName`,
//! messages written to its stdin, messages read from its stdout, its stderr
//! forwarded to the log with the shard id (the Java daemon's
//! `MultiLangShardRecordProcessor` process handling, `MessageWriter`,
//! `MessageReader`, `DrainChildSTDERRTask`).
//!
//! Every read and write is bounded by `timeoutInSeconds` when set; the
//! process is killed when this value is dropped, so no child outlives the
//! shard it was started for.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::messages::ChildMessage;

/// Longest line kept from a child's stdout or stderr; longer lines are cut
/// (stdout: skipped as not a message; stderr: logged in pieces).
pub const MAX_LINE: usize = 1 << 20;

/// How long a child has to exit after its stdin is closed (after
/// `leaseLost`, `shardEnded` or `shutdownRequested`) before it is killed.
pub const EXIT_GRACE: Duration = Duration::from_secs(10);

/// Why a child can no longer serve its shard.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The executable could not be started.
    #[error("cannot start {program:?} (executableName): {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// Writing a message to the child's stdin failed (it exited or closed
    /// it).
    #[error("writing the {action} message to the child failed: {source}")]
    Write {
        /// The message's action.
        action: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The child's stdout ended (it exited) before it answered.
    #[error(
        "the child closed its output (exited: {status}) while the daemon waited for its answer to {action}"
    )]
    Exited {
        /// What was waited for.
        action: &'static str,
        /// Its exit status, when known.
        status: String,
    },
    /// Reading the child's stdout failed.
    #[error("reading the child's output failed while waiting for its answer to {action}: {source}")]
    Read {
        /// What was waited for.
        action: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The child did not answer within `timeoutInSeconds`.
    #[error("the child did not answer {action} within {after:?} (timeoutInSeconds)")]
    Timeout {
        /// What was waited for.
        action: &'static str,
        /// The bound.
        after: Duration,
    },
    /// The child's status answered another action (a protocol error).
    #[error("the child answered {got:?} while the daemon waited for its answer to {expected}")]
    WrongStatus {
        /// What was waited for.
        expected: &'static str,
        /// What the status named.
        got: Option<String>,
    },
}

impl ChildError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Spawn { .. } => "spawn",
            Self::Write { .. } => "write",
            Self::Exited { .. } => "exited",
            Self::Read { .. } => "read",
            Self::Timeout { .. } => "timeout",
            Self::WrongStatus { .. } => "protocol",
        }
    }
}

/// A running child.
#[derive(Debug)]
pub struct ChildProcess {
    shard_id: String,
    process: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Option<JoinHandle<()>>,
    timeout: Option<Duration>,
    line: Vec<u8>,
}

impl ChildProcess {
    /// Starts `command` (program and arguments) for `shard_id`. A program
    /// without a `/` is looked up on the `PATH`, then in `base_dir` (the
    /// properties file's directory, where the samples keep their scripts).
    ///
    /// # Errors
    /// [`ChildError::Spawn`].
    pub fn spawn(
        command: &[String],
        base_dir: Option<&Path>,
        shard_id: &str,
        timeout: Option<Duration>,
    ) -> Result<Self, ChildError> {
        let Some((program, args)) = command.split_first() else {
            return Err(ChildError::Spawn {
                program: String::new(),
                source: std::io::Error::other("executableName is empty"),
            });
        };
        let resolved = resolve_program(program, base_dir);
        let mut process = Command::new(&resolved)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ChildError::Spawn {
                program: program.clone(),
                source,
            })?;
        let spawn_error = |what: &str| ChildError::Spawn {
            program: program.clone(),
            source: std::io::Error::other(format!("no {what} pipe")),
        };
        let stdin = process.stdin.take().ok_or_else(|| spawn_error("stdin"))?;
        let stdout = process.stdout.take().ok_or_else(|| spawn_error("stdout"))?;
        let stderr = process.stderr.take().ok_or_else(|| spawn_error("stderr"))?;
        let stderr = tokio::spawn(forward_stderr(stderr, shard_id.to_owned()));
        tracing::info!(shard = %shard_id, pid = process.id(), command = ?command, "child started");
        Ok(Self {
            shard_id: shard_id.to_owned(),
            process,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            stderr: Some(stderr),
            timeout,
            line: Vec::new(),
        })
    }

    /// Whether the child has exited (its exit status then), without waiting.
    pub fn exited(&mut self) -> Option<String> {
        match self.process.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(error) => Some(error.to_string()),
        }
    }

    /// The child's process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.process.id()
    }

    /// Writes one message line (newline included) and flushes it.
    ///
    /// # Errors
    /// [`ChildError::Write`], or [`ChildError::Timeout`] when the child does
    /// not read its stdin.
    pub async fn send(&mut self, action: &'static str, line: &[u8]) -> Result<(), ChildError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(ChildError::Write {
                action,
                source: std::io::Error::other("stdin already closed"),
            });
        };
        let write = async {
            stdin.write_all(line).await?;
            stdin.flush().await
        };
        bounded(self.timeout, action, write)
            .await?
            .map_err(|source| ChildError::Write { action, source })
    }

    /// The next message on the child's stdout, skipping lines that are not
    /// messages (logged at DEBUG).
    ///
    /// # Errors
    /// [`ChildError::Exited`], [`ChildError::Read`], [`ChildError::Timeout`].
    pub async fn next_message(
        &mut self,
        waiting_for: &'static str,
    ) -> Result<ChildMessage, ChildError> {
        // One bound for the whole wait, as the Java daemon's: lines that are
        // not messages do not extend it.
        let deadline = self.timeout.map(|t| (tokio::time::Instant::now() + t, t));
        loop {
            let read = read_line(&mut self.stdout, &mut self.line);
            let read =
                match deadline {
                    None => read.await,
                    Some((at, after)) => tokio::time::timeout_at(at, read).await.map_err(|_| {
                        ChildError::Timeout {
                            action: waiting_for,
                            after,
                        }
                    })?,
                };
            match read {
                Ok(0) => {
                    let status = match self.process.try_wait() {
                        Ok(Some(status)) => status.to_string(),
                        _ => "not yet".to_owned(),
                    };
                    return Err(ChildError::Exited {
                        action: waiting_for,
                        status,
                    });
                }
                Ok(_) => {
                    if let Some(message) = ChildMessage::parse(&self.line) {
                        return Ok(message);
                    }
                    let text = String::from_utf8_lossy(self.line.trim_ascii());
                    if !text.is_empty() {
                        tracing::debug!(shard = %self.shard_id, line = %text, "child output that is not a message");
                    }
                }
                Err(source) => {
                    return Err(ChildError::Read {
                        action: waiting_for,
                        source,
                    });
                }
            }
        }
    }

    /// Ends the child as the Java daemon does after `leaseLost` or
    /// `shardEnded`: closes its stdin, drains its stdout, waits for it to
    /// exit — for at most [`EXIT_GRACE`], then kills it.
    pub async fn finish(mut self) -> Option<ExitStatus> {
        drop(self.stdin.take());
        let shard_id = self.shard_id.clone();
        let drain = async {
            // What the child still writes is read and dropped, not kept.
            let _ = tokio::io::copy(&mut self.stdout, &mut tokio::io::sink()).await;
            self.process.wait().await.ok()
        };
        let drained = tokio::time::timeout(EXIT_GRACE, drain).await;
        let status = match drained {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(shard = %shard_id, "child did not exit within {EXIT_GRACE:?} of its stdin closing: killed");
                let _ = self.process.kill().await;
                self.process.try_wait().ok().flatten()
            }
        };
        if let Some(stderr) = self.stderr.take() {
            // The pipe ends with the process; bounded in case a grandchild
            // holds it open.
            let _ = tokio::time::timeout(Duration::from_secs(1), stderr).await;
        }
        tracing::info!(shard = %shard_id, status = ?status, "child ended");
        status
    }

    /// Kills the child at once (after a protocol failure).
    pub async fn kill(mut self) {
        let _ = self.process.kill().await;
        if let Some(stderr) = self.stderr.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), stderr).await;
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // kill_on_drop kills the process; the stderr task ends with its pipe.
        if let Some(stderr) = &self.stderr {
            stderr.abort();
        }
    }
}

async fn bounded<T>(
    timeout: Option<Duration>,
    action: &'static str,
    future: impl Future<Output = T>,
) -> Result<T, ChildError> {
    match timeout {
        None => Ok(future.await),
        Some(after) => tokio::time::timeout(after, future)
            .await
            .map_err(|_| ChildError::Timeout { action, after }),
    }
}

/// Reads one line into `line` (without growing past [`MAX_LINE`]: the rest
/// of a longer line is read and dropped). Returns the bytes consumed, 0 at
/// the end of the output.
async fn read_line(
    reader: &mut BufReader<ChildStdout>,
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    line.clear();
    let mut consumed = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(consumed);
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..=end], true),
            None => (available, false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        reader.consume(used);
        consumed += used;
        if done {
            return Ok(consumed);
        }
    }
}

/// Logs each line of a child's stderr at INFO with its shard (the Java
/// daemon logs them at ERROR, which drowns real errors: processors log
/// there routinely). Text without a newline is logged when 8 KiB collect,
/// and at the end.
async fn forward_stderr(stderr: tokio::process::ChildStderr, shard_id: String) {
    const PIECE: usize = 8 << 10;
    let mut reader = BufReader::new(stderr);
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let available = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(available) => available,
        };
        let used = available.len();
        pending.extend_from_slice(available);
        reader.consume(used);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            log_stderr(&shard_id, &pending[..end]);
            pending.drain(..=end);
        }
        while pending.len() >= PIECE {
            log_stderr(&shard_id, &pending[..PIECE]);
            pending.drain(..PIECE);
        }
    }
    log_stderr(&shard_id, &pending);
}

fn log_stderr(shard_id: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    if !text.is_empty() {
        tracing::info!(target: "kcl_multilang::child", shard = %shard_id, "{text}");
    }
}

/// `program` as the Java daemon's `ProcessBuilder` finds it (a path, or a
/// name on the `PATH`), and otherwise in `base_dir`.
fn resolve_program(program: &str, base_dir: Option<&Path>) -> PathBuf {
    if program.contains('/') || on_path(program) {
        return PathBuf::from(program);
    }
    match base_dir.map(|dir| dir.join(program)) {
        Some(candidate) if candidate.is_file() => candidate,
        _ => PathBuf::from(program),
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
