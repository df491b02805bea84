//! A writer for the `newc` cpio format, the format the kernel unpacks as an initramfs.
//!
//! Writing it here (rather than running `cpio`) lets the archive hold device nodes without
//! `mknod`, with fixed owners and timestamps, so the same inputs give the same bytes.
//!
//! Format: each entry is a 110-byte ASCII header (`070701` and 13 fields of 8 hex digits: ino,
//! mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize
//! including the NUL, check), the NUL-terminated name padded to 4 bytes, then the data padded to 4
//! bytes. The archive ends with an entry named `TRAILER!!!`.

use std::io::{self, Write};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const TRAILER: &str = "TRAILER!!!";

/// Streams a newc archive into `W`. Owners are root, timestamps are zero.
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    offset: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            next_ino: 1,
            offset: 0,
        }
    }

    /// A directory. Parents must be added first.
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.entry(path, S_IFDIR | perm, 2, (0, 0), &[])
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | perm, 1, (0, 0), data)
    }

    /// A symbolic link; the data of a newc symlink entry is its target.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// A character device node.
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(path, S_IFCHR | perm, 1, (major, minor), &[])
    }

    /// Write the trailer and return the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.next_ino = 0;
        self.entry(TRAILER, 0, 1, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let name = path.trim_start_matches('/');
        if name.is_empty() || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad cpio path {path:?}"),
            ));
        }
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{path} is over 4 GiB"))
        })?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.offset % 4) as usize) % 4;
        self.write(&[0u8; 3][..n])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One parsed entry: (name, mode, rdev major, rdev minor, data).
    pub(crate) type Entry = (String, u32, u32, u32, Vec<u8>);

    /// Minimal newc reader, the test oracle for the writer.
    pub(crate) fn parse(mut buf: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut offset = 0usize;
        loop {
            assert_eq!(&buf[..6], b"070701", "bad magic at {offset}");
            let field = |i: usize| {
                u32::from_str_radix(
                    std::str::from_utf8(&buf[6 + i * 8..14 + i * 8]).unwrap(),
                    16,
                )
                .unwrap()
            };
            let (mode, size, rmaj, rmin, namesize) =
                (field(1), field(6), field(9), field(10), field(11));
            let name = std::str::from_utf8(&buf[110..110 + namesize as usize - 1])
                .unwrap()
                .to_string();
            let data_start = (110 + namesize as usize).next_multiple_of(4);
            let data = buf[data_start..data_start + size as usize].to_vec();
            let next = (data_start + size as usize).next_multiple_of(4);
            offset += next;
            buf = &buf[next..];
            if name == TRAILER {
                assert!(buf.is_empty(), "bytes after trailer");
                return entries;
            }
            entries.push((name, mode, rmaj, rmin, data));
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("/bin", 0o755).unwrap();
        w.file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
        w.symlink("bin/sh", "/bin/busybox").unwrap();
        w.dir("dev", 0o755).unwrap();
        w.char_device("dev/console", 0o600, 5, 1).unwrap();
        w.file("odd", 0o644, b"12345").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_through_the_reader() {
        let bytes = sample();
        assert_eq!(bytes.len() % 4, 0);
        let entries = parse(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/hello", "bin/sh", "dev", "dev/console", "odd"]
        );
        assert_eq!(entries[1].1, S_IFREG | 0o755);
        assert_eq!(entries[1].4, b"#!/bin/sh\necho hi\n");
        assert_eq!(entries[2].1, S_IFLNK | 0o777);
        assert_eq!(entries[2].4, b"/bin/busybox");
        assert_eq!(
            (entries[4].1, entries[4].2, entries[4].3),
            (S_IFCHR | 0o600, 5, 1)
        );
        assert_eq!(entries[5].4, b"12345");
    }

    #[test]
    fn is_deterministic() {
        assert_eq!(sample(), sample());
    }

    #[test]
    fn gnu_cpio_reads_it() {
        // The host tool is an independent check of the format; skip quietly where it is absent.
        let Ok(mut child) = std::process::Command::new("cpio")
            .args(["-itv", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            return;
        };
        child.stdin.take().unwrap().write_all(&sample()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listing = String::from_utf8(out.stdout).unwrap();
        assert!(listing.contains("bin/sh -> /bin/busybox"), "{listing}");
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with("crw-------") && l.contains("dev/console")),
            "{listing}"
        );
        assert_eq!(listing.lines().count(), 6, "{listing}");
    }

    #[test]
    fn rejects_empty_names() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("/", 0o644, b"").is_err());
    }
}
