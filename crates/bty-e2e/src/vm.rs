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

/// OVMF as the firmware: its code read-only, a fresh copy of its
/// variable store (`DIR/OVMF_VARS-<tag>.fd`) per machine.
fn ovmf(cmd: &mut std::process::Command, dir: &Path, tag: &str) -> anyhow::Result<()> {
    let vars = dir.join(format!("OVMF_VARS-{tag}.fd"));
    std::fs::copy(OVMF_VARS, &vars)
        .with_context(|| format!("copying {OVMF_VARS} to {}", vars.display()))?;
    cmd.arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
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
                ovmf(&mut cmd, dir, &cfg.mac.replace(':', ""))?;
                // Only HTTP Boot on the NIC: PXE would first wait for
                // a TFTP offer that never comes.
                cmd.args(["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n"])
                    .args(["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"]);
                // No iPXE ROM: OVMF's own virtio-net driver and HttpBoot.
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
            ovmf(&mut cmd, dir, tag)?;
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
        let until = Instant::now() + timeout;
        loop {
            // Consoles wrap at 80 columns: match across line breaks.
            let text = self.serial().replace('\n', "");
            if let Some(pos) = text.get(self.cursor..).and_then(|t| t.find(needle)) {
                self.cursor += pos + needle.len();
                return Ok(());
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
