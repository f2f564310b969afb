//! Where media and downloads are kept: `$BTY_MEDIA_CACHE`, else
//! `/var/cache/bty` as root, else the XDG cache dir (`$XDG_CACHE_HOME/bty`,
//! normally `~/.cache/bty`).
//!
//! ```text
//! <root>/debs/*.deb                  packages apt downloaded (checked)
//! <root>/media/<version>-<sha16>/    media built for one binary
//! <root>/media/.build-*              a build in progress (renamed when done)
//! <root>/.lock                       one build at a time (flock)
//! ```
//!
//! Media are keyed by this binary's version and SHA-256, so a rebuilt
//! binary gets new media and the same binary finds its own in a moment.
//! A cache hit touches the media directory, so pruning keeps the media
//! most recently used (another binary's deploy on the same host cannot
//! prune the one a running deploy is building images from).

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use sha2::{Digest as _, Sha256};

/// How many media directories to keep (a developer's rebuilt binaries
/// would otherwise fill the disk).
const KEEP: usize = 3;

/// This executable: what goes into the initramfs as `/bin/bty`.
pub struct SelfExe {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub version: &'static str,
}

impl SelfExe {
    /// Read the running executable. Through `/proc/self/exe`, so a binary
    /// replaced on disk meanwhile (cargo rebuilding it) cannot mix two
    /// versions into one media.
    pub fn read() -> Result<SelfExe> {
        let path = std::env::current_exe().context("finding this executable")?;
        let bytes = std::fs::read("/proc/self/exe")
            .with_context(|| format!("reading {}", path.display()))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Ok(SelfExe {
            path,
            bytes,
            sha256,
            version: env!("CARGO_PKG_VERSION"),
        })
    }

    /// Refuse a dynamically linked binary: the initramfs has no dynamic
    /// loader to start it as the agent.
    pub fn require_static(self) -> Result<SelfExe> {
        if crate::elf::is_dynamic(&self.bytes)
            .with_context(|| format!("inspecting {}", self.path.display()))?
        {
            bail!(
                "{} is dynamically linked, and the netboot environment has no dynamic loader \
                 to run it as the agent. Build bty-lab static (the workspace default: `cargo \
                 build --release` puts it in target/x86_64-unknown-linux-gnu/release/)",
                self.path.display()
            );
        }
        Ok(self)
    }

    /// The cache key: `<version>-<first 16 hex digits of the sha256>`.
    pub fn key(&self) -> String {
        format!("{}-{}", self.version, &self.sha256[..16])
    }
}

/// The environment variable naming the cache root for every command that
/// builds or reads media (`--cache` wins where a command has it).
pub const CACHE_ENV: &str = "BTY_MEDIA_CACHE";

/// The default cache root for this user: `$BTY_MEDIA_CACHE`, else
/// `/var/cache/bty` as root, else the XDG cache dir.
pub fn default_root() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return Ok(d.into());
    }
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok("/var/cache/bty".into());
    }
    Ok(dirs::cache_dir()
        .context("no cache directory for this user (set XDG_CACHE_HOME or HOME, or pass --cache)")?
        .join("bty"))
}

/// The cache directory tree.
#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    /// `explicit`, else the default root; created if missing.
    pub fn open(explicit: Option<&Path>) -> Result<Cache> {
        let root = match explicit {
            Some(p) => p.to_path_buf(),
            None => default_root()?,
        };
        std::fs::create_dir_all(root.join("media"))
            .with_context(|| format!("creating the cache {}", root.display()))?;
        Ok(Cache { root })
    }

    pub fn debs(&self) -> PathBuf {
        self.root.join("debs")
    }

    pub fn media(&self, key: &str) -> PathBuf {
        self.root.join("media").join(key)
    }

    /// A fresh build directory next to where the media will be renamed to.
    pub fn build_dir(&self, key: &str) -> Result<PathBuf> {
        let d = self
            .root
            .join("media")
            .join(format!(".build-{key}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    /// Hold the cache's lock (one build or download at a time); released
    /// when the returned file is dropped.
    pub fn lock(&self) -> Result<File> {
        let p = self.root.join(".lock");
        let f = File::create(&p).with_context(|| format!("creating {}", p.display()))?;
        // SAFETY: flock(2) on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!(
                "media: waiting for another build using {}",
                self.root.display()
            );
            // SAFETY: as above.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("locking {}", p.display()));
            }
        }
        Ok(f)
    }

    /// Remove build leftovers of dead processes and all but the [`KEEP`]
    /// most recently used media (never `keep`).
    pub fn prune(&self, keep: &str) {
        let Ok(rd) = std::fs::read_dir(self.root.join("media")) else {
            return;
        };
        let mut dirs = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(".build-") {
                let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
                continue;
            }
            if name == keep || name.starts_with('.') {
                continue;
            }
            let mtime = e.metadata().and_then(|m| m.modified()).ok();
            dirs.push((mtime, e.path()));
        }
        dirs.sort();
        let extra = (dirs.len() + 1).saturating_sub(KEEP);
        for (_, d) in dirs.into_iter().take(extra) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_newest_and_the_current() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(Some(d.path())).unwrap();
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            std::fs::create_dir_all(c.media(k)).unwrap();
            let t =
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            File::open(c.media(k)).unwrap().set_modified(t).unwrap();
        }
        // A dead build (pid 0 has no /proc entry) goes too.
        std::fs::create_dir_all(c.media(".build-x-0")).unwrap();
        c.prune("a");
        let mut left: Vec<String> = std::fs::read_dir(c.root.join("media"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a", "c", "d"]);
    }
}
