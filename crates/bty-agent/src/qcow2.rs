//! qcow2 without staging the file.
//!
//! qcow2 is not a stream format: the L1/L2 tables say where each guest
//! cluster lives, and nothing promises they come first. The approach:
//!
//! 1. Range-GET the header, the L1 table and every L2 table (a few hundred
//!    KiB for a 20 GiB image) and build the guest → host cluster map
//!    (8 bytes per guest cluster: 1.3 MB for 10 GiB at 64 KiB clusters).
//! 2. Read the container *once, front to back*, in a single GET that goes
//!    through the resumable, hashing [`crate::source::HttpSource`], so the
//!    plan's sha256 of the container is checked as for every other format.
//! 3. Emit the guest disk in guest order as a plain `Read`: each allocated
//!    cluster is taken from the sequential stream when it lies ahead of the
//!    stream position (what `qemu-img convert` produces: data laid out in
//!    guest order), or with a Range GET of that one cluster when it lies
//!    behind (images written out of order); unallocated and zero clusters
//!    read as zeroes.
//!
//! Memory is the map plus one cluster. Compressed clusters, backing files,
//! encryption, external data files and extended L2 entries are refused
//! with a reason (`qemu-img convert -O qcow2` without `-c` avoids them).

use std::io::{self, Read};

use crate::source::range_get;
use crate::{Error, Result};

const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;
const ZERO_FLAG: u64 = 1;

/// The parts of a qcow2 image the reader needs.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Size of the guest disk.
    pub virtual_size: u64,
    cluster_bits: u32,
    /// Host offset of each guest cluster; 0 = reads as zeroes.
    map: Vec<u64>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// What the 104-byte header says, checked for features we refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Guest disk size.
    pub virtual_size: u64,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// L1 entries.
    pub l1_size: u32,
    /// Where the L1 table is.
    pub l1_offset: u64,
}

/// Parse and vet the header.
pub fn parse_header(h: &[u8]) -> Result<Header> {
    if h.len() < 72 || &h[..4] != b"QFI\xfb" {
        return Err(Error::Corrupt("not a qcow2 header".into()));
    }
    let version = be32(h, 4);
    if version != 2 && version != 3 {
        return Err(Error::Unsupported(format!("qcow2 version {version}")));
    }
    if be64(h, 8) != 0 {
        return Err(Error::Unsupported(
            "qcow2 with a backing file; flatten it with qemu-img convert".into(),
        ));
    }
    if be32(h, 32) != 0 {
        return Err(Error::Unsupported("encrypted qcow2".into()));
    }
    if version == 3 {
        let incompatible = be64(h, 72);
        for (bit, what) in [
            (1, "marked corrupt"),
            (2, "an external data file"),
            (4, "extended L2 entries"),
        ] {
            if incompatible & (1 << bit) != 0 {
                return Err(Error::Unsupported(format!("qcow2 with {what}")));
            }
        }
        if incompatible & !0b11111 != 0 {
            return Err(Error::Unsupported(format!(
                "qcow2 incompatible features {incompatible:#x}"
            )));
        }
    }
    let cluster_bits = be32(h, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(Error::Corrupt(format!("qcow2 cluster_bits {cluster_bits}")));
    }
    Ok(Header {
        virtual_size: be64(h, 24),
        cluster_bits,
        l1_size: be32(h, 36),
        l1_offset: be64(h, 40),
    })
}

impl Layout {
    /// Build the map from an L1 table and a function that loads an L2
    /// table at a host offset.
    pub fn from_tables(
        h: Header,
        l1: &[u8],
        mut load_l2: impl FnMut(u64) -> Result<Vec<u8>>,
    ) -> Result<Layout> {
        let cs = 1u64 << h.cluster_bits;
        let clusters = h.virtual_size.div_ceil(cs);
        let per_l2 = cs / 8;
        let mut map = vec![0u64; clusters as usize];
        for (i, e) in l1.chunks_exact(8).enumerate() {
            let l2_off = u64::from_be_bytes(e.try_into().expect("8")) & L1_OFFSET_MASK;
            if l2_off == 0 {
                continue;
            }
            let l2 = load_l2(l2_off)?;
            for (j, e) in l2.chunks_exact(8).enumerate() {
                let g = i as u64 * per_l2 + j as u64;
                if g >= clusters {
                    break;
                }
                let v = u64::from_be_bytes(e.try_into().expect("8"));
                if v & COMPRESSED != 0 {
                    return Err(Error::Unsupported(
                        "qcow2 with compressed clusters; re-create it with qemu-img convert -O qcow2 (no -c)".into(),
                    ));
                }
                if v & ZERO_FLAG == 0 {
                    map[g as usize] = v & L1_OFFSET_MASK;
                }
            }
        }
        Ok(Layout {
            virtual_size: h.virtual_size,
            cluster_bits: h.cluster_bits,
            map,
        })
    }

    /// Fetch header and tables with Range requests.
    pub fn fetch(http: &ureq::Agent, url: &str) -> Result<Layout> {
        let (head, _) = range_get(http, url, "0-4095", 4096)?;
        let h = parse_header(&head)?;
        let cs = 1u64 << h.cluster_bits;
        if h.l1_size as u64 > (h.virtual_size.div_ceil(cs * (cs / 8))) + 1 {
            return Err(Error::Corrupt(format!(
                "qcow2 L1 table of {} entries",
                h.l1_size
            )));
        }
        let l1_len = h.l1_size as u64 * 8;
        let l1 = if l1_len == 0 {
            Vec::new()
        } else {
            let (l1, _) = range_get(
                http,
                url,
                &format!("{}-{}", h.l1_offset, h.l1_offset + l1_len - 1),
                l1_len,
            )?;
            l1
        };
        Layout::from_tables(h, &l1, |off| {
            let (t, _) = range_get(http, url, &format!("{}-{}", off, off + cs - 1), cs)?;
            if t.len() as u64 != cs {
                return Err(Error::Corrupt(format!("qcow2 L2 table at {off} is short")));
            }
            Ok(t)
        })
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
}

/// The guest disk, in order, from one sequential pass over the container.
pub struct Reader<R: Read> {
    layout: Layout,
    stream: R,
    stream_pos: u64,
    http: ureq::Agent,
    url: String,
    guest: u64,
    cluster: Vec<u8>,
    /// Valid bytes of `cluster` and the guest offset it starts at.
    loaded: Option<u64>,
    /// Clusters fetched out of order with a Range request.
    pub random_reads: u64,
}

impl<R: Read> Reader<R> {
    /// `stream` must be the container from byte 0.
    pub fn new(layout: Layout, stream: R, http: ureq::Agent, url: &str) -> Self {
        let cs = layout.cluster_size() as usize;
        Reader {
            layout,
            stream,
            stream_pos: 0,
            http,
            url: url.to_string(),
            guest: 0,
            cluster: vec![0; cs],
            loaded: None,
            random_reads: 0,
        }
    }

    fn load(&mut self, idx: usize) -> io::Result<()> {
        let host = self.layout.map[idx];
        let cs = self.layout.cluster_size();
        if host >= self.stream_pos {
            io::copy(
                &mut (&mut self.stream).take(host - self.stream_pos),
                &mut io::sink(),
            )?;
            self.stream_pos = host;
            let mut n = 0;
            while n < cs as usize {
                match self.stream.read(&mut self.cluster[n..])? {
                    0 => break,
                    k => n += k,
                }
            }
            self.stream_pos += n as u64;
            // The last cluster of a file may be cut short; the rest is zeroes.
            self.cluster[n..].fill(0);
        } else {
            let (bytes, _) = range_get(
                &self.http,
                &self.url,
                &format!("{}-{}", host, host + cs - 1),
                cs,
            )?;
            self.cluster[..bytes.len()].copy_from_slice(&bytes);
            self.cluster[bytes.len()..].fill(0);
            self.random_reads += 1;
        }
        self.loaded = Some(idx as u64 * cs);
        Ok(())
    }
}

impl<R: Read> Read for Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.guest >= self.layout.virtual_size || buf.is_empty() {
            if !buf.is_empty() {
                // Drain the rest so the download's digest covers it all.
                io::copy(&mut self.stream, &mut io::sink())?;
            }
            return Ok(0);
        }
        let cs = self.layout.cluster_size();
        let idx = (self.guest / cs) as usize;
        let within = self.guest % cs;
        let n = (cs - within)
            .min(self.layout.virtual_size - self.guest)
            .min(buf.len() as u64) as usize;
        if self.layout.map[idx] == 0 {
            buf[..n].fill(0);
        } else {
            if self.loaded != Some(idx as u64 * cs) {
                self.load(idx)?;
            }
            buf[..n].copy_from_slice(&self.cluster[within as usize..within as usize + n]);
        }
        self.guest += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u32, size: u64, bits: u32) -> Vec<u8> {
        let mut h = vec![0u8; 104];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&version.to_be_bytes());
        h[20..24].copy_from_slice(&bits.to_be_bytes());
        h[24..32].copy_from_slice(&size.to_be_bytes());
        h[36..40].copy_from_slice(&1u32.to_be_bytes());
        h[40..48].copy_from_slice(&65536u64.to_be_bytes());
        h
    }

    #[test]
    fn header_features_are_vetted() {
        let h = parse_header(&header(3, 1 << 30, 16)).unwrap();
        assert_eq!(
            (h.virtual_size, h.cluster_bits, h.l1_size, h.l1_offset),
            (1 << 30, 16, 1, 65536)
        );
        let mut b = header(3, 1, 16);
        b[8..16].copy_from_slice(&1u64.to_be_bytes());
        assert!(parse_header(&b)
            .unwrap_err()
            .to_string()
            .contains("backing file"));
        let mut b = header(3, 1, 16);
        b[79] = 1 << 4;
        assert!(parse_header(&b)
            .unwrap_err()
            .to_string()
            .contains("extended L2"));
        assert!(parse_header(&header(1, 1, 16)).is_err());
        assert!(parse_header(b"QFI").is_err());
    }

    #[test]
    fn map_from_tables_marks_zero_and_refuses_compressed() {
        let h = Header {
            virtual_size: 3 * 512,
            cluster_bits: 9,
            l1_size: 1,
            l1_offset: 0,
        };
        let l1 = (4096u64 | (1 << 63)).to_be_bytes();
        let mut l2 = vec![0u8; 512];
        l2[..8].copy_from_slice(&(8192u64 | (1 << 63)).to_be_bytes());
        l2[8..16].copy_from_slice(&(9216u64 | ZERO_FLAG).to_be_bytes());
        let l = Layout::from_tables(h, &l1, |off| {
            assert_eq!(off, 4096);
            Ok(l2.clone())
        })
        .unwrap();
        assert_eq!(l.map, vec![8192, 0, 0]);
        l2[..8].copy_from_slice(&(8192u64 | COMPRESSED).to_be_bytes());
        let e = Layout::from_tables(h, &l1, |_| Ok(l2.clone())).unwrap_err();
        assert!(e.to_string().contains("compressed clusters"), "{e}");
    }
}
