//! Request-smuggling guard: follows HTTP/1.1 request framing on the bytes read from a client,
//! before hyper parses them, and marks requests whose framing is ambiguous.
//!
//! hyper resolves a request that carries both `Transfer-Encoding` and `Content-Length` by
//! dropping `Content-Length` (RFC 9112 §6.3), so the conflict is invisible in the parsed request.
//! This guard sees each request head whole, and when both are present renames every
//! `Transfer-Encoding` header to [`CONFLICT_HEADER`] (same length, so nothing shifts). hyper then
//! frames the body by `Content-Length`, and the router answers 400 and closes the connection:
//! the request is never forwarded. Framing followed (the same as hyper's):
//!
//! ```text
//! request = head body
//! head    = *empty-line request-line *header-line empty-line    (lines end in LF or CRLF)
//! body    = chunked                   if Transfer-Encoding ends in "chunked"
//!         | Content-Length bytes      if Content-Length (one value, or equal values)
//!         | nothing                   otherwise
//! chunked = *(size [";" ext] CRLF data CRLF) "0" [";" ext] CRLF *trailer-line CRLF
//! ```
//!
//! Anything the guard cannot follow (a head that does not parse, an upgrade or CONNECT, HTTP/2,
//! a head over [`MAX_HEAD`]) makes it stand aside for the rest of the connection: hyper, which
//! sees the same bytes, rejects or handles those itself.

/// Header name that replaces `Transfer-Encoding` in a request that also has `Content-Length`.
pub const CONFLICT_HEADER: &str = "x-mayfly-conflict";
const TE: &[u8] = b"transfer-encoding";
/// Head size beyond which the guard stands aside (hyper refuses heads this large anyway).
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading a head into `Framing::head`: bytes in the current line, non-empty lines so far.
    Head { line: usize, lines: usize },
    Fixed(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailer { line: usize },
    /// Not following any more: bytes pass untouched.
    Opaque,
}

/// The framing state of one client connection.
#[derive(Debug)]
pub struct Framing {
    state: State,
    /// The head being read (held back from hyper until complete), or a chunk-size line.
    buf: Vec<u8>,
}

impl Default for Framing {
    fn default() -> Self {
        Self { state: State::Head { line: 0, lines: 0 }, buf: Vec::new() }
    }
}

impl Framing {
    /// Consumes bytes read from the client; appends to `out` what hyper may read now.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match self.state {
                State::Opaque => {
                    out.extend_from_slice(input);
                    return;
                }
                State::Head { mut line, mut lines } => {
                    let mut done = None;
                    for (i, &b) in input.iter().enumerate() {
                        match b {
                            b'\n' if line == 0 && lines > 0 => {
                                done = Some(i + 1);
                                break;
                            }
                            b'\n' => {
                                lines += usize::from(line > 0);
                                line = 0;
                            }
                            b'\r' => {}
                            _ => line += 1,
                        }
                    }
                    let used = done.unwrap_or(input.len());
                    self.buf.extend_from_slice(&input[..used]);
                    input = &input[used..];
                    if done.is_some() {
                        self.end_head(out);
                    } else if self.buf.len() > MAX_HEAD {
                        self.stand_aside(out);
                    } else {
                        self.state = State::Head { line, lines };
                    }
                }
                State::Fixed(n) => {
                    let k = (n.min(input.len() as u64)) as usize;
                    out.extend_from_slice(&input[..k]);
                    input = &input[k..];
                    self.state = if n == k as u64 { new_head() } else { State::Fixed(n - k as u64) };
                }
                State::ChunkSize => {
                    let (line, rest, complete) = take_line(input);
                    out.extend_from_slice(line);
                    self.buf.extend_from_slice(line);
                    input = rest;
                    if complete {
                        self.state = match chunk_size(&self.buf) {
                            Some(0) => State::Trailer { line: 0 },
                            Some(n) => State::ChunkData(n),
                            None => State::Opaque,
                        };
                        self.buf.clear();
                    } else if self.buf.len() > MAX_CHUNK_LINE {
                        self.state = State::Opaque;
                    }
                }
                State::ChunkData(n) => {
                    let k = (n.min(input.len() as u64)) as usize;
                    out.extend_from_slice(&input[..k]);
                    input = &input[k..];
                    self.state = if n == k as u64 { State::ChunkEnd } else { State::ChunkData(n - k as u64) };
                }
                State::ChunkEnd => {
                    let b = input[0];
                    out.push(b);
                    input = &input[1..];
                    match b {
                        b'\r' => {}
                        b'\n' => self.state = State::ChunkSize,
                        _ => self.state = State::Opaque,
                    }
                }
                State::Trailer { mut line } => {
                    let b = input[0];
                    out.push(b);
                    input = &input[1..];
                    match b {
                        b'\n' if line == 0 => {
                            self.state = new_head();
                            continue;
                        }
                        b'\n' => line = 0,
                        b'\r' => {}
                        _ => line += 1,
                    }
                    self.state = State::Trailer { line };
                }
            }
        }
    }

    /// The client closed its side: whatever is held back goes to hyper (which rejects it).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.buf);
        self.state = State::Opaque;
    }

    fn stand_aside(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.buf);
        self.state = State::Opaque;
    }

    /// A whole head is in `buf`: inspect it, mark a conflict, release it, pick the body framing.
    fn end_head(&mut self, out: &mut Vec<u8>) {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(_)) = req.parse(&self.buf) else {
            return self.stand_aside(out);
        };
        let base = self.buf.as_ptr() as usize;
        let mut te_at = Vec::new();
        let mut te_value = Vec::new();
        let mut lengths = Vec::new();
        let mut upgrade = req.method == Some("CONNECT");
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te_at.push(h.name.as_ptr() as usize - base);
                te_value.push(String::from_utf8_lossy(h.value).to_ascii_lowercase());
            } else if h.name.eq_ignore_ascii_case("content-length") {
                lengths.push(std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok()));
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        let state = if !te_at.is_empty() && !lengths.is_empty() {
            for at in te_at {
                self.buf[at..at + TE.len()].copy_from_slice(CONFLICT_HEADER.as_bytes());
            }
            State::Opaque
        } else if upgrade {
            State::Opaque
        } else if !te_at.is_empty() {
            let joined = te_value.join(",");
            let last = joined.rsplit(',').next().unwrap_or("").trim();
            if last == "chunked" {
                State::ChunkSize
            } else {
                State::Opaque
            }
        } else if let Some(first) = lengths.first() {
            match first {
                Some(n) if lengths.iter().all(|l| l == first) => {
                    if *n == 0 {
                        new_head()
                    } else {
                        State::Fixed(*n)
                    }
                }
                _ => State::Opaque,
            }
        } else {
            new_head()
        };
        out.append(&mut self.buf);
        self.state = state;
    }
}

fn new_head() -> State {
    State::Head { line: 0, lines: 0 }
}

/// Splits off input up to and including the first LF: (line part, rest, LF seen).
fn take_line(input: &[u8]) -> (&[u8], &[u8], bool) {
    match input.iter().position(|&b| b == b'\n') {
        Some(i) => (&input[..=i], &input[i + 1..], true),
        None => (input, &[], false),
    }
}

/// `1a;ext=x\r\n` → 26.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let size = text.split(';').next()?.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r' || c == '\n');
    if size.is_empty() || size.len() > 15 {
        return None;
    }
    u64::from_str_radix(size, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns what hyper would read.
    fn run(input: &[u8], step: usize) -> Vec<u8> {
        let mut f = Framing::default();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            f.feed(piece, &mut out);
        }
        f.finish(&mut out);
        out
    }

    fn every_split(input: &[u8]) -> Vec<u8> {
        let whole = run(input, input.len().max(1));
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(run(input, step), whole, "step {step}");
        }
        whole
    }

    #[test]
    fn plain_requests_pass_untouched() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\r\nGET / HTTP/1.1\nHost: a\n\n",
            b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
            b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello transfer-encoding content-length",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ];
        for c in cases {
            assert_eq!(every_split(c), c.to_vec(), "{}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn bodies_that_look_like_conflicts_are_not_touched() {
        // Body bytes are never read as a head, whatever they contain.
        let body = b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        let mut req = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        req.extend_from_slice(body);
        assert_eq!(every_split(&req), req);
        let mut chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        chunked.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        chunked.extend_from_slice(body);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(every_split(&chunked), chunked);
    }

    #[test]
    fn conflicts_are_marked_wherever_they_are() {
        let first = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let out = every_split(first);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("X-Mayfly-Conflict: chunked") || text.contains("x-mayfly-conflict: chunked"), "{text}");
        assert!(!text.to_ascii_lowercase().contains("transfer-encoding"), "{text}");
        assert_eq!(out.len(), first.len(), "same length");
        // Second on a keep-alive connection, TE before CL, odd case.
        let mut second = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        second.extend_from_slice(b"POST / HTTP/1.1\r\ntransfer-ENCODING: chunked\r\ncontent-length: 6\r\n\r\n0\r\n\r\n");
        let text = String::from_utf8(every_split(&second)).unwrap();
        assert!(text.contains("x-mayfly-conflict: chunked"), "{text}");
    }

    #[test]
    fn unfollowable_input_stands_aside() {
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD + 10));
        assert_eq!(run(huge.as_bytes(), 1000), huge.as_bytes());
        let garbage = b"\x16\x03\x01 not http\r\n\r\nGET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n";
        assert_eq!(every_split(garbage), garbage.to_vec());
        assert_eq!(chunk_size(b"1a;x=y\r\n"), Some(26));
        assert_eq!(chunk_size(b"zz\r\n"), None);
        assert_eq!(chunk_size(b"\r\n"), None);
        // A partial head held back is released when the client closes.
        assert_eq!(run(b"GET / HTT", 3), b"GET / HTT");
    }
}
