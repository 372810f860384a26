//! The record processor kcl runs per shard lease: it starts a child and
//! speaks the MultiLang protocol with it (the Java daemon's
//! `MultiLangShardRecordProcessor` and `MultiLangProtocol`): each message is
//! answered by a `status` naming its action; checkpoints the child asks for
//! meanwhile are made and answered.
//!
//! Where the Java daemon exits the whole JVM (a child that exits, breaks
//! the protocol or passes `timeoutInSeconds`), this one ends only that
//! child's shard: the child is killed, the lease released, and after
//! `childRestartBackoffMillis` a new child resumes the shard at its
//! checkpoint, while the other shards go on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kcl::checkpoint::ExtendedSequenceNumber;
use kcl::processor::{
    CheckpointError, Checkpointer, InitializationInput, ProcessRecordsInput, RecordProcessor,
};

use crate::child::{ChildError, ChildProcess};
use crate::messages::{ChildMessage, DaemonMessage};

/// Metric: children started (`kcl_multilang_children_started_total`).
pub const CHILDREN_STARTED: &str = "kcl_multilang_children_started_total";
/// Metric: children that failed and cost their shard a restart, by `reason`
/// (`spawn`, `write`, `exited`, `read`, `timeout`, `protocol`).
pub const CHILD_FAILURES: &str = "kcl_multilang_child_failures_total";

/// What every shard's child is started with.
#[derive(Debug, Clone)]
pub struct ChildSettings {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Where a program named without a path is looked for after the `PATH`.
    pub base_dir: Option<PathBuf>,
    /// `timeoutInSeconds`.
    pub timeout: Option<Duration>,
    /// `callProcessRecordsEvenForEmptyRecordList`.
    pub forward_empty_batches: bool,
    /// Said in the failure's log line.
    pub restart_backoff: Duration,
}

/// A shard's record processor: one child process.
#[derive(Debug)]
pub struct MultiLangProcessor {
    settings: Arc<ChildSettings>,
    shard_id: String,
    child: Option<ChildProcess>,
    /// The child failed: the lease is handed back at the next call.
    failed: bool,
}

impl MultiLangProcessor {
    /// A processor whose child starts at `initialize`.
    pub fn new(settings: Arc<ChildSettings>) -> Self {
        Self {
            settings,
            shard_id: String::new(),
            child: None,
            failed: false,
        }
    }

    /// Sends `message` and waits for the child's status for it, making the
    /// checkpoints it asks for meanwhile with `checkpointer` (none outside
    /// processRecords, shardEnded and shutdownRequested: then the answer is
    /// `InvalidStateException`, as Java's).
    async fn call(
        &mut self,
        message: &DaemonMessage<'_>,
        mut checkpointer: Option<&mut Checkpointer>,
        shard_ended: bool,
    ) -> Result<(), ChildError> {
        let action = message.action();
        let Some(child) = self.child.as_mut() else {
            return Err(ChildError::Exited {
                action,
                status: "no child".into(),
            });
        };
        child.send(action, &message.to_line()).await?;
        loop {
            match child.next_message(action).await? {
                ChildMessage::Status { response_for } => {
                    return if response_for.as_deref() == Some(action) {
                        Ok(())
                    } else {
                        Err(ChildError::WrongStatus {
                            expected: action,
                            got: response_for,
                        })
                    };
                }
                ChildMessage::Checkpoint {
                    sequence_number,
                    sub_sequence_number,
                } => {
                    let error = checkpoint(
                        checkpointer.as_deref_mut(),
                        shard_ended,
                        sequence_number.as_deref(),
                        sub_sequence_number,
                    )
                    .await;
                    if let Some(error) = error {
                        tracing::warn!(shard = %self.shard_id, ?sequence_number, ?sub_sequence_number,
                            error, "the child's checkpoint failed");
                    }
                    let answer = DaemonMessage::Checkpoint {
                        sequence_number: sequence_number.as_deref(),
                        sub_sequence_number,
                        error,
                    };
                    child.send("checkpoint", &answer.to_line()).await?;
                }
                ChildMessage::MalformedCheckpoint => {
                    tracing::warn!(shard = %self.shard_id,
                        "the child asked for a checkpoint whose position does not read; answered IllegalArgumentException");
                    let answer = DaemonMessage::Checkpoint {
                        sequence_number: None,
                        sub_sequence_number: None,
                        error: Some("IllegalArgumentException"),
                    };
                    child.send("checkpoint", &answer.to_line()).await?;
                }
                ChildMessage::Other => {}
            }
        }
    }

    /// Ends a failed child: logged, counted, killed; the lease goes back at
    /// the next call that has a checkpointer.
    async fn fail(&mut self, error: ChildError) {
        metrics::counter!(CHILD_FAILURES, "reason" => error.kind()).increment(1);
        tracing::error!(shard = %self.shard_id, %error,
            restart_after = ?self.settings.restart_backoff,
            "the shard's child failed: it is killed and the shard's lease released; \
             a new child resumes at the checkpoint (the other shards go on)");
        self.failed = true;
        if let Some(child) = self.child.take() {
            child.kill().await;
        }
    }

    /// Sends a final message (no checkpoint after it) and ends the child.
    async fn last_call(
        &mut self,
        message: DaemonMessage<'_>,
        checkpointer: Option<&mut Checkpointer>,
        shard_ended: bool,
    ) -> bool {
        if self.failed || self.child.is_none() {
            return false;
        }
        match self.call(&message, checkpointer, shard_ended).await {
            Ok(()) => true,
            Err(error) => {
                self.fail(error).await;
                false
            }
        }
    }

    async fn finish_child(&mut self) {
        if let Some(child) = self.child.take() {
            child.finish().await;
        }
    }
}

impl RecordProcessor for MultiLangProcessor {
    async fn initialize(&mut self, input: InitializationInput) {
        self.shard_id = input.shard_id.clone();
        let settings = self.settings.clone();
        match ChildProcess::spawn(
            &settings.command,
            settings.base_dir.as_deref(),
            &input.shard_id,
            settings.timeout,
        ) {
            Ok(child) => {
                metrics::counter!(CHILDREN_STARTED).increment(1);
                self.child = Some(child);
            }
            Err(error) => {
                self.fail(error).await;
                return;
            }
        }
        let message = DaemonMessage::initialize(&input.shard_id, &input.extended_sequence_number);
        if let Err(error) = self.call(&message, None, false).await {
            self.fail(error).await;
        }
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        if self.failed {
            checkpointer.release_lease();
            return;
        }
        if input.records.is_empty() && !self.settings.forward_empty_batches {
            // An idle shard still notices a child that exited, and hands
            // its lease back instead of holding it with nobody processing.
            let exited = self.child.as_mut().and_then(ChildProcess::exited);
            if let Some(status) = exited {
                self.fail(ChildError::Exited {
                    action: "processRecords",
                    status,
                })
                .await;
                checkpointer.release_lease();
            }
            return;
        }
        let message = DaemonMessage::process_records(&input.records, input.millis_behind_latest);
        if let Err(error) = self.call(&message, Some(checkpointer), false).await {
            self.fail(error).await;
            checkpointer.release_lease();
        }
    }

    async fn lease_lost(&mut self) {
        self.last_call(DaemonMessage::LeaseLost, None, false).await;
        self.finish_child().await;
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        if !self
            .last_call(DaemonMessage::ShardEnded, Some(checkpointer), true)
            .await
        {
            // No SHARD_END checkpoint: the shard is retried by a new child.
            checkpointer.release_lease();
        }
        self.finish_child().await;
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        // As the Java KCL 2.x: shutdownRequested (the child may checkpoint),
        // then, the lease being given up, leaseLost.
        if self
            .last_call(DaemonMessage::ShutdownRequested, Some(checkpointer), false)
            .await
        {
            self.last_call(DaemonMessage::LeaseLost, None, false).await;
        }
        self.finish_child().await;
    }
}

/// Makes a child's checkpoint; `None` on success, else the simple name of
/// the exception the Java daemon would answer with
/// (`RecordProcessorCheckpointer.checkpoint`'s: `ShutdownException`,
/// `InvalidStateException`, `ThrottlingException`,
/// `KinesisClientLibDependencyException`, `IllegalArgumentException`).
pub async fn checkpoint(
    checkpointer: Option<&mut Checkpointer>,
    shard_ended: bool,
    sequence_number: Option<&str>,
    sub_sequence_number: Option<i64>,
) -> Option<&'static str> {
    let Some(checkpointer) = checkpointer else {
        return Some("InvalidStateException");
    };
    let result = match sequence_number {
        None if shard_ended => checkpointer.checkpoint_shard_end().await,
        None => checkpointer.checkpoint().await,
        Some("SHARD_END") => checkpointer.checkpoint_shard_end().await,
        Some(sequence) => {
            let sub = sub_sequence_number.unwrap_or(0);
            if sequence.is_empty() || !sequence.bytes().all(|b| b.is_ascii_digit()) || sub < 0 {
                return Some("IllegalArgumentException");
            }
            checkpointer
                .checkpoint_sequence(ExtendedSequenceNumber::new(sequence, sub as u64))
                .await
        }
    };
    result.err().map(|error| java_exception(&error))
}

/// The Java checkpointer's exception for one of ours.
fn java_exception(error: &CheckpointError) -> &'static str {
    match error {
        CheckpointError::LeaseLost(_) => "ShutdownException",
        CheckpointError::OutOfRange { .. } | CheckpointError::ShardNotEnded => {
            "IllegalArgumentException"
        }
        CheckpointError::Table(kcl::lease::LeaseError::Contended { .. }) => "ThrottlingException",
        // As the Java KCL's DynamoDBLeaseRefresher maps them: throttling is
        // retryable, a missing table an invalid state, the rest a dependency.
        CheckpointError::Table(kcl::lease::LeaseError::Dynamo {
            code: Some(code), ..
        }) => match code.as_str() {
            "ProvisionedThroughputExceededException" | "RequestLimitExceeded" => {
                "ThrottlingException"
            }
            "ResourceNotFoundException" => "InvalidStateException",
            _ => "KinesisClientLibDependencyException",
        },
        CheckpointError::Table(_) => "KinesisClientLibDependencyException",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcl::lease::LeaseError;

    #[tokio::test]
    async fn a_checkpoint_without_a_checkpointer_is_an_invalid_state() {
        assert_eq!(
            checkpoint(None, false, None, None).await,
            Some("InvalidStateException")
        );
        assert_eq!(
            checkpoint(None, false, Some("1"), Some(0)).await,
            Some("InvalidStateException")
        );
    }

    #[test]
    fn errors_carry_the_java_checkpointer_exception_names() {
        let dynamo = |code: &str| {
            CheckpointError::Table(LeaseError::Dynamo {
                operation: "UpdateItem",
                message: format!("{code}: service error"),
                code: (!code.is_empty()).then(|| code.to_owned()),
            })
        };
        let cases = [
            (
                CheckpointError::LeaseLost("shardId-0".into()),
                "ShutdownException",
            ),
            (
                CheckpointError::OutOfRange {
                    requested: ExtendedSequenceNumber::new("9", 0),
                    last_checkpoint: ExtendedSequenceNumber::TRIM_HORIZON,
                    largest_delivered: ExtendedSequenceNumber::new("5", 0),
                },
                "IllegalArgumentException",
            ),
            (CheckpointError::ShardNotEnded, "IllegalArgumentException"),
            (
                CheckpointError::Table(LeaseError::Contended {
                    lease_key: "k".into(),
                    attempts: 3,
                }),
                "ThrottlingException",
            ),
            (
                dynamo("ProvisionedThroughputExceededException"),
                "ThrottlingException",
            ),
            (dynamo("ResourceNotFoundException"), "InvalidStateException"),
            (dynamo(""), "KinesisClientLibDependencyException"),
            (
                dynamo("InternalServerError"),
                "KinesisClientLibDependencyException",
            ),
        ];
        for (error, name) in cases {
            assert_eq!(java_exception(&error), name, "{error}");
        }
    }
}
