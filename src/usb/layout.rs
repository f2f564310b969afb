//! The stick's partition table: GPT (with its protective MBR carrying
//! syslinux's gptmbr.bin for BIOS boot), an EFI system partition and the
//! data partition, 1 MiB aligned.

use std::ffi::OsStr;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::Path;

use anyhow::{Context as _, Result};

use super::tools;

/// Partition alignment and the room left at each end for the GPT.
pub const MIB: u64 = 1 << 20;
/// The ESP's GPT type GUID.
pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// "Linux filesystem data".
pub const DATA_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// The smallest ESP: FAT32 needs 65525 clusters (32 MiB of 512-byte
/// clusters); 64 MiB leaves room for a bigger kernel later.
const MIN_ESP: u64 = 64 * MIB;

/// Where everything goes, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the ESP (partition 1).
    pub esp_start: u64,
    /// Size of the ESP.
    pub esp_size: u64,
    /// Offset of the data partition (partition 2).
    pub data_start: u64,
    /// Size of the data partition.
    pub data_size: u64,
    /// Size of the whole stick image.
    pub total: u64,
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

impl Layout {
    /// A layout for `boot_bytes` of kernel, initrd and loaders and
    /// `image_bytes` of images. The ESP gets twice its content plus 16 MiB
    /// (a later kernel and initrd fit); the data partition its images plus
    /// 1/32 and 64 MiB for ext4's metadata and journal.
    pub fn new(boot_bytes: u64, image_bytes: u64) -> Layout {
        let esp_size = round_up((2 * boot_bytes + 16 * MIB).max(MIN_ESP), MIB);
        let data_size = round_up(image_bytes + image_bytes / 32 + 64 * MIB, MIB);
        let esp_start = MIB;
        let data_start = esp_start + esp_size;
        Layout {
            esp_start,
            esp_size,
            data_start,
            data_size,
            total: data_start + data_size + MIB,
        }
    }

    /// The sfdisk script: the ESP with the legacy-BIOS-bootable attribute
    /// (GPT attribute bit 2, which gptmbr.bin looks for), then the data
    /// partition; partition names are the file-system labels.
    pub fn sfdisk_script(&self) -> String {
        let s = |b: u64| b / 512;
        format!(
            "label: gpt\nunit: sectors\nfirst-lba: 2048\n\
             start={}, size={}, type={ESP_TYPE}, name=\"{}\", attrs=\"LegacyBIOSBootable\"\n\
             start={}, size={}, type={DATA_TYPE}, name=\"{}\"\n",
            s(self.esp_start),
            s(self.esp_size),
            bty_proto::stick::ESP_LABEL,
            s(self.data_start),
            s(self.data_size),
            bty_proto::stick::DATA_LABEL,
        )
    }

    /// Size `file` and write the partition table with sfdisk.
    pub fn partition(&self, file: &Path) -> Result<()> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .with_context(|| format!("opening {}", file.display()))?;
        f.set_len(self.total)
            .with_context(|| format!("sizing {} to {} bytes", file.display(), self.total))?;
        drop(f);
        tools::run_with_stdin(
            "sfdisk",
            &[OsStr::new("--quiet"), file.as_os_str()],
            Some(&self.sfdisk_script()),
        )
        .context("writing the partition table")
    }
}

/// Put syslinux's gptmbr.bin (`mbr`, 440 bytes of boot code) into the
/// protective MBR, keeping its partition entry and signature.
pub fn install_mbr(file: &Path, mbr: &[u8]) -> Result<()> {
    anyhow::ensure!(
        mbr.len() <= 440,
        "{} is {} bytes; MBR boot code is at most 440",
        tools::GPTMBR,
        mbr.len()
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .with_context(|| format!("opening {}", file.display()))?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(mbr)
        .with_context(|| format!("writing the MBR boot code into {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_aligned_and_sized_with_slack() {
        let l = Layout::new(23 * MIB, 1000 * MIB);
        assert_eq!(l.esp_start, MIB);
        assert_eq!(l.esp_size, 64 * MIB, "2*23+16 MiB rounds below the minimum");
        assert_eq!(l.data_start, 65 * MIB);
        assert!(l.data_size >= 1000 * MIB + 64 * MIB);
        assert_eq!(l.data_size % MIB, 0);
        assert_eq!(l.total, l.data_start + l.data_size + MIB);
        let big = Layout::new(40 * MIB, 0);
        assert_eq!(big.esp_size, 96 * MIB);
    }

    #[test]
    fn the_script_marks_the_esp_legacy_bootable() {
        let s = Layout::new(MIB, MIB).sfdisk_script();
        assert!(s.contains("start=2048, size=131072"), "{s}");
        assert!(
            s.contains(&format!(
                "type={ESP_TYPE}, name=\"BTY-EFI\", attrs=\"LegacyBIOSBootable\""
            )),
            "{s}"
        );
    }
}
