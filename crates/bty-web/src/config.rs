//! `bty.toml` plus `BTY_<SECTION>_<KEY>` environment overrides.
//!
//! Precedence: built-in defaults < the TOML file < environment. Only the keys
//! listed in [`KEYS`] exist; an unknown key in the file is reported as a
//! warning (so a typo is visible) but does not stop the server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

pub use crate::sites::SiteConfig;

/// Every configuration key as `(section, key)`. The environment override of
/// each is `BTY_<SECTION>_<KEY>` in upper case.
pub const KEYS: &[(&str, &str)] = &[
    ("server", "listen"),
    ("server", "state_dir"),
    ("server", "session_secret"),
    ("server", "database"),
    ("server", "database_pool"),
    ("boot", "dir"),
    ("boot", "kernel"),
    ("boot", "initrd"),
    ("boot", "console"),
    ("images", "catalog"),
    ("withcache", "url"),
    ("withcache", "refresh_secs"),
    ("withcache", "token"),
    ("admin", "user"),
    ("admin", "password"),
    ("admin", "password_hash"),
    ("flash", "max_attempts"),
    ("http", "header_timeout_secs"),
    ("http", "idle_timeout_secs"),
    ("http", "max_connections"),
    ("http", "max_connections_per_ip"),
    ("pxe", "legacy_status"),
    ("pxe", "repeat_window_secs"),
    ("pxe", "relay_key"),
    ("discovery", "max_unassigned"),
    ("discovery", "per_ip_per_minute"),
    ("backup", "every"),
    ("backup", "keep"),
    ("backup", "dir"),
];

/// Keys whose value is an integer (the environment override is parsed).
const INT_KEYS: &[(&str, &str)] = &[
    ("server", "database_pool"),
    ("withcache", "refresh_secs"),
    ("flash", "max_attempts"),
    ("http", "header_timeout_secs"),
    ("http", "idle_timeout_secs"),
    ("http", "max_connections"),
    ("http", "max_connections_per_ip"),
    ("pxe", "repeat_window_secs"),
    ("discovery", "max_unassigned"),
    ("discovery", "per_ip_per_minute"),
    ("backup", "keep"),
];

/// Keys whose value is a boolean (the environment override is parsed).
const BOOL_KEYS: &[(&str, &str)] = &[("pxe", "legacy_status")];

/// The loaded, layered configuration of bty-web.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[boot]`
    pub boot: BootConfig,
    /// `[images]`
    pub images: ImagesConfig,
    /// `[withcache]`
    pub withcache: WithcacheConfig,
    /// `[admin]`
    pub admin: AdminConfig,
    /// `[flash]`
    pub flash: FlashConfig,
    /// `[http]`
    pub http: HttpConfig,
    /// `[pxe]`
    pub pxe: PxeConfig,
    /// `[discovery]`
    pub discovery: DiscoveryConfig,
    /// `[backup]`: bty-web's scheduled backups.
    pub backup: BackupConfig,
    /// `[[sites]]`: which withcache the targets of a subnet download from
    /// (see [`crate::sites`]). Not settable from the environment.
    pub sites: Vec<SiteConfig>,
    /// The `bty.toml` this configuration was read from ([`Config::load`]),
    /// so a scheduled backup can keep a copy of it; `None` when there was
    /// none or the configuration came from a string.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// `[server]`: where to listen and where state lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address to listen on, `0.0.0.0:8080` by default.
    pub listen: String,
    /// Directory of `state.db`, the session secret and (by default) `boot/`.
    pub state_dir: PathBuf,
    /// Secret that signs session cookies; unset → `<state_dir>/session-secret`.
    pub session_secret: Option<String>,
    /// `postgres://user:password@host:port/db`: keep machines, cycles and
    /// events in PostgreSQL (several bty-web replicas may share it); unset →
    /// SQLite at `<state_dir>/state.db`.
    pub database: Option<String>,
    /// PostgreSQL connections this replica keeps open (one database thread
    /// each). SQLite always has one.
    pub database_pool: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:8080".into(),
            state_dir: PathBuf::from("/var/lib/bty"),
            session_secret: None,
            database: None,
            database_pool: 8,
        }
    }
}

/// `[boot]`: the boot artifacts directory and the netboot env file names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BootConfig {
    /// Directory served at `/boot/`; unset → `<state_dir>/boot`.
    pub dir: Option<PathBuf>,
    /// File name (in the boot dir) of the netboot kernel.
    pub kernel: String,
    /// File name (in the boot dir) of the netboot initrd.
    pub initrd: String,
    /// Console arguments appended to the netboot kernel command line.
    pub console: String,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            dir: None,
            kernel: "bty-netboot-x86_64.vmlinuz".into(),
            initrd: "bty-netboot-x86_64.initrd".into(),
            console: "console=tty0 console=ttyS0,115200".into(),
        }
    }
}

/// `[images]`: the static catalog file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ImagesConfig {
    /// Path of a catalog TOML (`version = 1`, `[[images]]`).
    pub catalog: Option<PathBuf>,
}

/// `[withcache]`: the artifact cache whose catalog and blob URLs are used.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WithcacheConfig {
    /// Base URL of withcache, as the targets reach it.
    pub url: Option<String>,
    /// How often withcache's catalog is re-read, in seconds.
    pub refresh_secs: u64,
    /// Service token bty-web sends withcache's admin API as
    /// `Authorization: Bearer` (withcache's `WITHCACHE_API_TOKEN`): with it
    /// bty-web adds images to withcache's catalog and registers the static
    /// catalog's entries there.
    pub token: Option<String>,
}

impl Default for WithcacheConfig {
    fn default() -> Self {
        WithcacheConfig {
            url: None,
            refresh_secs: 30,
            token: None,
        }
    }
}

/// `[admin]`: the one operator account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AdminConfig {
    /// User name, `bty-lab` by default.
    pub user: String,
    /// Plain password (prefer `password_hash`).
    pub password: Option<String>,
    /// argon2id PHC string of the password.
    pub password_hash: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            user: "bty-lab".into(),
            password: None,
            password_hash: None,
        }
    }
}

/// `[flash]`: the flash cycle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FlashConfig {
    /// Flash attempts per arming before the machine is parked.
    pub max_attempts: u32,
}

impl Default for FlashConfig {
    fn default() -> Self {
        FlashConfig { max_attempts: 3 }
    }
}

/// `[http]`: connection and request limits (bty-http's `serve::Limits`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Seconds a request head may take (also ends idle keep-alive
    /// connections).
    pub header_timeout_secs: u64,
    /// Seconds a response write may make no progress.
    pub idle_timeout_secs: u64,
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one address (IPv6: one /64).
    pub max_connections_per_ip: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let l = bty_http::serve::Limits::default();
        HttpConfig {
            header_timeout_secs: l.header_timeout.as_secs(),
            idle_timeout_secs: l.idle_timeout.as_secs(),
            max_connections: l.max_connections,
            max_connections_per_ip: l.max_connections_per_ip,
        }
    }
}

/// `[pxe]`: the open PXE and agent endpoints.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PxeConfig {
    /// Accept the Python live env's tokenless `POST /pxe/{mac}/status`.
    /// Even on, it can only fail an open cycle, never complete one.
    pub legacy_status: bool,
    /// `GET /pxe/{mac}` again from the same address within this many
    /// seconds, with nothing changed in between, is the same contact: it
    /// gets the same answer and changes nothing. 0 turns this off.
    pub repeat_window_secs: u64,
    /// The key bty-tftp sends (`x-bty-relay-key`) when it relays a GRUB
    /// read of the Secure Boot chain (`bty_proto::relay`). Only with it
    /// does bty-web take the `x-bty-relay-client` header as the machine's
    /// address; unset, every relayed request is refused (403). Set it from
    /// the environment (`BTY_PXE_RELAY_KEY`), to the same value as
    /// bty-tftp's `BTY_TFTP_RELAY_KEY`. Never shown or logged.
    pub relay_key: Option<String>,
}

impl Default for PxeConfig {
    fn default() -> Self {
        PxeConfig {
            legacy_status: false,
            repeat_window_secs: 10,
            relay_key: None,
        }
    }
}

impl PxeConfig {
    /// The relay key, when one is set (an empty value is none).
    pub fn relay_key(&self) -> Option<&str> {
        self.relay_key.as_deref().filter(|k| !k.is_empty())
    }
}

// By hand so that `{:?}` of the configuration never prints the relay key.
impl std::fmt::Debug for PxeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PxeConfig")
            .field("legacy_status", &self.legacy_status)
            .field("repeat_window_secs", &self.repeat_window_secs)
            .field("relay_key", &self.relay_key().map(|_| "(set, not shown)"))
            .finish()
    }
}

impl HttpConfig {
    /// The limits `serve` runs with (zeros count as 1).
    pub fn limits(&self) -> bty_http::serve::Limits {
        use std::time::Duration;
        bty_http::serve::Limits {
            header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
            max_connections: self.max_connections.max(1),
            max_connections_per_ip: self.max_connections_per_ip.max(1),
            ..bty_http::serve::Limits::default()
        }
    }
}

/// `[discovery]`: how unknown MACs that contact bty-web are registered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscoveryConfig {
    /// Most discovered machines nobody has assigned (still in
    /// `bty-inventory` mode, no name, image or labels); the oldest are
    /// removed to make room, with a `machine.pruned` event.
    pub max_unassigned: u32,
    /// Most new MACs one client address may register per minute; more are
    /// refused (429) and not stored.
    pub per_ip_per_minute: u32,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            max_unassigned: 1000,
            per_ip_per_minute: 60,
        }
    }
}

/// `[backup]`: the backups bty-web makes by itself (SQLite only; see
/// [`crate::backups`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupConfig {
    /// How often: a number and a unit (`30s`, `30m`, `24h`, `7d`), or
    /// `off`. Anything below a minute is accepted (the tests use seconds)
    /// but at least `1h` is sensible: each backup is a full snapshot.
    pub every: String,
    /// How many archives to keep (the newest); at least 1.
    pub keep: u32,
    /// Where the archives go; unset → `<state_dir>/backups`.
    pub dir: Option<PathBuf>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        // On by default: an operator who never read this section still
        // has a week of daily backups after a disk or a bad edit.
        BackupConfig {
            every: "24h".into(),
            keep: 7,
            dir: None,
        }
    }
}

impl BackupConfig {
    /// The interval, `None` when the schedule is `off`.
    pub fn interval(&self) -> anyhow::Result<Option<std::time::Duration>> {
        parse_every(&self.every)
    }
}

/// `[backup] every`: `off`, or a positive whole number followed by `s`,
/// `m`, `h` or `d`. Hand-written rather than a crate: four units, one
/// number, and the error names the key.
fn parse_every(raw: &str) -> anyhow::Result<Option<std::time::Duration>> {
    let v = raw.trim();
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let bad = || {
        anyhow::anyhow!(
            "[backup] every = {raw:?} is not an interval: write a whole number and a unit \
             (s, m, h or d), such as \"24h\" or \"30m\", or \"off\""
        )
    };
    let split = v.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(secs) {
        Some(0) => bail!("[backup] every = {raw:?} must be more than zero (or \"off\")"),
        // A century is plenty and keeps `Instant` arithmetic from overflowing.
        Some(s) if s <= 100 * 365 * 86_400 => Ok(Some(std::time::Duration::from_secs(s))),
        _ => Err(bad()),
    }
}

impl Config {
    /// Load `path` (when given; it must exist) or `$BTY_CONFIG_FILE` or
    /// `/etc/bty/bty.toml` (when present), then apply `BTY_<SECTION>_<KEY>`.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let file = match path {
            Some(p) => Some(p.to_path_buf()),
            None => match std::env::var_os("BTY_CONFIG_FILE").filter(|v| !v.is_empty()) {
                Some(p) => Some(PathBuf::from(p)),
                None => {
                    let default = PathBuf::from("/etc/bty/bty.toml");
                    default.exists().then_some(default)
                }
            },
        };
        let mut table = match &file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading configuration file {}", p.display()))?;
                parse_table(&text).with_context(|| format!("in {}", p.display()))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, |k| std::env::var(k).ok())?;
        let mut cfg = Self::from_table(table)?;
        cfg.file = file;
        Ok(cfg)
    }

    /// Parse a `bty.toml` text; the environment is NOT applied.
    pub fn from_toml_str(s: &str) -> anyhow::Result<Config> {
        Self::from_table(parse_table(s)?)
    }

    fn from_table(table: toml::Table) -> anyhow::Result<Config> {
        // `[[sites]]` is an array of tables; its keys are checked by serde.
        for (section, value) in table.iter().filter(|(k, _)| *k != "sites") {
            match value.as_table() {
                Some(t) => {
                    for key in t.keys() {
                        if !KEYS.contains(&(section.as_str(), key.as_str())) {
                            tracing::warn!("bty.toml: unknown key [{section}] {key} is ignored");
                        }
                    }
                }
                None => tracing::warn!("bty.toml: unknown top-level key {section} is ignored"),
            }
        }
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .context("bty.toml has a value of the wrong type")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check everything that ends up in an iPXE script or a URL.
    fn validate(&self) -> anyhow::Result<()> {
        self.listen_addr()?;
        for (key, v) in [("kernel", &self.boot.kernel), ("initrd", &self.boot.initrd)] {
            if !valid_basename(v) {
                bail!("[boot] {key} = {v:?} must be a plain file name (letters, digits, . _ - +)");
            }
        }
        let c = &self.boot.console;
        if c.len() > 512
            || !c
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || " ,.=_-:/".contains(ch))
        {
            bail!("[boot] console = {c:?} may hold only letters, digits, space and , . = _ - : /");
        }
        if let Some(u) = &self.withcache.url {
            bty_proto::text::validate_http_url("[withcache] url", u)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        if let Some(t) = self.withcache_token() {
            t.check()
                .map_err(|e| anyhow::anyhow!("[withcache] token: {e}"))?;
        }
        if let Some(url) = &self.server.database {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                bail!(
                    "[server] database must be a postgres://user:password@host:port/db URL \
                     (leave it unset for SQLite in the state directory)"
                );
            }
            // Every replica must sign and check the same session cookies.
            if self.server.session_secret.is_none() {
                bail!(
                    "[server] database is set, so [server] session_secret must be too (the \
                     same on every bty-web replica; e.g. `openssl rand -hex 32`)"
                );
            }
        }
        if !(1..=64).contains(&self.server.database_pool) {
            bail!("[server] database_pool must be between 1 and 64");
        }
        if self.flash.max_attempts == 0 {
            bail!("[flash] max_attempts must be at least 1");
        }
        if self.discovery.max_unassigned == 0 {
            bail!("[discovery] max_unassigned must be at least 1");
        }
        self.backup.interval()?;
        if self.backup.keep == 0 {
            bail!(
                "[backup] keep must be at least 1 (to stop backups, set [backup] every = \"off\")"
            );
        }
        if self.admin.user.is_empty() {
            bail!("[admin] user must not be empty");
        }
        crate::sites::Sites::new(&self.sites)?;
        if !self.sites.is_empty() && self.withcache_url().is_none() {
            tracing::warn!(
                "bty.toml has [[sites]] but no [withcache] url: the targets of a site download \
                 from its withcache, every other target from the image's origin"
            );
        }
        Ok(())
    }

    /// `[server] listen` as a socket address.
    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.server.listen.parse().with_context(|| {
            format!(
                "[server] listen = {:?} is not an address such as 0.0.0.0:8080",
                self.server.listen
            )
        })
    }

    /// The directory served at `/boot/`.
    pub fn boot_dir(&self) -> PathBuf {
        self.boot
            .dir
            .clone()
            .unwrap_or_else(|| self.server.state_dir.join("boot"))
    }

    /// Where scheduled backups go: `[backup] dir`, else
    /// `<state_dir>/backups`.
    pub fn backup_dir(&self) -> PathBuf {
        self.backup
            .dir
            .clone()
            .unwrap_or_else(|| self.server.state_dir.join("backups"))
    }

    /// `<state_dir>/state.db`.
    pub fn db_path(&self) -> PathBuf {
        self.server.state_dir.join("state.db")
    }

    /// The withcache base URL without a trailing slash, when configured.
    pub fn withcache_url(&self) -> Option<&str> {
        self.withcache
            .url
            .as_deref()
            .map(|u| u.trim_end_matches('/'))
            .filter(|u| !u.is_empty())
    }
}

impl Config {
    /// `[withcache] token` as a service token, when set (and not empty).
    pub fn withcache_token(&self) -> Option<bty_auth::ServiceToken> {
        self.withcache
            .token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(bty_auth::ServiceToken::new)
    }
}

/// A plain file name: letters, digits and `. _ - +`, starting with a letter
/// or digit (so never `.`, `..` or a hidden file), at most 255 bytes. The
/// only names `/boot/` serves and `[boot] kernel`/`initrd` may hold.
pub fn valid_basename(name: &str) -> bool {
    name.len() <= 255
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
}

fn parse_table(s: &str) -> anyhow::Result<toml::Table> {
    s.parse::<toml::Table>()
        .context("bty.toml is not valid TOML")
}

/// Overlay `BTY_<SECTION>_<KEY>` (non-empty values only) onto `table`.
fn apply_env(table: &mut toml::Table, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
    for (section, key) in KEYS {
        let name = format!("BTY_{}_{}", section.to_uppercase(), key.to_uppercase());
        let Some(raw) = get(&name).filter(|v| !v.is_empty()) else {
            continue;
        };
        let value = if BOOL_KEYS.contains(&(section, key)) {
            match raw.trim() {
                "true" | "1" | "yes" => toml::Value::Boolean(true),
                "false" | "0" | "no" => toml::Value::Boolean(false),
                _ => bail!("{name}={raw:?} is not true or false"),
            }
        } else if INT_KEYS.contains(&(section, key)) {
            let n: i64 = raw
                .trim()
                .parse()
                .with_context(|| format!("{name}={raw:?} is not an integer"))?;
            toml::Value::Integer(n)
        } else {
            toml::Value::String(raw)
        };
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry.as_table_mut() {
            Some(t) => {
                t.insert(key.to_string(), value);
            }
            None => bail!("bty.toml: {section} must be a table"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = Config::from_toml_str("").unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:8080");
        assert_eq!(c.db_path(), PathBuf::from("/var/lib/bty/state.db"));
        assert_eq!(c.boot_dir(), PathBuf::from("/var/lib/bty/boot"));
        assert_eq!(c.admin.user, "bty-lab");
        assert_eq!(c.flash.max_attempts, 3);
        assert_eq!(c.boot.kernel, "bty-netboot-x86_64.vmlinuz");
        assert_eq!(c.boot.console, "console=tty0 console=ttyS0,115200");
    }

    #[test]
    fn env_overrides_file() {
        let mut t = parse_table(
            "[server]\nlisten = \"127.0.0.1:1\"\nstate_dir = \"/x\"\n[flash]\nmax_attempts = 5\n",
        )
        .unwrap();
        let env: HashMap<&str, &str> = [
            ("BTY_SERVER_LISTEN", "127.0.0.1:9000"),
            ("BTY_ADMIN_PASSWORD", "pw"),
            ("BTY_FLASH_MAX_ATTEMPTS", "2"),
            ("BTY_WITHCACHE_URL", ""),
        ]
        .into();
        apply_env(&mut t, |k| env.get(k).map(|s| s.to_string())).unwrap();
        let c = Config::from_table(t).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9000");
        assert_eq!(c.server.state_dir, PathBuf::from("/x"));
        assert_eq!(c.admin.password.as_deref(), Some("pw"));
        assert_eq!(c.flash.max_attempts, 2);
        assert_eq!(c.withcache.url, None, "empty env values are ignored");
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        let e = Config::from_toml_str("[boot]\nconsole = \"x\\nchain http://evil\"").unwrap_err();
        assert!(format!("{e:#}").contains("[boot] console"), "{e:#}");
        let e = Config::from_toml_str("[boot]\nkernel = \"../k\"").unwrap_err();
        assert!(format!("{e:#}").contains("[boot] kernel"));
        let e = Config::from_toml_str("[server]\nlisten = \"nope\"").unwrap_err();
        assert!(format!("{e:#}").contains("[server] listen"));
        let e = Config::from_toml_str("[withcache]\nurl = \"ftp://x\"").unwrap_err();
        assert!(format!("{e:#}").contains("withcache"));
        let mut t = toml::Table::new();
        let e = apply_env(&mut t, |k| {
            (k == "BTY_FLASH_MAX_ATTEMPTS").then(|| "x".into())
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("BTY_FLASH_MAX_ATTEMPTS"));
        assert!(Config::from_toml_str("[flash]\nmax_attempts = 0").is_err());
    }

    #[test]
    fn sites_are_read_and_checked() {
        let c = Config::from_toml_str(
            "[withcache]\nurl = \"http://central:3000\"\n\
             [[sites]]\nname = \"rack7\"\nsubnets = [\"10.7.0.0/16\"]\nwithcache = \"http://r7:3000\"\n",
        )
        .unwrap();
        assert_eq!(c.sites.len(), 1);
        assert_eq!(c.sites[0].subnets, ["10.7.0.0/16"]);
        let e = Config::from_toml_str(
            "[[sites]]\nname = \"rack7\"\nsubnets = [\"10.7.0.0/99\"]\nwithcache = \"http://r\"\n",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("\"rack7\"): subnets"), "{e:#}");
        let e = Config::from_toml_str(
            "[[sites]]\nname = \"r\"\nsubnet = [\"10.7.0.0/16\"]\nwithcache = \"http://r\"\n",
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("subnet"),
            "a typo is refused: {e:#}"
        );
    }

    #[test]
    fn backup_schedule_is_read_and_checked() {
        let d = Config::from_toml_str("").unwrap();
        assert_eq!(
            d.backup.interval().unwrap(),
            Some(std::time::Duration::from_secs(86_400)),
            "on by default, daily"
        );
        assert_eq!(d.backup.keep, 7);
        assert_eq!(d.backup_dir(), Path::new("/var/lib/bty/backups"));
        for (every, secs) in [("30s", 30), ("30m", 1800), ("7d", 604_800), (" 2h ", 7200)] {
            let c = Config::from_toml_str(&format!("[backup]\nevery = {every:?}")).unwrap();
            assert_eq!(
                c.backup.interval().unwrap(),
                Some(std::time::Duration::from_secs(secs))
            );
        }
        let off = Config::from_toml_str("[backup]\nevery = \"off\"").unwrap();
        assert_eq!(off.backup.interval().unwrap(), None);
        for bad in [
            "soon",
            "",
            "24",
            "h",
            "0h",
            "-1h",
            "1.5h",
            "24 hours",
            "99999999999999d",
        ] {
            let e = Config::from_toml_str(&format!("[backup]\nevery = {bad:?}")).unwrap_err();
            assert!(format!("{e:#}").contains("[backup] every"), "{bad}: {e:#}");
        }
        let e = Config::from_toml_str("[backup]\nkeep = 0").unwrap_err();
        assert!(format!("{e:#}").contains("[backup] keep"), "{e:#}");
        let c = Config::from_toml_str("[backup]\ndir = \"/srv/b\"\nkeep = 2").unwrap();
        assert_eq!(
            (c.backup_dir(), c.backup.keep),
            (PathBuf::from("/srv/b"), 2)
        );
    }

    #[test]
    fn backup_keys_come_from_the_environment() {
        let mut t = toml::Table::new();
        let env: HashMap<&str, &str> = [
            ("BTY_BACKUP_EVERY", "1h"),
            ("BTY_BACKUP_KEEP", "3"),
            ("BTY_BACKUP_DIR", "/srv/b"),
        ]
        .into();
        apply_env(&mut t, |k| env.get(k).map(|v| v.to_string())).unwrap();
        let c = Config::from_table(t).unwrap();
        assert_eq!(c.backup.every, "1h");
        assert_eq!(c.backup.keep, 3);
        assert_eq!(c.backup_dir(), PathBuf::from("/srv/b"));
        let mut t = toml::Table::new();
        let e = apply_env(&mut t, |k| (k == "BTY_BACKUP_KEEP").then(|| "many".into())).unwrap_err();
        assert!(format!("{e:#}").contains("BTY_BACKUP_KEEP"), "{e:#}");
    }

    #[test]
    fn the_example_file_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bty.toml");
        let c = Config::from_toml_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        assert_eq!((c.backup.every.as_str(), c.backup.keep), ("24h", 7));
    }

    #[test]
    fn load_remembers_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bty.toml");
        std::fs::write(&p, "[server]\nlisten = \"127.0.0.1:9\"\n").unwrap();
        assert_eq!(
            Config::load(Some(&p)).unwrap().file.as_deref(),
            Some(p.as_path())
        );
        assert_eq!(Config::from_toml_str("").unwrap().file, None);
    }

    #[test]
    fn unknown_keys_do_not_stop_the_server() {
        Config::from_toml_str("[server]\ntrusted_proxy = \"x\"\n[nbdmux]\nurl = \"y\"").unwrap();
    }
}
