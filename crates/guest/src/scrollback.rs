//! Bounded scrollback of a terminal: the last [`SCROLLBACK_BYTES`] of output, replayed to a
//! client that re-attaches. Bytes are kept raw (escape sequences included); a replay may start in
//! the middle of a sequence, which terminals shrug off.

use std::collections::VecDeque;

pub const SCROLLBACK_BYTES: usize = 256 * 1024;

#[derive(Debug)]
pub struct Scrollback {
    buf: VecDeque<u8>,
    cap: usize,
}

impl Default for Scrollback {
    fn default() -> Self {
        Self::with_capacity(SCROLLBACK_BYTES)
    }
}

impl Scrollback {
    pub fn with_capacity(cap: usize) -> Self {
        Self { buf: VecDeque::new(), cap }
    }

    /// Appends `data`, dropping the oldest bytes beyond the capacity.
    pub fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(self.cap)..];
        let overflow = (self.buf.len() + data.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend(data);
    }

    /// The retained bytes, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        let (a, b) = self.buf.as_slices();
        [a, b].concat()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes() {
        let cases: &[(&[&str], &str)] = &[
            (&[], ""),
            (&["abc"], "abc"),
            (&["abc", "de"], "bcde"),
            (&["abcdefgh"], "efgh"),
            (&["ab", "cdefghij", "k"], "hijk"),
            (&["abcd", "", "e"], "bcde"),
        ];
        for (pushes, want) in cases {
            let mut s = Scrollback::with_capacity(4);
            for p in *pushes {
                s.push(p.as_bytes());
            }
            assert_eq!(String::from_utf8(s.contents()).unwrap(), *want, "{pushes:?}");
            assert_eq!(s.len(), want.len());
        }
    }

    #[test]
    fn default_capacity_is_256_kib() {
        let mut s = Scrollback::default();
        for _ in 0..100 {
            s.push(&[7u8; 4096]);
        }
        assert_eq!(s.len(), SCROLLBACK_BYTES);
        assert!(!s.is_empty());
    }
}
