//! Listing only the prefixes a time range needs.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::{ArchiveError, ArchiveReader, ArchivedObject, Selection, error_chain};

/// `time` rounded down to a multiple of `step` seconds since the epoch
/// (hours, days: UTC aligns with the epoch).
fn floor(time: DateTime<Utc>, step: i64) -> DateTime<Utc> {
    let seconds = time.timestamp();
    Utc.timestamp_opt(seconds - seconds.rem_euclid(step), 0)
        .single()
        .unwrap_or(time)
}

/// A sequence number as a sortable key (they are decimal, up to 128 bits).
fn sequence_key(sequence: &str) -> (usize, &str) {
    (sequence.len(), sequence)
}

impl ArchiveReader {
    /// The key prefixes to list for `selection`.
    pub fn prefixes(&self, selection: &Selection) -> Vec<String> {
        let root = match self.template.prefix() {
            "" => String::new(),
            prefix => format!("{prefix}/"),
        };
        let (Some(step), Some(from), Some(to)) =
            (self.template.time_step(), selection.from, selection.to)
        else {
            return vec![root];
        };
        // One period before `from`: the connector cuts objects at period
        // boundaries, but an archive written otherwise (older versions,
        // other tools) can have an object named after a record of the
        // previous period that holds records of this one.
        let mut at = floor(from, step) - Duration::seconds(step);
        let mut prefixes = BTreeSet::new();
        while at < to && prefixes.len() < 1_000_000 {
            prefixes.insert(self.template.time_prefix(at));
            at += Duration::seconds(step);
        }
        prefixes.into_iter().collect()
    }

    /// The objects that can hold selected records, in per-shard sequence
    /// order (stream, shard, first sequence number).
    pub async fn list(&self, selection: &Selection) -> Result<Vec<ArchivedObject>, ArchiveError> {
        let slack = Duration::seconds(self.template.time_step().unwrap_or(3_600));
        let mut objects = Vec::new();
        for prefix in self.prefixes(selection) {
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|error| ArchiveError::S3 {
                    operation: "ListObjectsV2",
                    key: prefix.clone(),
                    message: error_chain(&error),
                })?;
                for object in page.contents() {
                    let Some(key) = object.key() else { continue };
                    let Some(parsed) = self.template.parse_key(key) else {
                        continue;
                    };
                    if selection.may_contain(&parsed, slack) {
                        objects.push(ArchivedObject {
                            key: key.to_owned(),
                            size: object.size().unwrap_or(0).max(0) as u64,
                            parsed,
                        });
                    }
                }
            }
        }
        objects.sort_by(|a, b| {
            let order = |o: &ArchivedObject| {
                (
                    o.parsed.stream.clone(),
                    o.parsed.shard.clone(),
                    o.parsed
                        .first_seq
                        .as_ref()
                        .map(|(s, sub)| (sequence_key(s).0, s.clone(), *sub)),
                    o.parsed.time,
                    o.parsed.lane,
                    o.parsed.object,
                )
            };
            order(a).cmp(&order(b)).then_with(|| a.key.cmp(&b.key))
        });
        Ok(objects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{DEFAULT_TEMPLATE, KeyTemplate};

    #[test]
    fn a_range_lists_one_prefix_per_hour_plus_one_before() {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .build();
        let reader = ArchiveReader::new(
            aws_sdk_s3::Client::from_conf(config),
            "b",
            KeyTemplate::new("p", DEFAULT_TEMPLATE).unwrap(),
        );
        let selection = Selection {
            from: Some("2026-01-20T10:30:00Z".parse().unwrap()),
            to: Some("2026-01-20T13:00:00Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(
            reader.prefixes(&selection),
            [
                "p/2026/01/20/09/",
                "p/2026/01/20/10/",
                "p/2026/01/20/11/",
                "p/2026/01/20/12/"
            ]
        );
        assert_eq!(reader.prefixes(&Selection::default()), ["p/"]);
    }
}
