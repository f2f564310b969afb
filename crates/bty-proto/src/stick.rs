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
            auto: Some(Auto {
                image: "debian-12".into(),
                disk_serial: "S1".into(),
                after: After::Reboot,
            }),
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(
            !text.contains("server") && !text.contains("\"size\""),
            "{text}"
        );
        assert!(text.contains("\"after\":\"reboot\""), "{text}");
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
    }
}
