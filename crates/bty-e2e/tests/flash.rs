//! Issue 6 end to end: a VM PXE-boots, the netboot environment's agent
//! flashes its disk from a catalog image held in withcache, the VM reboots
//! and boots the flashed disk.
//!
//! The services are the operator's. The two `readme_*` tests run the
//! README's path and nothing else: the bty-lab the README builds
//! (`BTY_LAB_README_BIN`), `bty-lab serve` or `bty-lab deploy` with no
//! `--netboot`, `--images` or `--registry`, the image added with `bty-lab
//! image add`, and DHCP handing out `undionly.kpxe` alone. The others take
//! shortcuts for speed: `bty-lab serve --netboot MEDIA` (the README's
//! binary when there is one, else `BTY_LAB_STATIC_BIN`/`BTY_LAB_BIN`),
//! images put straight into withcache, and the iPXE user-class DHCP rule.
//! All run the services in the test's network namespace with `ip netns
//! exec` (the deploy on a bridge in the root namespace). Assertions on the
//! server side go through bty-web's API (cycles, events, machines,
//! `/metrics`), withcache's API, the services' logs and the test origin's
//! own request record.
//!
//! Chain (BIOS): SeaBIOS → qemu's iPXE ROM → dnsmasq (`undionly.kpxe`;
//! outside the README tests, the bootstrap URL for user class `iPXE`)
//! → `undionly.kpxe` from bty-tftp → (README tests: that iPXE's own
//! DHCP and TFTP request for `undionly.kpxe`, answered by bty-tftp's chain
//! script) → bty-web `/pxe-bootstrap.ipxe` → per-MAC flash script →
//! netboot kernel +
//! initrd from bty-web → agent: inventory, plan, stream from withcache
//! (which pulled the image once from the test's origin on 192.0.2.1:8081),
//! write the disk with `serial=BTYTEST`, verify, `done`, reboot → PXE again
//! → per-MAC script is the local boot (`sanboot`) → the flashed boot sector
//! prints its marker on COM1.
//!
//! The image is built by the test: a hand-assembled boot sector plus dense
//! and zero blocks (`bty_e2e::disk`). After its marker the boot sector
//! resets the machine, so a machine goes round its boot mode in one qemu
//! run: flash-once shows the disk on every later boot, flash-always
//! alternates flash and disk.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bty_e2e::disk::{mbr_image, secure_boot_image, sha256_hex, uefi_image, AfterMarker};
use bty_e2e::dnsmasq::{BootRule, Dnsmasq};
use bty_e2e::origin::Origin;
use bty_e2e::stack::{Deploy, Stack, StackOptions};
use bty_e2e::vm::{Disk, Firmware, Vm, VmConfig};
use serde_json::{json, Value};

const ORIGIN_PORT: u16 = 8081;
const SERIAL: &str = "BTYTEST";
/// Image size: small enough for TCG, larger than the agent's held-back
/// first MiB. `BTY_E2E_IMAGE_MIB` overrides it for the BIOS tests
/// (bench/vm-flash.sh times a 256 MiB flash with it).
fn image_size() -> usize {
    let mib = std::env::var("BTY_E2E_IMAGE_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|m| (2..=4096).contains(m))
        .unwrap_or(6);
    mib << 20
}

/// The VM's disks: the image plus 10 MiB.
fn disk_size() -> u64 {
    (image_size() + (10 << 20)) as u64
}

/// Extra seconds of patience for a large `BTY_E2E_IMAGE_MIB` under TCG.
fn slack() -> u64 {
    (image_size() >> 20) as u64
}

struct Flash {
    vm: Option<Vm>,
    dhcp: Dnsmasq,
    stack: Stack,
    origin: Origin,
    mac: String,
    disk: PathBuf,
    decoy: PathBuf,
    image: Vec<u8>,
    name: String,
    marker: String,
    firmware: Firmware,
}

/// How a flash test is set up.
struct Setup {
    test: &'static str,
    mac: &'static str,
    mode: &'static str,
    firmware: Firmware,
    /// Have withcache download the image before the VM boots. Else the
    /// image reaches bty-web's catalog as a static entry (withcache's
    /// `GET /catalog` lists cached entries only) whose URL is withcache's
    /// blob URL, and the agent's request starts withcache's download of
    /// the catalog entry, streamed to the agent as it lands.
    prefetch: bool,
    origin: Origin,
    /// A wrong sha256 for bty-web's catalog: the image is then a static
    /// catalog entry claiming it (`BTY_IMAGES_CATALOG`), while withcache
    /// holds the same `src` under another name with the true digest, so
    /// the agent gets the right bytes through withcache and only its own
    /// check can catch the mismatch.
    claimed_sha256: Option<String>,
    /// Serial the machine is registered with (default: the VM disk's).
    target_serial: &'static str,
    /// Deploy the stack in containers of this engine with `bty-lab
    /// deploy` (default: `bty-lab serve`).
    engine: Option<&'static str>,
    /// The README's path, no shortcut ([`StackOptions::readme`]): its
    /// binary (`BTY_LAB_README_BIN`), no `--netboot`, the image added
    /// with `bty-lab image add`, and DHCP handing out one TFTP boot file
    /// (`undionly.kpxe`) with no user-class rule (UEFI: the documented
    /// setup, [`BootRule::Documented`]).
    readme: bool,
    /// dnsmasq's rule when the VM first boots, instead of the firmware's
    /// usual one (the Secure Boot control: `ipxe.efi` for everyone).
    rule: Option<BootRule>,
}

impl Setup {
    fn new(test: &'static str, mac: &'static str, mode: &'static str, firmware: Firmware) -> Setup {
        Setup {
            test,
            mac,
            mode,
            firmware,
            prefetch: true,
            origin: Origin::new(),
            claimed_sha256: None,
            target_serial: SERIAL,
            engine: None,
            readme: false,
            rule: None,
        }
    }

    /// The README's path (see [`Setup::readme`]), BIOS flash-once.
    fn readme(test: &'static str, mac: &'static str) -> Setup {
        let mut su = Setup::new(test, mac, "bty-flash-once", Firmware::Bios);
        su.readme = true;
        su
    }
}

impl Flash {
    /// `bty-lab serve` (or a container deploy), images through withcache,
    /// the netboot env, the origin serving the image, the image
    /// in bty-web's catalog, and the machine registered. `None`: skip (no
    /// bty-lab binary).
    fn setup(su: Setup) -> Option<Flash> {
        let lab = if su.readme {
            bty_e2e::readme_bin(su.test)?
        } else {
            bty_e2e::lab_bin(su.test)?
        };
        let name = format!("e2e-{}", su.test);
        let marker = format!("BTY-E2E-DISK-BOOTED {}", su.test);
        let tmp = tempfile::tempdir().expect("temp dir");
        let image = match su.firmware {
            Firmware::Bios => mbr_image(&marker, AfterMarker::Reboot, image_size()),
            // Unsigned: fine with Secure Boot off.
            Firmware::UefiHttp | Firmware::UefiDisk | Firmware::UefiPxe => {
                uefi_image(&marker, AfterMarker::Reboot, 6 << 20, tmp.path())
                    .expect("building the UEFI image")
            }
            Firmware::UefiSecureBoot => {
                secure_boot_image(&marker, AfterMarker::Reboot, 8 << 20, tmp.path())
                    .expect("building the Secure Boot disk image (sfdisk, mkfs.fat, mtools)")
            }
        };
        // The LAN address: 192.0.2.1 in a namespace, another on the
        // container test's LAN (see netns.rs).
        let lan_ip = if su.engine.is_some() {
            bty_e2e::netns::HOST_LAN_IP
        } else {
            bty_e2e::netns::HOST_IP
        };
        let src = format!("http://{lan_ip}:{ORIGIN_PORT}/{name}.img");
        let sha = su
            .claimed_sha256
            .clone()
            .unwrap_or_else(|| sha256_hex(&image));
        let static_entry = su.claimed_sha256.is_some() || !su.prefetch;
        let static_catalog = static_entry.then(|| {
            format!(
                "version = 1\n[[images]]\nname = \"{name}\"\nsrc = \"{src}\"\nsha256 = \"{sha}\"\nsize = {}\nformat = \"raw\"\n",
                image.len()
            )
        });
        let deploy = su.engine.map(|engine| Deploy {
            bin: lab.clone(),
            engine: engine.to_string(),
        });
        // The README's binary brings its own netboot media.
        let netboot =
            (!su.readme).then(|| bty_e2e::media::netboot_dir(&lab).expect("netboot environment"));
        let mut stack = Stack::start(StackOptions {
            static_catalog,
            netboot,
            lab: Some(lab),
            deploy,
            readme: su.readme,
            ..StackOptions::default()
        })
        .expect("starting the stack (bty-lab serve or deploy)");
        su.origin.put(&format!("{name}.img"), image.clone());
        {
            let o = su.origin.clone();
            let addr = std::net::SocketAddr::from((stack.ns.host_ip(), ORIGIN_PORT));
            stack.spawn_service("origin", move |stop| async move {
                let l = tokio::net::TcpListener::bind(addr).await?;
                o.serve(l, async move {
                    let _ = stop.await;
                })
                .await
            });
        }
        let rule = su.rule.clone().unwrap_or(match su.firmware {
            // One boot file, no user-class rule: bty-tftp's second stage
            // must break the loop (docs/dhcp.md).
            Firmware::Bios if su.readme => BootRule::TftpOnly,
            Firmware::Bios => BootRule::TftpWithUserClass,
            Firmware::UefiHttp | Firmware::UefiDisk => BootRule::UefiHttp("snponly.efi".into()),
            Firmware::UefiPxe | Firmware::UefiSecureBoot => BootRule::Documented,
        });
        let dhcp = Dnsmasq::start(&stack.ns, stack.dir.path(), &rule).expect("starting dnsmasq");
        let disk = stack.dir.path().join("disk.img");
        let decoy = stack.dir.path().join("decoy.img");
        for d in [&disk, &decoy] {
            std::fs::File::create(d)
                .and_then(|f| f.set_len(disk_size()))
                .expect("creating a disk file");
        }
        let f = Flash {
            vm: None,
            dhcp,
            stack,
            origin: su.origin,
            mac: su.mac.to_string(),
            disk,
            decoy,
            image,
            name,
            marker,
            firmware: su.firmware,
        };
        // One name per catalog: bty-web merges the static file and
        // withcache's list.
        let cache_name = if static_entry {
            format!("{}-cache", f.name)
        } else {
            f.name.clone()
        };
        if su.readme {
            f.image_add();
            f.expect_netboot_media();
        } else {
            f.publish(&cache_name, su.prefetch);
        }
        f.register(su.mode, su.target_serial);
        Some(f)
    }

    /// The README's way: `bty-lab image add NAME URL` (no sha256: withcache
    /// finds it), then wait until bty-web offers the image through
    /// withcache with the digest withcache computed.
    fn image_add(&self) {
        let s = &self.stack;
        let out = s
            .lab_image_add(&self.name, &self.src())
            .unwrap_or_else(|e| panic!("bty-lab image add: {e:#}\n{}", s.report()));
        assert!(out.contains(&format!("added {}", self.name)), "{out}");
        self.wait_offered(Some(&self.sha()), 120);
    }

    /// bty-lab placed the netboot kernel and initrd itself (no --netboot):
    /// bty-web serves both. Checked before the VM starts, so a missing
    /// media fails in seconds with the reason, not in minutes at iPXE.
    fn expect_netboot_media(&self) {
        for f in [bty_e2e::media::KERNEL, bty_e2e::media::INITRD] {
            let status = self.stack.head_status(&format!("/boot/{f}"));
            if status.as_ref().ok() != Some(&200) {
                panic!(
                    "bty-web does not serve /boot/{f} ({status:?}): the README's bty-lab \
                     placed no netboot media without --netboot\n{}",
                    self.stack.report()
                );
            }
        }
    }

    fn sha(&self) -> String {
        sha256_hex(&self.image)
    }

    /// Add the entry (as `cache_name`, with the image's true digest) to
    /// withcache, have it download from the origin if `prefetch`, and wait
    /// until bty-web's catalog offers the image (with withcache's URL).
    fn publish(&self, cache_name: &str, prefetch: bool) {
        let s = &self.stack;
        s.withcache_api(
            reqwest::Method::POST,
            "/catalog/entries",
            Some(json!({
                "name": cache_name,
                "src": self.src(),
                "sha256": self.sha(),
                "size": self.image.len(),
                "format": "raw",
            })),
        )
        .expect("adding the catalog entry to withcache");
        if prefetch {
            s.withcache_api(
                reqwest::Method::POST,
                &format!("/catalog/entries/{cache_name}/download"),
                None,
            )
            .expect("starting withcache's download");
        }
        self.wait_offered(None, 60);
    }

    /// The image's URL at the test origin.
    fn src(&self) -> String {
        format!(
            "http://{}:{ORIGIN_PORT}/{}.img",
            self.stack.ns.host_ip(),
            self.name
        )
    }

    /// Wait up to `secs` until bty-web's catalog offers the image (with
    /// `sha256`, if given) through withcache's URL.
    fn wait_offered(&self, sha256: Option<&str>, secs: u64) {
        let s = &self.stack;
        let img = s
            .wait_offered(&self.name, sha256, Duration::from_secs(secs))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", s.report()));
        let url = img["url"].as_str().unwrap_or_default();
        assert!(
            url.starts_with(&s.withcache_url()),
            "bty-web hands out {url}, not withcache's URL: {img}"
        );
    }

    /// The agent's inventory says how the machine booted: `kind` (`bios`,
    /// `uefi`) and, on UEFI, the Secure Boot state.
    fn check_firmware(&self, kind: &str, secure_boot: Option<&str>) {
        let m = self
            .stack
            .api_get(&format!("/api/machines/{}", self.mac))
            .expect("machine");
        let fw = &m["inventory"]["firmware"];
        let want_sb = secure_boot.map_or(serde_json::Value::Null, |s| json!(s));
        if fw["kind"] != kind || fw["secure_boot"] != want_sb {
            self.fail(&format!(
                "inventory firmware {fw}, expected kind {kind} and secure_boot {want_sb}"
            ));
        }
    }

    fn register(&self, mode: &str, serial: &str) {
        self.stack
            .api_put(
                &format!("/api/machines/{}", self.mac),
                json!({
                    "boot_mode": mode,
                    "image": self.name,
                    "target_disk_serial": serial,
                    "name": "e2e-vm",
                }),
            )
            .expect("registering the machine");
    }

    fn boot(&mut self) {
        let mut cfg = VmConfig::new(self.firmware, &self.mac);
        // The agent, its buffers and the initramfs live in RAM.
        cfg.memory_mb = 512;
        cfg.no_reboot = false;
        // A second boot in one test is the same machine powered on again:
        // its firmware variables (boot entries, Secure Boot) stay.
        cfg.keep_vars = true;
        cfg.disks = vec![
            Disk {
                path: self.disk.clone(),
                serial: SERIAL.into(),
            },
            Disk {
                path: self.decoy.clone(),
                serial: "DECOY".into(),
            },
        ];
        let mut vm = Vm::start(&self.stack.ns, self.stack.dir.path(), &cfg).expect("starting qemu");
        vm.add_diag("dnsmasq log", &self.stack.dir.path().join("dnsmasq.log"));
        vm.add_diag("services log", &self.stack.services_log());
        self.vm = Some(vm);
    }

    fn vm(&mut self) -> &mut Vm {
        self.vm.as_mut().expect("VM started")
    }

    fn expect(&mut self, needle: &str, secs: u64) {
        self.expect_unless(needle, &[], secs);
    }

    /// [`Flash::expect`], failing at once if one of `bad` shows first.
    fn expect_unless(&mut self, needle: &str, bad: &[&str], secs: u64) {
        let r = self
            .vm()
            .wait_for_unless(needle, bad, Duration::from_secs(secs));
        if let Err(e) = r {
            panic!("{e}{}", self.stack.report());
        }
    }

    fn fail(&self, what: &str) -> ! {
        let vm = self
            .vm
            .as_ref()
            .map(|v| v.report(what))
            .unwrap_or_else(|| what.to_string());
        panic!("{vm}{}", self.stack.report());
    }

    /// One flash: the flash script, the netboot kernel, the agent's
    /// reboot, then the local boot and the disk's marker.
    fn expect_flash_then_disk(&mut self) -> Timing {
        let flashing = format!("bty: {}: flashing {}", self.mac, self.name);
        self.expect(&flashing, 120);
        let script = self.vm().elapsed();
        self.expect("Linux version", 120);
        self.expect("bty: flash complete", 300 + 2 * slack());
        let flashed = self.vm().elapsed();
        self.expect(&self.marker.clone(), 300);
        let disk = self.vm().elapsed();
        Timing {
            script,
            flashed,
            disk,
        }
    }

    /// One flash through the signed chain (`Firmware::UefiPxe` or
    /// `UefiSecureBoot`, DHCP [`BootRule::Documented`]): the firmware's
    /// PXE loads shim, shim fetches GRUB, GRUB bty-web's per-MAC config,
    /// the netboot kernel (with `secure`, its EFI stub says Secure Boot is
    /// on) and the agent flashes; after its reboot, shim and GRUB again,
    /// whose per-MAC config is now the local boot: the disk's ESP prints
    /// the marker. Times are counted from `from` (power-on: zero).
    fn expect_shim_flash_then_disk(&mut self, secure: bool, from: Duration) -> ShimTiming {
        let at = |f: &mut Flash, needle: &str, secs: u64| {
            f.expect(needle, secs);
            f.vm().elapsed().saturating_sub(from)
        };
        // OVMF giving up on its PXE option (no shim on the TFTP server,
        // or a refused one) ends this boot: fail now, not at the timeout.
        self.expect_unless(
            "Fetching Netboot Image",
            &["failed to load Boot", "failed to start Boot"],
            180,
        );
        let shim = self.vm().elapsed().saturating_sub(from);
        let grub = at(self, "Welcome to GRUB!", 120);
        let kernel = if secure {
            at(self, "EFI stub: UEFI Secure Boot is enabled", 180)
        } else {
            at(self, "Linux version", 180)
        };
        let agent = at(self, "bty-netboot: starting agent", 180);
        let flashed = at(self, "bty: flash complete", 300 + 2 * slack());
        // The local boot goes through the network's shim and GRUB again
        // (the per-MAC config chainloads the disk), not around them.
        at(self, "Fetching Netboot Image", 240);
        let marker = self.marker.clone();
        let disk = at(self, &marker, 180);
        ShimTiming {
            secure,
            image_bytes: self.image.len(),
            shim,
            grub,
            kernel,
            agent,
            flashed,
            disk,
        }
    }

    /// Stop dnsmasq and start it again with `rule` (same lease file and
    /// log), as an operator changing the DHCP setup.
    fn restart_dhcp(&mut self, rule: &BootRule) {
        self.dhcp.stop();
        self.dhcp = Dnsmasq::start(&self.stack.ns, self.stack.dir.path(), rule)
            .unwrap_or_else(|e| panic!("restarting dnsmasq: {e:#}\n{}", self.stack.report()));
    }

    /// bty-tftp's log lines of completed transfers of `file`.
    fn tftp_sent(&self, file: &str) -> usize {
        let log = self.stack.service_log("bty-tftp").expect("bty-tftp's log");
        let name = format!("file={file} ");
        log.lines()
            .filter(|l| l.contains("tftp transfer") && !l.contains("transfer failed"))
            .filter(|l| l.contains(&name))
            .count()
    }

    /// What GRUB read through bty-tftp's relay (`grub/`, logged with a
    /// leading `/`): bty-web's per-MAC config at every one of `boots`
    /// network boots, and the netboot kernel once per flash (`flashes`):
    /// the local boots load no kernel.
    fn check_grub_relay(&self, boots: usize, flashes: usize) {
        let config = format!(
            "/{}",
            bty_proto::relay::mac_config(&self.mac.parse().expect("MAC"))
        );
        let kernel = format!(
            "/grub/boot/{}/{}",
            self.mac.replace(':', "-"),
            bty_e2e::media::KERNEL
        );
        let (c, k) = (self.tftp_sent(&config), self.tftp_sent(&kernel));
        if c < boots || k != flashes {
            self.fail(&format!(
                "bty-tftp relayed {config} {c} times (expected at least {boots}) and {kernel} \
                 {k} times (expected {flashes})"
            ));
        }
    }

    /// The sum of every series of a `/metrics` counter (all labels).
    fn metric_sum(&self, name: &str) -> u64 {
        let text = self.stack.get_text("/metrics").expect("GET /metrics");
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// A counter from bty-web's `/metrics`, 0 when absent.
    fn metric(&self, name: &str) -> u64 {
        let text = self.stack.get_text("/metrics").expect("GET /metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    }

    fn cycles(&self) -> Vec<Value> {
        self.stack
            .api_get(&format!("/api/machines/{}/cycles", self.mac))
            .expect("cycles")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        self.stack
            .events(Some(&self.mac))
            .expect("events")
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .collect()
    }

    /// Every cycle is done, ok, with the image's digest read back from disk
    /// and progress that reached the whole image.
    fn check_cycles(&self, want: usize) {
        let cycles = self.cycles();
        if cycles.len() != want {
            self.fail(&format!(
                "expected {want} cycles, got {}: {cycles:#?}",
                cycles.len()
            ));
        }
        for c in &cycles {
            // The agent's last progress report is the "finishing" phase
            // (committing the held-back first MiB, bytes_done 0 of 1 MiB),
            // so the byte count is not the image size here; that progress
            // arrived at all (its time recorded on the cycle) is.
            let ok = c["state"] == "done"
                && c["ok"] == true
                && c["disk_sha256"] == self.sha().as_str()
                && c["image_sha256"] == self.sha().as_str()
                && c["progress_at"].is_string();
            if !ok {
                self.fail(&format!(
                    "cycle not done with the image's digest and progress: {c:#}"
                ));
            }
        }
        let done = self.events("flash.done");
        if done.len() != want {
            self.fail(&format!(
                "expected {want} flash.done events, got {}: {done:#?}",
                done.len()
            ));
        }
    }

    /// Poll the current cycle until `pred` holds; panic after `secs`.
    fn wait_cycle(&self, what: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(c) = self.cycles().into_iter().find(|c| pred(c)) {
                return c;
            }
            if Instant::now() >= until {
                self.fail(&format!(
                    "no cycle {what} within {secs} s: {:#?}",
                    self.cycles()
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The disk holds the image, the decoy is untouched.
    fn check_disks(&mut self) {
        if let Some(vm) = self.vm.as_mut() {
            vm.kill();
        }
        let disk = std::fs::read(&self.disk).expect("reading the disk");
        if disk[..self.image.len()] != self.image[..] {
            let first = disk
                .iter()
                .zip(&self.image)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            self.fail(&format!("the disk differs from the image at byte {first}"));
        }
        let decoy = std::fs::read(&self.decoy).expect("reading the decoy");
        if decoy.iter().any(|b| *b != 0) {
            self.fail("the decoy disk (serial DECOY) was written");
        }
    }
}

/// Seconds since qemu started (power-on) at the milestones of one flash.
struct Timing {
    /// The flash script reached iPXE.
    script: Duration,
    /// The agent printed "flash complete" (verified, about to reboot).
    flashed: Duration,
    /// The flashed disk printed its marker.
    disk: Duration,
}

impl Timing {
    /// One line for logs and bench/vm-flash.sh (which greps it).
    fn line(&self, image_bytes: usize) -> String {
        format!(
            "bty-e2e timing: image {} MiB, accel tcg (KVM stalls on this host, see vm.rs): \
             power-on -> flash script {:.1} s -> flashed {:.1} s -> booted from disk {:.1} s",
            image_bytes >> 20,
            self.script.as_secs_f64(),
            self.flashed.as_secs_f64(),
            self.disk.as_secs_f64()
        )
    }
}

/// Seconds at the milestones of one flash through shim and GRUB (from
/// power-on, or from the start of the cycle in a flash-always run).
struct ShimTiming {
    secure: bool,
    image_bytes: usize,
    /// shim runs and fetches GRUB (`Fetching Netboot Image`).
    shim: Duration,
    /// GRUB starts (`Welcome to GRUB!`).
    grub: Duration,
    /// The netboot kernel's EFI stub (Secure Boot) or `Linux version`.
    kernel: Duration,
    /// The netboot init starts the agent.
    agent: Duration,
    /// The agent printed "flash complete".
    flashed: Duration,
    /// The flashed disk's marker, through shim and GRUB again.
    disk: Duration,
}

impl ShimTiming {
    /// One line for logs (and the docs' figures).
    /// `start`: what the times count from (`power-on`, `reboot`).
    fn line(&self, start: &str) -> String {
        format!(
            "bty-e2e timing: shim+GRUB, Secure Boot {}, image {} MiB, accel tcg: {start} -> \
             shim {:.1} s -> GRUB {:.1} s -> kernel {:.1} s -> agent {:.1} s -> flashed {:.1} s \
             -> booted from disk {:.1} s",
            if self.secure { "on" } else { "off" },
            self.image_bytes >> 20,
            self.shim.as_secs_f64(),
            self.grub.as_secs_f64(),
            self.kernel.as_secs_f64(),
            self.agent.as_secs_f64(),
            self.flashed.as_secs_f64(),
            self.disk.as_secs_f64()
        )
    }
}

/// The README's path on a BIOS machine, from power-on to its flashed
/// disk: flash-once, the reboot, the disk's marker, and with `again` the
/// disk again on the next boot (flash-once stays on disk; bty-web's
/// policy, the same in both stacks, so one test pays the extra boot).
/// Prints the power-on -> flashed -> booted-from-disk seconds
/// (bench/vm-flash.sh greps them).
///
/// Checks what every flash test checks (one cycle done with the disk's
/// sha256, withcache pulled the origin once, the disk holds the image, the
/// decoy is untouched), and that the one boot file worked: the firmware's
/// iPXE loaded `undionly.kpxe` over TFTP, that iPXE's own request for it
/// got bty-tftp's chain script (its log says `second_stage=true`), bty-web
/// served `/pxe-bootstrap.ipxe` on every boot, and DHCP never handed out
/// anything but `undionly.kpxe`.
fn readme_flash_once_then_disk(f: &mut Flash, again: bool) {
    f.boot();
    let t = f.expect_flash_then_disk();
    println!("{}", t.line(f.image.len()));
    if again {
        // The disk's boot sector resets the VM: the next PXE contact is
        // the local boot again (flash-once stays on disk).
        f.expect(&f.marker.clone(), 120);
    }
    let host = f.stack.ns.host_ip();
    let serial = f.vm().serial().replace('\n', "");
    let chain =
        format!("bty-tftp: iPXE is running, chaining to http://{host}:8080/pxe-bootstrap.ipxe");
    if !serial.contains(&format!("tftp://{host}/undionly.kpxe")) || !serial.contains(&chain) {
        f.fail(
            "the console does not show undionly.kpxe over TFTP answered by bty-tftp's chain script",
        );
    }
    // Stop the machine before counting, so no boot is half-way through.
    f.vm().kill();
    f.check_cycles(1);
    // bty-web's counters: one flash script, then local boots, each boot
    // through /pxe-bootstrap.ipxe (the TFTP chain script's target).
    let flash = f.metric("bty_pxe_offers_total{kind=\"flash\"}");
    let local = f.metric("bty_pxe_offers_total{kind=\"local\"}");
    let bootstraps = f.metric("bty_pxe_bootstraps_total");
    let boots = if again { 2 } else { 1 };
    if flash != 1 || local < boots || bootstraps < flash + local {
        f.fail(&format!(
            "expected one flash script, at least {boots} local boot(s) and a bootstrap for \
             each; got {flash}, {local} and {bootstraps} bootstraps"
        ));
    }
    let tftp = f.stack.service_log("bty-tftp").expect("bty-tftp's log");
    let chained = tftp
        .lines()
        .filter(|l| l.contains("file=undionly.kpxe") && l.contains("second_stage=true"))
        .count();
    if chained < 2 {
        f.fail(&format!(
            "bty-tftp logged {chained} second-stage answers for undionly.kpxe, expected one per boot:\n{tftp}"
        ));
    }
    // DHCP handed out the one TFTP boot file and nothing else (no URL for
    // iPXE: dnsmasq has no user-class rule): every boot file dnsmasq
    // logged sending is undionly.kpxe.
    let dhcp = std::fs::read_to_string(f.stack.dir.path().join("dnsmasq.log")).unwrap_or_default();
    let files: Vec<&str> = dhcp
        .lines()
        .filter(|l| l.contains("option: 67 bootfile-name") || l.contains("bootfile name:"))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    if files.is_empty() || files.iter().any(|f| *f != "undionly.kpxe") {
        f.fail(&format!(
            "dnsmasq handed out {files:?}, expected undionly.kpxe alone"
        ));
    }
    // withcache pulled the image from the origin exactly once.
    let pulls = f
        .origin
        .requests()
        .iter()
        .filter(|(m, _, _)| m == "GET")
        .count();
    if pulls != 1 {
        f.fail(&format!(
            "the origin served {pulls} GETs; withcache should pull once"
        ));
    }
    let m = f
        .stack
        .api_get(&format!("/api/machines/{}", f.mac))
        .expect("machine");
    let disks = m["inventory"]["disks"].to_string();
    if !disks.contains(SERIAL) {
        f.fail(&format!("inventory does not list the {SERIAL} disk: {m:#}"));
    }
    f.check_firmware("bios", None);
    f.check_disks();
}

/// The README's `bty-lab serve` (as root, `--tftp-port 69`; `--bind` the
/// test LAN's address), no `--netboot`: serve brings the netboot media
/// itself. See [`readme_flash_once_then_disk`].
#[test]
fn readme_serve_bios_one_bootfile_flashes_and_boots() {
    let test = "readme_serve_bios_one_bootfile_flashes_and_boots";
    let Some(_gate) = bty_e2e::gate(test) else {
        return;
    };
    let Some(mut f) = Flash::setup(Setup::readme("readme-serve", "52:54:00:e2:e6:01")) else {
        return;
    };
    readme_flash_once_then_disk(&mut f, true);
}

/// The README's `bty-lab deploy DEST --engine docker` (`--host-addr` the
/// test LAN's address on its bridge in the root namespace, `-y`), with no
/// `--images`, `--netboot`, `--registry` or `--no-tftp`: the images are
/// built from the README's binary (no registry answers here) and carry the
/// netboot media, bty-tftp runs on the host's udp/69 with its loop
/// breaker. The deploy is purged with its images (the default
/// `ghcr.io/bty-rs/*:VERSION` tags, used by no other test) when the test
/// ends, also on failure. Gated like bty-lab's engine tests:
/// `BTY_ENGINE_TESTS` must name docker. See [`readme_flash_once_then_disk`].
#[test]
fn readme_deploy_bios_one_bootfile_flashes_and_boots() {
    let test = "readme_deploy_bios_one_bootfile_flashes_and_boots";
    let Some(_gate) = bty_e2e::gate(test) else {
        return;
    };
    if !bty_e2e::engine_wanted("docker", test) {
        return;
    }
    let mut su = Setup::readme("readme-deploy", "52:54:00:e2:e6:08");
    su.engine = Some("docker");
    let Some(mut f) = Flash::setup(su) else {
        return;
    };
    readme_flash_once_then_disk(&mut f, false);
}

/// BIOS, flash-always: flash, disk, flash, disk, flash, disk, each flash a
/// new cycle with its own `done`. On the documented DHCP setup (the one
/// the Secure Boot and UEFI tests use): a BIOS client gets `undionly.kpxe`
/// from it, and bty-tftp's loop breaker chains iPXE to bty-web.
#[test]
fn bios_flash_always_three_cycles() {
    let Some(_gate) = bty_e2e::gate("bios_flash_always_three_cycles") else {
        return;
    };
    let mut su = Setup::new(
        "bios-always",
        "52:54:00:e2:e6:02",
        "bty-flash-always",
        Firmware::Bios,
    );
    su.rule = Some(BootRule::Documented);
    let Some(mut f) = Flash::setup(su) else {
        return;
    };
    f.boot();
    for _ in 0..3 {
        f.expect_flash_then_disk();
    }
    f.check_cycles(3);
    f.check_disks();
    let offered = f.dhcp.offered();
    if offered.is_empty() || offered.iter().any(|o| o != "undionly.kpxe") {
        f.fail(&format!(
            "dnsmasq offered {offered:?}, expected undionly.kpxe alone"
        ));
    }
}

/// The tools the UEFI images are built with are there (mtools, dosfstools,
/// and for `secure`, sfdisk and Debian's signed shim and GRUB); if not,
/// skip (false), or panic under `BTY_REQUIRE_TOOLS=1`.
fn image_tools(test: &str, secure: bool) -> bool {
    let mut tools = vec![
        ("mkfs.fat", "dosfstools"),
        ("mmd", "mtools"),
        ("mcopy", "mtools"),
    ];
    if secure {
        tools.push(("sfdisk", "fdisk"));
    }
    let missing = tools
        .iter()
        .find(|(t, _)| !bty_e2e::on_path(t))
        .map(|(t, p)| format!("{t} (package {p})"))
        .or_else(|| {
            let files = [
                (bty_e2e::disk::SIGNED_SHIM, "shim-signed"),
                (bty_e2e::disk::SIGNED_GRUB, "grub-efi-amd64-signed"),
                (bty_e2e::vm::OVMF_CODE_SECBOOT, "ovmf"),
                (bty_e2e::vm::OVMF_VARS_MS, "ovmf"),
            ];
            files
                .iter()
                .filter(|_| secure)
                .find(|(f, _)| !std::path::Path::new(f).exists())
                .map(|(f, p)| format!("{f} (package {p})"))
        });
    let Some(missing) = missing else {
        return true;
    };
    if std::env::var("BTY_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{test}: BTY_REQUIRE_TOOLS=1 but {missing} is missing");
    }
    eprintln!("skipping: {missing} not installed ({test})");
    false
}

/// UEFI with Secure Boot off, flash-once, one VM, the documented DHCP
/// setup: OVMF's PXE loads `shimx64.efi` from bty-tftp, shim GRUB, GRUB
/// bty-web's per-MAC config (over bty-tftp's relay): the netboot kernel,
/// the agent flashes → reboot → shim and GRUB again, whose per-MAC config
/// is the local boot: it chainloads the flashed disk's ESP
/// (`\EFI\BOOT\BOOTX64.EFI`, an unsigned EFI app built by the test, fine
/// with Secure Boot off), which prints the marker. So the one DHCP setup
/// serves machines with Secure Boot off as well.
#[test]
fn uefi_flash_once_then_the_esp_boots() {
    let test = "uefi_flash_once_then_the_esp_boots";
    let Some(_gate) = bty_e2e::gate(test) else {
        return;
    };
    if !image_tools(test, false) {
        return;
    }
    let Some(mut f) = Flash::setup(Setup::new(
        "uefi-once",
        "52:54:00:e2:e6:03",
        "bty-flash-once",
        Firmware::UefiPxe,
    )) else {
        return;
    };
    f.boot();
    f.expect(">>Start PXE over IPv4", 120);
    let t = f.expect_shim_flash_then_disk(false, Duration::ZERO);
    println!("{}", t.line("power-on"));
    f.vm().kill();
    if f.vm().serial().contains("UEFI Secure Boot is enabled") {
        f.fail("the kernel says Secure Boot is on, with OVMF_VARS_4M.fd");
    }
    f.check_cycles(1);
    // The firmware was offered the signed shim over TFTP, and nothing else.
    let offered = f.dhcp.offered();
    if offered.is_empty() || offered.iter().any(|o| o != "shimx64.efi") {
        f.fail(&format!(
            "dnsmasq offered {offered:?}, expected shimx64.efi alone"
        ));
    }
    // OVMF_VARS_4M.fd: Secure Boot off, and the agent saw it so.
    f.check_firmware("uefi", Some("disabled"));
    f.check_grub_relay(2, 1);
    f.check_disks();
}

/// UEFI HTTP Boot (Secure Boot off) on the same documented DHCP setup, one
/// VM: OVMF HTTP-boots `snponly.efi` from bty-web → that iPXE does DHCP
/// again as a UEFI PXE client, and the setup's user-class rule sends it to
/// `/pxe-bootstrap.ipxe` (not to shim) → the netboot kernel and initrd over
/// HTTP → flash → reboot → HTTP Boot again, the per-MAC script's `exit 1`
/// hands back to OVMF, which boots the flashed disk's ESP. Its timing line
/// is the iPXE side of `bench/uefi-netboot.sh` (the signed chain's is
/// `uefi_flash_once_then_the_esp_boots`).
#[test]
fn uefi_http_boot_flash_once_then_the_esp_boots() {
    let test = "uefi_http_boot_flash_once_then_the_esp_boots";
    let Some(_gate) = bty_e2e::gate(test) else {
        return;
    };
    if !image_tools(test, false) {
        return;
    }
    let mut su = Setup::new(
        "uefi-http",
        "52:54:00:e2:e6:0b",
        "bty-flash-once",
        Firmware::UefiHttp,
    );
    su.rule = Some(BootRule::Documented);
    let Some(mut f) = Flash::setup(su) else {
        return;
    };
    f.boot();
    let at = |f: &mut Flash, needle: &str, secs: u64| {
        f.expect(needle, secs);
        f.vm().elapsed().as_secs_f64()
    };
    at(&mut f, "Start HTTP Boot over IPv4", 180);
    let ipxe = at(&mut f, "iPXE initialising devices", 120);
    let flashing = format!("bty: {}: flashing {}", f.mac, f.name);
    f.expect(&flashing, 180);
    let kernel = at(&mut f, "Linux version", 120);
    let agent = at(&mut f, "bty-netboot: starting agent", 180);
    let flashed = at(&mut f, "bty: flash complete", 300 + 2 * slack());
    // After the agent's reboot: HTTP Boot, iPXE, the local boot's `exit 1`
    // and OVMF's next boot option, the flashed disk.
    f.expect("flashed once already", 300);
    let marker = f.marker.clone();
    let disk = at(&mut f, &marker, 180);
    println!(
        "bty-e2e timing: iPXE over HTTP Boot, Secure Boot off, image {} MiB, accel tcg: \
         power-on -> iPXE {ipxe:.1} s -> kernel {kernel:.1} s -> agent {agent:.1} s -> \
         flashed {flashed:.1} s -> booted from disk {disk:.1} s",
        f.image.len() >> 20
    );
    f.vm().kill();
    f.check_cycles(1);
    let offered = f.dhcp.offered();
    let http = "http://192.0.2.1:8080/boot/snponly.efi";
    let script = "http://192.0.2.1:8080/pxe-bootstrap.ipxe";
    if !offered.iter().any(|o| o == http) || !offered.iter().any(|o| o == script) {
        f.fail(&format!(
            "dnsmasq offered {offered:?}: expected {http} (HTTP Boot), then {script} (iPXE)"
        ));
    }
    if offered.iter().any(|o| o == "shimx64.efi") {
        f.fail(&format!("iPXE was handed the shim: {offered:?}"));
    }
    f.check_firmware("uefi", Some("disabled"));
    f.check_disks();
}

/// The control of the Secure Boot test, on its machine before its first
/// flash: dnsmasq hands out unsigned `ipxe.efi` over TFTP, the firmware
/// downloads it (bty-tftp logs the transfer) and refuses to start it
/// (OVMF's `Access Denied` / `Security Violation` for the PXE boot
/// option), so bty-web never hears from the machine. Proves the machine
/// enforces Secure Boot: what boots next got there by signatures.
fn secure_boot_refuses_ipxe(f: &mut Flash) {
    f.boot();
    f.expect(">>Start PXE over IPv4", 120);
    f.expect("failed to load Boot", 180);
    let text = f.vm().serial().replace('\n', "");
    let refused = text.split("BdsDxe: ").any(|l| {
        l.starts_with("failed to load Boot")
            && l.contains("PXEv4")
            && (l.contains("Access Denied") || l.contains("Security Violation"))
    });
    if !refused {
        f.fail("OVMF did not refuse the PXE boot option with Access Denied / Security Violation");
    }
    if f.tftp_sent("ipxe.efi") == 0 {
        f.fail("bty-tftp never sent ipxe.efi: the firmware refused nothing it had");
    }
    if text.contains("iPXE") {
        f.fail("iPXE ran under Secure Boot");
    }
    if f.tftp_sent("/grub/grub.cfg") != 0 {
        f.fail("GRUB read its config: something signed ran");
    }
    f.vm().kill();
    let contact = f.metric_sum("bty_pxe_offers_total") + f.metric("bty_pxe_bootstraps_total");
    if contact != 0 || !f.cycles().is_empty() {
        f.fail(&format!(
            "bty-web heard from the machine ({contact} offers/bootstraps, cycles {:?})",
            f.cycles()
        ));
    }
    // Keep the control's console next to the next boot's (which starts a
    // new file).
    let dir = f.stack.dir.path();
    let serial = dir.join(format!("serial-{}.log", f.mac.replace(':', "")));
    let _ = std::fs::copy(&serial, dir.join("serial-control.log"));
}

/// The user's path with Secure Boot on: the README's `bty-lab serve` (as
/// [`readme_serve_bios_one_bootfile_flashes_and_boots`]), the documented
/// DHCP setup, a machine with OVMF's Secure Boot build and Microsoft's
/// keys, flash-once, an image whose ESP holds only signed loaders.
///
/// First the control on the same machine ([`secure_boot_refuses_ipxe`]),
/// then dnsmasq is restarted with the documented setup and the same
/// machine (same variables) boots: the firmware's PXE loads the
/// Microsoft-signed shim from bty-tftp, shim fetches Debian's signed
/// network GRUB (`Fetching Netboot Image`), GRUB reads bty-web's configs
/// through bty-tftp's relay, the signed kernel's EFI stub says `UEFI
/// Secure Boot is enabled`, the agent flashes and reports Secure Boot on;
/// after its reboot the per-MAC config is the local boot, which
/// chainloads the flashed disk's shim, its GRUB prints the marker.
#[test]
fn readme_serve_secure_boot_flashes_through_the_signed_chain() {
    let test = "readme_serve_secure_boot_flashes_through_the_signed_chain";
    let Some(_gate) = bty_e2e::gate(test) else {
        return;
    };
    if !image_tools(test, true) {
        return;
    }
    let mut su = Setup::readme("readme-sb", "52:54:00:e2:e6:09");
    su.firmware = Firmware::UefiSecureBoot;
    su.rule = Some(BootRule::TftpFile("ipxe.efi".into()));
    let Some(mut f) = Flash::setup(su) else {
        return;
    };
    secure_boot_refuses_ipxe(&mut f);
    f.restart_dhcp(&BootRule::Documented);
    f.boot();
    f.expect(">>Start PXE over IPv4", 120);
    let t = f.expect_shim_flash_then_disk(true, Duration::ZERO);
    println!("{}", t.line("power-on"));
    f.vm().kill();
    f.check_cycles(1);
    f.check_firmware("uefi", Some("enabled"));
    // After the control's ipxe.efi, dnsmasq offered the signed shim only.
    let offered = f.dhcp.offered();
    let after: Vec<&String> = offered.iter().skip_while(|o| *o == "ipxe.efi").collect();
    if after.is_empty() || after.iter().any(|o| *o != "shimx64.efi") {
        f.fail(&format!(
            "dnsmasq offered {offered:?}: expected shimx64.efi after the control's ipxe.efi"
        ));
    }
    for file in ["shimx64.efi", "grubx64.efi"] {
        if f.tftp_sent(file) == 0 {
            f.fail(&format!("bty-tftp never completed a transfer of {file}"));
        }
    }
    f.check_grub_relay(2, 1);
    f.check_disks();
}

/// Secure Boot on, flash-always, one VM, the signed chain every time:
/// flash, disk, flash, disk, flash, disk (the disk's GRUB reboots after
/// its marker), three `done` cycles with the image's digest, Secure Boot
/// on in the inventory.
#[test]
fn uefi_secure_boot_flash_always_three_cycles() {
    let test = "uefi_secure_boot_flash_always_three_cycles";
    let Some(_gate) = bty_e2e::gate(test) else {
        return;
    };
    if !image_tools(test, true) {
        return;
    }
    let Some(mut f) = Flash::setup(Setup::new(
        "sb-always",
        "52:54:00:e2:e6:0a",
        "bty-flash-always",
        Firmware::UefiSecureBoot,
    )) else {
        return;
    };
    f.boot();
    let mut from = Duration::ZERO;
    for cycle in 1..=3 {
        let t = f.expect_shim_flash_then_disk(true, from);
        let start = if cycle == 1 { "power-on" } else { "reboot" };
        println!("cycle {cycle}: {}", t.line(start));
        from += t.disk;
    }
    f.vm().kill();
    f.check_cycles(3);
    f.check_firmware("uefi", Some("enabled"));
    f.check_grub_relay(6, 3);
    f.check_disks();
}

/// The plan names a disk serial the VM does not have: the agent refuses,
/// reports the reason, and writes nothing.
#[test]
fn bios_wrong_serial_is_refused_and_nothing_is_written() {
    let Some(_gate) = bty_e2e::gate("bios_wrong_serial_is_refused_and_nothing_is_written") else {
        return;
    };
    let mut su = Setup::new(
        "bios-noserial",
        "52:54:00:e2:e6:04",
        "bty-flash-once",
        Firmware::Bios,
    );
    su.target_serial = "NO-SUCH-DISK";
    let Some(mut f) = Flash::setup(su) else {
        return;
    };
    f.boot();
    let c = f.wait_cycle("failed", 300, |c| c["state"] == "failed");
    let reason = c["reason"].as_str().unwrap_or_default().to_string();
    if !reason.contains("NO-SUCH-DISK") {
        f.fail(&format!("the failure does not name the serial: {c:#}"));
    }
    if !f.vm().serial().contains("NO-SUCH-DISK") {
        f.fail("the refusal is not on the serial console");
    }
    if f.events("flash.failed").is_empty() {
        f.fail("no flash.failed event");
    }
    f.vm().kill();
    for d in [&f.disk, &f.decoy] {
        if std::fs::read(d).expect("disk").iter().any(|b| *b != 0) {
            f.fail(&format!("{} was written", d.display()));
        }
    }
}

/// bty-web's catalog claims a wrong sha256 (a static catalog entry; the
/// bytes come through withcache, which holds the same source with its
/// true digest): the agent writes, finds the download's digest differs, and
/// leaves the first MiB zeroed so the disk cannot boot a half-checked
/// image; bty-web records the failure and never offers the local boot.
#[test]
fn bios_digest_mismatch_leaves_the_disk_unbootable() {
    let Some(_gate) = bty_e2e::gate("bios_digest_mismatch_leaves_the_disk_unbootable") else {
        return;
    };
    let mut su = Setup::new(
        "bios-badsum",
        "52:54:00:e2:e6:05",
        "bty-flash-once",
        Firmware::Bios,
    );
    su.claimed_sha256 = Some(sha256_hex(b"not the image"));
    let Some(mut f) = Flash::setup(su) else {
        return;
    };
    f.boot();
    let c = f.wait_cycle("failed", 300, |c| c["state"] == "failed");
    let reason = c["reason"].as_str().unwrap_or_default().to_string();
    if !reason.contains("sha256") {
        f.fail(&format!("the failure does not say sha256: {c:#}"));
    }
    f.vm().kill();
    let disk = std::fs::read(&f.disk).expect("disk");
    if disk[..1 << 20].iter().any(|b| *b != 0) {
        f.fail("the first MiB of the disk is not zeroed after a failed flash");
    }
    if f.vm().serial().contains(&f.marker) {
        f.fail("the disk booted after a failed flash");
    }
}

/// The origin drops its connection after 2 MiB while the agent streams
/// the image through withcache (no prefetch: the agent's request starts
/// withcache's download, streamed as it lands): the download is resumed
/// with a Range request to the origin and the flash completes with the
/// right bytes. (With `bty-lab serve` every image goes through withcache,
/// so the agent's own resume is proven by the server-restart test.)
#[test]
fn bios_origin_drop_mid_stream_is_resumed() {
    let Some(_gate) = bty_e2e::gate("bios_origin_drop_mid_stream_is_resumed") else {
        return;
    };
    let mut su = Setup::new(
        "bios-resume",
        "52:54:00:e2:e6:06",
        "bty-flash-once",
        Firmware::Bios,
    );
    su.prefetch = false;
    su.origin = Origin::new().with_cuts(2 << 20, 1);
    let Some(mut f) = Flash::setup(su) else {
        return;
    };
    f.boot();
    f.expect_flash_then_disk();
    f.check_cycles(1);
    let gets: Vec<_> = f
        .origin
        .requests()
        .into_iter()
        .filter(|(m, _, _)| m == "GET")
        .collect();
    if !gets
        .iter()
        .any(|(_, _, r)| r.starts_with("bytes=") && r != "bytes=0-")
    {
        f.fail(&format!(
            "the origin saw no resuming Range request: {gets:?}"
        ));
    }
    f.check_disks();
}

/// `bty-lab serve` is killed (SIGKILL: bty-web, withcache and bty-tftp
/// gone, with every connection) while the agent streams the image, and
/// restarted on the same state 5 s later: the agent resumes, the flash
/// completes and `done` is recorded once. The image comes from a slow
/// origin through withcache without prefetch, so the agent is mid-stream
/// when the process dies and withcache must start over after the restart.
#[test]
fn bios_bty_web_killed_mid_flash_flash_completes() {
    let Some(_gate) = bty_e2e::gate("bios_bty_web_killed_mid_flash_flash_completes") else {
        return;
    };
    let mut su = Setup::new(
        "bios-restart",
        "52:54:00:e2:e6:07",
        "bty-flash-once",
        Firmware::Bios,
    );
    su.prefetch = false;
    // ~6 s for the 6 MiB image.
    su.origin = Origin::new().with_rate(1 << 20);
    let Some(mut f) = Flash::setup(su) else {
        return;
    };
    f.boot();
    f.wait_cycle("flashing", 300, |c| c["state"] == "flashing");
    f.stack.kill_web();
    std::thread::sleep(Duration::from_secs(5));
    f.stack.start_web().expect("restarting bty-lab serve");
    f.expect(&f.marker.clone(), 300);
    if !f.vm().serial().contains("download interrupted") {
        f.fail("the agent's download was never interrupted: the kill came too late");
    }
    f.check_cycles(1);
    f.check_disks();
}
