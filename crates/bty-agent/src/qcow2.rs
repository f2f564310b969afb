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
use std::os::unix::fs::FileExt;

use crate::source::range_get;
use crate::{Error, Result};

const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;
const ZERO_FLAG: u64 = 1;

/// A version 2 header ends at byte 72; version 3 adds the feature bits
/// and the header length, 104 bytes in all.
const V2_HEADER_LEN: usize = 72;
const V3_HEADER_LEN: usize = 104;

/// The most guest clusters the map holds: 8 bytes each, so 128 MiB of
/// map, a guest disk of 1 TiB at qemu's default 64 KiB clusters (32 TiB at
/// 2 MiB). The header's virtual size is the image's own word: this bound
/// keeps a hostile or broken header from making the agent allocate more.
pub const MAX_MAP_CLUSTERS: u64 = 16 << 20;

/// The parts of a qcow2 image the reader needs.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Size of the guest disk.
    pub virtual_size: u64,
    cluster_bits: u32,
    /// Host offset of each guest cluster; 0 = reads as zeroes.
    map: Vec<u64>,
}

/// The big-endian `N` bytes of `b` at `at`; a header too short for them
/// is corrupt.
fn field<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N]> {
    b.get(at..)
        .and_then(|rest| rest.get(..N))
        .and_then(|f| f.try_into().ok())
        .ok_or_else(|| {
            Error::Corrupt(format!(
                "qcow2 header cut short: {} bytes, a field ends at byte {}",
                b.len(),
                at.saturating_add(N)
            ))
        })
}
fn be32(b: &[u8], at: usize) -> Result<u32> {
    field(b, at).map(u32::from_be_bytes)
}
fn be64(b: &[u8], at: usize) -> Result<u64> {
    field(b, at).map(u64::from_be_bytes)
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
    if !h.starts_with(b"QFI\xfb") {
        return Err(Error::Corrupt("not a qcow2 header".into()));
    }
    let version = be32(h, 4)?;
    if version != 2 && version != 3 {
        return Err(Error::Unsupported(format!("qcow2 version {version}")));
    }
    let need = if version == 3 {
        V3_HEADER_LEN
    } else {
        V2_HEADER_LEN
    };
    if h.len() < need {
        return Err(Error::Corrupt(format!(
            "qcow2 version {version} header cut short: {} of {need} bytes",
            h.len()
        )));
    }
    if be64(h, 8)? != 0 {
        return Err(Error::Unsupported(
            "qcow2 with a backing file; flatten it with qemu-img convert".into(),
        ));
    }
    if be32(h, 32)? != 0 {
        return Err(Error::Unsupported("encrypted qcow2".into()));
    }
    if version == 3 {
        let incompatible = be64(h, 72)?;
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
    let header = Header {
        virtual_size: be64(h, 24)?,
        cluster_bits: be32(h, 20)?,
        l1_size: be32(h, 36)?,
        l1_offset: be64(h, 40)?,
    };
    header.vet()?;
    Ok(header)
}

impl Header {
    /// Refuse sizes the reader cannot hold or address: a cluster size
    /// outside 512 B..2 MiB, a map over [`MAX_MAP_CLUSTERS`], an L1 table
    /// larger than the disk needs or one that ends past 2^64.
    fn vet(&self) -> Result<()> {
        if !(9..=21).contains(&self.cluster_bits) {
            return Err(Error::Corrupt(format!(
                "qcow2 cluster_bits {}",
                self.cluster_bits
            )));
        }
        let cs = self.cluster_size();
        let clusters = self.virtual_size.div_ceil(cs);
        if clusters > MAX_MAP_CLUSTERS {
            return Err(Error::Unsupported(format!(
                "qcow2 virtual size {} bytes in {cs}-byte clusters: its cluster map would \
                 take {} MiB, the agent holds at most {} MiB; re-create it with larger \
                 clusters (qemu-img convert -O qcow2 -o cluster_size=2M)",
                self.virtual_size,
                clusters.saturating_mul(8) >> 20,
                (MAX_MAP_CLUSTERS * 8) >> 20
            )));
        }
        // Each L2 table maps cs / 8 clusters.
        if u64::from(self.l1_size) > clusters.div_ceil(cs / 8) + 1 {
            return Err(Error::Corrupt(format!(
                "qcow2 L1 table of {} entries",
                self.l1_size
            )));
        }
        if self.l1_offset.checked_add(self.l1_len()).is_none() {
            return Err(Error::Corrupt(format!(
                "qcow2 L1 table at {} runs past the end of any file",
                self.l1_offset
            )));
        }
        Ok(())
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Bytes of the L1 table.
    fn l1_len(&self) -> u64 {
        u64::from(self.l1_size) * 8
    }
}

impl Layout {
    /// Build the map from an L1 table and a function that loads an L2
    /// table at a host offset.
    pub fn from_tables(
        h: Header,
        l1: &[u8],
        mut load_l2: impl FnMut(u64) -> Result<Vec<u8>>,
    ) -> Result<Layout> {
        h.vet()?;
        let cs = h.cluster_size();
        // At most MAX_MAP_CLUSTERS (vetted above).
        let clusters = h.virtual_size.div_ceil(cs) as usize;
        let mut map = Vec::new();
        map.try_reserve_exact(clusters).map_err(|e| {
            Error::Unsupported(format!(
                "no memory for the qcow2 cluster map ({clusters} clusters): {e}"
            ))
        })?;
        map.resize(clusters, 0u64);
        // L1 entry i maps the clusters of its L2 table: i * cs/8 onwards.
        for (slots, e) in map.chunks_mut((cs / 8) as usize).zip(l1.chunks_exact(8)) {
            let l2_off = be64(e, 0)? & L1_OFFSET_MASK;
            if l2_off == 0 {
                continue;
            }
            let l2 = load_l2(l2_off)?;
            for (slot, e) in slots.iter_mut().zip(l2.chunks_exact(8)) {
                let v = be64(e, 0)?;
                if v & COMPRESSED != 0 {
                    return Err(Error::Unsupported(
                        "qcow2 with compressed clusters; re-create it with qemu-img convert -O qcow2 (no -c)".into(),
                    ));
                }
                if v & ZERO_FLAG == 0 {
                    *slot = v & L1_OFFSET_MASK;
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
        Layout::load(&Origin::Http {
            http: http.clone(),
            url: url.to_string(),
        })
    }

    /// Read header and tables from `origin` (HTTP Range requests, or
    /// positioned reads of a local file).
    pub fn load(origin: &Origin) -> Result<Layout> {
        let head = origin.read_range(0, 4096)?;
        let h = parse_header(&head)?;
        let cs = h.cluster_size();
        let l1_len = h.l1_len();
        let l1 = if l1_len == 0 {
            Vec::new()
        } else {
            // l1_offset + l1_len does not overflow (vetted).
            origin.read_range(h.l1_offset, l1_len)?
        };
        Layout::from_tables(h, &l1, |off| {
            // `off` is masked to 56 bits: `off + cs` does not overflow.
            let t = origin.read_range(off, cs)?;
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

/// Where the container can be read at any offset: the tables, and the
/// clusters that lie behind the sequential stream.
pub enum Origin {
    /// Range requests to `url`.
    Http {
        /// Shared client.
        http: ureq::Agent,
        /// The container's URL.
        url: String,
    },
    /// Positioned reads of a local file (the USB stick's images).
    File(std::fs::File),
}

impl Origin {
    /// Up to `len` bytes from `off`: fewer at the end of the container.
    pub fn read_range(&self, off: u64, len: u64) -> Result<Vec<u8>> {
        match self {
            Origin::Http { http, url } => {
                let last = off.saturating_add(len.max(1) - 1);
                Ok(range_get(http, url, &format!("{off}-{last}"), len)?.0)
            }
            Origin::File(f) => {
                // Table sizes are vetted (MAX_MAP_CLUSTERS) before this.
                let mut out = vec![0u8; len as usize];
                let mut n = 0;
                while let Some(rest) = out.get_mut(n..).filter(|r| !r.is_empty()) {
                    match f.read_at(rest, off + n as u64) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                out.truncate(n);
                Ok(out)
            }
        }
    }
}

/// The guest disk, in order, from one sequential pass over the container.
pub struct Reader<R: Read> {
    layout: Layout,
    stream: R,
    stream_pos: u64,
    origin: Origin,
    guest: u64,
    /// One cluster (`cluster_size` bytes).
    cluster: Vec<u8>,
    /// Valid bytes of `cluster` and the guest offset it starts at.
    loaded: Option<u64>,
    /// Clusters fetched out of order with a Range request.
    pub random_reads: u64,
}

/// A guest offset the map does not cover: a bug, said as an I/O error.
fn outside_map(guest: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("qcow2 guest offset {guest} lies outside the cluster map"),
    )
}

impl<R: Read> Reader<R> {
    /// `stream` must be the container from byte 0.
    pub fn new(layout: Layout, stream: R, origin: Origin) -> Self {
        let cs = layout.cluster_size() as usize;
        Reader {
            layout,
            stream,
            stream_pos: 0,
            origin,
            guest: 0,
            cluster: vec![0; cs],
            loaded: None,
            random_reads: 0,
        }
    }

    /// Load guest cluster `idx`, which the map places at host offset
    /// `host` (not 0).
    fn load(&mut self, idx: usize, host: u64) -> io::Result<()> {
        let cs = self.layout.cluster_size();
        if host >= self.stream_pos {
            io::copy(
                &mut (&mut self.stream).take(host - self.stream_pos),
                &mut io::sink(),
            )?;
            self.stream_pos = host;
            let mut n = 0;
            while let Some(rest) = self.cluster.get_mut(n..).filter(|r| !r.is_empty()) {
                match self.stream.read(rest)? {
                    0 => break,
                    k => n += k,
                }
            }
            self.stream_pos += n as u64;
            // The last cluster of a file may be cut short; the rest is zeroes.
            self.cluster.get_mut(n..).unwrap_or_default().fill(0);
        } else {
            // At most `cs` bytes: the rest of the cluster is zeroes.
            let bytes = self.origin.read_range(host, cs)?;
            self.cluster.fill(0);
            for (d, s) in self.cluster.iter_mut().zip(&bytes) {
                *d = *s;
            }
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
        let within = (self.guest % cs) as usize;
        let n = (cs - within as u64)
            .min(self.layout.virtual_size - self.guest)
            .min(buf.len() as u64) as usize;
        let host = *self
            .layout
            .map
            .get(idx)
            .ok_or_else(|| outside_map(self.guest))?;
        // n <= buf.len() (the min above).
        let (out, _) = buf.split_at_mut(n);
        if host == 0 {
            out.fill(0);
        } else {
            if self.loaded != Some(idx as u64 * cs) {
                self.load(idx, host)?;
            }
            // within + n <= cs = cluster.len() (the min above).
            let from = self
                .cluster
                .get(within..within + n)
                .ok_or_else(|| outside_map(self.guest))?;
            out.copy_from_slice(from);
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
    fn a_header_cut_short_is_an_error_not_a_panic() {
        let v3 = header(3, 1 << 30, 16);
        for len in 0..v3.len() {
            assert!(parse_header(&v3[..len]).is_err(), "{len} bytes");
        }
        // 72..=79 bytes: a version 2 header's length, short of the version
        // 3 feature bits (which used to be read regardless).
        for len in 72..=79 {
            let e = parse_header(&v3[..len]).unwrap_err();
            assert!(matches!(e, Error::Corrupt(_)), "{len} bytes: {e}");
            assert!(
                e.to_string()
                    .contains(&format!("header cut short: {len} of 104 bytes")),
                "{e}"
            );
        }
        // A version 2 header is 72 bytes and needs no more.
        let v2 = header(2, 1 << 30, 16);
        for len in 72..=79 {
            assert_eq!(parse_header(&v2[..len]).unwrap().virtual_size, 1 << 30);
        }
        let e = parse_header(&v2[..71]).unwrap_err();
        assert!(e.to_string().contains("71 of 72 bytes"), "{e}");
    }

    #[test]
    fn absurd_header_sizes_are_refused_before_anything_is_allocated() {
        for (size, bits) in [
            (u64::MAX, 9),
            (u64::MAX, 21),
            (1 << 62, 16),
            (MAX_MAP_CLUSTERS * 512 + 1, 9),
            ((MAX_MAP_CLUSTERS << 16) + 1, 16),
        ] {
            let e = parse_header(&header(3, size, bits)).unwrap_err();
            assert!(matches!(e, Error::Unsupported(_)), "{e}");
            assert!(e.to_string().contains("cluster map"), "{e}");
        }
        // The largest map allowed parses (the map is built later).
        let h = parse_header(&header(3, MAX_MAP_CLUSTERS << 16, 16)).unwrap();
        assert_eq!(h.virtual_size, 1 << 40);

        for bits in [0, 8, 22, 63, 64, u32::MAX] {
            let e = parse_header(&header(3, 1 << 30, bits)).unwrap_err();
            assert!(e.to_string().contains("cluster_bits"), "{bits}: {e}");
        }

        // 1 GiB at 64 KiB clusters needs 2 L1 entries.
        let mut b = header(3, 1 << 30, 16);
        b[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
        let e = parse_header(&b).unwrap_err();
        assert!(
            e.to_string().contains("L1 table of 4294967295 entries"),
            "{e}"
        );
        b[36..40].copy_from_slice(&3u32.to_be_bytes());
        assert!(parse_header(&b).is_ok());

        let mut b = header(3, 1 << 30, 16);
        b[40..48].copy_from_slice(&(u64::MAX - 4).to_be_bytes());
        let e = parse_header(&b).unwrap_err();
        assert!(e.to_string().contains("runs past the end"), "{e}");

        // A header made by hand gets the same checks before the map.
        let absurd = Header {
            virtual_size: u64::MAX,
            cluster_bits: 16,
            l1_size: 0,
            l1_offset: 0,
        };
        let e = Layout::from_tables(absurd, &[], |_| panic!("no L2 load")).unwrap_err();
        assert!(e.to_string().contains("cluster map"), "{e}");
        let e = Layout::from_tables(
            Header {
                cluster_bits: 64,
                ..absurd
            },
            &[],
            |_| panic!("no L2 load"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cluster_bits"), "{e}");
    }

    #[test]
    fn reader_emits_the_guest_disk_in_order() {
        // 512-byte clusters: guest 0 at host 1024, guest 1 unallocated,
        // guest 2 at 2048, guest 3 (100 bytes of it in the guest) at 2560,
        // where the container ends after 300 bytes.
        let h = Header {
            virtual_size: 3 * 512 + 100,
            cluster_bits: 9,
            l1_size: 1,
            l1_offset: 0,
        };
        let l1 = (512u64 | (1 << 63)).to_be_bytes();
        let mut l2 = vec![0u8; 512];
        for (i, host) in [(0, 1024u64), (2, 2048), (3, 2560)] {
            l2[i * 8..i * 8 + 8].copy_from_slice(&(host | (1 << 63)).to_be_bytes());
        }
        let layout = Layout::from_tables(h, &l1, |_| Ok(l2.clone())).unwrap();
        let mut container = vec![0u8; 2560 + 300];
        for (i, b) in container.iter_mut().enumerate().skip(1024) {
            *b = (i % 251) as u8 | 1;
        }
        let mut reader = Reader::new(
            layout,
            &container[..],
            Origin::Http {
                http: ureq::agent(),
                url: "http://unused".into(),
            },
        );
        let mut guest = Vec::new();
        reader.read_to_end(&mut guest).unwrap();
        let mut want = container[1024..1536].to_vec();
        want.extend_from_slice(&[0; 512]);
        want.extend_from_slice(&container[2048..2560]);
        want.extend_from_slice(&container[2560..2660]);
        assert_eq!(guest.len(), want.len());
        assert!(guest == want);
        assert_eq!(reader.random_reads, 0);
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
