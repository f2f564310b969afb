//! The USB stick's contract: what `bty-lab usb build` writes and the
//! agent's wizard reads.
//!
//! The stick is one disk image (GPT; boots on BIOS and UEFI) whose data
//! partition, an ext4 file system labelled [`DATA_LABEL`], holds
//! [`MANIFEST_FILE`] at its root and the images under [`IMAGES_DIR`]. The
//! netboot kernel starts with [`MODE_ARG`] on its command line; the
//! initramfs mounts the data partition read-only and runs the agent's
//! wizard on it.

use serde::{Deserialize, Serialize};

use crate::ImageFormat;

/// File-system label of the stick's data partition.
pub const DATA_LABEL: &str = "BTY-DATA";

/// File-system label of the stick's EFI system partition (kernel, initrd,
/// boot loader).
pub const ESP_LABEL: &str = "BTY-EFI";

/// The manifest's name at the root of the data partition.
pub const MANIFEST_FILE: &str = "bty-stick.json";

/// Where the images are, relative to the data partition's root.
pub const IMAGES_DIR: &str = "images";

/// The kernel argument that makes the netboot environment run the wizard
/// from a stick instead of asking bty-web for a plan.
pub const MODE_ARG: &str = "bty.mode=wizard";

/// The manifest's version this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// `bty-stick.json`: everything the wizard knows about the stick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`]; a wizard refuses a newer one.
    pub version: u32,
    /// The bty release that built the stick.
    pub built_by: String,
    /// The images on the stick, in the order the wizard lists them.
    pub images: Vec<StickImage>,
    /// A bty-web to offer the catalog of and report to, when reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Unattended mode: flash without questions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<Auto>,
    /// The stick key `bty-lab usb build --server` minted on that bty-web
    /// (`POST /api/sticks`): sent as `Authorization: Bearer KEY` to
    /// [`CATALOG_PATH`] and [`FLASH_PATH`]. Without it the wizard uses
    /// no server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// One image on the stick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StickImage {
    /// The name the wizard shows and `--auto image=` names.
    pub name: String,
    /// Path relative to the data partition's root (under [`IMAGES_DIR`]).
    pub file: String,
    /// How the file is encoded.
    pub format: ImageFormat,
    /// Bytes of the file as stored.
    pub stored_size: u64,
    /// sha256 of the file as stored, lowercase hex: checked before the
    /// first write.
    pub stored_sha256: String,
    /// Bytes of the disk image once decoded (what the target must hold),
    /// when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// sha256 of the decoded disk image, lowercase hex, when known: the
    /// read-back is checked against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// `--auto image=NAME,disk-serial=SERIAL,after=reboot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auto {
    /// The image to flash, by [`StickImage::name`].
    pub image: String,
    /// The target disk's serial number, exactly.
    pub disk_serial: String,
    /// What to do once flashed and verified.
    pub after: After,
}

/// What the wizard does after a verified flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum After {
    /// Boot the flashed disk.
    Reboot,
    /// Power the machine off.
    Poweroff,
}

/// `GET` here (with the stick key) lists the server's flashable images as
/// a [`ServerCatalog`].
pub const CATALOG_PATH: &str = "/stick/catalog";

/// `POST` a [`FlashStart`] here (with the stick key) before the first
/// write; a registered machine gets a [`FlashStarted`].
pub const FLASH_PATH: &str = "/stick/flash";

/// The prefix of a stick key, so a key pasted in the wrong place is
/// recognisable (and greppable in logs that should never hold one).
pub const KEY_PREFIX: &str = "btystick_";

/// `GET /stick/catalog`: the images a bty-web can hand a stick's wizard.
/// Only images whose sha256 and size withcache has measured are listed
/// (the wizard, like the agent, never flashes bytes it cannot check).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCatalog {
    /// In the catalog's order.
    pub images: Vec<ServerImage>,
}

/// One image of a [`ServerCatalog`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerImage {
    /// Catalog entry name.
    pub name: String,
    /// Where to GET the bytes (withcache's blob URL, as in a plan).
    pub url: String,
    /// Container format.
    pub format: ImageFormat,
    /// sha256 of the bytes at `url`, lowercase hex.
    pub sha256: String,
    /// Length of the download in bytes.
    pub size: u64,
}

/// Where the image a stick flash writes comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    /// A file on the stick's data partition.
    Stick,
    /// The server's catalog ([`ServerImage::url`]).
    Server,
}

/// `POST /stick/flash`: the wizard is about to flash; record it on the
/// machine's page if one of `macs` is registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlashStart {
    /// Every NIC's MAC of the machine the stick booted; the first one
    /// registered is the machine.
    pub macs: Vec<crate::Mac>,
    /// The image's name (on the stick or in the catalog).
    pub image: String,
    /// Where the image comes from.
    pub source: ImageSource,
    /// Container format.
    pub format: ImageFormat,
    /// sha256 of the bytes read (stored file or download), lowercase hex.
    pub sha256: String,
    /// Length of those bytes.
    pub size: u64,
    /// Serial of the disk being written.
    pub target_serial: String,
}

/// The answer to a [`FlashStart`] for a registered machine: a cycle of
/// its own (it does not touch the machine's boot mode or PXE cycles), and
/// where to report on it, exactly as with a plan's token. Reports are taken
/// only from the address that started it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlashStarted {
    /// The registered machine among [`FlashStart::macs`].
    pub mac: crate::Mac,
    /// The cycle's id.
    pub cycle: String,
    /// The cycle's secret; every report carries it.
    pub token: String,
    /// Where progress and done go (`/pxe/{mac}/progress`, `/done`).
    pub report: crate::plan::ReportUrls,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_round_trips_and_optional_fields_stay_out() {
        let m = Manifest {
            version: MANIFEST_VERSION,
            built_by: "0.1.0".into(),
            images: vec![StickImage {
                name: "debian-12".into(),
                file: format!("{IMAGES_DIR}/debian-12.img.zst"),
                format: ImageFormat::Zst,
                stored_size: 10,
                stored_sha256: "a".repeat(64),
                size: None,
                sha256: None,
            }],
            server: None,
            key: None,
            auto: Some(Auto {
                image: "debian-12".into(),
                disk_serial: "S1".into(),
                after: After::Reboot,
            }),
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(
            !text.contains("server") && !text.contains("\"size\"") && !text.contains("key"),
            "{text}"
        );
        assert!(text.contains("\"after\":\"reboot\""), "{text}");
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
    }
}
