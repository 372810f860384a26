//! Every call of a shard's processor runs in a span `shard{stream, shard}`,
//! so that each event it logs carries the stream and the shard (in JSON
//! logs: under `span` and `spans`); and a shard that leaves this worker
//! (lease lost, shard ended, shut down) is no longer reported stuck in a
//! permanent error ([`ConnectorStats::set_permanent_error`]).

use std::sync::Arc;

use kcl::processor::{Checkpointer, InitializationInput, ProcessRecordsInput, RecordProcessor};
use tracing::Instrument;

use super::ConnectorStats;

/// A processor whose calls run in its shard's span.
pub(crate) struct Traced<P> {
    inner: P,
    span: tracing::Span,
    stats: Arc<ConnectorStats>,
    lease_key: String,
}

impl<P> Traced<P> {
    pub(crate) fn new(inner: P, stats: Arc<ConnectorStats>, lease_key: &str) -> Self {
        let (stream, shard) = stats.stream_and_shard(lease_key);
        Self {
            inner,
            span: tracing::info_span!("shard", %stream, %shard),
            stats,
            lease_key: lease_key.to_owned(),
        }
    }

    /// The shard is no longer this worker's to be stuck on.
    fn left(&self) {
        self.stats.set_permanent_error(&self.lease_key, None);
    }
}

impl<P: RecordProcessor> RecordProcessor for Traced<P> {
    async fn initialize(&mut self, input: InitializationInput) {
        let span = self.span.clone();
        self.inner.initialize(input).instrument(span).await;
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        let span = self.span.clone();
        self.inner
            .process_records(input, checkpointer)
            .instrument(span)
            .await;
    }

    async fn lease_lost(&mut self) {
        let span = self.span.clone();
        self.inner.lease_lost().instrument(span).await;
        self.left();
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        let span = self.span.clone();
        self.inner.shard_ended(checkpointer).instrument(span).await;
        self.left();
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        let span = self.span.clone();
        self.inner
            .shutdown_requested(checkpointer)
            .instrument(span)
            .await;
        self.left();
    }
}
