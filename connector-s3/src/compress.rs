//! Compression of journal batches.
//!
//! Each batch is compressed as one unit — a gzip member or a zstd frame — and
//! an object is the concatenation of its batches. Both formats define such a
//! concatenation as one valid stream, so `zcat`, `zgrep` and `zstd -d` read
//! the objects as they are, and no batch is ever recompressed.

use std::io::{self, Read, Write};

/// How batches are compressed. Default: gzip at level 6.
///
/// ```
/// use connector_s3::compress::Compression;
/// let gzip = Compression::default();
/// assert_eq!(gzip.extension(), ".gz");
/// let member = gzip.compress(b"line\n").unwrap();
/// assert_eq!(Compression::decompress_all(&gzip, &member).unwrap(), b"line\n");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip members (RFC 1952), a multi-member file.
    Gzip {
        /// 0–9; default 6.
        level: u32,
    },
    /// zstd frames.
    Zstd {
        /// 1–22; default 3.
        level: i32,
    },
    /// No compression.
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Self::GZIP
    }
}

impl Compression {
    /// gzip at its default level.
    pub const GZIP: Self = Compression::Gzip { level: 6 };
    /// zstd at its default level.
    pub const ZSTD: Self = Compression::Zstd { level: 3 };

    /// Parses `gzip`, `gzip:9`, `zstd`, `zstd:19` or `none`.
    pub fn parse(value: &str) -> Option<Self> {
        let (name, level) = match value.split_once(':') {
            Some((name, level)) => (name, Some(level)),
            None => (value, None),
        };
        match (name.to_ascii_lowercase().as_str(), level) {
            ("gzip" | "gz", None) => Some(Self::GZIP),
            ("gzip" | "gz", Some(level)) => level
                .parse()
                .ok()
                .filter(|l| *l <= 9)
                .map(|level| Compression::Gzip { level }),
            ("zstd" | "zst", None) => Some(Self::ZSTD),
            ("zstd" | "zst", Some(level)) => level
                .parse()
                .ok()
                .filter(|l| (1..=22).contains(l))
                .map(|level| Compression::Zstd { level }),
            ("none", None) => Some(Compression::None),
            _ => None,
        }
    }

    /// The file name extension objects get (`{ext}` in key templates).
    pub fn extension(&self) -> &'static str {
        match self {
            Compression::Gzip { .. } => ".gz",
            Compression::Zstd { .. } => ".zst",
            Compression::None => "",
        }
    }

    /// Compresses one batch as one self-contained member/frame. CPU-bound:
    /// call it off the async workers.
    pub fn compress(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        match *self {
            Compression::Gzip { level } => {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 4 + 64),
                    flate2::Compression::new(level.min(9)),
                );
                encoder.write_all(data)?;
                encoder.finish()
            }
            Compression::Zstd { level } => zstd::bulk::compress(data, level),
            Compression::None => Ok(data.to_vec()),
        }
    }

    /// A reader that decompresses a whole object (all members or frames).
    pub fn decoder<'a, R: Read + 'a>(&self, reader: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::Gzip { .. } => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            Compression::Zstd { .. } => Box::new(zstd::stream::read::Decoder::new(reader)?),
            Compression::None => Box::new(reader),
        })
    }

    /// Decompresses a whole object held in memory.
    pub fn decompress_all(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.decoder(data)?.read_to_end(&mut out)?;
        Ok(out)
    }

    /// The compression an object key's extension names (`.gz`, `.zst`,
    /// anything else: none).
    pub fn from_key(key: &str) -> Self {
        if key.ends_with(".gz") {
            Self::GZIP
        } else if key.ends_with(".zst") {
            Self::ZSTD
        } else {
            Compression::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_members_read_as_one_stream() {
        for compression in [Compression::GZIP, Compression::ZSTD, Compression::None] {
            let mut object = compression.compress(b"a\nb\n").unwrap();
            object.extend(compression.compress(b"c\n").unwrap());
            assert_eq!(compression.decompress_all(&object).unwrap(), b"a\nb\nc\n");
        }
    }

    #[test]
    fn parses_names_and_levels() {
        assert_eq!(
            Compression::parse("gzip:9"),
            Some(Compression::Gzip { level: 9 })
        );
        assert_eq!(Compression::parse("zstd"), Some(Compression::ZSTD));
        assert_eq!(Compression::parse("none"), Some(Compression::None));
        assert_eq!(Compression::parse("gzip:12"), None);
        assert_eq!(Compression::parse("lz4"), None);
    }
}
