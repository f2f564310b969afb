//! The netboot media in bty-web's boot dir, around deploy and upgrade:
//! the operator's `--netboot` media checked and placed, the boot dir made
//! for bty-web's user, and one line on what bty-web serves afterwards.
//! Deploy places nothing else on the host: the media machines boot comes
//! from bty-web's image, built here or pulled (docs/deploy.md, "Netboot
//! media").

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::manifest::Manifest;
use crate::media::{self, place::Outcome, Media, Mode};
use crate::{deploydir, safefs, stack, ui};

/// The operator's `--netboot DIR`, checked to hold a kernel and an initrd.
pub fn operator_media(dir: &Path) -> Result<Media> {
    let m = Media::from_dir(dir).with_context(|| format!("reading --netboot {}", dir.display()))?;
    m.require_pair().context("--netboot: nothing was changed")?;
    Ok(m)
}

/// Create bty-web's bind-mounted boot dir (given to the containers' user:
/// bty-web places its image's media there at start) and put the
/// operator's media into it.
pub fn prepare_boot_dir(m: &Manifest, operator: Option<&Media>) -> Result<()> {
    let Some((boot, [kernel, initrd])) = deploydir::boot_target(m)? else {
        if operator.is_some() {
            ui::warn(format!(
                "{}: [boot] dir is outside /var/lib/bty (bty-web's state mount), so deploy cannot \
                 place the --netboot media there; bty-web serves its image's media",
                m.dest.join("bty.toml").display()
            ));
        }
        return Ok(());
    };
    make_boot_dir(&m.data_dir.join("bty"), &boot)?;
    if let Some(op) = operator {
        place_operator_media(op, &boot, &kernel, &initrd)?;
    }
    Ok(())
}

/// `boot` (under bty-web's state dir `state`, which the container's user
/// owns) made and given to that user, never through a link on the way.
fn make_boot_dir(state: &Path, boot: &Path) -> Result<()> {
    let uid = stack::SERVICE_UID;
    let rel = boot
        .strip_prefix(state)
        .context("the boot dir is not in the state dir")?;
    let mut d = safefs::make_dir(state)?;
    for c in rel.components() {
        d = d.make_sub(c.as_os_str())?;
    }
    d.chown(uid, uid)
        .with_context(|| format!("giving {} to uid {uid}", boot.display()))?;
    d.set_mode(0o755)
}

fn place_operator_media(op: &Media, boot: &Path, kernel: &str, initrd: &str) -> Result<()> {
    let placed = media::place(op, boot, kernel, initrd, Mode::Operator)?;
    // The pair's line; bootfiles DIR lacks come from bty-web's image
    // when it starts, so their absence is no warning here.
    if let Some((_, line)) = media::summary(op, boot, &placed).first() {
        ui::detail(line);
    }
    if placed.files[2..]
        .iter()
        .any(|(_, o)| *o == Outcome::Missing)
    {
        ui::detail(format!(
            "media: {} lacks some bootfiles (iPXE, shim, GRUB); bty-web places its image's",
            op.dir.display()
        ));
    }
    if older_than_me(&op.info.agent_version) {
        ui::warn(format!(
            "the --netboot media's agent ({}) is older than this bty-lab ({}): bty-web \
             replaces it with the media its image carries when it starts (an operator's \
             media is kept only while it is not older)",
            op.info.agent_version,
            stack::VERSION
        ));
    }
    Ok(())
}

fn older_than_me(agent_version: &str) -> bool {
    stack::compare_versions(agent_version, stack::VERSION) == Some(Ordering::Less)
}

/// The boot dir on the host and its kernel and initrd, when both are there.
fn served_pair(m: &Manifest) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let (boot, [kernel, initrd]) = deploydir::boot_target(m).ok()??;
    Some((boot.clone(), boot.join(kernel), boot.join(initrd)))
}

/// One line on the media bty-web serves now (after it placed its image's),
/// compared with this binary; a warning when there is none.
pub fn served_media(m: &Manifest) {
    let Some((boot, kernel, initrd)) = served_pair(m) else {
        return;
    };
    if !kernel.is_file() || !initrd.is_file() {
        ui::warn(format!(
            "{} has no netboot kernel and initrd: bty-web's image carries none (an image from \
             before bty-lab carried the media?), so machines set to flash cannot boot. Deploy \
             with --images local (the images then carry this binary's media), or pass \
             --netboot DIR",
            boot.display()
        ));
        return;
    }
    match media::status::of_initrd(&initrd) {
        Ok(f) => {
            let whose = match media::OperatorRecord::read(&boot) {
                Some(_) => " (the operator's, from --netboot)",
                None => "",
            };
            let what = match &f.info {
                Some(_) => f.summary,
                None => "a kernel and an initrd without a bty info file".to_string(),
            };
            ui::detail(format!("media: {} serves {what}{whose}", boot.display()));
        }
        Err(e) => ui::warn(format!("media: reading {}: {e:#}", boot.display())),
    }
}

/// Why the media `m`'s bty-web serves is behind this bty-lab (None: it is
/// not): none there, or an agent older than this binary's version, or an
/// initrd that is not a bty media and not the operator's. The operator's
/// media (`--netboot`) that is not older counts as current.
pub fn media_behind(m: &Manifest) -> Option<String> {
    let (boot, kernel, initrd) = served_pair(m)?;
    if !kernel.is_file() || !initrd.is_file() {
        return Some(format!(
            "its boot dir {} has no netboot kernel and initrd",
            boot.display()
        ));
    }
    match media::inspect(&initrd) {
        Ok(Some(info)) => older_than_me(&info.agent_version).then(|| {
            format!(
                "its boot dir {} serves {}, older than this bty-lab ({})",
                boot.display(),
                media::place::describe(&info),
                stack::VERSION
            )
        }),
        _ if media::OperatorRecord::read(&boot).is_some() => None,
        _ => Some(format!("{} is not a bty initrd", initrd.display())),
    }
}
