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
    /// `shim-signed` (the Secure Boot bootfile, always from its .deb).
    pub shim: Pkg,
    /// `grub-efi-amd64-signed` (GRUB's signed network image).
    pub grub: Pkg,
}

/// What each role's files are called (the names apt-get download gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Kernel,
    Busybox,
    Ipxe,
    Shim,
    Grub,
}

/// The Secure Boot packages: needed by every build (their versions go into
/// media.json, which a host copy under /usr/lib could not give).
pub const SHIM_PACKAGE: &str = "shim-signed";
pub const GRUB_PACKAGE: &str = "grub-efi-amd64-signed";

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
            Role::Shim => file.starts_with("shim-signed_"),
            Role::Grub => file.starts_with("grub-efi-amd64-signed_"),
        }
    }

    fn accepts(self, package: &str) -> bool {
        match self {
            Role::Kernel => Role::Kernel.matches(&format!("{package}_")),
            Role::Busybox => package == "busybox-static",
            Role::Ipxe => package == "ipxe",
            Role::Shim => package == SHIM_PACKAGE,
            Role::Grub => package == GRUB_PACKAGE,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Role::Kernel => {
                "linux-image-<release>-amd64_*.deb (the kernel package linux-image-amd64 depends on)"
            }
            Role::Busybox => "busybox-static_*.deb",
            Role::Ipxe => "ipxe_*.deb (this host has no iPXE bootfiles in /usr/lib/ipxe)",
            Role::Shim => "shim-signed_*.deb (Secure Boot: the Microsoft-signed shim)",
            Role::Grub => "grub-efi-amd64-signed_*.deb (Secure Boot: Debian's signed GRUB)",
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
/// error (which one was meant?), and so is a missing one: the error names
/// every missing package at once.
pub fn from_dir(dir: &Path, need_ipxe: bool) -> Result<Inputs> {
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading --from {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb") && p.is_file())
        .collect();
    debs.sort();
    let pick = |role: Role| -> Result<Option<Pkg>> {
        let found: Vec<&PathBuf> = debs
            .iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| role.matches(&n.to_string_lossy()))
            })
            .collect();
        match &found[..] {
            [one] => open(role, one).map(Some),
            [] => Ok(None),
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
    let mut roles = vec![Role::Kernel, Role::Busybox, Role::Shim, Role::Grub];
    if need_ipxe {
        roles.push(Role::Ipxe);
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for role in roles {
        match pick(role)? {
            Some(p) => found.push((role, p)),
            None => missing.push(role.describe()),
        }
    }
    if !missing.is_empty() {
        bail!("{} has no {}", dir.display(), missing.join(", no "));
    }
    let mut take = |role: Role| {
        found
            .iter()
            .position(|(r, _)| *r == role)
            .map(|i| found.swap_remove(i).1)
    };
    Ok(Inputs {
        kernel: take(Role::Kernel).expect("checked above"),
        busybox: take(Role::Busybox).expect("checked above"),
        shim: take(Role::Shim).expect("checked above"),
        grub: take(Role::Grub).expect("checked above"),
        ipxe: take(Role::Ipxe),
    })
}

/// The error for a host that has no apt and was given no --from (each
/// command says its own ways out after it).
pub fn no_apt_error() -> anyhow::Error {
    anyhow::anyhow!(
        "this host has no apt-get, and no --from DIR was given: there is no way to get \
         Debian's kernel, busybox-static, shim-signed and grub-efi-amd64-signed packages"
    )
}

/// The names apt should fetch for a build (or a `media download`).
pub fn apt_names(need_ipxe: bool) -> Result<Vec<String>> {
    Ok(apt_roles(need_ipxe)?.into_iter().map(|(n, _)| n).collect())
}

fn apt_roles(need_ipxe: bool) -> Result<Vec<(String, Role)>> {
    let mut v = vec![
        (apt::kernel_package()?, Role::Kernel),
        ("busybox-static".to_string(), Role::Busybox),
        (SHIM_PACKAGE.to_string(), Role::Shim),
        (GRUB_PACKAGE.to_string(), Role::Grub),
    ];
    if need_ipxe {
        v.push(("ipxe".into(), Role::Ipxe));
    }
    Ok(v)
}

/// Download (or reuse from `cache`) the packages through apt.
pub fn from_apt(cache: &Path, need_ipxe: bool, mp: &MultiProgress) -> Result<Inputs> {
    if !apt::available() {
        return Err(no_apt_error());
    }
    let mut pkgs = Vec::new();
    for (name, role) in apt_roles(need_ipxe)? {
        let c = apt::candidate(&name)?;
        let path = apt::fetch(&c, cache, mp)?;
        pkgs.push(open(role, &path)?);
    }
    // In apt_roles' order: kernel, busybox, shim, grub[, ipxe].
    let mut it = pkgs.into_iter();
    let mut next = || it.next().expect("one package per role");
    let (kernel, busybox, shim, grub) = (next(), next(), next(), next());
    Ok(Inputs {
        kernel,
        busybox,
        shim,
        grub,
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
        // Without the Secure Boot packages: both named, in one error.
        let msg = format!("{:#}", from_dir(d.path(), false).unwrap_err());
        assert!(
            msg.contains("has no shim-signed_*.deb")
                && msg.contains("no grub-efi-amd64-signed_*.deb")
                && !msg.contains("linux-image"),
            "{msg}"
        );
        make_deb(
            &d.path().join("shim-signed_1_amd64.deb"),
            "shim-signed",
            "1",
            "xz",
            &[],
        );
        let msg = format!("{:#}", from_dir(d.path(), false).unwrap_err());
        assert!(
            msg.contains("no grub-efi-amd64-signed_*.deb") && !msg.contains("shim"),
            "{msg}"
        );
        make_deb(
            &d.path().join("grub-efi-amd64-signed_2_amd64.deb"),
            "grub-efi-amd64-signed",
            "2",
            "xz",
            &[],
        );
        let i = from_dir(d.path(), false).unwrap();
        assert_eq!(
            (
                i.shim.control.version.as_str(),
                i.grub.control.version.as_str()
            ),
            ("1", "2")
        );
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
