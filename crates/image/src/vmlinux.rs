//! Extract the uncompressed ELF `vmlinux` from a compressed kernel image (`bzImage`), the way the
//! kernel's `scripts/extract-vmlinux` does: look for each supported compression magic, decompress
//! from every place it occurs, and keep the first output that is an ELF file.
//!
//! QEMU boots the ELF through PVH, which is why the builder needs `vmlinux` and not `vmlinuz`.
//! Supported: LZ4 legacy frames (what Debian's cloud kernel uses), gzip, xz and zstd.

use std::io::Read;

const ELF_MAGIC: &[u8] = b"\x7fELF";
/// Refuse to inflate more than this: a real vmlinux is well below 256 MiB.
const MAX_OUTPUT: u64 = 512 << 20;

/// LZ4 legacy frame magic (`lz4 -l`), little endian 0x184C2102.
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// Every block of a legacy frame decompresses to at most 8 MiB.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Why no vmlinux came out.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("no compressed ELF payload found (tried lz4-legacy, gzip, xz, zstd)")]
    NoPayload,
}

type Decoder = fn(&[u8]) -> Option<Vec<u8>>;

/// The compressed formats, as (name, magic, decoder). Decoders get the input starting at the magic.
const FORMATS: &[(&str, &[u8], Decoder)] = &[
    ("lz4-legacy", &LZ4_LEGACY_MAGIC, lz4_legacy),
    ("gzip", &GZIP_MAGIC, gzip),
    ("xz", &XZ_MAGIC, xz),
    ("zstd", &ZSTD_MAGIC, zstd),
];

/// Return the ELF vmlinux inside `image`. An image that already is an ELF file is returned as is.
pub fn extract(image: &[u8]) -> Result<Vec<u8>, ExtractError> {
    if image.starts_with(ELF_MAGIC) {
        return Ok(image.to_vec());
    }
    for (name, magic, decode) in FORMATS {
        for offset in find_all(image, magic) {
            if let Some(out) = decode(&image[offset..]).filter(|out| out.starts_with(ELF_MAGIC)) {
                tracing::debug!(format = name, offset, size = out.len(), "found vmlinux");
                return Ok(out);
            }
        }
    }
    Err(ExtractError::NoPayload)
}

fn find_all<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

/// Legacy LZ4 frame: magic, then blocks of `[u32 LE compressed size][block]`. The stream ends at
/// EOF or at a size that cannot be a block (the kernel appends its own 4-byte size trailer).
fn lz4_legacy(data: &[u8]) -> Option<Vec<u8>> {
    let max_block = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK / 255 + 16;
    let mut pos = LZ4_LEGACY_MAGIC.len();
    let mut out = Vec::new();
    let mut buf = vec![0u8; LZ4_LEGACY_BLOCK];
    while let Some(size_bytes) = data.get(pos..pos + 4) {
        if size_bytes == LZ4_LEGACY_MAGIC {
            // Concatenated legacy frames.
            pos += 4;
            continue;
        }
        let size = u32::from_le_bytes(size_bytes.try_into().ok()?) as usize;
        let Some(block) = data
            .get(pos + 4..pos + 4 + size)
            .filter(|_| size > 0 && size <= max_block)
        else {
            break;
        };
        let Ok(n) = lz4_flex::block::decompress_into(block, &mut buf) else {
            break;
        };
        out.extend_from_slice(&buf[..n]);
        // A magic that happens to occur in unrelated bytes fails here, after one block.
        if !out.starts_with(ELF_MAGIC) || out.len() as u64 > MAX_OUTPUT {
            return None;
        }
        pos += 4 + size;
    }
    (!out.is_empty()).then_some(out)
}

fn read_capped(reader: impl Read) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(MAX_OUTPUT).read_to_end(&mut out).ok()?;
    Some(out)
}

fn gzip(data: &[u8]) -> Option<Vec<u8>> {
    read_capped(flate2::read::GzDecoder::new(data))
}

fn zstd(data: &[u8]) -> Option<Vec<u8>> {
    let mut input = data;
    read_capped(ruzstd::decoding::StreamingDecoder::new(&mut input).ok()?)
}

fn xz(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut input = std::io::BufReader::new(data);
    match lzma_rs::xz_decompress(&mut input, &mut out) {
        Ok(()) => Some(out),
        // lzma-rs checks for EOF after the footer, once the stream and its checksums have been
        // verified; in a bzImage the kernel's size trailer follows, so that one error is success.
        Err(lzma_rs::error::Error::XzError(m))
            if m.starts_with("Unexpected data after last XZ block") =>
        {
            Some(out)
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A fake vmlinux: ELF magic plus `len` bytes that compress, but not to nothing.
    fn fake_vmlinux(len: usize) -> Vec<u8> {
        let mut v = ELF_MAGIC.to_vec();
        let mut x: u32 = 12345;
        while v.len() < len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            v.extend_from_slice(&[b'k', (x >> 24) as u8 & 0x0f, b'e', b'r']);
        }
        v.truncate(len);
        v
    }

    fn lz4_legacy_compress(data: &[u8]) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_vec();
        for chunk in data.chunks(LZ4_LEGACY_BLOCK) {
            let block = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(block.len() as u32).to_le_bytes());
            out.extend_from_slice(&block);
        }
        out
    }

    /// Wrap a payload like a bzImage: setup code (with a false magic), payload, size trailer, junk.
    fn fake_bzimage(payload: &[u8], uncompressed_len: usize) -> Vec<u8> {
        let mut img = b"MZ setup code".to_vec();
        img.extend_from_slice(&LZ4_LEGACY_MAGIC); // a stray magic that is not a stream
        img.extend_from_slice(&[0x10, 0, 0, 0, 1, 2, 3]);
        img.extend_from_slice(&GZIP_MAGIC);
        img.extend_from_slice(b"more setup");
        img.extend_from_slice(payload);
        img.extend_from_slice(&(uncompressed_len as u32).to_le_bytes());
        img.extend_from_slice(&[0xff; 64]);
        img
    }

    #[test]
    fn lz4_legacy_multi_block() {
        let vmlinux = fake_vmlinux(LZ4_LEGACY_BLOCK + 300_000);
        let img = fake_bzimage(&lz4_legacy_compress(&vmlinux), vmlinux.len());
        assert_eq!(extract(&img).unwrap(), vmlinux);
    }

    #[test]
    fn gzip_payload() {
        let vmlinux = fake_vmlinux(200_000);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&vmlinux).unwrap();
        let img = fake_bzimage(&enc.finish().unwrap(), vmlinux.len());
        assert_eq!(extract(&img).unwrap(), vmlinux);
    }

    #[test]
    fn xz_payload() {
        let vmlinux = fake_vmlinux(100_000);
        let mut compressed = Vec::new();
        lzma_rs::xz_compress(&mut &vmlinux[..], &mut compressed).unwrap();
        let img = fake_bzimage(&compressed, vmlinux.len());
        assert_eq!(extract(&img).unwrap(), vmlinux);
    }

    #[test]
    fn zstd_payload() {
        let vmlinux = fake_vmlinux(100_000);
        let compressed = ruzstd::encoding::compress_to_vec(
            &vmlinux[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let img = fake_bzimage(&compressed, vmlinux.len());
        assert_eq!(extract(&img).unwrap(), vmlinux);
    }

    #[test]
    fn non_elf_payload_is_rejected() {
        let mut not_elf = fake_vmlinux(50_000);
        not_elf[0] = b'X';
        let img = fake_bzimage(&lz4_legacy_compress(&not_elf), not_elf.len());
        assert!(matches!(extract(&img), Err(ExtractError::NoPayload)));
        assert!(extract(b"nothing here").is_err());
    }

    #[test]
    fn plain_elf_passes_through() {
        let elf = fake_vmlinux(1000);
        assert_eq!(extract(&elf).unwrap(), elf);
    }
}
