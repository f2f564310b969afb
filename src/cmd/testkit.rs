//! What the commands' unit tests share: a deploy dir in a temp dir, this
//! "binary" and its media as an image source, and the fake engine.

use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use crate::engine::fake::Fake;
use crate::engine::{ContainerEngine as _, Kind};
use crate::images::{BootFiles, SelfBinary, Source};
use crate::manifest::Manifest;
use crate::media::Media;
use crate::ui;

/// How long a test waits for health before it counts as failed.
pub const TIMEOUT: Duration = Duration::from_millis(300);

/// A deploy at `<tmp>/lab` (version 0.1.0) with an envvars, as deploy
/// leaves it after writing its files.
pub fn lab() -> (TempDir, Manifest) {
    let d = tempfile::tempdir().unwrap();
    let mut m = crate::manifest::tests::sample();
    m.dest = d.path().join("lab");
    m.data_dir = m.dest.join("data");
    std::fs::create_dir_all(&m.dest).unwrap();
    std::fs::write(
        m.dest.join("envvars"),
        "BTY_ADMIN_PASSWORD_HASH='web-hash'\nWITHCACHE_ADMIN_PASSWORD_HASH='cache-hash'\n",
    )
    .unwrap();
    (d, m)
}

/// A static ELF: one PT_LOAD program header, no PT_INTERP.
fn static_elf() -> Vec<u8> {
    let mut elf = vec![0u8; 64 + 56];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
    elf[64..68].copy_from_slice(&1u32.to_le_bytes());
    elf
}

/// "This binary" with sha256 `sha`.
pub fn me(sha: &str) -> SelfBinary {
    SelfBinary {
        path: "/usr/local/bin/bty-lab".into(),
        bytes: static_elf(),
        sha256: sha.into(),
    }
}

/// This binary's media in `dir`: a kernel, an initrd, the bootfiles.
pub fn media(dir: &Path) -> Media {
    for f in [crate::media::KERNEL, crate::media::INITRD]
        .into_iter()
        .chain(crate::stack::bootfiles())
    {
        std::fs::write(dir.join(f), f.as_bytes()).unwrap();
    }
    Media {
        dir: dir.to_path_buf(),
        info: Default::default(),
    }
}

/// An image source of binary `sha` and media in `dir`.
pub fn source(sha: &str, dir: &Path) -> Source {
    Source::ready(me(sha), media(dir))
}

/// The boot files digest `svc`'s image of the media in `dir` carries.
pub fn boot_digest(dir: &Path, svc: &crate::stack::Service) -> String {
    let b = BootFiles::from_media(&media(dir));
    BootFiles::digest(&b.load(svc).unwrap().0)
}

/// A fake engine that holds the images `m` names, as pulled.
pub fn engine_with_images(kind: Kind, m: &Manifest) -> Fake {
    let f = Fake::new(kind);
    for svc in m.services() {
        let r = m.image(&svc);
        let (repo, _) = crate::engine::split_ref(&r);
        let img = crate::engine::Image {
            labels: Default::default(),
            repo_digests: vec![format!("{repo}@sha256:0")],
        };
        f.add_image(&r, img);
    }
    assert_eq!(f.kind(), kind);
    f
}

/// Steps to hand the code under test.
pub fn steps() -> ui::Steps {
    ui::Steps::new(9)
}

/// systemd as the tests see it: a Quadlet dir in a temp dir and every
/// `systemctl` call recorded. Starting a unit runs the container its
/// installed unit file describes in `engine`, as Quadlet's generated
/// service would; stopping one removes it.
pub struct Units<'a> {
    pub dir: TempDir,
    calls: std::sync::Mutex<Vec<String>>,
    engine: &'a Fake,
}

impl Units<'_> {
    pub fn new(engine: &Fake) -> Units<'_> {
        Units {
            dir: tempfile::tempdir().unwrap(),
            calls: Default::default(),
            engine,
        }
    }

    /// Every `systemctl` call, its arguments joined by spaces.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// The container a unit file describes: its name and spec.
    fn unit(&self, service: &str) -> (String, crate::engine::ContainerSpec) {
        let name = service.trim_end_matches(".service");
        let file = self.dir.path().join(format!("{name}.container"));
        let text = std::fs::read_to_string(&file).unwrap();
        let mut spec = crate::engine::ContainerSpec::default();
        for line in text.lines() {
            if let Some(i) = line.strip_prefix("Image=") {
                spec.image = i.to_string();
            }
            if let Some((k, v)) = line.strip_prefix("Label=").and_then(|l| l.split_once('=')) {
                spec.labels.insert(k.into(), v.into());
            }
        }
        (name.to_string(), spec)
    }
}

impl crate::quadlet::Systemd for Units<'_> {
    fn unit_dir(&self) -> std::path::PathBuf {
        self.dir.path().to_path_buf()
    }

    fn systemctl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.calls.lock().unwrap().push(args.join(" "));
        match args {
            ["start" | "restart", unit] => {
                let (name, spec) = self.unit(unit);
                self.engine.run_now(&name, spec);
            }
            ["stop", unit] => self.engine.stop_now(unit.trim_end_matches(".service")),
            _ => {}
        }
        Ok(String::new())
    }
}

/// systemd for tests that must not reach it (engine mode).
pub struct NoSystemd;

impl crate::quadlet::Systemd for NoSystemd {
    fn unit_dir(&self) -> std::path::PathBuf {
        panic!("engine mode asked for the Quadlet dir")
    }

    fn systemctl(&self, args: &[&str]) -> anyhow::Result<String> {
        panic!("engine mode ran systemctl {args:?}")
    }
}
