//! Object keys from a template.
//!
//! Keys are descriptive for a person (time, stream, shard, first sequence
//! number) and deterministic for the software: rendered only from the
//! object's own first record, so a repeated upload of the same records
//! lands on the same key, finds the object there and adopts it instead of
//! duplicating it (writes never replace an object). Field values
//! are sanitised and literals may not contain `..` segments, so no key can
//! escape the configured prefix.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Template errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyTemplateError {
    /// `{name}` is not a known field.
    #[error("unknown key template field {{{0}}}; known: {KNOWN}")]
    UnknownField(String),
    /// A `{` without its `}`.
    #[error("unclosed {{ in key template {0:?}")]
    Unclosed(String),
    /// `..`, an empty segment, a leading `/` or a backslash.
    #[error("key template {0:?} could escape its prefix (no '..' segments, leading '/' or '\\')")]
    Escapes(String),
    /// A field the use needs is missing (for example `{first_seq}`, without
    /// which two objects of a shard would share a key).
    #[error("key template {template:?} needs the field {{{field}}}")]
    Missing {
        /// The template.
        template: String,
        /// The missing field.
        field: &'static str,
    },
    /// A field the use cannot have (for example `{id}` in the connector's
    /// keys, which must not depend on which worker writes the object).
    #[error("key template {template:?} cannot use the field {{{field}}} here")]
    Forbidden {
        /// The template.
        template: String,
        /// The field.
        field: &'static str,
    },
}

const KNOWN: &str = "prefix yyyy MM dd HH mm ss date stream shard first_seq id lane object ext";

/// A template field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Prefix,
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Date,
    Stream,
    Shard,
    FirstSeq,
    Id,
    Lane,
    Object,
    Ext,
}

impl Field {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "prefix" => Field::Prefix,
            "yyyy" => Field::Year,
            "MM" => Field::Month,
            "dd" => Field::Day,
            "HH" => Field::Hour,
            "mm" => Field::Minute,
            "ss" => Field::Second,
            "date" => Field::Date,
            "stream" => Field::Stream,
            "shard" => Field::Shard,
            "first_seq" => Field::FirstSeq,
            "id" => Field::Id,
            "lane" => Field::Lane,
            "object" => Field::Object,
            "ext" => Field::Ext,
            _ => return None,
        })
    }

    fn is_time(self) -> bool {
        matches!(
            self,
            Field::Year
                | Field::Month
                | Field::Day
                | Field::Hour
                | Field::Minute
                | Field::Second
                | Field::Date
        )
    }

    /// A regular expression for the rendered value.
    fn pattern(self) -> &'static str {
        match self {
            Field::Prefix => "",
            Field::Year => r"(?P<yyyy>\d{4})",
            Field::Month => r"(?P<MM>\d{2})",
            Field::Day => r"(?P<dd>\d{2})",
            Field::Hour => r"(?P<HH>\d{2})",
            Field::Minute => r"(?P<mm>\d{2})",
            Field::Second => r"(?P<ss>\d{2})",
            Field::Date => r"(?P<date>\d{4}-\d{2}-\d{2})",
            Field::Stream => r"(?P<stream>[A-Za-z0-9._=-]+?)",
            Field::Shard => r"(?P<shard>shardId-\d+|[A-Za-z0-9._=]+)",
            Field::FirstSeq => r"(?P<seq>\d+)-(?P<sub>\d+)",
            Field::Id => r"(?P<id>[A-Za-z0-9._=-]+?)",
            Field::Lane => r"(?P<lane>\d+)",
            Field::Object => r"(?P<object>\d+)",
            Field::Ext => r"(?P<ext>\.gz|\.zst|)",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(Field),
}

/// What a key is rendered from.
#[derive(Debug, Clone)]
pub struct KeyFields<'a> {
    /// Time of the object's first record (`{yyyy}` … `{ss}`, `{date}`), UTC.
    pub time: DateTime<Utc>,
    /// `{stream}`.
    pub stream: &'a str,
    /// `{shard}`.
    pub shard: &'a str,
    /// `{first_seq}`: the first record's sequence and sub-sequence numbers,
    /// rendered `<sequence>-<sub-sequence>`.
    pub first_seq: Option<(&'a str, u64)>,
    /// `{id}`: the journal's id.
    pub id: &'a str,
    /// `{lane}`: the journal lane.
    pub lane: u32,
    /// `{object}`: the object's number in its lane, six digits or more.
    pub object: u64,
    /// `{ext}`: the compression's extension (`.gz`, `.zst` or nothing).
    pub ext: &'a str,
}

impl Default for KeyFields<'_> {
    fn default() -> Self {
        Self {
            time: DateTime::UNIX_EPOCH,
            stream: "",
            shard: "",
            first_seq: None,
            id: "",
            lane: 0,
            object: 0,
            ext: "",
        }
    }
}

/// What [`KeyTemplate::parse_key`] reads back from a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedKey {
    /// The time fields present, as far as they go (missing ones zero).
    pub time: Option<DateTime<Utc>>,
    /// `{stream}`.
    pub stream: Option<String>,
    /// `{shard}`.
    pub shard: Option<String>,
    /// `{first_seq}`.
    pub first_seq: Option<(String, u64)>,
    /// `{object}`.
    pub object: Option<u64>,
    /// `{id}`.
    pub id: Option<String>,
    /// `{lane}`.
    pub lane: Option<u32>,
}

/// A parsed key template with its prefix.
///
/// ```
/// use connector_s3::key::{KeyFields, KeyTemplate};
/// let template = KeyTemplate::new(
///     "archive",
///     "{prefix}/{yyyy}/{MM}/{dd}/{HH}/{stream}-{shard}-{first_seq}.jsonl{ext}",
/// ).unwrap();
/// let key = template.render(&KeyFields {
///     time: "2026-01-20T07:30:00Z".parse().unwrap(),
///     stream: "orders",
///     shard: "shardId-000000000001",
///     first_seq: Some(("4959", 0)),
///     ext: ".gz",
///     ..Default::default()
/// });
/// assert_eq!(key, "archive/2026/01/20/07/orders-shardId-000000000001-4959-0.jsonl.gz");
/// ```
#[derive(Debug, Clone)]
pub struct KeyTemplate {
    prefix: String,
    template: String,
    parts: Vec<Part>,
    matcher: regex::Regex,
}

/// The connector's default template.
pub const DEFAULT_TEMPLATE: &str =
    "{prefix}/{yyyy}/{MM}/{dd}/{HH}/{stream}-{shard}-{first_seq}.jsonl{ext}";

/// The journal's default template (s3-journal's layout).
pub const DEFAULT_JOURNAL_TEMPLATE: &str =
    "{prefix}/{yyyy}/{MM}/{dd}/{id}-{lane}-{object}.journal{ext}";

impl KeyTemplate {
    /// Parses `template` under `prefix`. A template that does not start with
    /// `{prefix}` gets `{prefix}/` put in front, so every key is under the
    /// prefix.
    pub fn new(prefix: &str, template: &str) -> Result<Self, KeyTemplateError> {
        let prefix = prefix.trim_matches('/').to_owned();
        if prefix.split('/').any(|segment| segment == "..") || prefix.contains('\\') {
            return Err(KeyTemplateError::Escapes(prefix));
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| KeyTemplateError::Unclosed(template.to_owned()))?;
            let name = &rest[open + 1..open + close];
            let field = Field::parse(name)
                .ok_or_else(|| KeyTemplateError::UnknownField(name.to_owned()))?;
            parts.push(Part::Field(field));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        match parts.first() {
            // With an empty prefix, drop `{prefix}` and the `/` after it.
            Some(Part::Field(Field::Prefix)) if prefix.is_empty() => {
                parts.remove(0);
                if let Some(Part::Literal(literal)) = parts.first_mut() {
                    *literal = literal.trim_start_matches('/').to_owned();
                }
            }
            Some(Part::Field(Field::Prefix)) => {}
            _ if !prefix.is_empty() => {
                parts.insert(0, Part::Literal("/".to_owned()));
                parts.insert(0, Part::Field(Field::Prefix));
            }
            _ => {}
        }
        if parts
            .iter()
            .skip(1)
            .any(|p| *p == Part::Field(Field::Prefix))
        {
            return Err(KeyTemplateError::Escapes(template.to_owned()));
        }
        let literals: String = parts
            .iter()
            .map(|part| match part {
                Part::Literal(literal) => literal.as_str(),
                Part::Field(_) => "x",
            })
            .collect();
        if literals.starts_with('/')
            || literals.contains('\\')
            || literals
                .split('/')
                .any(|segment| segment == ".." || segment == ".")
            || literals.contains("//")
            || literals.is_empty()
        {
            return Err(KeyTemplateError::Escapes(template.to_owned()));
        }
        let mut pattern = String::from("^");
        for part in &parts {
            match part {
                Part::Literal(literal) => pattern.push_str(&regex::escape(literal)),
                Part::Field(Field::Prefix) => pattern.push_str(&regex::escape(&prefix)),
                Part::Field(field) => pattern.push_str(field.pattern()),
            }
        }
        pattern.push('$');
        // Field names repeat when a field is used twice; keep the first.
        let matcher = regex::Regex::new(&dedupe_groups(&pattern))
            .map_err(|_| KeyTemplateError::Unclosed(template.to_owned()))?;
        Ok(Self {
            prefix,
            template: template.to_owned(),
            parts,
            matcher,
        })
    }

    /// Requires `field` in the template.
    pub fn require(&self, field: &'static str) -> Result<(), KeyTemplateError> {
        if self.uses(field) {
            Ok(())
        } else {
            Err(KeyTemplateError::Missing {
                template: self.template.clone(),
                field,
            })
        }
    }

    /// Errs if the template uses `field`.
    ///
    /// ```
    /// use connector_s3::key::KeyTemplate;
    /// let template = KeyTemplate::new("logs", "{prefix}/{id}-{shard}").unwrap();
    /// assert!(template.forbid("id").is_err());
    /// assert!(template.forbid("lane").is_ok());
    /// ```
    pub fn forbid(&self, field: &'static str) -> Result<(), KeyTemplateError> {
        if self.uses(field) {
            Err(KeyTemplateError::Forbidden {
                template: self.template.clone(),
                field,
            })
        } else {
            Ok(())
        }
    }

    fn uses(&self, field: &str) -> bool {
        let wanted = Field::parse(field);
        self.parts
            .iter()
            .any(|p| Some(p) == wanted.map(Part::Field).as_ref())
    }

    /// The prefix (without slashes at either end).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The template as given.
    pub fn as_str(&self) -> &str {
        &self.template
    }

    /// Renders a key.
    pub fn render(&self, fields: &KeyFields<'_>) -> String {
        self.render_parts(fields, usize::MAX).0
    }

    /// Renders parts up to `limit` non-time fields; returns the key and
    /// whether it stopped early.
    fn render_parts(&self, fields: &KeyFields<'_>, limit: usize) -> (String, bool) {
        let mut key = String::with_capacity(128);
        let t = &fields.time;
        for part in &self.parts {
            match part {
                Part::Literal(literal) => key.push_str(literal),
                Part::Field(field) => {
                    if !field.is_time() && *field != Field::Prefix && limit == 0 {
                        return (key, true);
                    }
                    let _ = match field {
                        Field::Prefix => write!(key, "{}", self.prefix),
                        Field::Year => write!(key, "{:04}", t.year()),
                        Field::Month => write!(key, "{:02}", t.month()),
                        Field::Day => write!(key, "{:02}", t.day()),
                        Field::Hour => write!(key, "{:02}", t.hour()),
                        Field::Minute => write!(key, "{:02}", t.minute()),
                        Field::Second => write!(key, "{:02}", t.second()),
                        Field::Date => write!(key, "{}", t.format("%Y-%m-%d")),
                        Field::Stream => push_clean(&mut key, fields.stream),
                        Field::Shard => push_clean(&mut key, fields.shard),
                        Field::FirstSeq => match fields.first_seq {
                            Some((sequence, sub)) => {
                                let _ = push_clean(&mut key, sequence);
                                write!(key, "-{sub}")
                            }
                            None => write!(key, "0-0"),
                        },
                        Field::Id => push_clean(&mut key, fields.id),
                        Field::Lane => write!(key, "{}", fields.lane),
                        Field::Object => write!(key, "{:06}", fields.object),
                        Field::Ext => push_clean(&mut key, fields.ext),
                    };
                }
            }
        }
        (key, false)
    }

    /// The listing prefix for objects whose first record falls at `time`:
    /// the key up to its first field that is not a time field.
    pub fn time_prefix(&self, time: DateTime<Utc>) -> String {
        let fields = KeyFields {
            time,
            ..Default::default()
        };
        self.render_parts(&fields, 0).0
    }

    /// The finest time unit the template's leading time fields resolve, in
    /// seconds (for stepping through a time range); `None` without time fields.
    pub fn time_step(&self) -> Option<i64> {
        let mut step: Option<i64> = None;
        for part in &self.parts {
            match part {
                Part::Field(field) if field.is_time() => {
                    let unit = match field {
                        Field::Hour => 3_600,
                        Field::Minute => 60,
                        Field::Second => 1,
                        // Years and months vary in length: list them per day.
                        _ => 86_400,
                    };
                    step = Some(step.map_or(unit, |old| old.min(unit)));
                }
                Part::Field(Field::Prefix) | Part::Literal(_) => {}
                Part::Field(_) => break,
            }
        }
        step
    }

    /// Reads the fields back from a key rendered by this template; `None`
    /// if the key does not match it.
    pub fn parse_key(&self, key: &str) -> Option<ParsedKey> {
        let captures = self.matcher.captures(key)?;
        let number = |name: &str| {
            captures
                .name(name)
                .and_then(|m| m.as_str().parse::<u32>().ok())
        };
        let time = match captures.name("date") {
            Some(date) => chrono::NaiveDate::parse_from_str(date.as_str(), "%Y-%m-%d").ok(),
            None => number("yyyy").and_then(|year| {
                chrono::NaiveDate::from_ymd_opt(
                    year as i32,
                    number("MM").unwrap_or(1),
                    number("dd").unwrap_or(1),
                )
            }),
        }
        .and_then(|date| {
            date.and_hms_opt(
                number("HH").unwrap_or(0),
                number("mm").unwrap_or(0),
                number("ss").unwrap_or(0),
            )
        })
        .map(|naive| naive.and_utc());
        Some(ParsedKey {
            time,
            stream: captures.name("stream").map(|m| m.as_str().to_owned()),
            shard: captures.name("shard").map(|m| m.as_str().to_owned()),
            first_seq: captures.name("seq").and_then(|seq| {
                Some((
                    seq.as_str().to_owned(),
                    captures.name("sub")?.as_str().parse().ok()?,
                ))
            }),
            object: captures
                .name("object")
                .and_then(|m| m.as_str().parse().ok()),
            id: captures.name("id").map(|m| m.as_str().to_owned()),
            lane: captures.name("lane").and_then(|m| m.as_str().parse().ok()),
        })
    }
}

/// Renames repeated named groups `(?P<x>` after the first to plain groups.
fn dedupe_groups(pattern: &str) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(at) = rest.find("(?P<") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 4..];
        let end = after.find('>').unwrap_or(0);
        let name = &after[..end];
        if seen.insert(name.to_owned()) {
            out.push_str(&rest[at..at + 4 + end + 1]);
        } else {
            out.push_str("(?:");
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Appends a value with anything outside `[A-Za-z0-9._=-]` replaced by `_`,
/// and `.`/`..` made harmless.
fn push_clean(key: &mut String, value: &str) -> std::fmt::Result {
    if value == "." || value == ".." {
        key.push('_');
        return Ok(());
    }
    key.extend(value.chars().map(|c| {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '=' | '-') {
            c
        } else {
            '_'
        }
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn time(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn keys_parse_back() {
        let template = KeyTemplate::new("a/b", DEFAULT_TEMPLATE).unwrap();
        let key = template.render(&KeyFields {
            time: time("2026-01-20T07:30:00Z"),
            stream: "my-stream",
            shard: "shardId-000000000003",
            first_seq: Some(("495903", 7)),
            ext: ".zst",
            ..Default::default()
        });
        assert_eq!(
            key,
            "a/b/2026/01/20/07/my-stream-shardId-000000000003-495903-7.jsonl.zst"
        );
        let parsed = template.parse_key(&key).unwrap();
        assert_eq!(parsed.time, Some(time("2026-01-20T07:00:00Z")));
        assert_eq!(parsed.stream.as_deref(), Some("my-stream"));
        assert_eq!(parsed.shard.as_deref(), Some("shardId-000000000003"));
        assert_eq!(parsed.first_seq, Some(("495903".to_owned(), 7)));
        assert_eq!(
            template.time_prefix(time("2026-01-20T07:59:00Z")),
            "a/b/2026/01/20/07/"
        );
        assert_eq!(template.time_step(), Some(3600));
    }

    #[test]
    fn a_template_without_prefix_gets_it() {
        let template = KeyTemplate::new("p", "{stream}.log").unwrap();
        let key = template.render(&KeyFields {
            stream: "s",
            ..Default::default()
        });
        assert_eq!(key, "p/s.log");
        let bare = KeyTemplate::new("", DEFAULT_JOURNAL_TEMPLATE).unwrap();
        assert!(
            bare.render(&KeyFields::default())
                .starts_with("1970/01/01/")
        );
    }

    #[test]
    fn templates_that_could_escape_are_refused() {
        for bad in [
            "../{stream}",
            "{stream}/../x",
            "/abs/{stream}",
            "a//{stream}",
            "a\\{stream}",
            "x/{prefix}",
        ] {
            assert!(KeyTemplate::new("p", bad).is_err(), "{bad}");
        }
        assert!(matches!(
            KeyTemplate::new("p", "{nope}"),
            Err(KeyTemplateError::UnknownField(_))
        ));
        assert!(KeyTemplate::new("../p", "{stream}").is_err());
    }

    proptest! {
        #[test]
        fn rendered_keys_stay_under_the_prefix(stream in ".{0,20}", shard in ".{0,20}", seq in ".{0,10}") {
            let template = KeyTemplate::new("root", DEFAULT_TEMPLATE).unwrap();
            let key = template.render(&KeyFields {
                stream: &stream,
                shard: &shard,
                first_seq: Some((&seq, 1)),
                ..Default::default()
            });
            prop_assert!(key.starts_with("root/"));
            prop_assert!(!key.split('/').any(|s| s == ".." || s == "."));
            prop_assert_eq!(key.split('/').count(), 6);
        }
    }
}
