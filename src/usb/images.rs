//! The stick's images: `--image NAME=PATH|URL` parsed, each staged under
//! `images/` of the data partition's tree (hard-linked when it can be,
//! else copied or downloaded) and hashed on the way, and the manifest
//! ([`bty_proto::stick::Manifest`]) that describes them.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use bty_proto::stick::{After, Auto, Manifest, StickImage, IMAGES_DIR, MANIFEST_VERSION};
use bty_proto::ImageFormat;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest as _, Sha256};

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local file.
    Path(PathBuf),
    /// Fetched over HTTP(S).
    Url(String),
}

/// One `--image NAME=PATH|URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// What the wizard shows.
    pub name: String,
    /// Where it comes from.
    pub source: Source,
    /// How it is encoded (from the file name).
    pub format: ImageFormat,
}

impl Spec {
    /// The file's name under `images/`: NAME plus the format's suffix.
    pub fn file(&self) -> String {
        format!("{IMAGES_DIR}/{}.{}", self.name, self.format.as_str())
    }
}

fn formats() -> String {
    ImageFormat::ALL
        .iter()
        .map(|f| format!(".{}", f.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parse `NAME=PATH|URL`. Names are what `--auto image=` and the wizard
/// use, and become file names: letters, digits, `.`, `_` and `-`.
pub fn parse_spec(arg: &str) -> Result<Spec> {
    let (name, src) = arg
        .split_once('=')
        .ok_or_else(|| anyhow!("--image {arg:?}: expected NAME=PATH or NAME=URL"))?;
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.starts_with('.') || !name.chars().all(ok) {
        bail!(
            "--image {arg:?}: the name {name:?} must be letters, digits, '.', '_' or '-' \
             (not starting with '.')"
        );
    }
    if src.is_empty() {
        bail!("--image {arg:?}: no PATH or URL after '='");
    }
    let is_url = src.starts_with("http://") || src.starts_with("https://");
    let file_name = if is_url {
        let path = src.split(['?', '#']).next().unwrap_or(src);
        path.rsplit('/').next().unwrap_or_default().to_string()
    } else {
        Path::new(src)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let format = ImageFormat::from_file_name(&file_name).ok_or_else(|| {
        anyhow!(
            "--image {name}={src}: cannot tell the image format from the file name \
             {file_name:?}; it must end in one of {}",
            formats()
        )
    })?;
    let source = if is_url {
        Source::Url(src.to_string())
    } else {
        Source::Path(PathBuf::from(src))
    };
    Ok(Spec {
        name: name.to_string(),
        source,
        format,
    })
}

/// Parse all `--image` arguments; refuse duplicate names and missing
/// files before anything is written.
pub fn parse_specs(args: &[String]) -> Result<Vec<Spec>> {
    let mut out: Vec<Spec> = Vec::new();
    for a in args {
        let s = parse_spec(a)?;
        if out.iter().any(|o| o.name == s.name) {
            bail!("--image: the name {:?} is given twice", s.name);
        }
        if let Source::Path(p) = &s.source {
            let md = std::fs::metadata(p).with_context(|| {
                format!("--image {}={}: cannot read the file", s.name, p.display())
            })?;
            if !md.is_file() {
                bail!("--image {}={}: not a regular file", s.name, p.display());
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// Parse `--auto image=NAME,disk-serial=SERIAL,after=reboot|poweroff`; the
/// image must be one of `images`, unless `server_may_have` (the stick
/// names a server, whose catalog [`check_auto_image`] then checks).
pub fn parse_auto(arg: &str, images: &[Spec], server_may_have: bool) -> Result<Auto> {
    let (mut image, mut serial, mut after) = (None, None, None);
    for part in arg.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            anyhow!("--auto {arg:?}: expected image=NAME,disk-serial=SERIAL,after=reboot|poweroff")
        })?;
        match k {
            "image" => image = Some(v.to_string()),
            "disk-serial" => serial = Some(v.to_string()),
            "after" => {
                after = Some(match v {
                    "reboot" => After::Reboot,
                    "poweroff" => After::Poweroff,
                    _ => bail!("--auto: after={v:?}: expected reboot or poweroff"),
                })
            }
            _ => bail!("--auto: unknown key {k:?} (keys: image, disk-serial, after)"),
        }
    }
    let image = image.ok_or_else(|| anyhow!("--auto {arg:?}: image=NAME is missing"))?;
    let disk_serial = serial
        .filter(|s| !s.is_empty())
        .ok_or_else(|| anyhow!("--auto {arg:?}: disk-serial=SERIAL is missing"))?;
    let after = after.ok_or_else(|| anyhow!("--auto {arg:?}: after=reboot|poweroff is missing"))?;
    if !server_may_have && !images.iter().any(|s| s.name == image) {
        let names: Vec<&str> = images.iter().map(|s| s.name.as_str()).collect();
        bail!(
            "--auto image={image}: no --image of that name (given: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
    }
    Ok(Auto {
        image,
        disk_serial,
        after,
    })
}

fn bar(len: Option<u64>, msg: String) -> ProgressBar {
    let pb = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:36} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("literal template")
        .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}

/// Copy `r` to `w` (when given) through a hash; the sha256 and byte count.
fn pump(
    r: &mut dyn std::io::Read,
    mut w: Option<&mut std::fs::File>,
    pb: &ProgressBar,
) -> Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        let chunk = buf.get(..k).unwrap_or_default();
        h.update(chunk);
        if let Some(w) = w.as_mut() {
            w.write_all(chunk)?;
        }
        n += k as u64;
        pb.inc(k as u64);
    }
    Ok((hex::encode(h.finalize()), n))
}

/// A runtime for one blocking step of the build.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP runtime")
}

/// Stage every image under `root/images/` and return the manifest's
/// entries, in the order given.
pub fn stage(specs: &[Spec], root: &Path) -> Result<Vec<StickImage>> {
    let dir = root.join(IMAGES_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Vec::new();
    for s in specs {
        let to = root.join(s.file());
        let (sha, size) = match &s.source {
            Source::Path(p) => stage_file(&s.name, p, &to)?,
            Source::Url(u) => fetch(&s.name, u, &to)?,
        };
        // A raw image is its own decoding; decoding the others here would
        // cost as much as the flash itself, so the wizard learns their
        // size and hash as it writes.
        let decoded = (s.format == ImageFormat::Raw).then(|| (size, sha.clone()));
        out.push(StickImage {
            name: s.name.clone(),
            file: s.file(),
            format: s.format,
            stored_size: size,
            stored_sha256: sha,
            size: decoded.as_ref().map(|d| d.0),
            sha256: decoded.map(|d| d.1),
        });
    }
    Ok(out)
}

/// Hard-link `from` to `to` (same file system: no copy; mke2fs reads it
/// once) and hash it, else copy it through the hash.
fn stage_file(name: &str, from: &Path, to: &Path) -> Result<(String, u64)> {
    let len = std::fs::metadata(from)
        .with_context(|| format!("reading {}", from.display()))?
        .len();
    let mut r = std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    if std::fs::hard_link(from, to).is_ok() {
        let pb = bar(Some(len), format!("hashing {name}"));
        let out = pump(&mut r, None, &pb).with_context(|| format!("hashing {}", from.display()));
        pb.finish_and_clear();
        return out;
    }
    let mut w = std::fs::File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let pb = bar(Some(len), format!("copying {name}"));
    let out = pump(&mut r, Some(&mut w), &pb)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()));
    pb.finish_and_clear();
    out
}

/// `auto.image` is one of the stick's images or in the server's catalog
/// (`catalog`, its names); the wizard flashes a server image only when the
/// stick has no image of that name.
pub fn check_auto_image(auto: Auto, images: &[Spec], catalog: &[String]) -> Result<Auto> {
    if images.iter().any(|s| s.name == auto.image) || catalog.contains(&auto.image) {
        return Ok(auto);
    }
    let mut names: Vec<&str> = images.iter().map(|s| s.name.as_str()).collect();
    names.extend(catalog.iter().map(String::as_str));
    bail!(
        "--auto image={}: neither an --image nor in the server's catalog (known: {})",
        auto.image,
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    );
}

/// Download `url` into `to` through the hash.
fn fetch(name: &str, url: &str, to: &Path) -> Result<(String, u64)> {
    let mut w = std::fs::File::create(to).with_context(|| format!("creating {}", to.display()))?;
    runtime()?.block_on(async {
        let mut r = reqwest::Client::new()
            .get(url)
            .send()
            .await
            .with_context(|| format!("fetching {url}"))?
            .error_for_status()
            .with_context(|| format!("fetching {url}"))?;
        // Read it now: once the body is consumed reqwest reports 0 left.
        let expected = r.content_length();
        let claimed = r
            .headers()
            .get("x-withcache-sha256")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let pb = bar(expected, format!("fetching {name}"));
        let mut h = Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = r.chunk().await.with_context(|| format!("fetching {url}"))? {
            h.update(&chunk);
            w.write_all(&chunk)
                .with_context(|| format!("writing {}", to.display()))?;
            n += chunk.len() as u64;
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
        if let Some(want) = expected.filter(|&l| l != n) {
            bail!("fetching {url}: got {n} bytes of {want}");
        }
        let sha = hex::encode(h.finalize());
        // withcache names the blob's verified sha256: a mismatch is a
        // transfer gone wrong, not an image to put on a stick.
        if let Some(want) = claimed.filter(|w| !w.eq_ignore_ascii_case(&sha)) {
            bail!("fetching {url}: its bytes hash to {sha}, the server said {want}; try again");
        }
        Ok((sha, n))
    })
}

/// The manifest of a stick.
pub fn manifest(images: Vec<StickImage>, server: Option<String>, auto: Option<Auto>) -> Manifest {
    Manifest {
        version: MANIFEST_VERSION,
        built_by: env!("CARGO_PKG_VERSION").to_string(),
        images,
        server,
        auto,
        key: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_take_the_format_from_the_file_name() {
        let s = parse_spec("deb12=/srv/debian-12.img.zst").unwrap();
        assert_eq!(s.format, ImageFormat::Zst);
        assert_eq!(s.file(), "images/deb12.img.zst");
        let u = parse_spec("w=http://cache:3000/blobs/win.qcow2?x=1").unwrap();
        assert_eq!(u.format, ImageFormat::Qcow2);
        assert!(matches!(u.source, Source::Url(_)));
        let e = parse_spec("x=/srv/disk.iso").unwrap_err().to_string();
        assert!(
            e.contains("cannot tell the image format") && e.contains(".img.zst"),
            "{e}"
        );
        assert!(parse_spec("../x=/a.img").is_err());
        assert!(parse_spec("noequals").is_err());
    }

    #[test]
    fn auto_must_name_a_given_image() {
        let imgs = vec![parse_spec("a=/x/a.img").unwrap()];
        let a = parse_auto("image=a,disk-serial=S1,after=poweroff", &imgs, false).unwrap();
        assert_eq!(
            (a.image.as_str(), a.disk_serial.as_str(), a.after),
            ("a", "S1", After::Poweroff)
        );
        let e = parse_auto("image=b,disk-serial=S1,after=reboot", &imgs, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no --image of that name (given: a)"), "{e}");
        assert!(parse_auto("image=a,after=reboot", &imgs, false).is_err());
        assert!(parse_auto("image=a,disk-serial=S,after=halt", &imgs, false).is_err());
    }

    #[test]
    fn with_a_server_auto_may_name_its_catalog_image() {
        let imgs = vec![parse_spec("a=/x/a.img").unwrap()];
        let b = parse_auto("image=b,disk-serial=S1,after=reboot", &imgs, true).unwrap();
        let ok = check_auto_image(b.clone(), &imgs, &["b".to_string()]).unwrap();
        assert_eq!(ok.image, "b");
        let e = check_auto_image(b, &imgs, &["c".to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("known: a, c"), "{e}");
    }
}
