//! The initramfs archive: newc cpio (what the kernel unpacks; see the
//! kernel's Documentation/driver-api/early-userspace/buffer-format.rst),
//! gzip'd, written and read with the `cpio` crate (the one
//! coreos-installer uses for its initrds).
//!
//! Written reproducibly: entries in the caller's order, inode numbers
//! counted from 1 in that order, owner 0:0, one mtime for all, no device
//! numbers but those of device nodes, and a gzip header without mtime or
//! name (flate2's default: MTIME 0, no FNAME). The same entries give the
//! same bytes.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use cpio::newc::{self, ModeFileType};
use indicatif::ProgressBar;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// One archive member: a path without a leading `/` or `./`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    /// Permission bits (the file type comes from `node`).
    pub mode: u32,
    pub node: Node,
}

impl Entry {
    fn size(&self) -> u64 {
        match &self.node {
            Node::File(b) => b.len() as u64,
            Node::Symlink(t) => t.len() as u64,
            _ => 0,
        }
    }
}

/// The bytes of all files and link targets (for a progress bar).
pub fn payload(entries: &[Entry]) -> u64 {
    entries.iter().map(Entry::size).sum()
}

/// Write `entries` as a newc archive into `w`.
pub fn write_newc<W: Write>(
    entries: &[Entry],
    mtime: u32,
    mut w: W,
    pb: Option<&ProgressBar>,
) -> Result<W> {
    for (i, e) in entries.iter().enumerate() {
        let (kind, nlink, data): (ModeFileType, u32, &[u8]) = match &e.node {
            Node::Dir => (ModeFileType::Directory, 2, &[]),
            Node::File(b) => (ModeFileType::Regular, 1, b),
            Node::Symlink(t) => (ModeFileType::Symlink, 1, t.as_bytes()),
            Node::CharDev { .. } => (ModeFileType::Char, 1, &[]),
        };
        let size = u32::try_from(data.len())
            .with_context(|| format!("{} is over 4 GiB, more than newc can hold", e.path))?;
        let mut b = newc::Builder::new(&e.path)
            .ino(i as u32 + 1)
            .mode(e.mode & 0o7777)
            .set_mode_file_type(kind)
            .uid(0)
            .gid(0)
            .nlink(nlink)
            .mtime(mtime);
        if let Node::CharDev { major, minor } = e.node {
            b = b.rdev_major(major).rdev_minor(minor);
        }
        let mut out = b.write(w, size);
        // In chunks so the bar moves through a large agent binary.
        for chunk in data.chunks(1 << 20) {
            out.write_all(chunk)
                .with_context(|| format!("writing {} into the archive", e.path))?;
            if let Some(pb) = pb {
                pb.inc(chunk.len() as u64);
            }
        }
        w = out.finish()?;
    }
    Ok(newc::trailer(w)?)
}

/// Swallows `flush`: the cpio crate flushes after every entry, which on a
/// gzip stream would force a sync point (worse compression, slower).
struct NoFlush<W>(W);

impl<W: Write> Write for NoFlush<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Write `entries` as a gzip'd newc archive to `path` at gzip `level`.
pub fn write_gz(
    entries: &[Entry],
    mtime: u32,
    level: u32,
    path: &Path,
    pb: Option<&ProgressBar>,
) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let gz = flate2::GzBuilder::new().write(
        BufWriter::with_capacity(1 << 20, file),
        flate2::Compression::new(level),
    );
    let NoFlush(gz) = write_newc(entries, mtime, NoFlush(gz), pb)?;
    let mut file = gz.finish()?.into_inner().map_err(|e| e.into_error())?;
    file.flush()?;
    file.sync_all()?;
    Ok(())
}

/// The first of `names` found in the initrd at `path` (decompressed as
/// needed: uncompressed cpio segments, such as early microcode, may come
/// first, then a gzip, xz or zstd one), with its bytes. Stops reading at
/// that entry. `None`: no such entry, or not an initramfs at all.
pub fn find_in_initrd(path: &Path, names: &[&str]) -> Result<Option<(String, Vec<u8>)>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = BufReader::with_capacity(1 << 16, f);
    loop {
        // Segments are padded with NULs (to 4 or 512 bytes) between them.
        loop {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            let zeros = buf.iter().take_while(|&&b| b == 0).count();
            if zeros == 0 {
                break;
            }
            r.consume(zeros);
        }
        let head = r.fill_buf()?;
        let magic: Vec<u8> = head.iter().take(6).copied().collect();
        if magic.starts_with(b"07070") {
            match walk(&mut r, names)? {
                Walk::Found(n, b) => return Ok(Some((n, b))),
                Walk::Trailer => continue,
                Walk::End => return Ok(None),
            }
        }
        let inner: Box<dyn Read + '_> = if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::MultiGzDecoder::new(&mut r))
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Box::new(xz2::bufread::XzDecoder::new(&mut r))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(zstd::stream::read::Decoder::with_buffer(&mut r)?)
        } else {
            return Ok(None);
        };
        let mut inner = BufReader::new(inner);
        return match walk(&mut inner, names)
            .with_context(|| format!("reading the compressed archive in {}", path.display()))?
        {
            Walk::Found(n, b) => Ok(Some((n, b))),
            _ => Ok(None),
        };
    }
}

enum Walk {
    Found(String, Vec<u8>),
    Trailer,
    /// The stream ended (or stopped being cpio) before a trailer.
    End,
}

/// Walk one cpio archive until one of `names` or its trailer.
fn walk<R: Read>(r: &mut R, names: &[&str]) -> Result<Walk> {
    loop {
        let entry = match newc::Reader::new(&mut *r) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Walk::End),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(Walk::End),
            Err(e) => return Err(e.into()),
        };
        if entry.entry().is_trailer() {
            entry.finish()?;
            return Ok(Walk::Trailer);
        }
        let name = entry.entry().name().trim_start_matches("./").to_string();
        if names.contains(&name.as_str()) {
            let size = entry.entry().file_size();
            if size > 1 << 20 {
                bail!("{name} is {size} bytes; an info file is small");
            }
            let mut b = Vec::with_capacity(size as usize);
            let mut entry = entry;
            entry.read_to_end(&mut b)?;
            if b.len() != size as usize {
                bail!("{name} is truncated");
            }
            return Ok(Walk::Found(name, b));
        }
        entry.finish()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry {
                path: "etc".into(),
                mode: 0o755,
                node: Node::Dir,
            },
            Entry {
                path: "etc/info".into(),
                mode: 0o644,
                node: Node::File(b"{}".to_vec()),
            },
            Entry {
                path: "bin".into(),
                mode: 0o755,
                node: Node::Dir,
            },
            Entry {
                path: "bin/sh".into(),
                mode: 0o777,
                node: Node::Symlink("busybox".into()),
            },
            Entry {
                path: "dev".into(),
                mode: 0o755,
                node: Node::Dir,
            },
            Entry {
                path: "dev/console".into(),
                mode: 0o600,
                node: Node::CharDev { major: 5, minor: 1 },
            },
            Entry {
                path: "big".into(),
                mode: 0o755,
                node: Node::File((0..3_000_000u32).map(|i| (i % 251) as u8).collect()),
            },
        ]
    }

    #[test]
    fn same_entries_same_bytes_and_found_again() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        write_gz(&sample(), 1_700_000_000, 6, &a, None).unwrap();
        write_gz(&sample(), 1_700_000_000, 6, &b, None).unwrap();
        let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(ba, bb);
        // gzip header: no mtime, no name (FLG = 0).
        assert_eq!(&ba[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&ba[4..8], &[0, 0, 0, 0]);
        assert_eq!(
            find_in_initrd(&a, &["etc/info"]).unwrap(),
            Some(("etc/info".into(), b"{}".to_vec()))
        );
        assert_eq!(find_in_initrd(&a, &["nope"]).unwrap(), None);
        write_gz(&sample(), 1, 6, &b, None).unwrap();
        assert_ne!(std::fs::read(&b).unwrap(), ba, "the mtime is in the bytes");
    }

    #[test]
    fn microcode_first_then_gzip_and_junk_is_none() {
        let d = tempfile::tempdir().unwrap();
        let early = write_newc(
            &[Entry {
                path: "kernel/x86/microcode/GenuineIntel.bin".into(),
                mode: 0o644,
                node: Node::File(vec![7; 100]),
            }],
            0,
            Vec::new(),
            None,
        )
        .unwrap();
        let main = d.path().join("main");
        write_gz(&sample(), 0, 6, &main, None).unwrap();
        let mut both = early.clone();
        both.resize(both.len().div_ceil(512) * 512, 0);
        both.extend(std::fs::read(&main).unwrap());
        let p = d.path().join("both");
        std::fs::write(&p, both).unwrap();
        assert_eq!(find_in_initrd(&p, &["etc/info"]).unwrap().unwrap().1, b"{}");
        std::fs::write(&p, b"MZ not an initrd").unwrap();
        assert_eq!(find_in_initrd(&p, &["etc/info"]).unwrap(), None);
    }
}
