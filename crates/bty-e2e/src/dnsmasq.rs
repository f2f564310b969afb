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
            BootRule::UefiHttp(file) => format!(
                "dhcp-vendorclass=set:http,HTTPClient\n\
                 dhcp-option-force=tag:http,60,HTTPClient\n\
                 dhcp-boot=http://{host}:8080/boot/{file},,{host}\n"
            ),
        }
    }
}

/// A running dnsmasq; stopped on drop.
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
            if std::fs::read_to_string(&d.log)
                .map(|l| l.contains("DHCP, IP range"))
                .unwrap_or(false)
            {
                return Ok(d);
            }
            if Instant::now() >= until {
                bail!("dnsmasq did not start in 10 s; log:\n{}", d.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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
