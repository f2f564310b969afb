//! bty-lab integration tests: the real binary in a temp dir per test, and
//! (with BTY_ENGINE_TESTS) real Docker/Podman engines; the netboot media
//! from real Debian packages, booted in qemu.

mod backup;
mod engines;
mod exit;
mod flash;
mod image;
mod kubernetes;
mod links;
mod machines;
mod media;
mod render;
mod serve;
mod usb;
mod util;
