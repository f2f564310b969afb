//! The USB stick: `bty-lab usb build` writes one disk image that boots on
//! legacy BIOS (syslinux) and UEFI (systemd-boot) into the netboot kernel
//! and initramfs with [`bty_proto::stick::MODE_ARG`], and carries the
//! images plus their manifest on an ext4 data partition (the contract is
//! `bty_proto::stick`; docs/usb.md describes the stick).
//!
//! One module per piece: [`tools`] (the host programs and files the build
//! drives, checked up front), [`layout`] (partition table and offsets),
//! [`loader`] (the EFI system partition with both boot loaders),
//! [`images`] (the images and the manifest), [`server`] (the bty-web named
//! by `--server`: URL images through its withcache, the stick key),
//! [`build`] (all of it into a temp file renamed onto `--out`).

pub mod build;
pub mod images;
pub mod layout;
pub mod loader;
pub mod server;
pub mod tools;

pub use build::{build, Options};
