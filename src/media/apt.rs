//! Getting the packages through the host's apt: `apt-cache depends
//! linux-image-amd64` names the release's current kernel package,
//! `apt-cache show` its version, size and SHA256 (from apt's signed
//! indexes), and `apt-get download` fetches it; apt verifies what it
//! downloads against those indexes, and we check the SHA256 again before a
//! file enters the cache (a file already cached is reused only if it still
//! matches).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use sha2::{Digest as _, Sha256};

/// The meta package whose dependency is the current kernel.
pub const KERNEL_META: &str = "linux-image-amd64";

/// Is `prog` an executable on PATH?
pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// Can this host get packages through apt?
pub fn available() -> bool {
    on_path("apt-get") && on_path("apt-cache")
}

/// A package version apt would download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub package: String,
    pub version: String,
    /// The pool file's name (`linux-image-..._amd64.deb`).
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

fn apt(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {prog}"))?;
    if !out.status.success() {
        bail!(
            "{prog} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The kernel package `linux-image-amd64` depends on, from `apt-cache
/// depends` output.
pub fn parse_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|v| v.trim().trim_start_matches('<').trim_end_matches('>'))
        .find(|v| {
            v.strip_prefix("linux-image-")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(str::to_string)
}

/// The first paragraph of `apt-cache show --no-all-versions` output.
pub fn parse_show(text: &str) -> Result<Candidate> {
    let para = text.split("\n\n").next().unwrap_or("");
    let field = |k: &str| {
        para.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("apt-cache show gave no {k} field"))
    };
    let filename = field("Filename")?;
    Ok(Candidate {
        package: field("Package")?,
        version: field("Version")?,
        file: filename.rsplit('/').next().unwrap_or(&filename).to_string(),
        size: field("Size")?
            .parse()
            .context("apt-cache show: Size is not a number")?,
        sha256: field("SHA256")?.to_ascii_lowercase(),
    })
}

/// The current kernel package's name.
pub fn kernel_package() -> Result<String> {
    let out = apt("apt-cache", &["depends", KERNEL_META])?;
    parse_depends(&out).with_context(|| {
        format!("apt knows no {KERNEL_META} with a kernel dependency; run `apt-get update` (or use --from DIR)")
    })
}

/// What apt would download for `package`.
pub fn candidate(package: &str) -> Result<Candidate> {
    let out = apt("apt-cache", &["show", "--no-all-versions", package])
        .with_context(|| format!("looking up {package} (run `apt-get update`?)"))?;
    parse_show(&out).with_context(|| format!("looking up {package}"))
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// `c` in `dir`: the cached file if it still matches, else downloaded with
/// `apt-get download` (into a private directory, checked, then renamed in).
pub fn fetch(c: &Candidate, dir: &Path, mp: &MultiProgress) -> Result<PathBuf> {
    let dest = dir.join(&c.file);
    if dest.is_file()
        && std::fs::metadata(&dest)?.len() == c.size
        && sha256_file(&dest)? == c.sha256
    {
        return Ok(dest);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".download-{}-{}", std::process::id(), c.package));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let result = download(c, &tmp, &dest, mp);
    let _ = std::fs::remove_dir_all(&tmp);
    result.with_context(|| format!("downloading {} {}", c.package, c.version))?;
    Ok(dest)
}

fn download(c: &Candidate, tmp: &Path, dest: &Path, mp: &MultiProgress) -> Result<()> {
    let pb = mp.add(ProgressBar::new(c.size));
    pb.set_style(
        ProgressStyle::with_template("{msg:32} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("literal template")
            .progress_chars("=> "),
    );
    pb.set_message(c.package.clone());
    let log = tmp.join("apt.log");
    let mut child = Command::new("apt-get")
        .args(["download", &format!("{}={}", c.package, c.version)])
        .current_dir(tmp)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(tmp.join("apt.err"))?)
        .spawn()
        .context("running apt-get download")?;
    // apt writes straight into the directory: its growing size is the
    // progress (apt-get's own bar is not meant for parsing).
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        pb.set_position(dir_bytes(tmp));
        std::thread::sleep(Duration::from_millis(100));
    };
    pb.finish_and_clear();
    if !status.success() {
        let err = std::fs::read_to_string(tmp.join("apt.err")).unwrap_or_default();
        bail!(
            "apt-get download failed ({status}): {}\n(an outdated package index gives 404s: run `apt-get update`, or use --from DIR)",
            err.trim()
        );
    }
    let got: Vec<PathBuf> = std::fs::read_dir(tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    let [got] = &got[..] else {
        bail!(
            "apt-get download left {} .deb files, expected one",
            got.len()
        );
    };
    let sha = sha256_file(got)?;
    if sha != c.sha256 {
        bail!(
            "{} has SHA256 {sha}; apt's index says {}",
            got.display(),
            c.sha256
        );
    }
    std::fs::rename(got, dest)
        .with_context(|| format!("moving the download to {}", dest.display()))?;
    Ok(())
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_output() {
        let t = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n  Suggests: x\n";
        assert_eq!(
            parse_depends(t).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        let virt = "linux-image-amd64\n  Depends: <linux-image-amd64-signed-template>\n  Depends: linux-image-6.12.9-amd64\n";
        assert_eq!(
            parse_depends(virt).as_deref(),
            Some("linux-image-6.12.9-amd64")
        );
        assert_eq!(parse_depends("linux-image-amd64\n"), None);
    }

    #[test]
    fn show_output() {
        let t = "Package: busybox-static\nVersion: 1:1.35.0-4+deb12u1+b1\nFilename: pool/main/b/busybox/busybox-static_1.35.0-4+deb12u1+b1_amd64.deb\nSize: 928188\nSHA256: 3D3FDBE9\n\nPackage: busybox-static\nVersion: 0\n";
        let c = parse_show(t).unwrap();
        assert_eq!(c.version, "1:1.35.0-4+deb12u1+b1");
        assert_eq!(c.file, "busybox-static_1.35.0-4+deb12u1+b1_amd64.deb");
        assert_eq!((c.size, c.sha256.as_str()), (928188, "3d3fdbe9"));
        assert!(parse_show("Package: x\n").is_err());
    }
}
