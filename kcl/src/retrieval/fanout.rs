//! Enhanced fan-out: RegisterStreamConsumer + SubscribeToShard, re-subscribing
//! where the last subscription stopped.

use std::time::Duration;

use aws_sdk_kinesis::primitives::event_stream::EventReceiver;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{
    ConsumerStatus, StartingPosition as SdkStartingPosition, SubscribeToShardEventStream,
};

use super::convert::{Resume, children, convert};
use super::{Batch, RetrievalError, StartingPosition};
use crate::checkpoint::ExtendedSequenceNumber;

/// Registers (or finds) the stream consumer `consumer_name` and waits until
/// it is ACTIVE; returns its ARN.
pub async fn register_consumer(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    consumer_name: &str,
) -> Result<String, RetrievalError> {
    // Stream-level calls: no shard to name.
    let error = |operation: &'static str, e: &dyn std::error::Error| RetrievalError::Kinesis {
        operation,
        shard_id: String::new(),
        message: crate::error_chain(e),
        permanent: None,
    };
    let summary = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| error("DescribeStreamSummary", &e))?;
    let stream_arn = summary
        .stream_description_summary()
        .map(|s| s.stream_arn().to_owned())
        .unwrap_or_default();
    match client
        .register_stream_consumer()
        .stream_arn(&stream_arn)
        .consumer_name(consumer_name)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) => {}
        Err(e) => return Err(error("RegisterStreamConsumer", &e)),
    }
    for _ in 0..600 {
        let out = client
            .describe_stream_consumer()
            .stream_arn(&stream_arn)
            .consumer_name(consumer_name)
            .send()
            .await
            .map_err(|e| error("DescribeStreamConsumer", &e))?;
        if let Some(consumer) = out.consumer_description()
            && consumer.consumer_status() == &ConsumerStatus::Active
        {
            return Ok(consumer.consumer_arn().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(RetrievalError::Kinesis {
        permanent: None,
        operation: "DescribeStreamConsumer",
        shard_id: String::new(),
        message: format!("consumer {consumer_name} did not become ACTIVE"),
    })
}

/// Reads one shard through an enhanced fan-out subscription.
#[derive(Debug)]
pub struct FanOutReader {
    client: aws_sdk_kinesis::Client,
    stream: String,
    consumer_arn: String,
    shard_id: String,
    after: ExtendedSequenceNumber,
    resume: Resume,
    events: Option<EventReceiver<SubscribeToShardEventStream, SubscribeToShardEventStreamError>>,
    ended: bool,
    hash_range: Option<(u128, u128)>,
}

impl FanOutReader {
    /// A reader of `shard_id` through the consumer `consumer_arn`, resuming
    /// after `checkpoint`.
    pub fn new(
        client: aws_sdk_kinesis::Client,
        stream: impl Into<String>,
        consumer_arn: impl Into<String>,
        shard_id: impl Into<String>,
        checkpoint: ExtendedSequenceNumber,
        initial: StartingPosition,
    ) -> Self {
        Self {
            client,
            stream: stream.into(),
            consumer_arn: consumer_arn.into(),
            shard_id: shard_id.into(),
            after: checkpoint,
            resume: Resume::new(initial),
            events: None,
            ended: false,
            hash_range: None,
        }
    }

    /// Also check each sub-record's hash key against the shard's range.
    pub fn with_hash_range(mut self, start: u128, end: u128) -> Self {
        self.hash_range = Some((start, end));
        self
    }

    /// Whether a subscription is open (one ends after about five minutes, or
    /// on an error; the next [`next_batch`](Self::next_batch) renews it).
    pub fn is_subscribed(&self) -> bool {
        self.events.is_some()
    }

    fn error(
        &self,
        operation: &'static str,
        error: impl std::error::Error + aws_sdk_kinesis::error::ProvideErrorMetadata,
    ) -> RetrievalError {
        RetrievalError::kinesis(operation, &self.shard_id, error)
    }

    /// Subscribes at the current position: AT_SEQUENCE_NUMBER of the last
    /// record processed (what is at or before it is skipped), else of the
    /// last subscription's continuation, else the starting position (LATEST
    /// only once: see [`Resume`]).
    async fn subscribe(&mut self) -> Result<(), RetrievalError> {
        let (kind, sequence, timestamp) = self.resume.position(&self.after);
        let position = SdkStartingPosition::builder()
            .r#type(kind)
            .set_sequence_number(sequence)
            .set_timestamp(timestamp);
        let position = position.build().map_err(|e| RetrievalError::Kinesis {
            operation: "SubscribeToShard",
            shard_id: self.shard_id.clone(),
            message: crate::error_chain(&e),
            permanent: None,
        })?;
        let out = self
            .client
            .subscribe_to_shard()
            .consumer_arn(&self.consumer_arn)
            .shard_id(&self.shard_id)
            .starting_position(position)
            .send()
            .await
            .map_err(|e| self.error("SubscribeToShard", e))?;
        self.events = Some(out.event_stream);
        Ok(())
    }

    /// The next event's records. A subscription that ends (they last about
    /// five minutes) is renewed where it stopped.
    pub async fn next_batch(&mut self) -> Result<Batch, RetrievalError> {
        if self.ended {
            return Ok(Batch {
                shard_end: Some(Vec::new()),
                ..Default::default()
            });
        }
        if self.events.is_none() {
            self.subscribe().await?;
        }
        let Some(events) = self.events.as_mut() else {
            return Ok(Batch::default());
        };
        let event = match events.recv().await {
            Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event))) => event,
            Ok(Some(_)) => return Ok(Batch::default()),
            Ok(None) => {
                self.events = None;
                return Ok(Batch::default());
            }
            Err(error) => {
                self.events = None;
                return Err(self.error("SubscribeToShard event", error));
            }
        };
        let records = convert(
            event.records(),
            &mut self.after,
            &self.resume,
            &self.shard_id,
            self.hash_range,
        );
        self.resume
            .set_continuation(event.continuation_sequence_number());
        let named: Vec<String> = event
            .child_shards()
            .iter()
            .map(|c| c.shard_id().to_owned())
            .collect();
        let shard_end = if event.continuation_sequence_number().is_empty() || !named.is_empty() {
            self.ended = true;
            self.events = None;
            Some(
                children(&self.client, &self.stream, &self.shard_id, named)
                    .await
                    .map_err(|e| self.error("ListShards", e))?,
            )
        } else {
            None
        };
        Ok(Batch {
            records,
            millis_behind_latest: Some(event.millis_behind_latest()),
            shard_end,
        })
    }
}
