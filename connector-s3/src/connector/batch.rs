//! One batch of records through transformer, filter and compression: the
//! CPU-bound part of the pipeline, run off the async workers.

use kcl::retrieval::ConsumerRecord;

use crate::buffer::EntryMeta;
use crate::compress::Compression;
use crate::filter::Filter;
use crate::transform::{RecordContext, Transformer, epoch_millis};

/// A batch ready for the buffer.
pub(crate) struct EncodedBatch {
    pub meta: EntryMeta,
    pub body: Vec<u8>,
    pub filtered: u64,
    pub failures: u64,
}

pub(crate) fn encode(
    context: &RecordContext<'_>,
    records: &[ConsumerRecord],
    transformer: &dyn Transformer,
    filter: &dyn Filter,
    compression: Compression,
) -> std::io::Result<EncodedBatch> {
    let mut raw = Vec::with_capacity(records.iter().map(|r| r.data.len() + 200).sum());
    let mut items = 0;
    let mut filtered = 0;
    let mut failures = 0;
    for record in records {
        if !filter.keep(context, record) {
            filtered += 1;
            continue;
        }
        let mark = raw.len();
        match transformer.transform(context, record, &mut raw) {
            Ok(()) => items += 1,
            Err(error) => {
                raw.truncate(mark);
                failures += 1;
                tracing::error!(shard = context.shard_id, %error, "record skipped");
            }
        }
    }
    let position = |r: &ConsumerRecord| (r.sequence_number.clone(), r.sub_sequence_number);
    let meta = EntryMeta {
        items,
        raw_bytes: raw.len() as u64,
        records: records.len() as u64,
        first_time_ms: records
            .first()
            .and_then(|r| r.approximate_arrival)
            .map(epoch_millis)
            .unwrap_or_else(|| epoch_millis(std::time::SystemTime::now())),
        first_position: records.first().map(position),
        last_position: records.last().map(position),
    };
    let body = if raw.is_empty() {
        Vec::new()
    } else {
        compression.compress(&raw)?
    };
    Ok(EncodedBatch {
        meta,
        body,
        filtered,
        failures,
    })
}
