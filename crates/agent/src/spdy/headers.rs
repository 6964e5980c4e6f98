//! SPDY/3 name/value header blocks: the block layout (a 32-bit count, then length-prefixed names
//! and values, several values of one name joined by NUL) and its compression. Each direction of a
//! session is one zlib stream primed with the SPDY/3 dictionary; every block ends with a sync
//! flush. Decompression is bounded: a block that inflates past [`MAX_BLOCK`] or a corrupt zlib
//! stream is an error (the session then closes), never a large allocation.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, section 2.6.10.1).
pub const DICTIONARY: &[u8] = include_bytes!("dictionary.bin");

/// Largest inflated header block accepted.
pub const MAX_BLOCK: usize = 64 * 1024;
/// Most name/value pairs in one block.
pub const MAX_PAIRS: u32 = 256;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HeaderError {
    #[error("corrupt compressed header block: {0}")]
    Zlib(String),
    #[error("header block inflates past {MAX_BLOCK} bytes")]
    TooLarge,
    #[error("truncated header block")]
    Truncated,
    #[error("header block has {0} pairs (at most {MAX_PAIRS})")]
    TooManyPairs(u32),
    #[error("header block has bytes after its last pair")]
    Trailing,
    #[error("header name is not lower-case ASCII: {0:?}")]
    BadName(String),
    #[error("header value is not UTF-8")]
    BadValue,
}

/// Decoded headers: lower-case names, one entry per value, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name` (lower-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Serialize into an uncompressed block (values of one name joined by NUL).
    pub fn encode(&self) -> Vec<u8> {
        let mut names: Vec<&str> = vec![];
        for (n, _) in &self.0 {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(names.len() as u32).to_be_bytes());
        for n in names {
            let vals: Vec<&str> = self.0.iter().filter(|(k, _)| k == n).map(|(_, v)| v.as_str()).collect();
            let joined = vals.join("\0");
            let lname = n.to_ascii_lowercase();
            out.extend_from_slice(&(lname.len() as u32).to_be_bytes());
            out.extend_from_slice(lname.as_bytes());
            out.extend_from_slice(&(joined.len() as u32).to_be_bytes());
            out.extend_from_slice(joined.as_bytes());
        }
        out
    }

    /// Parse an uncompressed block.
    pub fn decode(b: &[u8]) -> Result<Headers, HeaderError> {
        let mut c = Cursor { b, pos: 0 };
        let n = c.u32()?;
        if n > MAX_PAIRS {
            return Err(HeaderError::TooManyPairs(n));
        }
        let mut out = vec![];
        for _ in 0..n {
            let name = c.bytes()?;
            let value = c.bytes()?;
            let name =
                std::str::from_utf8(name).map_err(|_| HeaderError::BadName(String::from_utf8_lossy(name).into()))?;
            if name.is_empty() || name.bytes().any(|x| x.is_ascii_uppercase() || !x.is_ascii_graphic()) {
                return Err(HeaderError::BadName(name.into()));
            }
            let value = std::str::from_utf8(value).map_err(|_| HeaderError::BadValue)?;
            for v in value.split('\0') {
                out.push((name.to_string(), v.to_string()));
            }
        }
        if c.pos != b.len() {
            return Err(HeaderError::Trailing);
        }
        Ok(Headers(out))
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn u32(&mut self) -> Result<u32, HeaderError> {
        let s = self.b.get(self.pos..self.pos + 4).ok_or(HeaderError::Truncated)?;
        self.pos += 4;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn bytes(&mut self) -> Result<&'a [u8], HeaderError> {
        let n = self.u32()? as usize;
        let end = self.pos.checked_add(n).ok_or(HeaderError::Truncated)?;
        let s = self.b.get(self.pos..end).ok_or(HeaderError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
}

/// The compressing side of one direction.
pub struct Deflater {
    z: Compress,
}

impl Default for Deflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Deflater {
    pub fn new() -> Deflater {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(DICTIONARY).expect("zlib accepts a dictionary before the first block");
        Deflater { z }
    }

    /// Compress one block, ending with a sync flush.
    pub fn compress(&mut self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let mut pos = 0;
        loop {
            let before = self.z.total_in();
            if self.z.compress_vec(&raw[pos..], &mut out, FlushCompress::Sync).is_err() {
                // zlib only fails on misuse; an empty result makes the peer close cleanly.
                return out;
            }
            pos += (self.z.total_in() - before) as usize;
            if pos >= raw.len() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(256.max(out.capacity() / 2));
        }
    }
}

/// The inflating side of one direction.
pub struct Inflater {
    z: Decompress,
    dict_set: bool,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    pub fn new() -> Inflater {
        Inflater { z: Decompress::new(true), dict_set: false }
    }

    /// Inflate one compressed block (all of `input` belongs to it), at most [`MAX_BLOCK`] bytes.
    pub fn decompress(&mut self, input: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let mut out: Vec<u8> = Vec::with_capacity(1024.min(MAX_BLOCK));
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_BLOCK {
                    return Err(HeaderError::TooLarge);
                }
                out.reserve((out.capacity()).min(MAX_BLOCK + 1 - out.len()));
            }
            let (in0, out0) = (self.z.total_in(), self.z.total_out());
            let r = self.z.decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            let consumed = (self.z.total_in() - in0) as usize;
            let produced = self.z.total_out() - out0;
            pos += consumed;
            match r {
                Err(e) if e.needs_dictionary().is_some() && !self.dict_set => {
                    self.z.set_dictionary(DICTIONARY).map_err(|e| HeaderError::Zlib(e.to_string()))?;
                    self.dict_set = true;
                    continue;
                }
                Err(e) => return Err(HeaderError::Zlib(e.to_string())),
                Ok(Status::StreamEnd) => return Err(HeaderError::Zlib("unexpected end of the zlib stream".into())),
                Ok(_) => {}
            }
            if out.len() > MAX_BLOCK {
                return Err(HeaderError::TooLarge);
            }
            if pos >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if consumed == 0 && produced == 0 && out.len() < out.capacity() {
                // Input left that zlib will not take: the block was cut short or is garbage.
                return Err(HeaderError::Truncated);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        Headers(pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect())
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options"));
        assert!(DICTIONARY.ends_with(b",enq=0."));
    }

    #[test]
    fn round_trip_over_one_zlib_stream() {
        let mut d = Deflater::new();
        let mut i = Inflater::new();
        for k in 0..20 {
            let hs = h(&[("streamtype", "data"), ("port", &format!("{}", 8000 + k)), ("requestid", &k.to_string())]);
            let z = d.compress(&hs.encode());
            let back = Headers::decode(&i.decompress(&z).unwrap()).unwrap();
            assert_eq!(back, hs);
        }
        // Multiple values travel NUL-joined.
        let hs = h(&[("a", "1"), ("a", "2"), ("b", "")]);
        let back = Headers::decode(&i.decompress(&d.compress(&hs.encode())).unwrap()).unwrap();
        assert_eq!(back, hs);
        assert_eq!(back.get("a"), Some("1"));
    }

    #[test]
    fn hostile_blocks_fail_cleanly() {
        // Garbage instead of zlib.
        assert!(Inflater::new().decompress(b"\xff\xff\xff\xff garbage").is_err());
        // A stream compressed without the dictionary: the header does not ask for one, but the data
        // is fine; a wrong dictionary id must fail.
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(b"some other dictionary").unwrap();
        let mut out = Vec::with_capacity(256);
        z.compress_vec(&h(&[("a", "b")]).encode(), &mut out, FlushCompress::Sync).unwrap();
        assert!(matches!(Inflater::new().decompress(&out), Err(HeaderError::Zlib(_))));
        // A bomb: 10 MB of zeros compresses to a few KB; inflation stops at the limit.
        let mut d = Deflater::new();
        let bomb = d.compress(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 64 * 1024);
        assert_eq!(Inflater::new().decompress(&bomb), Err(HeaderError::TooLarge));
        // Truncated compressed block: what arrives inflates to a truncated block.
        let mut d = Deflater::new();
        let z = d.compress(&h(&[("streamtype", "error"), ("x", &"v".repeat(300))]).encode());
        let cut = &z[..z.len() / 2];
        let r = Inflater::new().decompress(cut).and_then(|b| Headers::decode(&b));
        assert!(r.is_err());
    }

    #[test]
    fn hostile_plain_blocks() {
        assert_eq!(Headers::decode(&[0, 0]), Err(HeaderError::Truncated));
        assert_eq!(Headers::decode(&[0xff, 0xff, 0xff, 0xff]), Err(HeaderError::TooManyPairs(u32::MAX)));
        // A name claiming 4 GB.
        assert_eq!(Headers::decode(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, b'a']), Err(HeaderError::Truncated));
        let mut b = h(&[("ok", "v")]).encode();
        b.push(0);
        assert_eq!(Headers::decode(&b), Err(HeaderError::Trailing));
        let b = Headers(vec![("Bad".into(), "v".into())]);
        let mut raw = b.encode();
        // encode lower-cases; patch the name back to upper case.
        raw[8] = b'B';
        assert!(matches!(Headers::decode(&raw), Err(HeaderError::BadName(_))));
    }
}
