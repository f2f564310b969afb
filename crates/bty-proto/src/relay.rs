//! The Secure Boot chain's TFTP relay, between bty-tftp and bty-web.
//!
//! A UEFI machine with Secure Boot on runs only signed code before Linux:
//! the firmware loads Microsoft-signed shim ([`SHIM`]) by TFTP, shim loads
//! Debian-signed GRUB ([`GRUB`], always from the TFTP root), and that GRUB
//! build speaks TFTP only (no HTTP). So everything GRUB reads after that —
//! its config, the per-MAC config rendered from bty-web's PXE decision,
//! the netboot kernel and initrd — comes over TFTP, and only bty-web can
//! answer it. bty-tftp relays every name under [`PREFIX`] to bty-web:
//!
//! ```text
//! TFTP RRQ grub/<rest>  from CLIENT to LOCAL
//!   -> GET {relay}/grub/<rest>
//!        Host: LOCAL:{relay port}         (what the machine can reach)
//!        x-bty-relay-key: <shared key>    (KEY_HEADER)
//!        x-bty-relay-client: CLIENT       (CLIENT_HEADER, the TFTP peer)
//!   <- 200 with Content-Length: the bytes, served as the file
//!   <- 404: TFTP "file not found"; anything else: TFTP error with the reason
//! ```
//!
//! bty-web's `/grub/...` routes then treat CLIENT as the machine's address
//! (offered/booted/plan checks), but only when the key matches its own:
//! a request that names a client without the right key is refused (403),
//! so no LAN host can speak for another address. Without the headers the
//! routes answer the HTTP peer itself, like `/pxe/{mac}`.
//!
//! bty-web's paths, all `GET`:
//! - [`CONFIG`] `grub/grub.cfg`: the same for every machine; it sources
//!   `grub.cfg-$net_default_mac` and reboots if that does not boot.
//! - `grub/grub.cfg-<mac>` ([`mac_config`]): the per-MAC answer (flash,
//!   inventory, local boot, parked), from the same decision as
//!   `GET /pxe/{mac}`; a browser gets the preview, changing nothing.
//! - `grub/boot/<mac>/<file>` ([`boot_file`]): a file of the boot
//!   directory; the kernel's fetch marks the cycle booted, as
//!   `GET /boot/<file>?mac=<mac>` does.

/// Header carrying the key bty-tftp and bty-web share.
pub const KEY_HEADER: &str = "x-bty-relay-key";

/// Header naming the TFTP client the relayed request is for.
pub const CLIENT_HEADER: &str = "x-bty-relay-client";

/// TFTP names under this prefix are relayed to bty-web (same path).
pub const PREFIX: &str = "grub/";

/// GRUB's config, read from `$prefix` = `(tftp,SERVER)/grub`.
pub const CONFIG: &str = "grub/grub.cfg";

/// The Microsoft-signed shim: the TFTP boot file of UEFI x86-64 PXE.
pub const SHIM: &str = "shimx64.efi";

/// Debian's signed network GRUB, which shim fetches from the TFTP root.
pub const GRUB: &str = "grubx64.efi";

/// The per-MAC config name GRUB asks for (`$net_default_mac`: lower
/// case, colons).
pub fn mac_config(mac: &crate::Mac) -> String {
    format!("grub/grub.cfg-{mac}")
}

/// The relayed name of boot-directory file `file` for `mac`.
pub fn boot_file(mac: &crate::Mac, file: &str) -> String {
    format!("grub/boot/{}/{file}", mac.hyphenated())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let mac: crate::Mac = "52:54:00:12:34:56".parse().unwrap();
        assert_eq!(mac_config(&mac), "grub/grub.cfg-52:54:00:12:34:56");
        assert_eq!(
            boot_file(&mac, "k.vmlinuz"),
            "grub/boot/52-54-00-12-34-56/k.vmlinuz"
        );
        assert!(mac_config(&mac).starts_with(PREFIX));
        assert!(CONFIG.starts_with(PREFIX));
    }
}
