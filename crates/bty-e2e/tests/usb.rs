//! Issue 13, the USB-stick flow as a technician meets it: the README's
//! `bty-lab` (`cargo install`ed, default media) runs `bty-lab usb build`
//! with two bootable test images; a machine with no network, an empty
//! virtio disk (serial BTYTARGET) and the stick on xHCI boots it, on
//! SeaBIOS (gptmbr.bin -> syslinux) and on OVMF (systemd-boot as
//! `\EFI\BOOT\BOOTX64.EFI`). The test types into the wizard on the serial
//! console (image, disk, the disk's serial, Enter to reboot); as the
//! technician pulls the stick, the machine then starts with the disk alone
//! and boots it: its marker shows on the console, and the disk holds the
//! image byte for byte. A second stick is unattended (`--auto`): it
//! flashes and reboots with no input at all.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bty_e2e::disk::{mbr_image, uefi_image, AfterMarker};
use bty_e2e::dnsmasq::{BootRule, Dnsmasq};
use bty_e2e::origin::Origin;
use bty_e2e::stack::{Stack, StackOptions};
use bty_e2e::vm::{Disk, Firmware, StickConfig, StickLan, Vm};
use serde_json::json;

/// The usb build's own tools, with their packages.
const STICK_TOOLS: &[(&str, &str)] = &[
    ("/usr/sbin/sfdisk", "fdisk"),
    ("/usr/sbin/mkfs.fat", "dosfstools"),
    ("/usr/bin/mcopy", "mtools"),
    ("/usr/bin/syslinux", "syslinux"),
    ("/usr/sbin/mke2fs", "e2fsprogs"),
    ("/usr/lib/syslinux/mbr/gptmbr.bin", "syslinux-common"),
    (
        "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        "systemd-boot-efi",
    ),
];

fn stick_tools(test: &str) -> bool {
    let Some((what, pkg)) = STICK_TOOLS.iter().find(|(p, _)| !Path::new(p).exists()) else {
        return true;
    };
    if std::env::var("BTY_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{test}: BTY_REQUIRE_TOOLS=1 but {what} ({pkg}) is missing");
    }
    eprintln!("skipping: {what} ({pkg}) not installed ({test})");
    false
}

/// The two images a stick carries: one BIOS-bootable, one UEFI-bootable,
/// each printing its marker when booted (and halting).
struct Images {
    bios: (PathBuf, Vec<u8>),
    uefi: (PathBuf, Vec<u8>),
}

const BIOS_MARKER: &str = "BTY-USB-FLASHED-BIOS-DISK";
const UEFI_MARKER: &str = "BTY-USB-FLASHED-UEFI-DISK";

fn images(dir: &Path) -> Images {
    let bios = mbr_image(BIOS_MARKER, AfterMarker::Halt, 4 << 20);
    let uefi = uefi_image(UEFI_MARKER, AfterMarker::Halt, 8 << 20, dir).expect("the UEFI image");
    let (bp, up) = (dir.join("bios-disk.img"), dir.join("uefi-disk.img"));
    std::fs::write(&bp, &bios).unwrap();
    std::fs::write(&up, &uefi).unwrap();
    Images {
        bios: (bp, bios),
        uefi: (up, uefi),
    }
}

/// `bty-lab usb build --out STICK --image bios-disk=.. --image uefi-disk=..
/// [EXTRA]`, as the README's binary runs it: its own netboot media.
fn build_stick(lab: &Path, dir: &Path, name: &str, im: &Images, extra: &[&str]) -> PathBuf {
    let stick = dir.join(name);
    let t0 = Instant::now();
    let out = Command::new(lab)
        .args(["usb", "build", "--out"])
        .arg(&stick)
        .arg("--image")
        .arg(format!("bios-disk={}", im.bios.0.display()))
        .arg("--image")
        .arg(format!("uefi-disk={}", im.uefi.0.display()))
        .args(extra)
        .env_remove("BTY_NETBOOT_DIR")
        .output()
        .expect("running bty-lab usb build");
    assert!(
        out.status.success(),
        "usb build failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("usb build {name}: {:.1} s", t0.elapsed().as_secs_f64());
    stick
}

/// The machine: `stick` (None: pulled) and its disk `target` (serial
/// BTYTARGET); qemu exits when the guest reboots.
fn machine(dir: &Path, firmware: Firmware, stick: Option<&Path>, target: &Path) -> Vm {
    machine_on(dir, firmware, stick, target, None)
}

/// [`machine`] with its NIC on a test LAN (`lan`), or none.
fn machine_on(
    dir: &Path,
    firmware: Firmware,
    stick: Option<&Path>,
    target: &Path,
    lan: Option<StickLan>,
) -> Vm {
    let cfg = StickConfig {
        firmware,
        stick: stick.map(Path::to_path_buf),
        disks: vec![Disk {
            path: target.to_path_buf(),
            serial: "BTYTARGET".into(),
        }],
        memory_mb: 1024,
        no_reboot: true,
        lan,
    };
    Vm::start_stick(dir, &cfg).expect("starting qemu")
}

/// At the wizard's disk menu: the first disk, its serial typed to confirm;
/// seconds after power-on when the flash is verified.
fn pick_the_disk_and_confirm(vm: &mut Vm) -> f64 {
    vm.expect(
        "Disk number (b to go back, q to quit):",
        Duration::from_secs(30),
    );
    vm.send_line("1");
    vm.expect(
        "Type the disk's serial BTYTARGET to confirm",
        Duration::from_secs(30),
    );
    vm.send_line("BTYTARGET");
    vm.expect("or type off to power off", Duration::from_secs(180));
    vm.elapsed().as_secs_f64()
}

/// An empty 32 MiB disk for `firmware`'s machine.
fn empty_disk(dir: &Path, firmware: Firmware) -> PathBuf {
    let target = dir.join(format!("target-{firmware:?}.img"));
    std::fs::write(&target, vec![0u8; 32 << 20]).unwrap();
    target
}

/// The stick pulled, the machine boots its flashed disk: `marker` shows.
/// Seconds to the marker.
fn boots_the_disk(dir: &Path, firmware: Firmware, target: &Path, marker: &str) -> f64 {
    let mut vm = machine(dir, firmware, None, target);
    vm.expect(marker, Duration::from_secs(120));
    let secs = vm.elapsed().as_secs_f64();
    vm.kill();
    secs
}

/// The stick boots the netboot kernel in wizard mode, the way `firmware`
/// boots a stick: syslinux (its banner, BOOT_IMAGE=) or OVMF's boot
/// manager starting the USB disk's removable-media loader (systemd-boot,
/// the kernel's EFI stub).
fn boots_the_wizard_kernel(vm: &mut Vm, firmware: Firmware) -> f64 {
    vm.expect("Command line:", Duration::from_secs(240));
    vm.expect("bty.mode=wizard", Duration::from_secs(5));
    vm.expect("bty-netboot: init", Duration::from_secs(240));
    let secs = vm.elapsed().as_secs_f64();
    let serial = vm.serial();
    let marks: &[&str] = match firmware {
        Firmware::Bios => &["SYSLINUX 6", "BOOT_IMAGE=/bty/vmlinuz"],
        _ => &["BdsDxe: starting", "USB HARDDRIVE", "EFI stub:"],
    };
    for m in marks {
        assert!(
            serial.contains(m),
            "{}",
            vm.report(&format!("booted, but without {m:?} on the console"))
        );
    }
    secs
}

/// The disk holds `image` from its first byte.
fn holds(target: &Path, image: &[u8]) {
    let disk = std::fs::read(target).unwrap();
    assert!(
        disk.len() >= image.len() && disk[..image.len()] == image[..],
        "the flashed disk does not hold the image"
    );
}

#[test]
fn readme_usb_stick_wizard_flashes_and_the_disk_boots_on_seabios_and_ovmf() {
    const TEST: &str = "readme_usb_stick_wizard_flashes_and_the_disk_boots_on_seabios_and_ovmf";
    let Some(_gate) = bty_e2e::gate(TEST) else {
        return;
    };
    if !stick_tools(TEST) {
        return;
    }
    let Some(lab) = bty_e2e::readme_bin(TEST) else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("bty-usb-e2e")
        .tempdir()
        .unwrap();
    let im = images(dir.path());
    let stick = build_stick(&lab, dir.path(), "stick.img", &im, &[]);
    // (firmware, which image in the wizard's list, its bytes, its marker)
    let runs = [
        (Firmware::Bios, "1", &im.bios.1, BIOS_MARKER),
        (Firmware::UefiDisk, "2", &im.uefi.1, UEFI_MARKER),
    ];
    for (firmware, pick, image, marker) in runs {
        let copy = dir.path().join(format!("stick-{firmware:?}.img"));
        std::fs::copy(&stick, &copy).unwrap();
        let target = empty_disk(dir.path(), firmware);
        let mut vm = machine(dir.path(), firmware, Some(&copy), &target);
        let to_wizard = boots_the_wizard_kernel(&mut vm, firmware);
        vm.expect("Image number (q to quit):", Duration::from_secs(120));
        vm.send_line(pick);
        let flashed = pick_the_disk_and_confirm(&mut vm);
        holds(&target, image);
        // Enter reboots (qemu exits on the guest's reboot).
        vm.send_line("");
        vm.expect_exit(Duration::from_secs(60));
        let booted = boots_the_disk(dir.path(), firmware, &target, marker);
        eprintln!(
            "usb stick, {firmware:?} (TCG): wizard on the console {to_wizard:.1} s after power-on, \
             flashed and verified at {flashed:.1} s; the flashed disk boots in {booted:.1} s"
        );
    }
}

#[test]
fn readme_usb_stick_unattended_flashes_and_boots_without_input() {
    const TEST: &str = "readme_usb_stick_unattended_flashes_and_boots_without_input";
    let Some(_gate) = bty_e2e::gate(TEST) else {
        return;
    };
    if !stick_tools(TEST) {
        return;
    }
    let Some(lab) = bty_e2e::readme_bin(TEST) else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("bty-usb-auto")
        .tempdir()
        .unwrap();
    let im = images(dir.path());
    let auto = "image=bios-disk,disk-serial=BTYTARGET,after=reboot";
    let stick = build_stick(&lab, dir.path(), "auto.img", &im, &["--auto", auto]);
    let target = empty_disk(dir.path(), Firmware::Bios);
    let mut vm = machine(dir.path(), Firmware::Bios, Some(&stick), &target);
    boots_the_wizard_kernel(&mut vm, Firmware::Bios);
    // No input: the wizard flashes, verifies and reboots by itself.
    vm.expect_exit(Duration::from_secs(300));
    let flashed = vm.elapsed().as_secs_f64();
    let serial = vm.serial();
    assert!(
        !serial.contains("Image number"),
        "{}",
        vm.report("the unattended stick asked a question")
    );
    assert!(
        serial.contains("unattended: bios-disk onto the disk with serial BTYTARGET"),
        "{}",
        vm.report("no unattended flash on the console")
    );
    holds(&target, &im.bios.1);
    let booted = boots_the_disk(dir.path(), Firmware::Bios, &target, BIOS_MARKER);
    eprintln!(
        "usb stick unattended (SeaBIOS, TCG): flashed, verified and rebooted {flashed:.1} s \
         after power-on; the flashed disk boots in {booted:.1} s"
    );
}

/// The stick's bty-web's image and the machine's page: `bty-lab serve`
/// (the README's, on the test LAN) has an image added with `bty-lab image
/// add` and the machine registered; `bty-lab usb build --server` (with the
/// shown password on stdin) makes a stick with one image of its own,
/// naming the server by a host name the netboot environment cannot
/// resolve. The machine boots the stick with its NIC on the LAN (DHCP from
/// dnsmasq); the wizard finds the server as the lease's next-server, lists
/// the server's image after the stick's, the technician
/// picks it, the disk is flashed from withcache and verified, and bty-web
/// shows the flash on the machine: a done `stick` cycle with the
/// read-back digest, live on its page. The stick pulled, the disk boots.
#[test]
fn readme_usb_stick_with_a_server_flashes_its_catalog_image_and_reports_it() {
    const TEST: &str = "readme_usb_stick_with_a_server_flashes_its_catalog_image_and_reports_it";
    const MAC: &str = "52:54:00:5e:00:13";
    const ORIGIN_PORT: u16 = 8081;
    const SERVER_MARKER: &str = "BTY-USB-FLASHED-FROM-THE-SERVER";
    let Some(_gate) = bty_e2e::gate(TEST) else {
        return;
    };
    if !stick_tools(TEST) {
        return;
    }
    let Some(lab) = bty_e2e::readme_bin(TEST) else {
        return;
    };
    let mut stack = Stack::start(StackOptions {
        lab: Some(lab.clone()),
        readme: true,
        ..StackOptions::default()
    })
    .expect("starting bty-lab serve on the test LAN");
    let dir = stack.dir.path().to_path_buf();
    let origin = Origin::new();
    let served = mbr_image(SERVER_MARKER, AfterMarker::Halt, 4 << 20);
    origin.put("server-disk.img", served.clone());
    {
        let o = origin.clone();
        let addr = std::net::SocketAddr::from((stack.ns.host_ip(), ORIGIN_PORT));
        stack.spawn_service("origin", move |stop| async move {
            let l = tokio::net::TcpListener::bind(addr).await?;
            o.serve(l, async move {
                let _ = stop.await;
            })
            .await
        });
    }
    let src = format!(
        "http://{}:{ORIGIN_PORT}/server-disk.img",
        stack.ns.host_ip()
    );
    let added = stack
        .lab_image_add("server-disk", &src)
        .unwrap_or_else(|e| panic!("bty-lab image add: {e:#}\n{}", stack.report()));
    assert!(added.contains("added server-disk"), "{added}");
    let sha = hex_sha256(&served);
    stack
        .wait_offered("server-disk", Some(&sha), Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.report()));
    stack
        .api_put(
            &format!("/api/machines/{MAC}"),
            json!({"boot_mode": "ipxe-exit", "name": "stick-vm"}),
        )
        .expect("registering the machine");
    let _dhcp = Dnsmasq::start(&stack.ns, &dir, &BootRule::TftpOnly).expect("starting dnsmasq");

    // The operator builds the stick on the LAN, as the README says, naming
    // the server by a host name the office resolves (here: the
    // namespace's /etc/hosts, which `ip netns exec` puts over /etc/hosts)
    // and the netboot environment cannot (no DNS on this LAN): the wizard
    // must find the server as the DHCP lease's next-server instead.
    let hosts_dir = std::path::PathBuf::from("/etc/netns").join(stack.ns.name());
    let _hosts = RemoveOnDrop(hosts_dir.clone());
    std::fs::create_dir_all(&hosts_dir).unwrap();
    std::fs::write(
        hosts_dir.join("hosts"),
        format!("127.0.0.1 localhost\n{} bty.lab.test\n", stack.ns.host_ip()),
    )
    .unwrap();
    let named = "http://bty.lab.test:8080";
    let im = images(&dir);
    let stick = dir.join("server-stick.img");
    let t0 = Instant::now();
    let mut build = stack.ns.command(&lab.display().to_string());
    build
        .args(["usb", "build", "--out"])
        .arg(&stick)
        .arg("--image")
        .arg(format!("bios-disk={}", im.bios.0.display()))
        .args(["--server", named, "--password-stdin"])
        .env_remove("BTY_NETBOOT_DIR")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = build.spawn().expect("running bty-lab usb build");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", stack.admin_password()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "usb build --server failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("usb build --server: {:.1} s", t0.elapsed().as_secs_f64());
    let keys = stack.api_get("/api/sticks").expect("listing stick keys");
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");

    let target = empty_disk(&dir, Firmware::Bios);
    let lan = Some(StickLan::on(&stack.ns, MAC));
    let mut vm = machine_on(&dir, Firmware::Bios, Some(&stick), &target, lan);
    let to_wizard = boots_the_wizard_kernel(&mut vm, Firmware::Bios);
    vm.expect(
        "Image number (r to retry the server, q to quit):",
        Duration::from_secs(120),
    );
    let shown = vm.serial();
    assert!(
        shown.contains(&format!("Images on {}:", stack.web_url())),
        "{}",
        vm.report("no server section (found through DHCP) in the image menu")
    );
    let menu = &shown[shown.rfind("bios-disk").unwrap_or(0)..];
    let line = menu
        .lines()
        .find(|l| l.contains("server-disk"))
        .unwrap_or_else(|| {
            panic!(
                "{}",
                vm.report("the wizard did not list the server's image")
            )
        });
    let pick: String = line
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(
        pick, "2",
        "the stick's image first, then the server's: {line:?}"
    );
    vm.send_line(&pick);
    let flashed = pick_the_disk_and_confirm(&mut vm);
    holds(&target, &served);

    // bty-web recorded it on the machine, like a network flash.
    let cycles = stack
        .api_get(&format!("/api/machines/{MAC}/cycles"))
        .expect("the machine's cycles");
    let c = cycles
        .as_array()
        .and_then(|a| a.iter().find(|c| c["via"] == "stick"))
        .unwrap_or_else(|| panic!("no stick cycle: {cycles}\n{}", stack.report()));
    assert_eq!(c["state"], "done", "{c}");
    assert_eq!(c["image_name"], "server-disk", "{c}");
    assert_eq!(c["disk_sha256"], sha.as_str(), "{c}");
    assert_eq!(c["target_serial"], "BTYTARGET", "{c}");
    let page = stack
        .get_text(&format!("/ui/machines/{MAC}"))
        .expect("the machine's page");
    assert!(
        page.contains("USB stick"),
        "the machine page does not show the stick flash"
    );
    let events = stack.events(Some(MAC)).expect("events");
    assert!(
        events.iter().any(|e| e["kind"] == "stick.flash.started"),
        "{events:?}"
    );
    // The machine did not become a PXE flash: it stays ipxe-exit.
    let m = stack.api_get(&format!("/api/machines/{MAC}")).unwrap();
    assert_eq!(m["boot_mode"], "ipxe-exit", "{m}");

    vm.send_line("");
    vm.expect_exit(Duration::from_secs(60));
    let booted = boots_the_disk(&dir, Firmware::Bios, &target, SERVER_MARKER);
    eprintln!(
        "usb stick with a server (SeaBIOS, TCG): wizard {to_wizard:.1} s after power-on, the \
         server's image flashed from withcache and verified at {flashed:.1} s; the flashed disk \
         boots in {booted:.1} s"
    );
}

/// Removes a directory tree when dropped (also when the test fails).
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hex_sha256(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}
