//! Boot modes: the operator's standing order for a machine's PXE contacts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What every later PXE contact of a machine does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BootMode {
    /// Boot the local disk (UEFI: hand back to firmware; BIOS: `sanboot`).
    /// The default for machines an operator registers.
    #[serde(rename = "ipxe-exit")]
    IpxeExit,
    /// Flash the assigned image once, then boot the disk until the operator
    /// changes the mode, the image or the target disk.
    #[serde(rename = "bty-flash-once")]
    FlashOnce,
    /// Alternate a flash and a local boot on every PXE contact, so every job
    /// runs on a freshly flashed disk.
    #[serde(rename = "bty-flash-always")]
    FlashAlways,
    /// Boot the netboot environment to report inventory, then the disk.
    /// The default for machines discovered by their first PXE contact.
    #[serde(rename = "bty-inventory")]
    Inventory,
}

/// A boot mode name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown boot mode {0:?}: expected one of ipxe-exit, bty-flash-once, bty-flash-always, bty-inventory")]
pub struct UnknownBootMode(pub String);

impl BootMode {
    /// Every mode, in the order the UI lists them.
    pub const ALL: [BootMode; 4] = [
        BootMode::IpxeExit,
        BootMode::FlashOnce,
        BootMode::FlashAlways,
        BootMode::Inventory,
    ];

    /// The wire and database spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            BootMode::IpxeExit => "ipxe-exit",
            BootMode::FlashOnce => "bty-flash-once",
            BootMode::FlashAlways => "bty-flash-always",
            BootMode::Inventory => "bty-inventory",
        }
    }

    /// True for the two modes that write an image to disk.
    pub const fn flashes(self) -> bool {
        matches!(self, BootMode::FlashOnce | BootMode::FlashAlways)
    }
}

impl fmt::Display for BootMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BootMode {
    type Err = UnknownBootMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BootMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownBootMode(s.chars().take(64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in BootMode::ALL {
            assert_eq!(m.as_str().parse::<BootMode>().unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
            assert_eq!(serde_json::from_str::<BootMode>(&json).unwrap(), m);
        }
        assert!("bty-tui".parse::<BootMode>().is_err());
        assert!("local".parse::<BootMode>().is_err());
    }
}
