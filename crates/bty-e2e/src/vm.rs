//! A qemu VM on the test LAN (or with no network, booting a USB stick),
//! watched through its serial console.
//!
//! Always TCG: on these machines a Linux kernel stalls under KVM right
//! after "Probing EDD" (see TESTING.md), and SeaBIOS/OVMF/iPXE run fine
//! under TCG. qemu does not exit at "No bootable device", so every wait has
//! a deadline and the guard kills qemu.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::netns::Netns;
use crate::process::{clean, tail, Guard};

/// The firmware the VM boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS with qemu's iPXE option ROM on the NIC.
    Bios,
    /// OVMF using its own network stack (no option ROM on the NIC), with
    /// PXE switched off so the NIC's boot option is UEFI HTTP Boot.
    UefiHttp,
    /// OVMF booting from disk only: no NIC.
    UefiDisk,
    /// OVMF with PXE over IPv4 on the NIC (Secure Boot off: the plain
    /// build and an empty variable store), HTTP Boot after it: the
    /// firmware path of the documented DHCP setup (option 93 = 7 gets
    /// `shimx64.efi` over TFTP) on a machine without Secure Boot.
    UefiPxe,
    /// OVMF's Secure Boot build (SMM, the secure pflash) with Microsoft's
    /// keys enrolled and Secure Boot enforced (`OVMF_VARS_4M.ms.fd`), PXE
    /// over IPv4 on the NIC, HTTP Boot after it: only signed loaders run
    /// (shim, then what shim verifies).
    UefiSecureBoot,
}

/// One virtio disk.
#[derive(Debug, Clone)]
pub struct Disk {
    /// Raw image file.
    pub path: PathBuf,
    /// What the guest sees as the disk's serial.
    pub serial: String,
}

/// VM settings.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Firmware.
    pub firmware: Firmware,
    /// NIC MAC address.
    pub mac: String,
    /// Memory in MiB.
    pub memory_mb: u32,
    /// Disks, booted after the NIC.
    pub disks: Vec<Disk>,
    /// Exit qemu when the guest reboots, instead of rebooting.
    pub no_reboot: bool,
    /// UEFI: keep the variable store an earlier VM with the same MAC left
    /// in the same directory (boot entries, Secure Boot state), as a
    /// machine that is powered off and on again does; otherwise (and when
    /// there is none) start from a fresh copy of the firmware's template.
    pub keep_vars: bool,
}

impl VmConfig {
    /// Defaults: 256 MiB, no disk, qemu exits when the guest reboots.
    pub fn new(firmware: Firmware, mac: &str) -> VmConfig {
        VmConfig {
            firmware,
            mac: mac.to_string(),
            memory_mb: 256,
            disks: Vec::new(),
            no_reboot: true,
            keep_vars: false,
        }
    }
}

/// A running VM; killed on drop.
pub struct Vm {
    guard: Guard,
    serial: PathBuf,
    cursor: usize,
    started: Instant,
    /// Other logs (name, path) whose tails go into failure messages.
    diag: Vec<(String, PathBuf)>,
    /// The serial console's input, when the test types into it.
    input: Option<std::process::ChildStdin>,
}

/// A machine that boots a USB stick: the stick on an xHCI controller
/// (what a stick is to the firmware) first in the boot order, the
/// machine's own virtio disks after it, no NIC. (SeaBIOS tries only the
/// first hard disk of its boot order, so an empty disk before the stick
/// would stop it; a technician pulls the stick to boot the flashed disk,
/// and a test does the same: `stick: None`.)
#[derive(Debug, Clone)]
pub struct StickConfig {
    /// [`Firmware::Bios`] (SeaBIOS) or [`Firmware::UefiDisk`] (OVMF).
    pub firmware: Firmware,
    /// The stick's raw image; None: the stick is pulled.
    pub stick: Option<PathBuf>,
    /// The machine's disks.
    pub disks: Vec<Disk>,
    /// Memory in MiB.
    pub memory_mb: u32,
    /// Exit qemu when the guest reboots.
    pub no_reboot: bool,
    /// The machine's NIC, on a test LAN; None: no network at all.
    pub lan: Option<StickLan>,
}

/// A stick machine's NIC: a virtio NIC on a namespace's tap, with no boot
/// ROM (the machine boots the stick, the NIC only carries the wizard's
/// traffic to a bty-web).
#[derive(Debug, Clone)]
pub struct StickLan {
    /// The namespace qemu runs in ([`Netns::name`]).
    pub netns: String,
    /// Its tap ([`Netns::tap`]).
    pub tap: String,
    /// The NIC's MAC.
    pub mac: String,
}

impl StickLan {
    /// The NIC `mac` on `ns`'s LAN.
    pub fn on(ns: &Netns, mac: &str) -> StickLan {
        StickLan {
            netns: ns.name().to_string(),
            tap: ns.tap().to_string(),
            mac: mac.to_string(),
        }
    }
}

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF's Secure Boot build (needs SMM and the secure pflash);
/// `OVMF_CODE_4M.ms.fd` is a link to it: the keys are in the variables.
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// Variables with Microsoft's KEK and db enrolled and Secure Boot on.
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// OVMF as the firmware: its code read-only, a copy of its variable store
/// (`DIR/OVMF_VARS-<tag>.fd`) per machine, fresh unless `keep` and one
/// is there. With `secure`, the Secure Boot build and Microsoft's keys.
fn ovmf(
    cmd: &mut std::process::Command,
    dir: &Path,
    tag: &str,
    secure: bool,
    keep: bool,
) -> anyhow::Result<()> {
    let (code, template) = if secure {
        (OVMF_CODE_SECBOOT, OVMF_VARS_MS)
    } else {
        (OVMF_CODE, OVMF_VARS)
    };
    let vars = dir.join(format!("OVMF_VARS-{tag}.fd"));
    if !(keep && vars.is_file()) {
        std::fs::copy(template, &vars)
            .with_context(|| format!("copying {template} to {}", vars.display()))?;
    }
    if secure {
        // The Secure Boot build keeps its variables behind SMM: without
        // it (and the secure flash) OVMF stops before the boot manager.
        cmd.args(["-machine", "q35,smm=on"])
            .args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
    }
    cmd.arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={code}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ));
    Ok(())
}

impl Vm {
    /// Start the VM in `ns`, attached to its tap, files under `dir`.
    pub fn start(ns: &Netns, dir: &Path, cfg: &VmConfig) -> anyhow::Result<Vm> {
        let serial = dir.join(format!("serial-{}.log", cfg.mac.replace(':', "")));
        let _ = std::fs::remove_file(&serial);
        let mut cmd = ns.command("qemu-system-x86_64");
        cmd.args([
            "-accel",
            "tcg",
            "-nodefaults",
            "-nographic",
            "-display",
            "none",
        ])
        .args(["-monitor", "none", "-vga", "none"])
        .args(["-m", &cfg.memory_mb.to_string()])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()));
        if cfg.no_reboot {
            cmd.arg("-no-reboot");
        }
        let mut nic = format!("virtio-net-pci,netdev=n0,mac={},bootindex=1", cfg.mac);
        match cfg.firmware {
            Firmware::Bios => {}
            Firmware::UefiHttp | Firmware::UefiDisk => {
                let tag = cfg.mac.replace(':', "");
                ovmf(&mut cmd, dir, &tag, false, cfg.keep_vars)?;
                // Only HTTP Boot on the NIC: PXE would first wait for
                // a TFTP offer that never comes.
                cmd.args(["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n"])
                    .args(["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"]);
                // No iPXE ROM: OVMF's own virtio-net driver and HttpBoot.
                nic.push_str(",romfile=");
            }
            Firmware::UefiPxe | Firmware::UefiSecureBoot => {
                let tag = cfg.mac.replace(':', "");
                let secure = cfg.firmware == Firmware::UefiSecureBoot;
                ovmf(&mut cmd, dir, &tag, secure, cfg.keep_vars)?;
                // PXE over IPv4 first (the TFTP shim), no IPv6 PXE: its
                // DHCPv6 solicits would cost the failure paths a minute.
                cmd.args(["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"]);
                // No iPXE ROM: OVMF's own PXE drives the virtio NIC.
                nic.push_str(",romfile=");
            }
        }
        let first_disk = if cfg.firmware == Firmware::UefiDisk {
            1
        } else {
            cmd.arg("-netdev")
                .arg(format!(
                    "tap,id=n0,ifname={},script=no,downscript=no",
                    ns.tap()
                ))
                .arg("-device")
                .arg(nic);
            2
        };
        for (i, d) in cfg.disks.iter().enumerate() {
            cmd.arg("-drive")
                .arg(format!(
                    "if=none,id=d{i},format=raw,cache=unsafe,file={}",
                    d.path.display()
                ))
                .arg("-device")
                .arg(format!(
                    "virtio-blk-pci,drive=d{i},serial={},bootindex={}",
                    d.serial,
                    i + first_disk
                ));
        }
        let stderr_path = dir.join(format!("qemu-{}.stderr", cfg.mac.replace(':', "")));
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting qemu-system-x86_64")?;
        Ok(Vm {
            guard: Guard::new("qemu", child),
            serial,
            cursor: 0,
            started: Instant::now(),
            diag: vec![("qemu stderr".to_string(), stderr_path)],
            input: None,
        })
    }

    /// Start a machine that boots a USB stick ([`StickConfig`]; no
    /// network unless [`StickConfig::lan`]), files under `dir`. Its serial console is
    /// qemu's stdio: what the guest writes goes to the log the waits read,
    /// and [`Vm::send_line`] types into it.
    pub fn start_stick(dir: &Path, cfg: &StickConfig) -> anyhow::Result<Vm> {
        let tag = match (cfg.firmware, cfg.stick.is_some()) {
            (Firmware::Bios, true) => "stick-bios",
            (Firmware::Bios, false) => "disk-bios",
            (_, true) => "stick-uefi",
            (_, false) => "disk-uefi",
        };
        let serial = dir.join(format!("serial-{tag}.log"));
        std::fs::write(&serial, b"").with_context(|| format!("creating {}", serial.display()))?;
        let mut cmd = match &cfg.lan {
            Some(lan) if !lan.netns.is_empty() => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", &lan.netns, "qemu-system-x86_64"]);
                c
            }
            _ => std::process::Command::new("qemu-system-x86_64"),
        };
        cmd.args(["-accel", "tcg", "-nodefaults"])
            .args(["-display", "none", "-monitor", "none", "-vga", "none"])
            .args(["-m", &cfg.memory_mb.to_string()])
            .args(["-serial", "stdio"]);
        match &cfg.lan {
            None => {
                cmd.args(["-nic", "none"]);
            }
            Some(lan) => {
                cmd.arg("-netdev")
                    .arg(format!(
                        "tap,id=n0,ifname={},script=no,downscript=no",
                        lan.tap
                    ))
                    .arg("-device")
                    .arg(format!("virtio-net-pci,netdev=n0,mac={},romfile=", lan.mac));
            }
        }
        if cfg.no_reboot {
            cmd.arg("-no-reboot");
        }
        if cfg.firmware != Firmware::Bios {
            let secure = cfg.firmware == Firmware::UefiSecureBoot;
            ovmf(&mut cmd, dir, tag, secure, false)?;
        }
        if let Some(stick) = &cfg.stick {
            cmd.args(["-device", "qemu-xhci,id=xhci"])
                .arg("-drive")
                .arg(format!(
                    "if=none,id=stick,format=raw,cache=unsafe,file={}",
                    stick.display()
                ))
                .args(["-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0"]);
        }
        for (i, d) in cfg.disks.iter().enumerate() {
            cmd.arg("-drive")
                .arg(format!(
                    "if=none,id=d{i},format=raw,cache=unsafe,file={}",
                    d.path.display()
                ))
                .arg("-device")
                .arg(format!(
                    "virtio-blk-pci,drive=d{i},serial={},bootindex={}",
                    d.serial,
                    i + 1
                ));
        }
        let stderr_path = dir.join(format!("qemu-{tag}.stderr"));
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("starting qemu-system-x86_64")?;
        let input = child.stdin.take();
        let mut out = child.stdout.take().context("qemu's stdout")?;
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&serial)
            .with_context(|| format!("opening {}", serial.display()))?;
        std::thread::spawn(move || {
            use std::io::{Read as _, Write as _};
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 || log.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        Ok(Vm {
            guard: Guard::new("qemu", child),
            serial,
            cursor: 0,
            started: Instant::now(),
            diag: vec![("qemu stderr".to_string(), stderr_path)],
            input,
        })
    }

    /// Type `line` and Enter on the serial console (a machine started
    /// with [`Vm::start_stick`]).
    pub fn send_line(&mut self, line: &str) {
        use std::io::Write as _;
        let r = match self.input.as_mut() {
            Some(i) => i
                .write_all(format!("{line}\r").as_bytes())
                .and_then(|_| i.flush()),
            None => Err(std::io::Error::other("this VM's console takes no input")),
        };
        if let Err(e) = r {
            panic!("{}", self.report(&format!("typing {line:?}: {e}")));
        }
    }

    /// Add a log whose tail goes into failure messages.
    pub fn add_diag(&mut self, name: &str, path: &Path) {
        self.diag.push((name.to_string(), path.to_path_buf()));
    }

    /// The whole serial console so far, cleaned of escapes.
    pub fn serial(&self) -> String {
        clean(&String::from_utf8_lossy(
            &std::fs::read(&self.serial).unwrap_or_default(),
        ))
    }

    /// Seconds since qemu started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// A failure message: what was expected, the serial tail and the tails
    /// of the diagnostic logs.
    pub fn report(&self, what: &str) -> String {
        let mut s = format!(
            "{what} (after {:.0} s)\n----- serial console (tail) -----\n{}\n",
            self.elapsed().as_secs_f64(),
            tail(&self.serial, 3000)
        );
        for (name, path) in &self.diag {
            s.push_str(&format!(
                "----- {name} (tail) -----\n{}\n",
                tail(path, 2500)
            ));
        }
        s
    }

    /// Wait until `needle` appears on the serial console after the previous
    /// match (line breaks ignored); panic with the console and diagnostic tails on timeout or if
    /// qemu exits first.
    pub fn expect(&mut self, needle: &str, timeout: Duration) {
        if let Err(e) = self.wait_for(needle, timeout) {
            panic!("{e}");
        }
    }

    /// Like [`Vm::expect`], returning the failure message instead.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        self.wait_for_unless(needle, &[], timeout)
    }

    /// Like [`Vm::wait_for`], but fail as soon as one of `bad` shows
    /// before `needle` (e.g. the firmware giving up on a boot option), so
    /// a broken chain costs seconds, not the whole timeout.
    pub fn wait_for_unless(
        &mut self,
        needle: &str,
        bad: &[&str],
        timeout: Duration,
    ) -> Result<(), String> {
        let until = Instant::now() + timeout;
        loop {
            // Consoles wrap at 80 columns: match across line breaks.
            let text = self.serial().replace('\n', "");
            let rest = text.get(self.cursor..).unwrap_or_default();
            let found = rest.find(needle);
            let failed = bad
                .iter()
                .filter_map(|b| rest.find(b).map(|p| (p, *b)))
                .min();
            match (found, failed) {
                (Some(pos), f) if f.is_none_or(|(b, _)| pos < b) => {
                    self.cursor += pos + needle.len();
                    return Ok(());
                }
                (_, Some((_, b))) => {
                    return Err(self.report(&format!(
                        "the serial console showed {b:?} before {needle:?}"
                    )));
                }
                _ => {}
            }
            if let Some(status) = self.guard.exited() {
                return Err(self.report(&format!(
                    "qemu exited ({status}) before the serial console showed {needle:?}"
                )));
            }
            if Instant::now() >= until {
                return Err(self.report(&format!(
                    "the serial console did not show {needle:?} within {} s",
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Wait for qemu to exit by itself (a guest reboot with `no_reboot`).
    pub fn expect_exit(&mut self, timeout: Duration) {
        if self.guard.wait_exit(timeout).is_none() {
            panic!(
                "{}",
                self.report(&format!("qemu did not exit within {} s", timeout.as_secs()))
            );
        }
    }

    /// Kill qemu now.
    pub fn kill(&mut self) {
        self.guard.stop();
    }
}
