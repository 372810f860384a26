//! Java `.properties` files, read as `java.util.Properties.load` reads them,
//! so that a MultiLangDaemon properties file works here unchanged.
//!
//! The format: one `key = value` (or `key: value`, or `key value`) per
//! logical line; `#` and `!` start comment lines; a line ending in an odd
//! number of backslashes continues on the next (whose leading blanks are
//! dropped); `\t \n \r \f \uXXXX` and `\<any>` escapes in keys and values.
//! The file's bytes are read as UTF-8, or as ISO-8859-1 (Java's
//! encoding for `Properties.load(InputStream)`) when they are not UTF-8
//! ([`decode`]). One difference, deliberate: trailing blanks of a value are
//! dropped, escaped ones too (Java keeps them, and
//! `failoverTimeMillis = 10000 ` then fails to parse for a reason nobody
//! sees).

use std::collections::BTreeMap;

/// A properties file: its entries in file order, duplicates kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    entries: Vec<Entry>,
}

/// One `key = value` of a properties file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, unescaped.
    pub key: String,
    /// The value, unescaped, trailing blanks dropped.
    pub value: String,
    /// The line (1-based) the entry starts on.
    pub line: usize,
}

/// A properties file that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PropertiesError {
    /// A `\u` escape not followed by four hexadecimal digits (Java refuses
    /// the whole file for it too).
    #[error("line {line}: malformed \\uXXXX escape")]
    MalformedUnicodeEscape {
        /// The line (1-based).
        line: usize,
    },
}

impl Properties {
    /// Parses the text of a properties file.
    ///
    /// ```
    /// let properties = kcl_multilang::properties::Properties::parse(
    ///     "# a comment\nexecutableName = python3 app.py\nstreamName: orders\n",
    /// ).unwrap();
    /// assert_eq!(properties.get("executableName"), Some("python3 app.py"));
    /// assert_eq!(properties.get("streamName"), Some("orders"));
    /// ```
    ///
    /// # Errors
    /// [`PropertiesError::MalformedUnicodeEscape`].
    pub fn parse(text: &str) -> Result<Self, PropertiesError> {
        let mut entries = Vec::new();
        let mut lines = text.lines().enumerate();
        while let Some((index, first)) = lines.next() {
            let line_number = index + 1;
            let trimmed = first.trim_start_matches([' ', '\t', '\x0c']);
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
                continue;
            }
            // Join continuation lines into one logical line.
            let mut logical = String::new();
            let mut part = trimmed;
            loop {
                if ends_with_odd_backslashes(part) {
                    logical.push_str(&part[..part.len() - 1]);
                    match lines.next() {
                        Some((_, next)) => part = next.trim_start_matches([' ', '\t', '\x0c']),
                        None => break,
                    }
                } else {
                    logical.push_str(part);
                    break;
                }
            }
            let (key, value) = split_key_value(&logical);
            entries.push(Entry {
                key: unescape(key, line_number)?,
                value: unescape(value, line_number)?
                    .trim_end_matches([' ', '\t', '\x0c'])
                    .to_owned(),
                line: line_number,
            });
        }
        Ok(Self { entries })
    }

    /// The value of `key` (the last one, when the key is repeated, as in
    /// Java).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|entry| entry.key == key)
            .map(|entry| entry.value.as_str())
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The keys set more than once, with the lines they are on.
    pub fn repeated_keys(&self) -> BTreeMap<&str, Vec<usize>> {
        let mut lines: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for entry in &self.entries {
            lines.entry(&entry.key).or_default().push(entry.line);
        }
        lines.retain(|_, lines| lines.len() > 1);
        lines
    }
}

fn ends_with_odd_backslashes(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Splits a logical line at the first unescaped `=`, `:` or blank, as
/// `Properties.load` does.
fn split_key_value(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut index = 0;
    let mut escaped = false;
    while index < bytes.len() {
        let byte = bytes[index];
        if escaped {
            escaped = false;
        } else if byte == b'\\' {
            escaped = true;
        } else if matches!(byte, b'=' | b':' | b' ' | b'\t' | b'\x0c') {
            break;
        }
        index += 1;
    }
    let key = &line[..index];
    let mut rest = line[index..].trim_start_matches([' ', '\t', '\x0c']);
    if let Some(stripped) = rest.strip_prefix(['=', ':']) {
        rest = stripped.trim_start_matches([' ', '\t', '\x0c']);
    }
    (key, rest)
}

fn unescape(text: &str, line: usize) -> Result<String, PropertiesError> {
    if !text.contains('\\') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let code =
                    hex4(&mut chars).ok_or(PropertiesError::MalformedUnicodeEscape { line })?;
                // A surrogate pair written as two escapes is one character,
                // as in Java's UTF-16 strings; a lone half becomes U+FFFD.
                let low = (0xD800..0xDC00).contains(&code).then(|| {
                    let mut ahead = chars.clone();
                    (ahead.next() == Some('\\') && ahead.next() == Some('u'))
                        .then(|| hex4(&mut ahead).filter(|low| (0xDC00..0xE000).contains(low)))
                        .flatten()
                        .map(|low| (low, ahead))
                });
                match low.flatten() {
                    Some((low, ahead)) => {
                        chars = ahead;
                        let combined = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                        out.push(char::from_u32(combined).unwrap_or('\u{fffd}'));
                    }
                    None => out.push(char::from_u32(code).unwrap_or('\u{fffd}')),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

/// Four hexadecimal digits, as Java's `\uXXXX` takes them (no sign).
fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
    let mut code = 0;
    for _ in 0..4 {
        code = code * 16 + chars.next()?.to_digit(16)?;
    }
    Some(code)
}

/// The text of a properties file's bytes: UTF-8 when they are, else
/// ISO-8859-1, the encoding Java's `Properties.load(InputStream)` reads.
///
/// ```
/// use kcl_multilang::properties::decode;
/// assert_eq!(decode(b"caf\xe9"), "café");
/// assert_eq!(decode("café".as_bytes()), "café");
/// ```
pub fn decode(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        Properties::parse(text)
            .unwrap()
            .entries()
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect()
    }

    #[test]
    fn reads_the_forms_java_reads() {
        let text = "\
# comment
! also a comment
   executableName = python3 sample_kclpy_app.py
streamName:orders
applicationName   app one
empty=
path = a\\\\b
key\\ with\\ spaces = v
unicode = caf\\u00e9
long = first \\
       second
trailing = 10000   \n";
        assert_eq!(
            pairs(text),
            vec![
                (
                    "executableName".into(),
                    "python3 sample_kclpy_app.py".into()
                ),
                ("streamName".into(), "orders".into()),
                ("applicationName".into(), "app one".into()),
                ("empty".into(), "".into()),
                ("path".into(), "a\\b".into()),
                ("key with spaces".into(), "v".into()),
                ("unicode".into(), "café".into()),
                ("long".into(), "first second".into()),
                ("trailing".into(), "10000".into()),
            ]
        );
    }

    #[test]
    fn the_last_of_a_repeated_key_wins_and_is_reported() {
        let properties = Properties::parse("a = 1\nb = 2\na = 3\n").unwrap();
        assert_eq!(properties.get("a"), Some("3"));
        assert_eq!(properties.repeated_keys().get("a"), Some(&vec![1, 3]));
    }

    #[test]
    fn surrogate_pairs_combine_and_signs_are_not_hex() {
        assert_eq!(
            pairs("smile = \\uD83D\\uDE00\n"),
            vec![("smile".into(), "😀".into())]
        );
        assert_eq!(
            pairs("lone = \\uD83Dx\n"),
            vec![("lone".into(), "\u{fffd}x".into())]
        );
        assert!(Properties::parse("bad = \\u+abc\n").is_err());
    }

    #[test]
    fn a_bad_unicode_escape_is_refused_with_its_line() {
        assert_eq!(
            Properties::parse("ok = 1\nbad = \\u12\n"),
            Err(PropertiesError::MalformedUnicodeEscape { line: 2 })
        );
    }

    proptest! {
        /// Any text parses or is refused with a line number; nothing panics.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,200}") {
            let _ = Properties::parse(&text);
        }

        /// A simple `key = value` line reads back as written.
        #[test]
        fn simple_pairs_round_trip(key in "[a-zA-Z][a-zA-Z0-9.]{0,20}", value in "[a-zA-Z0-9/ .:_-]{0,40}") {
            let text = format!("{key} = {value}\n");
            let properties = Properties::parse(&text).unwrap();
            prop_assert_eq!(properties.get(&key), Some(value.trim()));
        }
    }
}
