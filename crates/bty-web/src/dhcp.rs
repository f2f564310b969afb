//! DHCP guidance: the exact options an operator's DHCP server must hand out
//! for this deploy, and ready-to-paste configuration snippets.
//!
//! bty does not run DHCP; the lab's server does. This module turns "bty-web
//! is at HOST:PORT" into the values of options 60, 66 and 67 per client
//! architecture (option 93) and into snippets for dnsmasq (full and
//! proxy-DHCP), ISC dhcpd, Kea and router UIs.
//!
//! The setup it leads with is one boot file per firmware: stock iPXE does
//! DHCP again after it loads and fetches the same boot file, and bty
//! answers that second fetch itself with a script that chains to bty-web
//! (bty-tftp's second-stage rules, on by default in `bty-lab deploy` and
//! `serve`). One user-class rule remains, for UEFI only ([`IpxeRule`]):
//! iPXE started by UEFI HTTP Boot (or given by MAC) does DHCP again as a
//! UEFI PXE client, which is handed the signed chain's `shimx64.efi`; the
//! rule sends iPXE (user class `iPXE`) on UEFI to bty-web's bootstrap
//! script instead. Setups without HTTP Boot and per-MAC iPXE can leave it
//! out (the router-UI values do).
//!
//! UEFI PXE clients (arch 7 and 9) get the signed chain, `shimx64.efi`
//! (Microsoft-signed shim, then Debian-signed GRUB; `bty_proto::relay`):
//! it boots with Secure Boot on and off alike, and DHCP cannot tell the
//! two apart (the firmware's DHCP request is the same either way). So one
//! setup serves BIOS and UEFI with Secure Boot on or off. UEFI HTTP Boot
//! (arch 16) keeps iPXE, `snponly.efi` over HTTP: Debian's signed GRUB
//! has no HTTP, so HTTP Boot works with Secure Boot off only.
//!
//! Where iPXE runs under UEFI it is `snponly.efi`, not `ipxe.efi`: the
//! local boot of a flashed UEFI machine is iPXE's `exit 1` back to the
//! firmware, and Debian 12's `ipxe.efi` (its own NIC drivers) never
//! returns to the firmware, while `snponly.efi` (the firmware's SNP
//! driver) does. NICs whose firmware offers no SNP need `ipxe.efi`, at
//! the cost of that local boot (docs/dhcp.md).
//!
//! The same snippets are committed under `examples/dhcp/` for the
//! placeholder host 192.0.2.10; a test keeps them equal to this output.
//! Only `serde` and `std` are used so the module stays self-contained.

use std::net::Ipv4Addr;

use serde::Serialize;

/// Placeholder used in the snippets when the given host is unusable.
const PLACEHOLDER_HOST: &str = "BTY-HOST";

/// Everything an operator needs to point DHCP at this bty deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DhcpGuidance {
    /// bty host as written into the snippets (bty-web and bty-tftp).
    pub host: String,
    /// bty-web's HTTP port.
    pub http_port: u16,
    /// Problems with the input the operator should fix (empty when fine).
    pub warnings: Vec<String>,
    /// Option 66 / `next-server` (siaddr): where bty-tftp answers.
    pub tftp_server: String,
    /// Boot file for clients already running iPXE (user class `iPXE`).
    pub ipxe_script_url: String,
    /// How the stock-iPXE loop is broken without DHCP user-class rules.
    pub loop_breaker: &'static str,
    /// Rows per client architecture.
    pub architectures: Vec<ArchRule>,
    /// The rule for UEFI clients already running iPXE (HTTP Boot, or iPXE
    /// given by MAC): without it their second DHCP gets `shimx64.efi`.
    pub ipxe_rule: IpxeRule,
    /// Configuration snippets, one per DHCP server kind.
    pub snippets: Vec<Snippet>,
}

/// What to answer one kind of firmware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchRule {
    /// Human name, e.g. "BIOS (legacy PXE)".
    pub firmware: &'static str,
    /// Option 93 client-architecture codes (RFC 4578, IANA registry).
    pub option_93: Vec<u16>,
    /// Option 60 vendor class: `PXEClient` or `HTTPClient` (the reply must
    /// echo `HTTPClient` for UEFI HTTP Boot).
    pub option_60: &'static str,
    /// `tftp` or `http`.
    pub transport: &'static str,
    /// Option 66 (TFTP server) for TFTP clients.
    pub option_66: Option<String>,
    /// Option 67 boot file name (a URL for HTTP Boot).
    pub option_67: String,
    /// What to hand out instead when `option_67` does not work on a NIC
    /// or a lab prefers another chain, and the cost (None: no
    /// alternative).
    pub fallback: Option<String>,
    /// Which Secure Boot setting this boot file works with, and why.
    pub secure_boot: &'static str,
}

/// The iPXE user-class rule for UEFI clients (option 93 = 7 or 9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpxeRule {
    /// Option 77 user class sent by iPXE.
    pub user_class: &'static str,
    /// Option 175 is also present in every iPXE request.
    pub option_175_present: bool,
    /// Boot file to answer: bty-web's bootstrap script.
    pub option_67: String,
}

/// One ready-to-paste configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snippet {
    /// Stable id, e.g. `dnsmasq-full`.
    pub id: &'static str,
    /// Title for the settings page.
    pub title: &'static str,
    /// File name under `examples/dhcp/`.
    pub file: &'static str,
    /// The text to paste.
    pub text: String,
}

/// Option 93 codes (IANA "Processor Architecture Types").
const ARCH_BIOS: u16 = 0;
const ARCH_EFI_X64_BC: u16 = 7;
const ARCH_EFI_X64: u16 = 9;
const ARCH_EFI_X64_HTTP: u16 = 16;

/// iPXE for UEFI x86-64 clients: the build that drives the NIC through the
/// firmware's SNP and can `exit` back to the firmware for the local boot.
/// Handed out for HTTP Boot, and by MAC where a lab prefers iPXE.
const UEFI_IPXE: &str = "snponly.efi";

/// The signed chain's first stage, for every UEFI PXE client.
const UEFI_BOOTFILE: &str = bty_proto::relay::SHIM;

/// Why one boot file per firmware is enough.
const LOOP_BREAKER: &str = "Stock iPXE does DHCP again after it loads and fetches the same boot file. bty answers that second fetch itself with a script that chains to bty-web (bty-tftp's second-stage rules, on by default in bty-lab deploy and serve), so BIOS machines need one boot file and no user-class rule. On UEFI, iPXE runs only after HTTP Boot (or where you give it by MAC), and its second DHCP looks like a UEFI PXE client's, which gets shimx64.efi: one user-class rule sends iPXE on UEFI to bty-web instead (in the snippets; leave it out if no machine uses HTTP Boot or per-MAC iPXE).";

/// Said where `shimx64.efi` is handed out.
const SHIM_FALLBACK: &str = "snponly.efi by MAC, for machines with Secure Boot off in labs that prefer iPXE on UEFI (docs/dhcp.md)";

/// Said wherever `snponly.efi` is handed out.
const EFI_FALLBACK: &str = "ipxe.efi (iPXE's own NIC drivers) for NICs whose firmware offers no SNP driver; Debian 12's ipxe.efi does not return to the firmware on `exit`, so such machines cannot boot their disk through bty's local boot";

/// Guidance for bty-web at `host` (name or address; a `:port` suffix is
/// ignored) on `http_port`. An unusable host yields placeholder snippets
/// and a warning instead of an error, so the settings page always renders.
pub fn guidance(host: &str, http_port: u16) -> DhcpGuidance {
    let mut warnings = Vec::new();
    let host = match clean_host(host) {
        Ok(h) => h,
        Err(problem) => {
            warnings.push(format!(
                "{problem}; the snippets use the placeholder {PLACEHOLDER_HOST}: replace it with the IPv4 address of the bty host"
            ));
            PLACEHOLDER_HOST.to_string()
        }
    };
    if host.parse::<Ipv4Addr>().is_err() && host != PLACEHOLDER_HOST {
        warnings.push(format!(
            "{host} is not an IPv4 address: PXE firmware resolves no names, so options 66/67 and next-server should be the IPv4 address of the bty host"
        ));
    }
    let v = Values::new(&host, http_port);
    let architectures = vec![
        ArchRule {
            firmware: "BIOS (legacy PXE)",
            option_93: vec![ARCH_BIOS],
            option_60: "PXEClient",
            transport: "tftp",
            option_66: Some(host.clone()),
            option_67: "undionly.kpxe".into(),
            fallback: None,
            secure_boot: "BIOS has none",
        },
        ArchRule {
            firmware: "UEFI x86-64 (PXE over TFTP)",
            option_93: vec![ARCH_EFI_X64_BC, ARCH_EFI_X64],
            option_60: "PXEClient",
            transport: "tftp",
            option_66: Some(host.clone()),
            option_67: UEFI_BOOTFILE.into(),
            fallback: Some(SHIM_FALLBACK.into()),
            secure_boot: "on or off: shim and GRUB are signed, and DHCP cannot tell the two apart",
        },
        ArchRule {
            firmware: "UEFI x86-64 HTTP Boot",
            option_93: vec![ARCH_EFI_X64_HTTP],
            option_60: "HTTPClient",
            transport: "http",
            option_66: None,
            option_67: v.http_boot.clone(),
            fallback: Some(EFI_FALLBACK.into()),
            secure_boot: "off only: iPXE is unsigned and the signed GRUB has no HTTP; with Secure Boot on, use the machine's UEFI PXEv4 boot option",
        },
    ];
    let snippets = vec![
        Snippet {
            id: "dnsmasq-full",
            title: "dnsmasq as the LAN's DHCP server",
            file: "dnsmasq-full.conf",
            text: dnsmasq_full(&v),
        },
        Snippet {
            id: "dnsmasq-proxy",
            title: "dnsmasq proxy-DHCP next to an existing DHCP server",
            file: "dnsmasq-proxy.conf",
            text: dnsmasq_proxy(&v),
        },
        Snippet {
            id: "isc-dhcpd",
            title: "ISC dhcpd (dhcpd.conf)",
            file: "isc-dhcpd.conf",
            text: isc(&v),
        },
        Snippet {
            id: "kea",
            title: "Kea DHCPv4 (kea-dhcp4.conf)",
            file: "kea-dhcp4.json",
            text: kea(&v),
        },
        Snippet {
            id: "router-ui",
            title: "Router UIs (OpenWrt, UniFi, pfSense/OPNsense)",
            file: "router-ui.txt",
            text: router_ui(&v),
        },
    ];
    DhcpGuidance {
        tftp_server: host.clone(),
        ipxe_script_url: v.script.clone(),
        loop_breaker: LOOP_BREAKER,
        ipxe_rule: IpxeRule {
            user_class: "iPXE",
            option_175_present: true,
            option_67: v.script.clone(),
        },
        host,
        http_port,
        warnings,
        architectures,
        snippets,
    }
}

/// Strip a `:port` and check what is left with the rules bty uses for
/// host names in iPXE scripts (`bty_proto::text::validate_host`).
fn clean_host(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    bty_proto::text::validate_host(raw).map_err(|e| format!("host {raw:?} refused: {e}"))?;
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // [v6]:port → v6; DHCPv4 cannot carry it anyway (warned later).
        rest.split(']').next().unwrap_or_default()
    } else if raw.matches(':').count() == 1 {
        raw.split(':').next().unwrap_or_default()
    } else {
        raw
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    Ok(host.to_string())
}

/// The values every snippet uses.
struct Values {
    host: String,
    script: String,
    http_boot: String,
    /// Network, first and last pool address for the full-DHCP examples.
    net: Ipv4Addr,
    pool: (Ipv4Addr, Ipv4Addr),
}

impl Values {
    fn new(host: &str, port: u16) -> Values {
        let base = format!("http://{host}:{port}");
        // Example pool in the host's /24 that avoids the host itself; the
        // snippets say to adjust it. Names fall back to 192.0.2.0/24.
        let ip = host
            .parse::<Ipv4Addr>()
            .unwrap_or(Ipv4Addr::new(192, 0, 2, 10));
        let [a, b, c, d] = ip.octets();
        let (lo, hi) = if (100..200).contains(&d) {
            (20, 99)
        } else {
            (100, 199)
        };
        Values {
            host: host.to_string(),
            script: format!("{base}/pxe-bootstrap.ipxe"),
            http_boot: format!("{base}/boot/{UEFI_IPXE}"),
            net: Ipv4Addr::new(a, b, c, 0),
            pool: (Ipv4Addr::new(a, b, c, lo), Ipv4Addr::new(a, b, c, hi)),
        }
    }
}

fn dnsmasq_full(v: &Values) -> String {
    let Values {
        host,
        script,
        http_boot,
        pool: (lo, hi),
        ..
    } = v;
    format!(
        "# bty: dnsmasq as the DHCP server of the lab LAN.
# bty-web: {script}  bty-tftp: {host} (udp/69)
# Adjust the address pool to your LAN.
dhcp-range={lo},{hi},12h

# One boot file per firmware. BIOS iPXE fetches its boot file a second
# time and bty-tftp answers that with a chain script to bty-web.
dhcp-match=set:bios,option:client-arch,{ARCH_BIOS}
dhcp-match=set:efi64,option:client-arch,{ARCH_EFI_X64_BC}
dhcp-match=set:efi64,option:client-arch,{ARCH_EFI_X64}
dhcp-match=set:efi64http,option:client-arch,{ARCH_EFI_X64_HTTP}

# Option 66: the TFTP server for firmware that reads it instead of siaddr.
dhcp-option=66,{host}

# Firmware PXE from bty-tftp (file, server name, next-server). BIOS loads
# iPXE. UEFI loads the signed chain (shim, then GRUB, which reads its
# config and the netboot kernel from bty-tftp): it boots with Secure Boot
# on and off, and DHCP cannot tell the two apart.
dhcp-boot=tag:bios,undionly.kpxe,,{host}
dhcp-boot=tag:efi64,tag:!ipxe,tag:!uefi-ipxe,{UEFI_BOOTFILE},,{host}
# Labs that prefer iPXE on UEFI machines with Secure Boot off: tag them by
# MAC; they get snponly.efi, which can exit back to the firmware to boot
# the disk (ipxe.efi only for NICs without a UEFI SNP driver).
#   dhcp-host=52:54:00:12:34:56,set:uefi-ipxe
dhcp-boot=tag:efi64,tag:!ipxe,tag:uefi-ipxe,{UEFI_IPXE},,{host}
# UEFI HTTP Boot (Secure Boot off only: iPXE is unsigned, and the signed
# GRUB has no HTTP). The reply must carry option 60 \"HTTPClient\".
dhcp-option-force=tag:efi64http,60,HTTPClient
dhcp-boot=tag:efi64http,{http_boot}
# iPXE on UEFI (after HTTP Boot, or by MAC) does DHCP again as a UEFI PXE
# client: send it (user class iPXE) to bty-web, not to shim.
dhcp-userclass=set:ipxe,iPXE
dhcp-boot=tag:efi64,tag:ipxe,{script}
"
    )
}

fn dnsmasq_proxy(v: &Values) -> String {
    let Values {
        host, script, net, ..
    } = v;
    format!(
        "# bty: dnsmasq as proxy-DHCP. The existing DHCP server keeps handing out
# addresses; dnsmasq adds only the boot information.
# bty-web: {script}  bty-tftp: {host} (udp/69)
# The network below is the LAN's; adjust it.
dhcp-range={net},proxy
# No DNS from this dnsmasq.
port=0

# One boot file per firmware, no user-class rule: iPXE fetches its boot
# file a second time and bty-tftp answers that with a chain script.
# Boot files from bty-tftp. Names with a suffix are sent as is.
# BIOS loads iPXE; UEFI loads the signed chain (shim, then GRUB), which
# boots with Secure Boot on and off. (Proxy-DHCP has no per-MAC boot file:
# to give UEFI machines snponly.efi instead, use dnsmasq-full.conf's
# uefi-ipxe tag on the DHCP server.)
pxe-service=x86PC,\"bty (BIOS)\",undionly.kpxe,{host}
pxe-service=X86-64_EFI,\"bty (UEFI)\",{UEFI_BOOTFILE},{host}
pxe-service=BC_EFI,\"bty (UEFI)\",{UEFI_BOOTFILE},{host}
# Boot at once, without a menu prompt.
pxe-prompt=\"bty\",0
"
    )
}

fn isc(v: &Values) -> String {
    let Values {
        host,
        script,
        http_boot,
        net,
        pool: (lo, hi),
    } = v;
    let (http, bc, efi, bios) = (
        hex16(ARCH_EFI_X64_HTTP),
        hex16(ARCH_EFI_X64_BC),
        hex16(ARCH_EFI_X64),
        hex16(ARCH_BIOS),
    );
    format!(
        "# bty: ISC dhcpd (dhcpd.conf).
# bty-web: {script}  bty-tftp: {host} (udp/69)
option client-arch code 93 = unsigned integer 16;

# Adjust the subnet and pool to your LAN.
subnet {net} netmask 255.255.255.0 {{
  range {lo} {hi};
  next-server {host};
  option tftp-server-name \"{host}\";

  # One boot file per firmware. BIOS iPXE fetches its boot file a second
  # time and bty-tftp answers that with a chain script to bty-web.
  if option client-arch = {http} {{
    # UEFI HTTP Boot (iPXE: Secure Boot off only).
    option vendor-class-identifier \"HTTPClient\";
    filename \"{http_boot}\";
  }} elsif option client-arch = {bc} or option client-arch = {efi} {{
    # The signed chain (shim, then GRUB): Secure Boot on or off. To give
    # a UEFI machine with Secure Boot off iPXE instead, a host block:
    #   host m1 {{ hardware ethernet 52:54:00:12:34:56; filename \"{UEFI_IPXE}\"; }}
    # (snponly.efi can exit back to the firmware to boot the disk; ipxe.efi
    # only for NICs without a UEFI SNP driver.)
    if exists user-class and option user-class = \"iPXE\" {{
      # iPXE on UEFI (after HTTP Boot, or by MAC) asks again: bty-web.
      filename \"{script}\";
    }} else {{
      filename \"{UEFI_BOOTFILE}\";
    }}
  }} elsif option client-arch = {bios} {{
    filename \"undionly.kpxe\";
  }}
}}
"
    )
}

/// ISC writes 16-bit option values as colon-separated hex bytes.
fn hex16(code: u16) -> String {
    let [hi, lo] = code.to_be_bytes();
    format!("{hi:02x}:{lo:02x}")
}

fn kea(v: &Values) -> String {
    let Values {
        host,
        script,
        http_boot,
        net,
        pool: (lo, hi),
    } = v;
    // One boot file per firmware (bty-tftp answers BIOS iPXE's second
    // fetch with a chain script), and iPXE on UEFI to bty-web: its second
    // DHCP looks like a UEFI PXE client's. Kea takes a class's boot file
    // in class order, and the shim class leaves iPXE out anyway.
    format!(
        r#"{{
  "Dhcp4": {{
    "interfaces-config": {{ "interfaces": [ "*" ] }},
    "lease-database": {{ "type": "memfile", "persist": false }},
    "client-classes": [
      {{
        "name": "bty-efi64-http",
        "test": "option[93].hex == 0x{ARCH_EFI_X64_HTTP:04x}",
        "boot-file-name": "{http_boot}",
        "option-data": [ {{ "name": "vendor-class-identifier", "data": "HTTPClient" }} ]
      }},
      {{
        "name": "bty-efi64-ipxe",
        "test": "(option[93].hex == 0x{ARCH_EFI_X64_BC:04x} or option[93].hex == 0x{ARCH_EFI_X64:04x}) and substring(option[77].hex,0,4) == 'iPXE'",
        "boot-file-name": "{script}"
      }},
      {{
        "name": "bty-efi64",
        "test": "(option[93].hex == 0x{ARCH_EFI_X64_BC:04x} or option[93].hex == 0x{ARCH_EFI_X64:04x}) and not (substring(option[77].hex,0,4) == 'iPXE')",
        "next-server": "{host}",
        "boot-file-name": "{UEFI_BOOTFILE}"
      }},
      {{
        "name": "bty-bios",
        "test": "option[93].hex == 0x{ARCH_BIOS:04x}",
        "next-server": "{host}",
        "boot-file-name": "undionly.kpxe"
      }}
    ],
    "subnet4": [
      {{
        "id": 1,
        "subnet": "{net}/24",
        "pools": [ {{ "pool": "{lo} - {hi}" }} ],
        "option-data": [ {{ "name": "tftp-server-name", "data": "{host}" }} ]
      }}
    ]
  }}
}}
"#
    )
}

fn router_ui(v: &Values) -> String {
    let Values {
        host,
        script,
        http_boot,
        ..
    } = v;
    format!(
        "bty: values for router and appliance DHCP pages.
bty-web: {script}  bty-tftp: {host} (udp/69)

One boot file per firmware; no user-class rule is needed (BIOS iPXE fetches
its boot file a second time and bty-tftp answers that with a chain script).

Fields (names differ per UI):
  Next server / TFTP server / boot server (siaddr, option 66): {host}
  Boot file, BIOS (option 93 = 0):                          undionly.kpxe
  Boot file, UEFI x86-64 (option 93 = 7 or 9):              {UEFI_BOOTFILE}
    (shim, then GRUB: signed, boots with Secure Boot on or off)
  Boot file, UEFI HTTP Boot (option 93 = 16):               {http_boot}
    and option 60 (vendor class) in the reply:              HTTPClient
    (iPXE: Secure Boot off only; Secure Boot machines use UEFI PXEv4)
    HTTP Boot also needs the user-class rule below: that iPXE does DHCP
    again as a UEFI PXE client. Without the rule, leave HTTP Boot off.
  (UEFI machines with Secure Boot off may get {UEFI_IPXE} by MAC instead of
  {UEFI_BOOTFILE}; ipxe.efi instead of snponly.efi only for NICs without a
  UEFI SNP driver; such machines then cannot boot their disk through bty.)

OpenWrt: LuCI has one boot file per interface. For BIOS and UEFI on one
LAN, put the dnsmasq-full.conf lines without dhcp-range into
/etc/dnsmasq.conf (OpenWrt's dnsmasq reads it).

UniFi Network: Settings > Networks > (LAN) > DHCP Service Management:
  Network Boot: server {host}, file undionly.kpxe (or {UEFI_BOOTFILE} for UEFI)
  TFTP Server (option 66): {host}

pfSense/OPNsense: Services > DHCP Server > Network Booting:
  Next server {host}; default BIOS file name undionly.kpxe;
  UEFI 64-bit file name {UEFI_BOOTFILE}.

The user-class rule, for UEFI HTTP Boot or iPXE given by MAC (and for any
TFTP server that is not bty-tftp): clients whose user class (option 77) is
\"iPXE\" get the boot file {script}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use bty_testkit::tools;

    const EXAMPLE_HOST: &str = "192.0.2.10";

    fn examples_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dhcp")
    }

    /// `examples/dhcp/*` must equal the generated snippets for 192.0.2.10.
    /// `BTY_BLESS=1` rewrites them.
    #[test]
    fn example_files_match_guidance() {
        let g = guidance(EXAMPLE_HOST, 8080);
        assert!(g.warnings.is_empty(), "{:?}", g.warnings);
        let bless = std::env::var("BTY_BLESS").as_deref() == Ok("1");
        for s in &g.snippets {
            let path = examples_dir().join(s.file);
            if bless {
                std::fs::create_dir_all(examples_dir()).unwrap();
                std::fs::write(&path, &s.text).unwrap();
            }
            let on_disk = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            assert_eq!(
                on_disk,
                s.text,
                "{} drifted from dhcp::guidance; rerun with BTY_BLESS=1",
                path.display()
            );
        }
    }

    #[test]
    fn values_per_architecture() {
        let g = guidance("10.1.2.3", 8080);
        assert_eq!(g.tftp_server, "10.1.2.3");
        assert_eq!(g.ipxe_script_url, "http://10.1.2.3:8080/pxe-bootstrap.ipxe");
        let by_arch = |code: u16| {
            g.architectures
                .iter()
                .find(|a| a.option_93.contains(&code))
                .unwrap()
        };
        assert_eq!(by_arch(0).option_67, "undionly.kpxe");
        assert_eq!(by_arch(0).option_60, "PXEClient");
        // Every UEFI PXE client gets the signed chain: DHCP cannot tell
        // Secure Boot on from off.
        assert_eq!(by_arch(7).option_67, "shimx64.efi");
        assert_eq!(by_arch(9).option_67, "shimx64.efi");
        assert!(by_arch(7).secure_boot.starts_with("on or off"));
        assert!(by_arch(7)
            .fallback
            .as_deref()
            .unwrap()
            .starts_with("snponly.efi by MAC"));
        assert!(by_arch(16).secure_boot.starts_with("off only"));
        assert!(by_arch(16)
            .fallback
            .as_deref()
            .unwrap()
            .starts_with("ipxe.efi"));
        assert!(by_arch(0).fallback.is_none());
        assert_eq!(by_arch(16).option_60, "HTTPClient");
        assert_eq!(
            by_arch(16).option_67,
            "http://10.1.2.3:8080/boot/snponly.efi"
        );
        // No snippet hands out ipxe.efi as a boot file (comments name it
        // as the fallback only).
        for s in &g.snippets {
            for line in s.text.lines().filter(|l| !l.trim_start().starts_with('#')) {
                let fallback_note = line.contains("instead of snponly.efi")
                    || line.contains("cannot boot their disk");
                assert!(
                    !line.contains("ipxe.efi") || fallback_note,
                    "{}: {line}",
                    s.id
                );
            }
        }
        // Each snippet hands UEFI PXE the shim; snponly.efi only as the
        // per-MAC choice and for HTTP Boot.
        for s in &g.snippets {
            assert!(s.text.contains("shimx64.efi"), "{}", s.id);
        }
        let full = &g.snippets[0].text;
        assert!(
            full.contains("dhcp-boot=tag:efi64,tag:!ipxe,tag:!uefi-ipxe,shimx64.efi,,10.1.2.3\n")
        );
        assert!(
            full.contains("dhcp-boot=tag:efi64,tag:!ipxe,tag:uefi-ipxe,snponly.efi,,10.1.2.3\n")
        );
        assert!(full.contains(
            "dhcp-userclass=set:ipxe,iPXE\n\
             dhcp-boot=tag:efi64,tag:ipxe,http://10.1.2.3:8080/pxe-bootstrap.ipxe\n"
        ));
        let proxy = &g.snippets[1].text;
        assert!(proxy.contains("pxe-service=X86-64_EFI,\"bty (UEFI)\",shimx64.efi,10.1.2.3\n"));
        assert!(proxy.contains("pxe-service=BC_EFI,\"bty (UEFI)\",shimx64.efi,10.1.2.3\n"));
        assert_eq!(g.ipxe_rule.user_class, "iPXE");
        // The user class is matched only for UEFI (BIOS iPXE is the loop
        // breaker's): in dnsmasq, ISC and Kea, beside the UEFI rules; each
        // snippet names the host.
        for s in &g.snippets {
            assert!(s.text.contains("10.1.2.3"), "{}", s.id);
        }
        let isc = &g.snippets[2].text;
        let efi = isc.find("option client-arch = 00:07").unwrap();
        let bios = isc.find("option client-arch = 00:00").unwrap();
        let uc = isc.find("option user-class = \"iPXE\"").unwrap();
        assert!(efi < uc && uc < bios, "{isc}");
        assert!(g.loop_breaker.contains("bty-tftp"));
        // The pool avoids the host.
        let g = guidance("10.1.2.150", 80);
        let full = &g.snippets[0].text;
        assert!(
            full.contains("dhcp-range=10.1.2.20,10.1.2.99,12h"),
            "{full}"
        );
    }

    #[test]
    fn host_is_validated_and_port_stripped() {
        assert_eq!(guidance("10.0.0.5:8080", 8080).host, "10.0.0.5");
        for bad in ["", "a b", "x\ndhcp-boot=evil", "h\"; filename \"x", "${x}"] {
            let g = guidance(bad, 8080);
            assert_eq!(g.host, PLACEHOLDER_HOST, "{bad:?}");
            assert!(!g.warnings.is_empty());
            for s in &g.snippets {
                assert!(!s.text.contains("evil"));
            }
        }
        let g = guidance("bty.lab.example", 8080);
        assert_eq!(g.host, "bty.lab.example");
        assert!(g.warnings[0].contains("not an IPv4 address"));
    }

    #[test]
    fn serializes_to_json() {
        let g = guidance(EXAMPLE_HOST, 8080);
        let json = serde_json::to_value(&g).unwrap();
        assert_eq!(json["architectures"][2]["option_93"][0], 16);
        assert_eq!(json["snippets"][3]["file"], "kea-dhcp4.json");
        // The Kea snippet itself is valid JSON.
        let kea: serde_json::Value = serde_json::from_str(&g.snippets[3].text).unwrap();
        let classes = &kea["Dhcp4"]["client-classes"];
        assert_eq!(classes[3]["boot-file-name"], "undionly.kpxe");
        assert_eq!(classes[2]["boot-file-name"], "shimx64.efi");
        assert_eq!(
            classes[1]["boot-file-name"],
            "http://192.0.2.10:8080/pxe-bootstrap.ipxe"
        );
        assert!(classes[1]["test"].as_str().unwrap().contains("iPXE"));
    }

    fn check(tool: &str, args: &[&str], file: &str) {
        let path = examples_dir().join(file);
        let out = Command::new(tool).args(args).arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} rejects {}:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn dnsmasq_accepts_the_snippets() {
        if !tools::have("dnsmasq", "dnsmasq-base") {
            return;
        }
        check("dnsmasq", &["--test", "-C"], "dnsmasq-full.conf");
        check("dnsmasq", &["--test", "-C"], "dnsmasq-proxy.conf");
    }

    #[test]
    fn isc_dhcpd_accepts_the_snippet() {
        if !tools::have("dhcpd", "isc-dhcp-server") {
            return;
        }
        check("dhcpd", &["-t", "-cf"], "isc-dhcpd.conf");
    }

    #[test]
    fn kea_accepts_the_snippet() {
        if !tools::have("kea-dhcp4", "kea-dhcp4-server") {
            return;
        }
        check("kea-dhcp4", &["-t"], "kea-dhcp4.json");
    }
}
