//! End-to-end test harness: real firmware (SeaBIOS, OVMF), real iPXE and
//! real dnsmasq in qemu, against the real bty services: `bty-lab serve`
//! run in the test's network namespace (flash tests) or in-process (PXE
//! chain tests, which assert on bty-web's request log).
//!
//! A test takes the [`gate`] (root and tools present, one VM test at a
//! time: TCG on two shared cores), starts a [`stack::Stack`] (network
//! namespace, bty-web, bty-tftp), a [`dnsmasq::Dnsmasq`] and a [`vm::Vm`],
//! then asserts on the serial console and on bty-web's API and request log.
//! Everything is torn down by guards, also when an assertion fails.
//! See docs/testing-e2e.md.

pub mod disk;
pub mod dnsmasq;
pub mod media;
pub mod netns;
pub mod origin;
pub mod process;
pub mod stack;
pub mod vm;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// Files the tests need besides the binaries on `PATH`.
const FILES: &[(&str, &str)] = &[
    ("/dev/net/tun", "the tun driver"),
    ("/usr/lib/ipxe/undionly.kpxe", "ipxe"),
    ("/usr/lib/ipxe/ipxe.efi", "ipxe"),
    ("/usr/lib/ipxe/snponly.efi", "ipxe"),
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf"),
    ("/usr/share/OVMF/OVMF_VARS_4M.fd", "ovmf"),
    ("/usr/share/seabios/bios-256k.bin", "seabios"),
];

/// Programs the tests run, with the Debian package that ships them.
const TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("dnsmasq", "dnsmasq-base"),
    ("ip", "iproute2"),
];

/// Whether `prog` is an executable file on `PATH`.
pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// A missing binary: skip, or panic under `BTY_REQUIRE_TOOLS=1`.
fn no_binary(what: &str, test: &str) {
    if std::env::var("BTY_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{test}: BTY_REQUIRE_TOOLS=1 but {what} is missing");
    }
    eprintln!("skipping: {what} not installed ({test})");
}

/// The first of `vars` naming an existing file.
fn bin_from(vars: &[&str]) -> Option<std::path::PathBuf> {
    vars.iter()
        .filter_map(|v| std::env::var_os(v).filter(|p| !p.is_empty()))
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
}

/// The `bty-lab` the README builds (`cargo install --locked --path .`;
/// scripts/test.sh installs it into `target/readme` and names it in
/// `$BTY_LAB_README_BIN`): what the README-path tests run, with no other
/// binary to fall back on. `None` means skip (the caller returns); with
/// `BTY_REQUIRE_TOOLS=1` a missing binary panics.
pub fn readme_bin(test: &str) -> Option<std::path::PathBuf> {
    let found = bin_from(&["BTY_LAB_README_BIN"]);
    if found.is_none() {
        no_binary(
            "the README's bty-lab (BTY_LAB_README_BIN, from `cargo install --locked --path . \
             --root target/readme`; scripts/test.sh builds it)",
            test,
        );
    }
    found
}

/// The `bty-lab` binary whose `serve` (and `deploy`) the other flash tests
/// run: the README's (`$BTY_LAB_README_BIN`, so its netboot media is the
/// same cache hit for every test), else `$BTY_LAB_STATIC_BIN` (a static
/// debug build, also fit for the container images) or `$BTY_LAB_BIN`.
/// `None` means skip (the caller returns); with `BTY_REQUIRE_TOOLS=1` a
/// missing binary panics.
pub fn lab_bin(test: &str) -> Option<std::path::PathBuf> {
    let found = bin_from(&["BTY_LAB_README_BIN", "BTY_LAB_STATIC_BIN", "BTY_LAB_BIN"]);
    if found.is_none() {
        no_binary(
            "a bty-lab binary (set BTY_LAB_README_BIN, BTY_LAB_STATIC_BIN or BTY_LAB_BIN; \
             scripts/test.sh builds them)",
            test,
        );
    }
    found
}

/// Whether the container tests should run against `engine`: the
/// `BTY_ENGINE_TESTS` list (CI: `docker,podman`) names it, as for
/// bty-lab's engine tests. Named but its API socket missing: a failure
/// under `BTY_REQUIRE_TOOLS=1`, else a skip.
pub fn engine_wanted(engine: &str, test: &str) -> bool {
    let named = std::env::var("BTY_ENGINE_TESTS")
        .unwrap_or_default()
        .split(',')
        .any(|e| e.trim() == engine);
    if !named {
        eprintln!("skipping: BTY_ENGINE_TESTS does not name {engine} ({test})");
        return false;
    }
    let sock = match engine {
        "docker" => "/var/run/docker.sock",
        _ => "/run/podman/podman.sock",
    };
    if !Path::new(sock).exists() {
        let what = format!("the {engine} engine socket {sock} (scripts/engines.sh starts it)");
        if std::env::var("BTY_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{test}: BTY_REQUIRE_TOOLS=1 but {what} is missing");
        }
        eprintln!("skipping: {what} not installed ({test})");
        return false;
    }
    true
}

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Held for the whole test: VM tests run one at a time.
pub struct Gate {
    _lock: MutexGuard<'static, ()>,
}

/// What stands in the way of running, if anything.
pub fn missing() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("root (network namespaces, taps and dnsmasq need it)".into());
    }
    for (prog, pkg) in TOOLS {
        if !on_path(prog) {
            return Some(format!("{prog} (package {pkg})"));
        }
    }
    for (file, pkg) in FILES {
        if !Path::new(file).exists() {
            return Some(format!("{file} ({pkg})"));
        }
    }
    None
}

/// Check the tool rule and take the one-VM lock. `None` means skip: the
/// caller returns. With `BTY_REQUIRE_TOOLS=1` a missing tool panics.
pub fn gate(test: &str) -> Option<Gate> {
    if let Some(what) = missing() {
        if std::env::var("BTY_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{test}: BTY_REQUIRE_TOOLS=1 but {what} is missing");
        }
        eprintln!("skipping: {what} not installed/available ({test})");
        return None;
    }
    let lock = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    Some(Gate { _lock: lock })
}
