//! The one table of services every other part reads (images, containers,
//! units, purge lists, health checks), so nothing can drift apart.

/// Registry prefix of the published images; the only place it is spelled.
pub const DEFAULT_REGISTRY: &str = "ghcr.io/bty-rs";

/// This CLI's version: every image tag it deploys.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Label carrying the absolute deploy directory on every container/network.
pub const LABEL_DEPLOY: &str = "dev.bty.deploy";
/// Label naming the service inside the stack.
pub const LABEL_SERVICE: &str = "dev.bty.service";

/// The uid:gid the web services run as (no user database in a scratch image).
pub const SERVICE_UID: u32 = 65532;

/// Where the bootfiles (and netboot kernel/initrd) sit inside the images.
pub const IMAGE_BOOT_DIR: &str = "/srv/bty/boot";

/// The iPXE bootfiles. The images carry them; bty-tftp's loop breaker
/// (second-stage rules) covers each of them.
pub const IPXE_FILES: &[&str] = &["undionly.kpxe", "snponly.efi", "ipxe.efi"];

/// The Secure Boot chain's bootfiles (shim, then the signed GRUB that shim
/// fetches from the TFTP root; see `docs/secure-boot.md`). Not iPXE, so no
/// loop breaker: GRUB reads its config, not the boot file again.
pub const SIGNED_FILES: &[&str] = &[bty_proto::relay::SHIM, bty_proto::relay::GRUB];

/// Every file a firmware fetches by its DHCP boot file name (or shim by
/// its fixed name): what the media places in the boot dir (the TFTP root
/// of `serve`) and what bty-web's and bty-tftp's images carry.
pub fn bootfiles() -> impl Iterator<Item = &'static str> {
    IPXE_FILES.iter().chain(SIGNED_FILES).copied()
}

/// bty-tftp's loop-breaker setting: `off`, or comma-separated
/// `NAME[=URL]` second-stage rules (see docs/tftp.md).
pub const SECOND_STAGE_ENV: &str = "BTY_TFTP_SECOND_STAGE";

/// The `BTY_TFTP_SECOND_STAGE` value that chains every iPXE bootfile to
/// `bootstrap_url` (bty-web's `/pxe-bootstrap.ipxe`).
pub fn second_stage_spec(bootstrap_url: &str) -> String {
    IPXE_FILES
        .iter()
        .map(|f| format!("{f}={bootstrap_url}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// bty-tftp's relay URL (bty-web as bty-tftp reaches it), for the Secure
/// Boot chain's `grub/` reads (`bty_proto::relay`).
pub const RELAY_ENV: &str = bty_tftp::relay::RELAY_ENV;

/// How a service is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// On the stack's bridge network, one TCP port published.
    Bridge { container_port: u16 },
    /// Host network (TFTP's ephemeral reply ports).
    Host,
}

/// One service of the stack.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    /// Image and unit name (`bty-web`).
    pub name: &'static str,
    /// `bty-lab internal <command>` runs it inside the image.
    pub command: &'static str,
    pub net: Net,
    /// Env keys from envvars that go to this service.
    pub env_prefix: &'static str,
    /// Subdirectory of the data dir mounted at `mount`, if any.
    pub data: Option<(&'static str, &'static str)>,
    /// Runs as [`SERVICE_UID`] (else root: TFTP binds a privileged port).
    pub non_root: bool,
    /// Ships the bootfiles ([`bootfiles`]).
    pub bootfiles: bool,
    /// Has a login managed by `bty-lab passwd`; env key prefix of its secrets.
    pub login: Option<Login>,
}

/// The envvars keys of a service's login.
#[derive(Debug, Clone, Copy)]
pub struct Login {
    pub hash_key: &'static str,
    pub secret_key: &'static str,
    /// A path that needs a login (200 with it, 401 without).
    pub probe_path: &'static str,
}

pub const WEB: Service = Service {
    name: "bty-web",
    command: "web",
    net: Net::Bridge {
        container_port: 8080,
    },
    env_prefix: "BTY_",
    data: Some(("bty", "/var/lib/bty")),
    non_root: true,
    bootfiles: true,
    login: Some(Login {
        hash_key: "BTY_ADMIN_PASSWORD_HASH",
        secret_key: "BTY_SERVER_SESSION_SECRET",
        probe_path: "/api/machines",
    }),
};

pub const CACHE: Service = Service {
    name: "withcache",
    command: "withcache",
    net: Net::Bridge {
        container_port: 3000,
    },
    env_prefix: "WITHCACHE_",
    data: Some(("withcache", "/data")),
    non_root: true,
    bootfiles: false,
    login: Some(Login {
        hash_key: "WITHCACHE_ADMIN_PASSWORD_HASH",
        secret_key: "WITHCACHE_SESSION_SECRET",
        probe_path: "/blobs",
    }),
};

pub const TFTP: Service = Service {
    name: "bty-tftp",
    command: "tftp",
    net: Net::Host,
    env_prefix: "BTY_TFTP_",
    data: None,
    non_root: false,
    bootfiles: true,
    login: None,
};

/// Every service, in start order.
pub const ALL: [Service; 3] = [CACHE, WEB, TFTP];

/// Does env `key` belong to service `svc`? BTY_TFTP_* is tftp's, not web's.
pub fn env_belongs(svc: &Service, key: &str) -> bool {
    if svc.name == WEB.name && key.starts_with(TFTP.env_prefix) {
        return false;
    }
    key.starts_with(svc.env_prefix)
}

/// Full image reference for a service.
pub fn image_ref(registry: &str, svc: &Service, tag: &str) -> String {
    format!("{}/{}:{}", registry.trim_end_matches('/'), svc.name, tag)
}

/// Container name: the project (from the deploy dir) plus the service.
pub fn container_name(project: &str, svc: &Service) -> String {
    format!("{project}-{}", svc.name)
}

/// Version compare for `x.y.z[-pre]` tags; None if either is not numeric.
pub fn compare_versions(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    fn parse(v: &str) -> Option<Vec<u64>> {
        let core = v.trim_start_matches('v').split(['-', '+']).next()?;
        core.split('.').map(|p| p.parse().ok()).collect()
    }
    Some(parse(a)?.cmp(&parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn env_routing_keeps_tftp_keys_out_of_web() {
        assert!(env_belongs(&WEB, "BTY_ADMIN_PASSWORD_HASH"));
        assert!(!env_belongs(&WEB, "BTY_TFTP_LISTEN"));
        assert!(env_belongs(&TFTP, "BTY_TFTP_LISTEN"));
        assert!(!env_belongs(&CACHE, "BTY_ADMIN_PASSWORD_HASH"));
        assert!(env_belongs(&CACHE, "WITHCACHE_SESSION_SECRET"));
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("0.10.0", "0.9.9"), Some(Ordering::Greater));
        assert_eq!(
            compare_versions("1.0.0", "1.0.0-rc1"),
            Some(Ordering::Equal)
        );
        assert_eq!(compare_versions("latest", "1.0.0"), None);
    }
}
