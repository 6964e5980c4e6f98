//! SPDY/3.1 frames: the 8-byte common header (control bit, version 3, type, flags, 24-bit length,
//! or a 31-bit stream id for data), the control frames SYN_STREAM, SYN_REPLY, RST_STREAM,
//! SETTINGS, PING, GOAWAY, HEADERS and WINDOW_UPDATE, and data frames. Reading is bounded: control
//! frames longer than [`MAX_CONTROL_LEN`] are refused before anything is allocated, and data frames
//! are handed out in pieces of at most [`DATA_CHUNK`] bytes, so a hostile 16 MB length costs no
//! more memory than an honest frame.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::headers::{Deflater, HeaderError, Headers, Inflater};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

pub const TYPE_SYN_STREAM: u16 = 1;
pub const TYPE_SYN_REPLY: u16 = 2;
pub const TYPE_RST_STREAM: u16 = 3;
pub const TYPE_SETTINGS: u16 = 4;
pub const TYPE_PING: u16 = 6;
pub const TYPE_GOAWAY: u16 = 7;
pub const TYPE_HEADERS: u16 = 8;
pub const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_INVALID_STREAM: u32 = 2;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;
pub const RST_STREAM_IN_USE: u32 = 8;
/// GOAWAY status codes.
pub const GOAWAY_OK: u32 = 0;
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;

/// Longest control frame accepted (header blocks are small; SETTINGS has a handful of entries).
pub const MAX_CONTROL_LEN: usize = 64 * 1024;
/// Largest piece of a data frame handed out at once.
pub const DATA_CHUNK: usize = 32 * 1024;
/// Largest data frame written.
pub const MAX_DATA_WRITE: usize = 32 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("control frame of type {ty} is {len} bytes long (at most {MAX_CONTROL_LEN})")]
    TooLarge { ty: u16, len: usize },
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    #[error("{0}")]
    Headers(#[from] HeaderError),
}

impl FrameError {
    /// Whether the peer broke the protocol (answered with GOAWAY) rather than the connection failing.
    pub fn is_protocol(&self) -> bool {
        !matches!(self, FrameError::Io(_))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A data frame, or a piece of one: `flags` (FIN) is set on the last piece only.
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame of a type this version does not define: ignored, as the spec says.
    Unknown {
        ty: u16,
    },
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reads frames from one direction of a connection.
pub struct FrameReader<R> {
    r: R,
    inflater: Inflater,
    /// Remaining length of a data frame being handed out: (stream, flags, bytes left).
    pending: Option<(u32, u8, usize)>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R) -> Self {
        FrameReader { r, inflater: Inflater::new(), pending: None }
    }

    /// The next frame; `Ok(None)` at a clean end of the connection between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some((stream_id, flags, left)) = self.pending {
            return self.data_piece(stream_id, flags, left).await.map(Some);
        }
        let mut head = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            let n = self.r.read(&mut head[got..]).await?;
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            got += n;
        }
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if first & 0x8000_0000 == 0 {
            let stream_id = first & 0x7fff_ffff;
            return self.data_piece(stream_id, flags, len).await.map(Some);
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        let ty = (first & 0xffff) as u16;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        if len > MAX_CONTROL_LEN {
            return Err(FrameError::TooLarge { ty, len });
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).await?;
        self.control(ty, flags, &body).map(Some)
    }

    async fn data_piece(&mut self, stream_id: u32, flags: u8, left: usize) -> Result<Frame, FrameError> {
        let n = left.min(DATA_CHUNK);
        let mut data = vec![0u8; n];
        self.r.read_exact(&mut data).await?;
        let rest = left - n;
        if rest > 0 {
            self.pending = Some((stream_id, flags, rest));
            Ok(Frame::Data { stream_id, flags: 0, data })
        } else {
            self.pending = None;
            Ok(Frame::Data { stream_id, flags, data })
        }
    }

    fn headers(&mut self, block: &[u8]) -> Result<Headers, FrameError> {
        let raw = self.inflater.decompress(block)?;
        Ok(Headers::decode(&raw)?)
    }

    fn control(&mut self, ty: u16, flags: u8, b: &[u8]) -> Result<Frame, FrameError> {
        let id = |at: usize, what| be32(b, at).map(|v| v & 0x7fff_ffff).ok_or(FrameError::Malformed(what));
        Ok(match ty {
            TYPE_SYN_STREAM => {
                if b.len() < 10 {
                    return Err(FrameError::Malformed("SYN_STREAM"));
                }
                let stream_id = id(0, "SYN_STREAM")?;
                let associated = id(4, "SYN_STREAM")?;
                if stream_id == 0 {
                    return Err(FrameError::Malformed("SYN_STREAM"));
                }
                let priority = b[8] >> 5;
                let headers = self.headers(&b[10..])?;
                Frame::SynStream { stream_id, associated, priority, flags, headers }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                let what = if ty == TYPE_SYN_REPLY { "SYN_REPLY" } else { "HEADERS" };
                if b.len() < 4 {
                    return Err(FrameError::Malformed(what));
                }
                let stream_id = id(0, what)?;
                let headers = self.headers(&b[4..])?;
                if ty == TYPE_SYN_REPLY {
                    Frame::SynReply { stream_id, flags, headers }
                } else {
                    Frame::Headers { stream_id, flags, headers }
                }
            }
            TYPE_RST_STREAM => {
                if b.len() != 8 {
                    return Err(FrameError::Malformed("RST_STREAM"));
                }
                let stream_id = id(0, "RST_STREAM")?;
                let status = be32(b, 4).unwrap_or(0);
                if stream_id == 0 || status == 0 {
                    return Err(FrameError::Malformed("RST_STREAM"));
                }
                Frame::RstStream { stream_id, status }
            }
            TYPE_SETTINGS => {
                let n = be32(b, 0).ok_or(FrameError::Malformed("SETTINGS"))? as usize;
                if b.len() != 4 + n.checked_mul(8).ok_or(FrameError::Malformed("SETTINGS"))? {
                    return Err(FrameError::Malformed("SETTINGS"));
                }
                let entries = (0..n)
                    .map(|i| {
                        let w = be32(b, 4 + i * 8).unwrap_or(0);
                        ((w >> 24) as u8, w & 0x00ff_ffff, be32(b, 8 + i * 8).unwrap_or(0))
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                if b.len() != 4 {
                    return Err(FrameError::Malformed("PING"));
                }
                Frame::Ping { id: be32(b, 0).unwrap_or(0) }
            }
            TYPE_GOAWAY => {
                if b.len() != 8 {
                    return Err(FrameError::Malformed("GOAWAY"));
                }
                Frame::GoAway { last_good: id(0, "GOAWAY")?, status: be32(b, 4).unwrap_or(0) }
            }
            TYPE_WINDOW_UPDATE => {
                if b.len() != 8 {
                    return Err(FrameError::Malformed("WINDOW_UPDATE"));
                }
                Frame::WindowUpdate { stream_id: id(0, "WINDOW_UPDATE")?, delta: id(4, "WINDOW_UPDATE")? }
            }
            ty => Frame::Unknown { ty },
        })
    }
}

fn control_head(out: &mut Vec<u8>, ty: u16, flags: u8, len: usize) {
    out.extend_from_slice(&(0x8000_0000u32 | (u32::from(VERSION) << 16) | u32::from(ty)).to_be_bytes());
    out.extend_from_slice(&((u32::from(flags) << 24) | (len as u32 & 0x00ff_ffff)).to_be_bytes());
}

/// Serialize a frame (header blocks through the direction's compressor). Data longer than a
/// frame can carry must be split by the caller (see [`MAX_DATA_WRITE`]).
pub fn encode(f: &Frame, z: &mut Deflater, out: &mut Vec<u8>) {
    match f {
        Frame::SynStream { stream_id, associated, priority, flags, headers } => {
            let block = z.compress(&headers.encode());
            control_head(out, TYPE_SYN_STREAM, *flags, 10 + block.len());
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.extend_from_slice(&(associated & 0x7fff_ffff).to_be_bytes());
            out.push((priority & 7) << 5);
            out.push(0);
            out.extend_from_slice(&block);
        }
        Frame::SynReply { stream_id, flags, headers } | Frame::Headers { stream_id, flags, headers } => {
            let ty = if matches!(f, Frame::SynReply { .. }) { TYPE_SYN_REPLY } else { TYPE_HEADERS };
            let block = z.compress(&headers.encode());
            control_head(out, ty, *flags, 4 + block.len());
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.extend_from_slice(&block);
        }
        Frame::RstStream { stream_id, status } => {
            control_head(out, TYPE_RST_STREAM, 0, 8);
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.extend_from_slice(&status.to_be_bytes());
        }
        Frame::Settings { flags, entries } => {
            control_head(out, TYPE_SETTINGS, *flags, 4 + 8 * entries.len());
            out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            for (fl, id, v) in entries {
                out.extend_from_slice(&((u32::from(*fl) << 24) | (id & 0x00ff_ffff)).to_be_bytes());
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        Frame::Ping { id } => {
            control_head(out, TYPE_PING, 0, 4);
            out.extend_from_slice(&id.to_be_bytes());
        }
        Frame::GoAway { last_good, status } => {
            control_head(out, TYPE_GOAWAY, 0, 8);
            out.extend_from_slice(&(last_good & 0x7fff_ffff).to_be_bytes());
            out.extend_from_slice(&status.to_be_bytes());
        }
        Frame::WindowUpdate { stream_id, delta } => {
            control_head(out, TYPE_WINDOW_UPDATE, 0, 8);
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
        }
        Frame::Data { stream_id, flags, data } => {
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.extend_from_slice(&((u32::from(*flags) << 24) | (data.len() as u32 & 0x00ff_ffff)).to_be_bytes());
            out.extend_from_slice(data);
        }
        Frame::Unknown { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(p: &[(&str, &str)]) -> Headers {
        Headers(p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect())
    }

    async fn read_all(bytes: Vec<u8>) -> (Vec<Frame>, Option<FrameError>) {
        let mut r = FrameReader::new(&bytes[..]);
        let mut v = vec![];
        loop {
            match r.next().await {
                Ok(Some(f)) => v.push(f),
                Ok(None) => return (v, None),
                Err(e) => return (v, Some(e)),
            }
        }
    }

    #[tokio::test]
    async fn every_frame_round_trips() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 3,
                flags: FLAG_FIN,
                headers: hs(&[("streamtype", "error")]),
            },
            Frame::SynReply { stream_id: 1, flags: 0, headers: Headers::default() },
            Frame::Headers { stream_id: 3, flags: 0, headers: hs(&[("x", "y")]) },
            Frame::RstStream { stream_id: 5, status: RST_CANCEL },
            Frame::Settings { flags: 0, entries: vec![(0, 7, 65536), (1, 4, 100)] },
            Frame::Ping { id: 1 },
            Frame::GoAway { last_good: 7, status: GOAWAY_OK },
            Frame::WindowUpdate { stream_id: 1, delta: 4096 },
            Frame::Data { stream_id: 1, flags: FLAG_FIN, data: b"hello".to_vec() },
            Frame::Data { stream_id: 3, flags: 0, data: vec![] },
        ];
        let mut z = Deflater::new();
        let mut bytes = vec![];
        for f in &frames {
            encode(f, &mut z, &mut bytes);
        }
        let (got, err) = read_all(bytes).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, frames);
    }

    #[tokio::test]
    async fn big_data_frames_come_in_bounded_pieces() {
        let mut z = Deflater::new();
        let mut bytes = vec![];
        let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        encode(&Frame::Data { stream_id: 9, flags: FLAG_FIN, data: payload.clone() }, &mut z, &mut bytes);
        let (got, err) = read_all(bytes).await;
        assert!(err.is_none());
        assert_eq!(got.len(), 4);
        let mut all = vec![];
        for (i, f) in got.iter().enumerate() {
            let Frame::Data { stream_id: 9, flags, data } = f else { panic!("{f:?}") };
            assert!(data.len() <= DATA_CHUNK);
            assert_eq!(*flags, if i == 3 { FLAG_FIN } else { 0 });
            all.extend_from_slice(data);
        }
        assert_eq!(all, payload);
    }

    #[tokio::test]
    async fn hostile_frames_are_errors_not_allocations() {
        // A control frame claiming 16 MB: refused from the header alone.
        let mut b = vec![];
        control_head(&mut b, TYPE_SYN_STREAM, 0, 0xff_ffff);
        let (_, e) = read_all(b).await;
        assert!(matches!(e, Some(FrameError::TooLarge { len: 0xff_ffff, .. })), "{e:?}");
        // A data frame claiming 16 MB with 10 bytes behind it: truncation, after one bounded piece.
        let mut b = vec![0, 0, 0, 1, 0, 0xff, 0xff, 0xff];
        b.extend_from_slice(&[0; 10]);
        let (_, e) = read_all(b).await;
        assert!(matches!(e, Some(FrameError::Io(_))), "{e:?}");
        // Wrong version.
        let mut b = vec![0x80, 2, 0, 1, 0, 0, 0, 0];
        let (_, e) = read_all(b.clone()).await;
        assert!(matches!(e, Some(FrameError::Version(2))));
        // Truncated header.
        b.truncate(5);
        b[1] = 3;
        let (_, e) = read_all(b).await;
        assert!(matches!(e, Some(FrameError::Io(_))));
        // SYN_STREAM with a bad zlib block.
        let mut b = vec![];
        let body = [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
        control_head(&mut b, TYPE_SYN_STREAM, 0, body.len());
        b.extend_from_slice(&body);
        let (_, e) = read_all(b).await;
        assert!(matches!(e, Some(FrameError::Headers(_))), "{e:?}");
        // Fixed-size frames with the wrong size, SETTINGS with a count that overflows.
        for (ty, body) in [
            (TYPE_PING, vec![0u8; 3]),
            (TYPE_RST_STREAM, vec![0u8; 12]),
            (TYPE_RST_STREAM, vec![0, 0, 0, 1, 0, 0, 0, 0]),
            (TYPE_GOAWAY, vec![0u8; 4]),
            (TYPE_WINDOW_UPDATE, vec![0u8; 9]),
            (TYPE_SETTINGS, vec![0xff, 0xff, 0xff, 0xff]),
            (TYPE_SYN_STREAM, vec![0u8; 9]),
            (TYPE_SYN_REPLY, vec![0u8; 2]),
        ] {
            let mut b = vec![];
            control_head(&mut b, ty, 0, body.len());
            b.extend_from_slice(&body);
            let (_, e) = read_all(b).await;
            assert!(matches!(e, Some(FrameError::Malformed(_))), "type {ty}: {e:?}");
        }
        // An unknown control type is skipped.
        let mut b = vec![];
        control_head(&mut b, 42, 0, 3);
        b.extend_from_slice(&[1, 2, 3]);
        let (f, e) = read_all(b).await;
        assert!(e.is_none());
        assert_eq!(f, vec![Frame::Unknown { ty: 42 }]);
    }
}
