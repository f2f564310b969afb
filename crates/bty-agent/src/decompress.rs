//! Container formats: confirm the plan's format against the stream's magic
//! bytes, wrap the stream in the matching decoder, and learn the image's
//! decompressed size from the container's header when it says.

use std::io::{BufReader, Read};

use bty_proto::ImageFormat;

use crate::{Error, Result};

/// What the first bytes of a stream look like.
pub fn sniff(head: &[u8]) -> Option<ImageFormat> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(ImageFormat::Gz)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(ImageFormat::Xz)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(ImageFormat::Zst)
    } else if matches!(head, [b'B', b'Z', b'h', b'1'..=b'9', ..]) {
        Some(ImageFormat::Bz2)
    } else if head.starts_with(b"QFI\xfb") {
        Some(ImageFormat::Qcow2)
    } else {
        None
    }
}

/// Refuse when the magic bytes contradict the plan. A raw image may start
/// with anything except another container's magic.
pub fn confirm(plan: ImageFormat, head: &[u8]) -> Result<()> {
    let found = sniff(head);
    let ok = match plan {
        ImageFormat::Raw => found.is_none(),
        f => found == Some(f),
    };
    if ok {
        return Ok(());
    }
    Err(Error::FormatMismatch {
        plan: plan.to_string(),
        found: found.map_or_else(
            || "raw data (no known magic)".to_string(),
            |f| f.to_string(),
        ),
    })
}

/// Check the magic of `src` against `format` and return the decoded
/// stream. qcow2 is not a stream format; see [`crate::qcow2`].
pub fn open<'a, R: Read + Send + 'a>(
    format: ImageFormat,
    src: R,
) -> Result<Box<dyn Read + Send + 'a>> {
    let mut src = src;
    // Read the first bytes to the end of a short read, then put them back
    // in front: one small first packet must not make a gzip look raw.
    let mut head = Vec::with_capacity(16);
    (&mut src).take(16).read_to_end(&mut head)?;
    confirm(format, &head)?;
    let src = BufReader::with_capacity(1 << 20, std::io::Cursor::new(head).chain(src));
    Ok(match format {
        ImageFormat::Raw => Box::new(src),
        ImageFormat::Gz => Box::new(flate2::bufread::MultiGzDecoder::new(src)),
        ImageFormat::Xz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(src)),
        ImageFormat::Zst => Box::new(zstd::stream::read::Decoder::with_buffer(src)?),
        ImageFormat::Bz2 => Box::new(bzip2::bufread::MultiBzDecoder::new(src)),
        ImageFormat::Qcow2 => {
            return Err(Error::Unsupported("qcow2 is not a stream format".into()));
        }
    })
}

/// What a container's header says about the decompressed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SizeHint {
    /// The exact size.
    pub exact: Option<u64>,
    /// A lower bound (gzip's ISIZE is the size mod 2^32).
    pub at_least: u64,
}

impl SizeHint {
    /// Bytes the disk must have at least.
    pub fn need(&self) -> u64 {
        self.exact.unwrap_or(self.at_least)
    }
}

/// zstd: `Frame_Content_Size` from the first frame header, if present.
pub fn zstd_content_size(head: &[u8]) -> Option<u64> {
    if head.get(..4)? != [0x28, 0xb5, 0x2f, 0xfd] {
        return None;
    }
    let fhd = *head.get(4)?;
    let fcs_flag = fhd >> 6;
    let single = fhd & 0x20 != 0;
    let did_len = match fhd & 3 {
        0 => 0,
        1 => 1,
        2 => 2,
        _ => 4,
    };
    let i = 5 + usize::from(!single) + did_len;
    let len = match (fcs_flag, single) {
        (0, true) => 1,
        (0, false) => return None,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    let b = head.get(i..i + len)?;
    let mut v = [0u8; 8];
    v.get_mut(..len)?.copy_from_slice(b);
    let n = u64::from_le_bytes(v);
    Some(if len == 2 { n + 256 } else { n })
}

/// gzip: ISIZE, the size mod 2^32, from the last 4 bytes.
pub fn gzip_isize(tail: &[u8]) -> Option<u64> {
    Some(u32::from_le_bytes(*tail.last_chunk::<4>()?) as u64)
}

/// xz: the stream footer (last 12 bytes) says how long the index is.
/// Returns the index size in bytes.
pub fn xz_index_size(footer: &[u8]) -> Option<u64> {
    // CRC32 (4), Backward Size (4), Stream Flags (2), "YZ".
    let [_, _, _, _, b0, b1, b2, b3, _, _, y, z] = *footer.last_chunk::<12>()?;
    if [y, z] != *b"YZ" {
        return None;
    }
    let backward = u32::from_le_bytes([b0, b1, b2, b3]) as u64;
    Some((backward + 1) * 4)
}

fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..63).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// xz: the sum of the uncompressed sizes of the index's records.
pub fn xz_index_uncompressed(index: &[u8]) -> Option<u64> {
    if index.first() != Some(&0) {
        return None;
    }
    let mut i = 1;
    let records = varint(index, &mut i)?;
    let mut total = 0u64;
    for _ in 0..records {
        let _unpadded = varint(index, &mut i)?;
        total = total.checked_add(varint(index, &mut i)?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn data() -> Vec<u8> {
        let mut v = vec![0u8; 300_000];
        for (i, b) in v.iter_mut().enumerate().skip(1000) {
            *b = (i * 7 % 251) as u8;
        }
        v
    }

    fn compress(f: ImageFormat, d: &[u8]) -> Vec<u8> {
        match f {
            ImageFormat::Raw => d.to_vec(),
            ImageFormat::Gz => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(d).unwrap();
                e.finish().unwrap()
            }
            ImageFormat::Xz => {
                let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(d).unwrap();
                e.finish().unwrap()
            }
            ImageFormat::Zst => zstd::encode_all(d, 3).unwrap(),
            ImageFormat::Bz2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                e.write_all(d).unwrap();
                e.finish().unwrap()
            }
            ImageFormat::Qcow2 => unreachable!(),
        }
    }

    #[test]
    fn every_stream_format_round_trips_and_is_sniffed() {
        let d = data();
        for f in [
            ImageFormat::Raw,
            ImageFormat::Gz,
            ImageFormat::Xz,
            ImageFormat::Zst,
            ImageFormat::Bz2,
        ] {
            let c = compress(f, &d);
            assert_eq!(sniff(&c), (f != ImageFormat::Raw).then_some(f), "{f}");
            let mut out = Vec::new();
            open(f, std::io::Cursor::new(c))
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert!(out == d, "{f} decoded differently");
        }
        assert_eq!(sniff(b"QFI\xfb\0\0\0\x03"), Some(ImageFormat::Qcow2));
    }

    #[test]
    fn magic_that_contradicts_the_plan_is_refused() {
        let d = data();
        let zst = compress(ImageFormat::Zst, &d);
        let e = open(ImageFormat::Gz, std::io::Cursor::new(zst.clone()))
            .err()
            .unwrap();
        assert_eq!(e.to_string(), "plan says format img.gz but the image starts like img.zst; fix the catalog entry's format");
        let e = open(ImageFormat::Raw, std::io::Cursor::new(zst))
            .err()
            .unwrap();
        assert!(matches!(e, Error::FormatMismatch { .. }));
        let e = open(ImageFormat::Xz, std::io::Cursor::new(d))
            .err()
            .unwrap();
        assert!(e.to_string().contains("raw data"), "{e}");
    }

    #[test]
    fn sizes_from_container_headers() {
        let d = data();
        let mut e = zstd::Encoder::new(Vec::new(), 3).unwrap();
        e.set_pledged_src_size(Some(d.len() as u64)).unwrap();
        e.include_contentsize(true).unwrap();
        e.write_all(&d).unwrap();
        let z = e.finish().unwrap();
        assert_eq!(zstd_content_size(&z[..18]), Some(d.len() as u64));

        let g = compress(ImageFormat::Gz, &d);
        assert_eq!(gzip_isize(&g), Some(d.len() as u64));

        let x = compress(ImageFormat::Xz, &d);
        let idx = xz_index_size(&x).unwrap() as usize;
        let index = &x[x.len() - 12 - idx..x.len() - 12];
        assert_eq!(xz_index_uncompressed(index), Some(d.len() as u64));
        assert_eq!(xz_index_size(b"not an xz footer"), None);
    }
}
