//! Reading Debian packages without dpkg: a `.deb` is an `ar` archive of
//! `debian-binary` ("2.0\n"), `control.tar.*` and `data.tar.*`, the tars
//! compressed with xz, zstd or gzip (or not at all); deb(5).
//!
//! Nothing is unpacked to disk: callers stream `data.tar` entries and keep
//! what they need. Every error names the file and what is wrong with it, and
//! a member that ends early (a truncated download) is reported as such
//! instead of surfacing as a decompressor's "unexpected end of stream".

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use indicatif::ProgressBar;

/// One package file.
#[derive(Debug, Clone)]
pub struct Deb {
    pub path: PathBuf,
}

/// The fields of `control` this crate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub package: String,
    pub version: String,
    pub architecture: String,
}

/// What a `data.tar` entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A symbolic link to the target (as written in the archive).
    Symlink(String),
    /// Hard links, devices, ...: callers skip them.
    Other,
}

/// One `data.tar` entry as callers see it: the path without its leading
/// `./`, and a reader of its bytes.
pub struct Entry<'a> {
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    pub data: &'a mut dyn Read,
}

/// Whether to keep reading `data.tar`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

impl Deb {
    /// Check that `path` is a Debian binary package (ar magic, then
    /// `debian-binary` saying format 2.x).
    pub fn open(path: &Path) -> Result<Deb> {
        let deb = Deb {
            path: path.to_path_buf(),
        };
        deb.with_members(|name, r| {
            if name != "debian-binary" {
                bail!("the first member is {name:?}, not debian-binary: not a Debian package");
            }
            let mut v = String::new();
            r.take(64).read_to_string(&mut v)?;
            if !v.starts_with("2.") {
                bail!(
                    "debian-binary says {:?}; only format 2.x is known",
                    v.trim()
                );
            }
            Ok(Flow::Stop)
        })
        .with_context(|| format!("reading {}", path.display()))?;
        Ok(deb)
    }

    /// Package, Version and Architecture from `control.tar.*`'s `control`.
    pub fn control(&self) -> Result<Control> {
        let mut found = None;
        self.with_members(|name, r| {
            let Some(comp) = name.strip_prefix("control.tar") else {
                return Ok(Flow::Continue);
            };
            let r = decompressor(name, comp, r)?;
            let mut tar = tar::Archive::new(r);
            for e in tar.entries().with_context(|| format!("reading {name}"))? {
                let mut e = e.with_context(|| format!("reading {name}"))?;
                let p = e
                    .path()?
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .to_string();
                if p == "control" {
                    let mut text = String::new();
                    e.read_to_string(&mut text)
                        .with_context(|| format!("reading control in {name}"))?;
                    found = Some(parse_control(&text)?);
                    break;
                }
            }
            Ok(Flow::Stop)
        })
        .with_context(|| format!("reading {}", self.path.display()))?;
        found.with_context(|| format!("{}: no control file in control.tar", self.path.display()))
    }

    /// Stream the entries of `data.tar.*` into `f`, which returns whether
    /// to go on. `progress`, if given, advances by compressed bytes read
    /// (its length is set to the member's size).
    pub fn each_data(
        &self,
        progress: Option<&ProgressBar>,
        mut f: impl FnMut(Entry<'_>) -> Result<Flow>,
    ) -> Result<()> {
        let mut seen = false;
        self.with_members(|name, r| {
            let Some(comp) = name.strip_prefix("data.tar") else {
                return Ok(Flow::Continue);
            };
            seen = true;
            if let Some(pb) = progress {
                pb.set_length(r.left);
            }
            let r: Box<dyn Read + '_> = match progress {
                Some(pb) => Box::new(pb.wrap_read(r)),
                None => Box::new(r),
            };
            let mut tar = tar::Archive::new(decompressor(name, comp, r)?);
            let entries = tar.entries().with_context(|| format!("reading {name}"))?;
            for e in entries {
                let mut e = e.with_context(|| format!("reading {name}"))?;
                let h = e.header();
                let kind = match h.entry_type() {
                    tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
                    tar::EntryType::Directory => Kind::Dir,
                    tar::EntryType::Symlink => Kind::Symlink(
                        e.link_name()?
                            .map(|l| l.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    ),
                    _ => Kind::Other,
                };
                let size = e.size();
                let path = e.path()?.to_string_lossy().into_owned();
                let path = path
                    .trim_start_matches("./")
                    .trim_end_matches('/')
                    .to_string();
                let entry = Entry {
                    path: path.clone(),
                    kind,
                    size,
                    data: &mut e,
                };
                if f(entry).with_context(|| format!("{name}: {path}"))? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
            }
            Ok(Flow::Stop)
        })
        .with_context(|| format!("reading {}", self.path.display()))?;
        if !seen {
            bail!("{}: no data.tar member", self.path.display());
        }
        Ok(())
    }

    /// The bytes of the first regular file in `data.tar.*` whose path
    /// `want` accepts (paths without the leading `./`), if any.
    pub fn read_file(&self, want: impl Fn(&str) -> bool) -> Result<Option<Vec<u8>>> {
        let mut found = None;
        self.each_data(None, |e| {
            if e.kind == Kind::File && want(&e.path) {
                let mut b = Vec::with_capacity(e.size as usize);
                e.data.read_to_end(&mut b)?;
                found = Some(b);
                return Ok(Flow::Stop);
            }
            Ok(Flow::Continue)
        })?;
        Ok(found)
    }

    /// Visit the ar members in order with a reader that fails loudly when
    /// the file ends before the member's declared size. Sizes are checked
    /// against the file's length up front, so a truncated download is
    /// named as such before anything is decompressed.
    fn with_members(
        &self,
        mut f: impl FnMut(&str, Exact<&mut ar::Entry<'_, BufReader<File>>>) -> Result<Flow>,
    ) -> Result<()> {
        let file = File::open(&self.path).context("opening the file")?;
        let file_len = file.metadata().context("reading the file's size")?.len();
        let mut archive = ar::Archive::new(BufReader::with_capacity(1 << 16, file));
        let mut first = true;
        // deb(5): an 8-byte magic, then members of a 60-byte header plus
        // their data, padded to an even length.
        let mut pos = 8u64;
        while let Some(entry) = archive.next_entry() {
            let mut entry = entry.map_err(|e| {
                if first {
                    anyhow::anyhow!("not a Debian package (not an ar archive: {e})")
                } else {
                    anyhow::anyhow!("the ar archive is damaged or truncated: {e}")
                }
            })?;
            first = false;
            let name = String::from_utf8_lossy(entry.header().identifier())
                .trim_end_matches('/')
                .to_string();
            let size = entry.header().size();
            let end = pos.saturating_add(60).saturating_add(size);
            if end > file_len {
                bail!(
                    "{name} is truncated: the member is {size} bytes, the file ends {} bytes early",
                    end - file_len
                );
            }
            pos = end + (size & 1);
            let r = Exact {
                inner: &mut entry,
                left: size,
                name: name.clone(),
            };
            if f(&name, r)? == Flow::Stop {
                return Ok(());
            }
        }
        if first {
            bail!("not a Debian package (an empty ar archive)");
        }
        Ok(())
    }
}

/// The decompressing reader for a `control.tar<comp>` / `data.tar<comp>`;
/// its errors say the member is corrupt (a truncation says so itself).
fn decompressor<'a>(name: &str, comp: &str, r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let inner: Box<dyn Read + 'a> = match comp {
        ".xz" => Box::new(xz2::read::XzDecoder::new(r)),
        ".zst" => Box::new(zstd::stream::read::Decoder::new(r).context("starting zstd")?),
        ".gz" => Box::new(flate2::read::GzDecoder::new(r)),
        "" => Box::new(r),
        _ => bail!("{name}: unknown compression (expected .xz, .zst, .gz or none)"),
    };
    Ok(Box::new(Corrupt {
        inner,
        name: name.to_string(),
    }))
}

/// Labels a decompressor's errors with the member they come from.
struct Corrupt<R> {
    inner: R,
    name: String,
}

impl<R: Read> Read for Corrupt<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            if e.to_string().contains("is truncated") {
                e
            } else {
                io::Error::new(e.kind(), format!("{} is corrupt: {e}", self.name))
            }
        })
    }
}

/// Reads exactly `left` bytes of a member; an early end of file is an
/// error that says so.
pub struct Exact<R> {
    inner: R,
    left: u64,
    name: String,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} is truncated: the file ends {} bytes before the member does",
                    self.name, self.left
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Package, Version, Architecture of a deb-control(5) paragraph.
pub fn parse_control(text: &str) -> Result<Control> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    Ok(Control {
        package: field("Package").context("control has no Package field")?,
        version: field("Version").context("control has no Version field")?,
        architecture: field("Architecture").unwrap_or_default(),
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::Write as _;

    /// A .deb built here: `files` as data.tar.<comp> (comp "xz", "zst",
    /// "gz" or ""), control naming `package`/`version`.
    pub fn make_deb(
        path: &Path,
        package: &str,
        version: &str,
        comp: &str,
        files: &[(&str, &[u8])],
    ) {
        fn tar_of(items: &[(&str, &[u8])]) -> Vec<u8> {
            let mut t = tar::Builder::new(Vec::new());
            for (name, data) in items {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o755);
                h.set_cksum();
                t.append_data(&mut h, format!("./{name}"), *data).unwrap();
            }
            t.into_inner().unwrap()
        }
        fn compress(comp: &str, raw: Vec<u8>) -> Vec<u8> {
            match comp {
                "xz" => {
                    let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
                    e.write_all(&raw).unwrap();
                    e.finish().unwrap()
                }
                "zst" => zstd::encode_all(&raw[..], 3).unwrap(),
                "gz" => {
                    let mut e = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                    e.write_all(&raw).unwrap();
                    e.finish().unwrap()
                }
                _ => raw,
            }
        }
        let control = format!(
            "Package: {package}\nVersion: {version}\nArchitecture: amd64\nDescription: test\n"
        );
        let dot = |c: &str| {
            if c.is_empty() {
                String::new()
            } else {
                format!(".{c}")
            }
        };
        let mut ar = ar::Builder::new(File::create(path).unwrap());
        let mut add = |name: String, data: Vec<u8>| {
            let h = ar::Header::new(name.into_bytes(), data.len() as u64);
            ar.append(&h, &data[..]).unwrap();
        };
        add("debian-binary".into(), b"2.0\n".to_vec());
        add(
            format!("control.tar{}", dot("xz")),
            compress("xz", tar_of(&[("control", control.as_bytes())])),
        );
        add(
            format!("data.tar{}", dot(comp)),
            compress(comp, tar_of(files)),
        );
    }

    #[test]
    fn reads_control_and_data_in_every_compression() {
        let d = tempfile::tempdir().unwrap();
        for comp in ["xz", "zst", "gz", ""] {
            let p = d.path().join(format!("x-{comp}.deb"));
            make_deb(
                &p,
                "busybox-static",
                "1:1.35.0-4",
                comp,
                &[("bin/busybox", b"BB")],
            );
            let deb = Deb::open(&p).unwrap();
            let c = deb.control().unwrap();
            assert_eq!(
                (c.package.as_str(), c.version.as_str()),
                ("busybox-static", "1:1.35.0-4")
            );
            let mut got = Vec::new();
            deb.each_data(None, |e| {
                let mut b = Vec::new();
                e.data.read_to_end(&mut b)?;
                got.push((e.path, e.kind, b));
                Ok(Flow::Continue)
            })
            .unwrap();
            assert_eq!(
                got,
                vec![("bin/busybox".to_string(), Kind::File, b"BB".to_vec())]
            );
        }
    }

    #[test]
    fn truncation_and_garbage_are_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k.deb");
        let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        make_deb(&p, "k", "1", "xz", &[("boot/vmlinuz-1", &big)]);
        let len = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 1000).unwrap();
        let deb = Deb::open(&p).unwrap();
        let err = deb.each_data(None, |e| {
            std::io::copy(e.data, &mut std::io::sink())?;
            Ok(Flow::Continue)
        });
        let msg = format!("{:#}", err.unwrap_err());
        assert!(
            msg.contains("k.deb") && msg.contains("data.tar.xz is truncated"),
            "{msg}"
        );

        let g = d.path().join("g.deb");
        std::fs::write(&g, b"this is not a package at all, just text\n").unwrap();
        let msg = format!("{:#}", Deb::open(&g).unwrap_err());
        assert!(
            msg.contains("g.deb") && msg.contains("not a Debian package"),
            "{msg}"
        );
    }

    #[test]
    fn control_fields() {
        let c =
            parse_control("Package: ipxe\nVersion: 1.0\nArchitecture: all\nDepends: x\n").unwrap();
        assert_eq!(c.architecture, "all");
        assert!(parse_control("Version: 1\n").is_err());
    }
}
