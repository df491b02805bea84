//! Frame codec of the host↔guest channel.
//!
//! Grammar (all integers little endian):
//!
//! ```text
//! frame   = magic:u16 "MF" (0x4D 0x46) | type:u8 | flags:u8 | stream:u32 | len:u32 | payload[len]
//! type    = 0 HELLO | 1 OPEN | 2 DATA | 3 CTRL | 4 EOF | 5 RESET | 6 WINDOW
//! len     ≤ MAX_PAYLOAD
//! ```
//!
//! * `HELLO` (stream 0) starts a connection; its payload is a JSON [`crate::msg::Hello`].
//! * `OPEN` opens `stream` with a JSON [`crate::msg::OpenRequest`].
//! * `DATA` carries stream bytes; `flags` names the sub-channel (0 stdin/stdout, 1 stderr).
//! * `CTRL` carries one JSON [`crate::msg::Ctrl`] message for the stream.
//! * `EOF` half-closes the sender's direction; `RESET` aborts the stream (payload: UTF-8 reason).
//! * `WINDOW` grants the peer `u32` more DATA bytes of credit on the stream.
//!
//! A header that does not parse means the byte stream lost sync: the connection is dropped and
//! re-established with a new HELLO. A payload that does not parse only fails its stream.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const MAGIC: [u8; 2] = *b"MF";
pub const HEADER_LEN: usize = 12;
/// Largest payload of one frame. Larger writes are split by the sender.
pub const MAX_PAYLOAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    Hello = 0,
    Open = 1,
    Data = 2,
    Ctrl = 3,
    Eof = 4,
    Reset = 5,
    Window = 6,
}

impl FrameType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Hello,
            1 => Self::Open,
            2 => Self::Data,
            3 => Self::Ctrl,
            4 => Self::Eof,
            5 => Self::Reset,
            6 => Self::Window,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameType,
    pub flags: u8,
    pub stream: u32,
    pub payload: Bytes,
}

impl Frame {
    pub fn new(kind: FrameType, stream: u32, payload: impl Into<Bytes>) -> Self {
        Self { kind, flags: 0, stream, payload: payload.into() }
    }

    pub fn with_flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    pub fn window(stream: u32, credit: u32) -> Self {
        Self::new(FrameType::Window, stream, Bytes::copy_from_slice(&credit.to_le_bytes()))
    }

    /// Credit carried by a WINDOW frame.
    pub fn window_credit(&self) -> Result<u32, FrameError> {
        let b: [u8; 4] = self.payload[..].try_into().map_err(|_| FrameError::BadWindow(self.payload.len()))?;
        Ok(u32::from_le_bytes(b))
    }

    /// Appends the encoded frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(HEADER_LEN + self.payload.len());
        dst.put_slice(&self.header());
        dst.put_slice(&self.payload);
    }

    /// The frame's header; the payload follows it on the wire.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        debug_assert!(self.payload.len() <= MAX_PAYLOAD);
        let mut h = [0u8; HEADER_LEN];
        h[..2].copy_from_slice(&MAGIC);
        h[2] = self.kind as u8;
        h[3] = self.flags;
        h[4..8].copy_from_slice(&self.stream.to_le_bytes());
        h[8..].copy_from_slice(&(self.payload.len() as u32).to_le_bytes());
        h
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("bad frame magic {0:02x?}")]
    BadMagic([u8; 2]),
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("frame payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("WINDOW frame has a {0}-byte payload, expected 4")]
    BadWindow(usize),
}

/// Decodes one frame from the front of `src`, consuming it. `Ok(None)` means more bytes are needed.
pub fn decode(src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    if src.len() < HEADER_LEN {
        // Check the magic early so garbage is reported without waiting for a full header.
        if src.len() >= 2 && src[..2] != MAGIC {
            return Err(FrameError::BadMagic([src[0], src[1]]));
        }
        return Ok(None);
    }
    if src[..2] != MAGIC {
        return Err(FrameError::BadMagic([src[0], src[1]]));
    }
    let kind = FrameType::from_u8(src[2]).ok_or(FrameError::UnknownType(src[2]))?;
    let flags = src[3];
    let stream = u32::from_le_bytes(src[4..8].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(src[8..12].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    if src.len() < HEADER_LEN + len {
        src.reserve(HEADER_LEN + len - src.len());
        return Ok(None);
    }
    src.advance(HEADER_LEN);
    let payload = src.split_to(len).freeze();
    Ok(Some(Frame { kind, flags, stream, payload }))
}

/// Drops bytes from the front of `src` until it starts with a HELLO header (or only a possible
/// prefix of one remains). Used when a connection starts, because bytes written before the peer
/// (re)connected may still sit in the device's buffers. Returns how many bytes were dropped.
pub fn resync_to_hello(src: &mut BytesMut) -> usize {
    let pattern = [MAGIC[0], MAGIC[1], FrameType::Hello as u8];
    let mut i = 0;
    while i < src.len() {
        let rest = &src[i..];
        let n = rest.len().min(pattern.len());
        if rest[..n] == pattern[..n] {
            break;
        }
        i += 1;
    }
    src.advance(i);
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: &Frame) -> BytesMut {
        let mut b = BytesMut::new();
        f.encode(&mut b);
        b
    }

    #[test]
    fn round_trips_every_type() {
        for kind in [
            FrameType::Hello,
            FrameType::Open,
            FrameType::Data,
            FrameType::Ctrl,
            FrameType::Eof,
            FrameType::Reset,
            FrameType::Window,
        ] {
            let f = Frame::new(kind, 7, &b"payload"[..]).with_flags(1);
            let mut b = enc(&f);
            assert_eq!(decode(&mut b).unwrap(), Some(f));
            assert!(b.is_empty());
        }
    }

    #[test]
    fn partial_input_needs_more() {
        let f = Frame::new(FrameType::Data, 3, vec![9u8; 1000]);
        let full = enc(&f);
        for cut in [0, 1, 2, 11, 12, 500, full.len() - 1] {
            let mut b = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut b).unwrap(), None, "cut at {cut}");
            assert_eq!(b.len(), cut, "nothing consumed at {cut}");
        }
    }

    #[test]
    fn two_frames_back_to_back() {
        let a = Frame::new(FrameType::Ctrl, 1, &b"{}"[..]);
        let z = Frame::new(FrameType::Eof, 1, Bytes::new());
        let mut b = enc(&a);
        b.extend_from_slice(&enc(&z));
        assert_eq!(decode(&mut b).unwrap(), Some(a));
        assert_eq!(decode(&mut b).unwrap(), Some(z));
        assert_eq!(decode(&mut b).unwrap(), None);
    }

    #[test]
    fn rejects_bad_headers() {
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (b"XX".to_vec(), FrameError::BadMagic(*b"XX")),
            (b"GET / HTTP/1.1\r\n".to_vec(), FrameError::BadMagic(*b"GE")),
            ([&MAGIC[..], &[9, 0], &[0; 8]].concat(), FrameError::UnknownType(9)),
            (
                [&MAGIC[..], &[2, 0, 1, 0, 0, 0], &((MAX_PAYLOAD as u32 + 1).to_le_bytes())[..]].concat(),
                FrameError::TooLarge(MAX_PAYLOAD + 1),
            ),
        ];
        for (input, want) in cases {
            let mut b = BytesMut::from(&input[..]);
            assert_eq!(decode(&mut b).unwrap_err(), want);
        }
    }

    #[test]
    fn window_credit_parses() {
        assert_eq!(Frame::window(5, 65536).window_credit().unwrap(), 65536);
        assert_eq!(
            Frame::new(FrameType::Window, 5, &b"abc"[..]).window_credit().unwrap_err(),
            FrameError::BadWindow(3)
        );
    }

    #[test]
    fn resync_skips_garbage_before_hello() {
        let hello = Frame::new(FrameType::Hello, 0, &b"{}"[..]);
        let mut b = BytesMut::from(&b"stale tail of an old frame MF\x02"[..]);
        b.extend_from_slice(&enc(&hello));
        let dropped = resync_to_hello(&mut b);
        assert_eq!(dropped, 30);
        assert_eq!(decode(&mut b).unwrap(), Some(hello));
    }

    #[test]
    fn resync_keeps_a_possible_prefix() {
        let mut b = BytesMut::from(&b"zzM"[..]);
        assert_eq!(resync_to_hello(&mut b), 2);
        assert_eq!(&b[..], b"M");
    }
}
