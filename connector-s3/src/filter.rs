//! The filter stage: which records are archived.

use kcl::retrieval::ConsumerRecord;

use crate::transform::RecordContext;

/// Decides whether a record is archived. Records filtered out still count as
/// done: the checkpoint moves past them with the object after them.
///
/// Any `Fn(&RecordContext, &ConsumerRecord) -> bool` is a filter:
///
/// ```
/// use connector_s3::filter::Filter;
/// use connector_s3::transform::RecordContext;
/// use kcl::retrieval::ConsumerRecord;
/// fn keep_orders(_: &RecordContext<'_>, record: &ConsumerRecord) -> bool {
///     record.partition_key.starts_with("order-")
/// }
/// fn takes_filter(_: impl Filter) {}
/// takes_filter(keep_orders);
/// ```
pub trait Filter: Send + Sync + 'static {
    /// `true` to archive the record.
    fn keep(&self, context: &RecordContext<'_>, record: &ConsumerRecord) -> bool;
}

/// Keeps every record (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct KeepAll;

impl Filter for KeepAll {
    fn keep(&self, _context: &RecordContext<'_>, _record: &ConsumerRecord) -> bool {
        true
    }
}

impl<F> Filter for F
where
    F: Fn(&RecordContext<'_>, &ConsumerRecord) -> bool + Send + Sync + 'static,
{
    fn keep(&self, context: &RecordContext<'_>, record: &ConsumerRecord) -> bool {
        self(context, record)
    }
}
