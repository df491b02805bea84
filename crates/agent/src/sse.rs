//! Incremental Server-Sent Events parser (the `text/event-stream` grammar, enough of it for
//! model servers):
//!
//! ```text
//! stream = *( event blank-line )
//! event  = *( "event:" SP? name LF | "data:" SP? text LF | ":" comment LF | "id:" … | "retry:" … )
//! ```
//! Lines end in LF, CRLF or CR; several `data:` lines join with LF. Bytes may arrive split
//! anywhere, including inside a UTF-8 character.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` name; empty when absent (OpenAI sends none).
    pub event: String,
    pub data: String,
}

#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: Vec<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
            // A CR at the very end may be the first half of CRLF: wait for the next byte.
            if self.buf[pos] == b'\r' && pos + 1 == self.buf.len() {
                break;
            }
            let skip = if self.buf[pos] == b'\r' && self.buf.get(pos + 1) == Some(&b'\n') { 2 } else { 1 };
            let line: Vec<u8> = self.buf.drain(..pos + skip).take(pos).collect();
            self.line(&String::from_utf8_lossy(&line), &mut out);
        }
        out
    }

    /// Ends the stream: an event without its blank line still counts.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut out = Vec::new();
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.line(&String::from_utf8_lossy(&rest), &mut out);
        }
        self.line("", &mut out);
        out.pop()
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if !self.data.is_empty() || !self.event.is_empty() {
                out.push(SseEvent { event: std::mem::take(&mut self.event), data: self.data.join("\n") });
                self.data.clear();
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => self.data.push(value.to_string()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out: Vec<SseEvent> = chunks.iter().flat_map(|c| p.push(c)).collect();
        out.extend(p.finish());
        out
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent { event: event.into(), data: data.into() }
    }

    #[test]
    fn table() {
        let cases: &[(&[&[u8]], Vec<SseEvent>)] = &[
            (&[b"data: {\"a\":1}\n\n"], vec![ev("", "{\"a\":1}")]),
            (&[b"event: ping\ndata: {}\n\n"], vec![ev("ping", "{}")]),
            (&[b"data: a\r\ndata: b\r\n\r\n"], vec![ev("", "a\nb")]),
            (&[b"da", b"ta: x\r", b"\n\r\n"], vec![ev("", "x")]),
            (&[b": comment\n\ndata:nospace\n\n"], vec![ev("", "nospace")]),
            (&[b"data: tail without blank line"], vec![ev("", "tail without blank line")]),
            (&[b"data: \xc3", b"\xa9\n\n"], vec![ev("", "é")]),
            (&[b"id: 3\nretry: 10\n\n"], vec![]),
        ];
        for (chunks, want) in cases {
            assert_eq!(&all(chunks), want, "{chunks:?}");
        }
    }
}
