//! dnsmasq as the operator's DHCP server, inside the test namespace.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::netns::Netns;
use crate::process::{tail, Guard};

/// How dnsmasq answers the boot file (option 67 and friends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootRule {
    /// Every client gets `undionly.kpxe` over TFTP from the host, iPXE
    /// included: the loop must be broken by bty-tftp's second-stage rule.
    TftpOnly,
    /// The documented snippet: `undionly.kpxe` over TFTP, except for
    /// clients whose DHCP user class is `iPXE`, which get the bootstrap URL.
    TftpWithUserClass,
    /// Every client gets `http://HOST:8080/boot/<file>` (qemu's iPXE ROM
    /// then fetches the binary over HTTP; bty-web's User-Agent rule must
    /// break the loop).
    HttpBootfile(String),
    /// UEFI HTTP Boot: clients with vendor class `HTTPClient` get option
    /// 60 `HTTPClient` echoed (required by the UEFI spec) and, like every
    /// other client (iPXE included, with no user-class rule),
    /// `http://HOST:8080/boot/<file>`: `snponly.efi` as the DHCP guidance
    /// says (the build that can `exit` back to OVMF for the local boot),
    /// or the `ipxe.efi` fallback.
    UefiHttp(String),
    /// THE one DHCP setup the docs give (examples/dhcp/dnsmasq-full.conf,
    /// by client architecture, option 93): BIOS (0) gets `undionly.kpxe`
    /// over TFTP, UEFI x86-64 PXE (7, 9) the Microsoft-signed
    /// `shimx64.efi` over TFTP (Secure Boot on or off; `snponly.efi` for
    /// machines the operator tags `uefi-ipxe` by MAC, none here), UEFI
    /// HTTP Boot (16) option 60 `HTTPClient` and
    /// `http://HOST:8080/boot/snponly.efi`; iPXE on UEFI (user class
    /// `iPXE`, e.g. the `snponly.efi` HTTP Boot loaded) the bootstrap URL.
    Documented,
    /// Every client gets `<file>` over TFTP from the host, whatever it is
    /// (the Secure Boot control hands `ipxe.efi` to a Secure Boot machine).
    TftpFile(String),
}

impl BootRule {
    fn lines(&self, host: std::net::Ipv4Addr) -> String {
        match self {
            BootRule::TftpOnly => format!("dhcp-boot=undionly.kpxe,,{host}\n"),
            BootRule::TftpWithUserClass => format!(
                "dhcp-userclass=set:ipxe,iPXE\n\
                 dhcp-boot=tag:!ipxe,undionly.kpxe,,{host}\n\
                 dhcp-boot=tag:ipxe,http://{host}:8080/pxe-bootstrap.ipxe\n"
            ),
            BootRule::HttpBootfile(file) => {
                format!("dhcp-boot=http://{host}:8080/boot/{file},,{host}\n")
            }
            // The lines of examples/dhcp/dnsmasq-full.conf with its
            // address: keep them the same as that file's.
            BootRule::Documented => format!(
                "dhcp-match=set:bios,option:client-arch,0\n\
                 dhcp-match=set:efi64,option:client-arch,7\n\
                 dhcp-match=set:efi64,option:client-arch,9\n\
                 dhcp-match=set:efi64http,option:client-arch,16\n\
                 dhcp-option=66,{host}\n\
                 dhcp-boot=tag:bios,undionly.kpxe,,{host}\n\
                 dhcp-boot=tag:efi64,tag:!ipxe,tag:!uefi-ipxe,shimx64.efi,,{host}\n\
                 dhcp-boot=tag:efi64,tag:!ipxe,tag:uefi-ipxe,snponly.efi,,{host}\n\
                 dhcp-option-force=tag:efi64http,60,HTTPClient\n\
                 dhcp-boot=tag:efi64http,http://{host}:8080/boot/snponly.efi\n\
                 dhcp-userclass=set:ipxe,iPXE\n\
                 dhcp-boot=tag:efi64,tag:ipxe,http://{host}:8080/pxe-bootstrap.ipxe\n"
            ),
            BootRule::TftpFile(file) => format!("dhcp-boot={file},,{host}\n"),
            BootRule::UefiHttp(file) => format!(
                "dhcp-vendorclass=set:http,HTTPClient\n\
                 dhcp-option-force=tag:http,60,HTTPClient\n\
                 dhcp-boot=http://{host}:8080/boot/{file},,{host}\n"
            ),
        }
    }
}

/// A running dnsmasq; stopped on drop (or by [`Dnsmasq::stop`]: a test
/// that changes the rule stops it and starts another on the same files,
/// whose log goes on after the first's).
pub struct Dnsmasq {
    guard: Guard,
    log: PathBuf,
}

impl Dnsmasq {
    /// Start dnsmasq in `ns` with `rule`, files under `dir`. Returns once it
    /// has bound its DHCP socket.
    pub fn start(ns: &Netns, dir: &Path, rule: &BootRule) -> anyhow::Result<Dnsmasq> {
        let conf = dir.join("dnsmasq.conf");
        let log = dir.join("dnsmasq.log");
        let leases = dir.join("dnsmasq.leases");
        let [a, b, c, _] = ns.host_ip().octets();
        let net = format!("{a}.{b}.{c}");
        let text = format!(
            "# bty-e2e: the operator's LAN (DHCP only, no DNS)\n\
             port=0\n\
             interface={}\n\
             bind-interfaces\n\
             # No router: the VM talks to the LAN only.\n\
             dhcp-option=option:router\n\
             user=root\n\
             dhcp-range={net}.100,{net}.150,255.255.255.0,1h\n\
             dhcp-leasefile={}\n\
             log-dhcp\n\
             log-facility={}\n\
             {}",
            ns.bridge(),
            leases.display(),
            log.display(),
            rule.lines(ns.host_ip())
        );
        std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        // A restart appends to the same log: wait for this start's line.
        let started = |log: &Path| {
            std::fs::read_to_string(log)
                .map(|l| l.matches("DHCP, IP range").count())
                .unwrap_or(0)
        };
        let before = started(&log);
        let child = ns
            .command("dnsmasq")
            .arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", conf.display()))
            .arg("--pid-file=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting dnsmasq")?;
        let mut d = Dnsmasq {
            guard: Guard::new("dnsmasq", child),
            log,
        };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = d.guard.exited() {
                bail!("dnsmasq exited at start ({status}); log:\n{}", d.log_tail());
            }
            if started(&d.log) > before {
                return Ok(d);
            }
            if Instant::now() >= until {
                bail!("dnsmasq did not start in 10 s; log:\n{}", d.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop dnsmasq now (SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        self.guard.stop();
    }

    /// The boot files dnsmasq's log says it offered (option 67, or the
    /// BOOTP file field), in order.
    pub fn offered(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("option: 67 bootfile-name") || l.contains("bootfile name:"))
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect()
    }

    /// The DHCP log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The end of the DHCP log, for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 3000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`BootRule::Documented`] is examples/dhcp/dnsmasq-full.conf's
    /// setup, line for line (its address made the test LAN's): when the
    /// docs change, the e2e tests must follow.
    #[test]
    fn documented_rule_is_the_example_file() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/dhcp/dnsmasq-full.conf"
        );
        let example = std::fs::read_to_string(path).expect("reading the example");
        let want: Vec<String> = example
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("dhcp-range="))
            .map(|l| l.replace("192.0.2.10", "192.0.2.1"))
            .collect();
        let got = BootRule::Documented.lines("192.0.2.1".parse().expect("address"));
        let got: Vec<&str> = got.lines().collect();
        assert_eq!(got, want, "BootRule::Documented differs from {path}");
    }
}
