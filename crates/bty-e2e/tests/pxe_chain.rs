//! Issue 4 end to end: real firmware and real iPXE reach bty-web's
//! per-MAC script through each supported first stage, without a loop.
//!
//! Every test boots a VM (TCG) on a private LAN in a network namespace with
//! dnsmasq as the operator's DHCP server, bty-web on 192.0.2.1:8080 and
//! bty-tftp on 192.0.2.1:69, and asserts on the serial console, bty-web's
//! request log and its API.

use std::time::Duration;

use bty_e2e::dnsmasq::{BootRule, Dnsmasq};
use bty_e2e::stack::{Logged, Stack, StackOptions};
use bty_e2e::vm::{Firmware, Vm, VmConfig};

/// Everything a chain test holds; fields drop in order (VM, dnsmasq, stack).
struct Run {
    vm: Vm,
    dhcp: Dnsmasq,
    stack: Stack,
    mac: String,
}

impl Run {
    fn start(rule: BootRule, firmware: Firmware, mac: &str) -> Run {
        let stack = Stack::start(StackOptions::default()).expect("starting the stack");
        let dhcp = Dnsmasq::start(&stack.ns, stack.dir.path(), &rule).expect("starting dnsmasq");
        let mut vm = Vm::start(&stack.ns, stack.dir.path(), &VmConfig::new(firmware, mac))
            .expect("starting qemu");
        vm.add_diag("dnsmasq log", &stack.dir.path().join("dnsmasq.log"));
        vm.add_diag("services log", &stack.services_log());
        Run {
            vm,
            dhcp,
            stack,
            mac: mac.to_string(),
        }
    }

    fn hyphen(&self) -> String {
        self.mac.replace(':', "-")
    }

    /// Panic with everything useful.
    fn fail(&self, what: &str) -> ! {
        panic!("{}{}", self.vm.report(what), self.stack.report());
    }

    /// The per-MAC script was fetched and run: bty-web auto-registered the
    /// machine for inventory and iPXE echoed the script's line.
    fn expect_per_mac_script(&mut self, timeout: Duration) {
        let line = format!("bty: {}: starting the netboot env", self.mac);
        if let Err(e) = self.vm.wait_for(&line, timeout) {
            panic!("{e}{}", self.stack.report());
        }
        // The script goes on to fetch the netboot kernel (absent here).
        let kernel = "/boot/bty-netboot-x86_64.vmlinuz";
        if let Err(e) = self.vm.wait_for(kernel, Duration::from_secs(20)) {
            panic!("{e}{}", self.stack.report());
        }
        // iPXE prints the URL before bty-web has answered (and logged) it.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        let mut k = self.stack.requests.matching("GET", kernel);
        while k.is_empty() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
            k = self.stack.requests.matching("GET", kernel);
        }
        let want = format!("mac={}", self.mac.replace(':', "%3A"));
        if k.len() != 1 || !k[0].uri.contains(&want) {
            self.fail("expected one kernel request carrying ?mac=");
        }
        let scripts: Vec<Logged> = self
            .stack
            .requests
            .matching("GET", &format!("/pxe/{}", self.hyphen()));
        if scripts.len() != 1 || scripts[0].status != 200 {
            self.fail(&format!("expected one 200 GET /pxe/{}", self.hyphen()));
        }
        if !scripts[0].user_agent.starts_with("iPXE/") {
            self.fail("the per-MAC script was not fetched by iPXE");
        }
        let m = self
            .stack
            .api_get(&format!("/api/machines/{}", self.mac))
            .unwrap_or_else(|e| self.fail(&format!("machine not registered: {e:#}")));
        assert_eq!(m["mac"], self.mac.as_str(), "{m}");
        assert_eq!(
            m["boot_mode"], "bty-inventory",
            "auto-registered machine: {m}"
        );
        let ip = m["last_seen_ip"].as_str().unwrap_or_default();
        assert!(
            ip.starts_with("192.0.2."),
            "last_seen_ip {ip:?} is not the VM's lease: {m}"
        );
    }

    fn bootstrap_fetches(&self) -> Vec<Logged> {
        self.stack.requests.matching("GET", "/pxe-bootstrap.ipxe")
    }
}

/// SeaBIOS → qemu's iPXE ROM → DHCP (every client gets `undionly.kpxe`,
/// no user-class rule) → `undionly.kpxe` over TFTP from bty-tftp → that
/// iPXE DHCPs again and asks bty-tftp for `undionly.kpxe` again → bty-tftp's
/// second-stage rule answers the chain script → bty-web's bootstrap →
/// per-MAC script.
#[test]
fn bios_tftp_undionly_second_stage_breaks_the_loop() {
    let Some(_gate) = bty_e2e::gate("bios_tftp_undionly_second_stage_breaks_the_loop") else {
        return;
    };
    let mut run = Run::start(BootRule::TftpOnly, Firmware::Bios, "52:54:00:e2:e4:01");
    // qemu's ROM loads the binary over TFTP; the binary is iPXE with UNDI.
    run.vm.expect("undionly.kpxe", Duration::from_secs(60));
    run.vm.expect("UNDI", Duration::from_secs(60));
    // undionly's own TFTP request got the script instead of the binary.
    run.vm.expect(
        "bty-tftp: iPXE is running, chaining to",
        Duration::from_secs(60),
    );
    run.expect_per_mac_script(Duration::from_secs(60));
    let boot = run.bootstrap_fetches();
    if boot.len() != 1 || boot[0].status != 200 || !boot[0].user_agent.starts_with("iPXE/") {
        run.fail("expected exactly one GET /pxe-bootstrap.ipxe by iPXE");
    }
    // Nothing came over HTTP for the binary: the first stage was TFTP.
    if !run
        .stack
        .requests
        .matching("GET", "/boot/undionly.kpxe")
        .is_empty()
    {
        run.fail("undionly.kpxe was fetched over HTTP; expected TFTP only");
    }
    // Two DHCP exchanges: the ROM's and undionly's.
    let acks = run.dhcp.log().matches("DHCPACK(br0)").count();
    if acks < 2 {
        run.fail(&format!(
            "expected two DHCP exchanges, dnsmasq acked {acks}"
        ));
    }
    // Exactly one binary transfer and one script: the loop ran once.
    let serial = run.vm.serial();
    let loads = serial.matches("tftp://192.0.2.1/undionly.kpxe").count();
    if loads != 2 {
        run.fail(&format!(
            "expected two TFTP loads of undionly.kpxe (binary, then script), serial shows {loads}"
        ));
    }
}

/// The documented dnsmasq snippet with the iPXE user-class rule: qemu's
/// ROM is iPXE (user class `iPXE`), so it goes straight to bty-web's
/// bootstrap; nothing is loaded over TFTP.
#[test]
fn bios_user_class_rule_goes_straight_to_bootstrap() {
    let Some(_gate) = bty_e2e::gate("bios_user_class_rule_goes_straight_to_bootstrap") else {
        return;
    };
    let mut run = Run::start(
        BootRule::TftpWithUserClass,
        Firmware::Bios,
        "52:54:00:e2:e4:02",
    );
    run.vm.expect(
        "http://192.0.2.1:8080/pxe-bootstrap.ipxe",
        Duration::from_secs(60),
    );
    run.expect_per_mac_script(Duration::from_secs(60));
    assert_eq!(run.bootstrap_fetches().len(), 1, "{}", run.stack.report());
    let serial = run.vm.serial();
    if serial.contains("undionly.kpxe") {
        run.fail("an iPXE client was sent to TFTP despite the user-class rule");
    }
    if !run.dhcp.log().contains("user class: iPXE") {
        run.fail("dnsmasq did not see the iPXE user class");
    }
}

/// qemu's iPXE ROM is given an HTTP bootfile
/// (`http://HOST:8080/boot/undionly.kpxe`): bty-web sees `User-Agent:
/// iPXE/…` asking for an iPXE binary and answers the chain script, so the
/// binary is never sent and there is no loop.
#[test]
fn bios_http_bootfile_user_agent_rule_answers_the_script() {
    let Some(_gate) = bty_e2e::gate("bios_http_bootfile_user_agent_rule_answers_the_script") else {
        return;
    };
    let mut run = Run::start(
        BootRule::HttpBootfile("undionly.kpxe".into()),
        Firmware::Bios,
        "52:54:00:e2:e4:03",
    );
    run.expect_per_mac_script(Duration::from_secs(90));
    let bin = run.stack.requests.matching("GET", "/boot/undionly.kpxe");
    if bin.len() != 1
        || bin[0].status != 200
        || !bin[0].user_agent.starts_with("iPXE/")
        || !bin[0].content_type.starts_with("text/plain")
    {
        run.fail("expected one GET /boot/undionly.kpxe by iPXE answered with a text/plain script");
    }
    assert_eq!(run.bootstrap_fetches().len(), 1, "{}", run.stack.report());
}

/// OVMF's own UEFI HTTP Boot (no iPXE ROM, PXE off) under THE documented
/// DHCP setup ([`BootRule::Documented`], examples/dhcp/dnsmasq-full.conf):
/// option 93 = 16 gets option 60 `HTTPClient` and `snponly.efi` from
/// bty-web; the firmware downloads it once, and that iPXE must reach
/// bty-web's bootstrap and per-MAC script without a loop.
///
/// Found while writing it (issue 14): without the setup's user-class
/// lines, that iPXE DHCPs as arch 7 and is handed `shimx64.efi` over TFTP;
/// iPXE runs shim, shim's fetch of `grubx64.efi` through iPXE fails
/// (`Malformed binary after Attribute Certificate Table`) and the machine
/// falls back to the firmware. The test fails at once if iPXE is handed
/// the shim again.
#[test]
fn uefi_http_boot_documented_setup_snponly_efi_then_chain() {
    let Some(_gate) = bty_e2e::gate("uefi_http_boot_documented_setup_snponly_efi_then_chain")
    else {
        return;
    };
    let mut run = Run::start(
        BootRule::Documented,
        Firmware::UefiHttp,
        "52:54:00:e2:e4:04",
    );
    run.vm
        .expect("Start HTTP Boot over IPv4", Duration::from_secs(90));
    run.vm
        .expect("iPXE initialising devices", Duration::from_secs(90));
    let line = format!("bty: {}: starting the netboot env", run.mac);
    if let Err(e) = run.vm.wait_for_unless(
        "pxe-bootstrap.ipxe",
        &["Filename: shimx64.efi"],
        Duration::from_secs(90),
    ) {
        panic!(
            "the iPXE that UEFI HTTP Boot loaded did not go to bty-web's bootstrap \
             (the documented DHCP setup hands it the shim): {e}{}",
            run.stack.report()
        );
    }
    run.expect_per_mac_script(Duration::from_secs(90));
    let gets = run.stack.requests.matching("GET", "/boot/snponly.efi");
    let binaries: Vec<&Logged> = gets
        .iter()
        .filter(|l| l.content_type == "application/octet-stream")
        .collect();
    if binaries.len() != 1
        || binaries[0].status != 200
        || binaries[0].user_agent.starts_with("iPXE/")
    {
        run.fail("expected the firmware (not iPXE) to download snponly.efi exactly once");
    }
    assert_eq!(run.bootstrap_fetches().len(), 1, "{}", run.stack.report());
    assert!(run.vm.serial().contains(&line), "{}", run.stack.report());
    // The firmware asked as an HTTP Boot client and got option 60 back.
    let log = run.dhcp.log();
    if !log.contains("vendor class: HTTPClient") || !log.contains("60 vendor-class") {
        run.fail("dnsmasq did not see/answer the HTTPClient vendor class");
    }
}
