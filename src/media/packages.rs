//! Which .deb files a build reads: from `--from DIR` (no network, no apt),
//! else through the host's apt into the cache. A host with neither gets an
//! error naming both ways out.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use indicatif::MultiProgress;

use super::apt;
use super::deb::{Control, Deb};

/// One package file with its control fields.
#[derive(Debug, Clone)]
pub struct Pkg {
    pub deb: Deb,
    pub control: Control,
}

/// The packages of one build.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub kernel: Pkg,
    pub busybox: Pkg,
    /// Only when the host has no iPXE bootfiles.
    pub ipxe: Option<Pkg>,
}

/// What each role's files are called (the names apt-get download gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Kernel,
    Busybox,
    Ipxe,
}

impl Role {
    fn matches(self, file: &str) -> bool {
        match self {
            // linux-image-6.1.0-57-amd64_..., not the linux-image-amd64
            // meta package and not -dbg.
            Role::Kernel => file.strip_prefix("linux-image-").is_some_and(|r| {
                r.starts_with(|c: char| c.is_ascii_digit()) && !r.contains("-dbg_")
            }),
            Role::Busybox => file.starts_with("busybox-static_"),
            Role::Ipxe => file.starts_with("ipxe_"),
        }
    }

    fn accepts(self, package: &str) -> bool {
        match self {
            Role::Kernel => Role::Kernel.matches(&format!("{package}_")),
            Role::Busybox => package == "busybox-static",
            Role::Ipxe => package == "ipxe",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Role::Kernel => {
                "linux-image-<release>-amd64_*.deb (the kernel package linux-image-amd64 depends on)"
            }
            Role::Busybox => "busybox-static_*.deb",
            Role::Ipxe => "ipxe_*.deb (this host has no iPXE bootfiles in /usr/lib/ipxe)",
        }
    }
}

fn open(role: Role, path: &Path) -> Result<Pkg> {
    let deb = Deb::open(path)?;
    let control = deb.control()?;
    if !role.accepts(&control.package) {
        bail!(
            "{} holds package {:?}, not {}",
            path.display(),
            control.package,
            role.describe()
        );
    }
    Ok(Pkg { deb, control })
}

/// The packages in `dir`, one per role; two candidates for a role is an
/// error (which one was meant?).
pub fn from_dir(dir: &Path, need_ipxe: bool) -> Result<Inputs> {
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading --from {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb") && p.is_file())
        .collect();
    debs.sort();
    let pick = |role: Role| -> Result<Pkg> {
        let found: Vec<&PathBuf> = debs
            .iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| role.matches(&n.to_string_lossy()))
            })
            .collect();
        match &found[..] {
            [one] => open(role, one),
            [] => bail!("{} has no {}", dir.display(), role.describe()),
            many => bail!(
                "{} has {} candidates for {}: {}; keep one",
                dir.display(),
                many.len(),
                role.describe(),
                many.iter()
                    .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    };
    Ok(Inputs {
        kernel: pick(Role::Kernel)?,
        busybox: pick(Role::Busybox)?,
        ipxe: if need_ipxe {
            Some(pick(Role::Ipxe)?)
        } else {
            None
        },
    })
}

/// The error for a host that has no apt and was given no --from (each
/// command says its own ways out after it).
pub fn no_apt_error() -> anyhow::Error {
    anyhow::anyhow!(
        "this host has no apt-get, and no --from DIR was given: there is no way to get \
         Debian's kernel and busybox-static packages"
    )
}

/// The names apt should fetch for a build (or a `media download`).
pub fn apt_names(need_ipxe: bool) -> Result<Vec<String>> {
    let mut v = vec![apt::kernel_package()?, "busybox-static".to_string()];
    if need_ipxe {
        v.push("ipxe".into());
    }
    Ok(v)
}

/// Download (or reuse from `cache`) the packages through apt.
pub fn from_apt(cache: &Path, need_ipxe: bool, mp: &MultiProgress) -> Result<Inputs> {
    if !apt::available() {
        return Err(no_apt_error());
    }
    let names = apt_names(need_ipxe)?;
    let mut pkgs = Vec::new();
    for (name, role) in names.iter().zip([Role::Kernel, Role::Busybox, Role::Ipxe]) {
        let c = apt::candidate(name)?;
        let path = apt::fetch(&c, cache, mp)?;
        pkgs.push(open(role, &path)?);
    }
    let mut it = pkgs.into_iter();
    let (kernel, busybox) = (it.next().expect("kernel"), it.next().expect("busybox"));
    Ok(Inputs {
        kernel,
        busybox,
        ipxe: it.next(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::deb::tests::make_deb;

    #[test]
    fn roles_by_file_name() {
        assert!(Role::Kernel.matches("linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb"));
        assert!(!Role::Kernel.matches("linux-image-amd64_6.1.192-3_amd64.deb"));
        assert!(!Role::Kernel.matches("linux-image-6.1.0-57-amd64-dbg_6.1.192-3_amd64.deb"));
        assert!(Role::Busybox.matches("busybox-static_1%3a1.35.0-4_amd64.deb"));
        assert!(!Role::Busybox.matches("busybox_1.35.0-4_amd64.deb"));
    }

    #[test]
    fn from_dir_names_what_is_missing_or_ambiguous() {
        let d = tempfile::tempdir().unwrap();
        let msg = format!("{:#}", from_dir(d.path(), false).unwrap_err());
        assert!(
            msg.contains("has no linux-image-<release>-amd64_*.deb"),
            "{msg}"
        );
        make_deb(
            &d.path().join("linux-image-1.0-amd64_1_amd64.deb"),
            "linux-image-1.0-amd64",
            "1",
            "xz",
            &[],
        );
        make_deb(
            &d.path().join("busybox-static_1_amd64.deb"),
            "busybox-static",
            "1",
            "xz",
            &[],
        );
        let i = from_dir(d.path(), false).unwrap();
        assert_eq!(i.kernel.control.package, "linux-image-1.0-amd64");
        assert!(i.ipxe.is_none());
        let msg = format!("{:#}", from_dir(d.path(), true).unwrap_err());
        assert!(msg.contains("ipxe_*.deb"), "{msg}");
        make_deb(
            &d.path().join("linux-image-2.0-amd64_1_amd64.deb"),
            "linux-image-2.0-amd64",
            "1",
            "xz",
            &[],
        );
        let msg = format!("{:#}", from_dir(d.path(), false).unwrap_err());
        assert!(
            msg.contains("2 candidates") && msg.contains("linux-image-2.0-amd64_1_amd64.deb"),
            "{msg}"
        );
        // A file named like busybox-static holding another package.
        std::fs::remove_file(d.path().join("linux-image-2.0-amd64_1_amd64.deb")).unwrap();
        make_deb(
            &d.path().join("busybox-static_1_amd64.deb"),
            "busybox",
            "1",
            "xz",
            &[],
        );
        let msg = format!("{:#}", from_dir(d.path(), false).unwrap_err());
        assert!(msg.contains("holds package \"busybox\""), "{msg}");
    }
}
