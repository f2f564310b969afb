//! Command-line interface: plain clap structs, no I/O. `main` turns them into
//! actions; everything here is data so it can be unit-tested.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Deploy and run the bty netboot reflashing stack.
///
/// bty-lab renders the deploy files, builds or pulls the bty-web, withcache
/// and bty-tftp images, and drives Docker or Podman through the engine API.
/// `bty-lab serve` runs the whole stack in one process with no engine.
#[derive(Debug, Parser)]
#[command(
    name = "bty-lab",
    version,
    propagate_version = true,
    after_help = crate::exit::help()
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render the deploy files into DEST; no engine calls.
    Init(InitArgs),
    /// Render, create the data layout, start the stack, wait until healthy.
    Deploy(DeployArgs),
    /// Move the stack to this CLI's version; roll back if it is unhealthy.
    Upgrade(UpgradeArgs),
    /// Change a web UI password and log out every old session.
    Passwd(PasswdArgs),
    /// Stop and remove the stack (and with --data, its state).
    Purge(PurgeArgs),
    /// Show container state, health, URLs and image versions.
    Status(StatusArgs),
    /// Print (or follow) a service's logs.
    Logs(LogsArgs),
    /// Run bty-web, withcache and bty-tftp in this process, no engine.
    Serve(ServeArgs),
    /// Archive the databases and configuration of a deploy or serve dir.
    Backup(BackupArgs),
    /// Put a backup back: checked first, rolled back on any failure.
    Restore(RestoreArgs),
    /// Add, list and remove the images machines are flashed with.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Import machines from a CSV or JSON file, or export them to one.
    #[command(subcommand)]
    Machines(MachinesCommand),
    /// Build and check the netboot media (kernel, initramfs, iPXE files).
    #[command(subcommand)]
    Media(MediaCommand),
    /// Write an image (file or URL) onto a local disk and verify it.
    Flash(FlashArgs),
    /// Build and write the USB stick that flashes machines without PXE.
    #[command(subcommand)]
    Usb(UsbCommand),
    /// Run the netboot agent (`bty`) with ARGS; see `bty-lab agent --help`.
    ///
    /// The initramfs carries this binary as /bin/bty; invoked under that
    /// name it is the agent too.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Agent {
        /// Arguments for the agent, passed through untouched.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Print shell completions for bty-lab.
    Completions {
        /// The shell to generate completions for.
        shell: clap_complete::Shell,
    },
    /// Entry points used inside the images (not for operators).
    #[command(hide = true, subcommand)]
    Internal(Internal),
}

/// Settings shared by init and deploy: what gets rendered.
#[derive(Debug, Args, Clone)]
pub struct RenderArgs {
    /// Deploy directory.
    #[arg(default_value = "./bty-host")]
    pub dest: PathBuf,
    /// Host state directory (default: DEST/data); remembered for later runs.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// LAN address machines reach this host on (default: outbound route).
    #[arg(long)]
    pub host_addr: Option<String>,
    /// Also render Quadlet units under DEST/quadlet.
    #[arg(long)]
    pub systemd: bool,
    /// Leave out the bty-tftp service (UEFI HTTP boot only); remembered.
    #[arg(long)]
    pub no_tftp: bool,
    /// Bring bty-tftp back after an earlier --no-tftp.
    #[arg(long, conflicts_with = "no_tftp")]
    pub tftp: bool,
    /// Serve iPXE's own second request for undionly.kpxe, snponly.efi or
    /// ipxe.efi as the binary again instead of a chain script to bty-web
    /// (the TFTP loop breaker; then DHCP needs user-class rules); remembered.
    #[arg(long)]
    pub no_second_stage: bool,
    /// Bring the TFTP loop breaker back after an earlier --no-second-stage.
    #[arg(long, conflicts_with = "no_second_stage")]
    pub second_stage: bool,
    /// Image registry prefix (default: ghcr.io/bty-rs).
    #[arg(long)]
    pub registry: Option<String>,
    /// Host port for bty-web.
    #[arg(long)]
    pub port_web: Option<u16>,
    /// Host port for withcache.
    #[arg(long)]
    pub port_cache: Option<u16>,
    /// UDP port for bty-tftp (host network).
    #[arg(long)]
    pub tftp_port: Option<u16>,
    /// Overwrite foreign files in DEST and re-render the deploy files.
    #[arg(long, short = 'f')]
    pub force: bool,
}

/// `--netboot DIR`, else a non-empty `$BTY_NETBOOT_DIR` (read here, not
/// by clap: an empty variable means unset).
pub fn netboot_dir(flag: Option<&std::path::Path>) -> Option<PathBuf> {
    flag.map(PathBuf::from).or_else(|| {
        std::env::var_os("BTY_NETBOOT_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// `bty-lab usb ...`.
#[derive(Debug, Subcommand)]
pub enum UsbCommand {
    /// Write a stick image (BIOS + UEFI boot, the netboot kernel and
    /// initramfs, the images and their manifest) to dd onto a USB stick.
    Build(UsbBuildArgs),
    /// Write a stick image onto a USB stick, verified.
    Write(UsbWriteArgs),
}

/// `bty-lab usb build`.
#[derive(Debug, Args)]
pub struct UsbBuildArgs {
    /// The stick image to write (replaced only once complete).
    #[arg(long, default_value = "bty-stick.img")]
    pub out: PathBuf,
    /// An image for the stick, as NAME=PATH or NAME=URL (http/https); the
    /// format comes from the file name (.img, .img.zst, .qcow2...). Repeat
    /// for more images; the wizard lists them in this order.
    #[arg(long = "image", value_name = "NAME=PATH|URL")]
    pub images: Vec<String>,
    /// A bty-web whose catalog the stick's wizard offers and whose machine
    /// pages its flashes show on. URL images are then fetched through that
    /// bty-web's withcache, and a stick key is minted there (admin login)
    /// and stored on the stick.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Admin user at --server.
    #[arg(long, default_value = "bty-lab", requires = "server")]
    pub user: String,
    /// Read --server's admin password from the first line of stdin.
    /// Otherwise BTY_ADMIN_PASSWORD, else a prompt on a terminal.
    #[arg(long, requires = "server")]
    pub password_stdin: bool,
    /// The stick key's label on --server's Settings page (default: the
    /// stick's file name, this host's name and the date).
    #[arg(long, value_name = "TEXT", requires = "server")]
    pub key_label: Option<String>,
    /// Flash without questions: image=NAME,disk-serial=SERIAL,after=reboot|poweroff.
    #[arg(long, value_name = "SPEC")]
    pub auto: Option<String>,
    /// Build the netboot media the stick boots from the .debs in DIR (no
    /// apt, no network).
    #[arg(long, value_name = "DIR", conflicts_with = "netboot")]
    pub from: Option<PathBuf>,
    /// Take the netboot kernel and initrd from DIR (a `bty-lab media build
    /// --out DIR`) instead of this binary's media.
    #[arg(long, value_name = "DIR")]
    pub netboot: Option<PathBuf>,
}

/// `bty-lab init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub render: RenderArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// `bty-lab init --kubernetes`: plain manifests from the Helm chart.
#[derive(Debug, Args, Clone)]
pub struct KubeArgs {
    /// Write Kubernetes manifests (DEST/bty.yaml, rendered from the Helm
    /// chart deploy/helm/bty) instead of the container engine's files;
    /// apply them with `kubectl apply -f DEST/bty.yaml`.
    #[arg(long)]
    pub kubernetes: bool,
    /// bty-web replicas; more than 1 needs --database-url.
    #[arg(long, default_value_t = 1, requires = "kubernetes")]
    pub replicas: u32,
    /// PostgreSQL URL of bty-web's store (postgres://USER:PASSWORD@HOST:PORT/DB);
    /// without it bty-web keeps SQLite on a volume (one replica).
    #[arg(long, value_name = "URL", requires = "kubernetes")]
    pub database_url: Option<String>,
    /// Namespace of every object (created by the manifests unless `default`).
    #[arg(long, default_value = "default", requires = "kubernetes")]
    pub namespace: String,
    /// withcache's URL as the machines reach it (e.g. http://NODE:30300).
    #[arg(long, value_name = "URL", requires = "kubernetes")]
    pub withcache_url: Option<String>,
    /// Image tag (default: this CLI's version).
    #[arg(long, requires = "kubernetes")]
    pub tag: Option<String>,
}

/// Where images come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImagesFrom {
    /// Images in the engine built from this binary (or pulled), else pull,
    /// else build locally from this binary.
    Auto,
    /// Pull REGISTRY/<service>:VERSION.
    Pull,
    /// Build FROM scratch images from this static binary, no registry.
    Local,
    /// Use images already in the engine (e.g. from `docker load`).
    Present,
}

/// Which engine socket to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineChoice {
    Docker,
    Podman,
    Auto,
}

/// Engine selection shared by every engine-driving command.
#[derive(Debug, Args, Clone)]
pub struct EngineArgs {
    /// Container engine. Default: the one DEST was deployed with (remembered
    /// in DEST/.bty-lab.toml), else auto: DOCKER_HOST, then Docker, then
    /// Podman.
    #[arg(long, value_enum)]
    pub engine: Option<EngineChoice>,
}

/// `bty-lab deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub render: RenderArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Where the images come from (default: as recorded by an earlier
    /// deploy, else auto: reuse, else pull, else build from this binary).
    #[arg(long, value_enum)]
    pub images: Option<ImagesFrom>,
    /// Seconds to wait for every service to report healthy.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// The operator's netboot media (a `bty-lab media build --out DIR`):
    /// copied into DATA/bty/boot and kept there over the images' own media
    /// unless older. Default: $BTY_NETBOOT_DIR, else the media bty-web's
    /// image carries.
    #[arg(long, value_name = "DIR")]
    pub netboot: Option<PathBuf>,
    /// Build the netboot media the images carry from the .debs in DIR (no
    /// apt, no network), when images are built here.
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Run the containers through the engine API even where Quadlet units
    /// would be chosen (root, systemd running, Podman >= 4.4).
    #[arg(long, conflicts_with = "systemd")]
    pub no_systemd: bool,
    /// The admin password of both UIs, from the first line of stdin (a
    /// fresh DEST only; at least 8 characters). Default: a random one,
    /// shown once at the end.
    #[arg(long)]
    pub password_stdin: bool,
    /// Answer yes to questions (no prompts).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `bty-lab upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Deploy directory.
    #[arg(default_value = "./bty-host")]
    pub dest: PathBuf,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Image version to move to (default: this CLI's version).
    #[arg(long)]
    pub to: Option<String>,
    /// Allow moving to an older version than the deployed one.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Where the new images come from (default: as recorded at deploy).
    #[arg(long, value_enum)]
    pub images: Option<ImagesFrom>,
    /// Build the netboot media the images carry from the .debs in DIR (no
    /// apt, no network), when images are built here.
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Seconds to wait for health before rolling back.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// `bty-lab backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Deploy directory, or a `bty-lab serve` data dir.
    #[arg(default_value = "./bty-host")]
    pub dest: PathBuf,
    /// The archive to write (default: DEST/backups/bty-<UTC time>.tar.zst).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `bty-lab restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The archive `bty-lab backup` (or upgrade, or bty-web) wrote.
    pub file: PathBuf,
    /// Deploy directory, or a `bty-lab serve` data dir (serve stopped).
    #[arg(default_value = "./bty-host")]
    pub dest: PathBuf,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Seconds to wait for health before putting the previous state back.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// A service with a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PasswdService {
    #[value(name = "bty-web")]
    BtyWeb,
    Withcache,
    All,
}

/// `bty-lab passwd`.
#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Deploy directory.
    #[arg(default_value = "./bty-host")]
    pub dest: PathBuf,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Which service's password to change.
    #[arg(long, value_enum, default_value = "all")]
    pub service: PasswdService,
    /// Read the new password from the first line of stdin.
    #[arg(long, conflicts_with = "generate")]
    pub password_stdin: bool,
    /// Generate a random password and print it.
    #[arg(long)]
    pub generate: bool,
    /// Seconds to wait for the restarted service.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// `bty-lab purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Deploy directory.
    #[arg(default_value = "./bty-host")]
    pub dest: PathBuf,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Also delete the host state (data dir): machines, cache.
    #[arg(long)]
    pub data: bool,
    /// Also delete the deploy directory itself (implies --data).
    #[arg(long)]
    pub all: bool,
    /// Also remove the stack's images.
    #[arg(long)]
    pub images: bool,
    /// Do not ask before deleting.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `bty-lab status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Deploy directory.
    #[arg(default_value = "./bty-host")]
    pub dest: PathBuf,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `bty-lab logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Deploy directory.
    #[arg(default_value = "./bty-host")]
    pub dest: PathBuf,
    /// bty-web, withcache or bty-tftp (default: all).
    pub service: Option<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Keep following the log.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Lines from the end to start with.
    #[arg(long, default_value = "100")]
    pub tail: String,
}

/// `bty-lab serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// State directory (default: $XDG_DATA_HOME/bty, else ./bty-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// bty-web port.
    #[arg(long, default_value_t = 8080)]
    pub port_web: u16,
    /// withcache port.
    #[arg(long, default_value_t = 3000)]
    pub port_cache: u16,
    /// TFTP port (default: no TFTP; 69 needs root).
    #[arg(long)]
    pub tftp_port: Option<u16>,
    /// Serve iPXE's second TFTP request for its own bootfile as the binary
    /// again, not as a chain script to bty-web (the loop breaker).
    #[arg(long)]
    pub no_second_stage: bool,
    /// Address to listen on. The default, loopback, is for trying bty
    /// out on this host; machines on the LAN need `--bind 0.0.0.0` (or
    /// the LAN address).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Set the admin password of both UIs from the first line of stdin
    /// (kept as an argon2 hash in the data dir). Default: the one kept
    /// there, else a random one, shown once.
    #[arg(long)]
    pub password_stdin: bool,
    /// The operator's netboot media (a `bty-lab media build --out DIR`),
    /// copied into the boot dir. Default: $BTY_NETBOOT_DIR, else this
    /// binary's media, built (and cached) when missing.
    #[arg(long, value_name = "DIR", conflicts_with = "from")]
    pub netboot: Option<PathBuf>,
    /// Build this binary's netboot media from the .debs in DIR (no apt, no
    /// network).
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Let withcache fetch from loopback and link-local origins (refused by
    /// default; a mirror on 10.x or 192.168.x needs no flag). Same as
    /// WITHCACHE_ALLOW_PRIVATE_ORIGINS=1.
    #[arg(long)]
    pub allow_private_origins: bool,
}

/// `bty-lab image`: bty-web's image catalog over its REST API.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Add an image: withcache starts downloading it, and machines can be
    /// assigned it at once.
    Add(ImageAddArgs),
    /// List the images bty-web can assign, with withcache's download state.
    Ls(ImageLsArgs),
    /// Remove an image added with `image add` or on the Images page.
    Rm(ImageRmArgs),
}

/// `bty-lab machines`: bty-web's machine registry in bulk, over its REST
/// API.
#[derive(Debug, Subcommand)]
pub enum MachinesCommand {
    /// Create or update the machines a CSV or JSON file lists, all or
    /// nothing.
    ///
    /// One bad row and nothing is written: each error is printed as
    /// FILE:LINE: FIELD: message and the exit status is 3. Machines not in
    /// the file are kept.
    ///
    /// Columns (CSV header, or JSON keys): mac, name, boot_mode, image,
    /// target_disk_serial, sanboot_drive, labels (CSV: one cell,
    /// separated by `;`).
    Import(MachinesImportArgs),
    /// Write every machine as CSV (default) or JSON, as import reads it.
    ///
    /// Ordered by MAC, labels sorted: export, import and export again
    /// gives the same bytes.
    Export(MachinesExportArgs),
}

/// `bty-lab machines import`.
#[derive(Debug, Args)]
pub struct MachinesImportArgs {
    /// The file: FILE.csv or FILE.json (the extension says which).
    pub file: PathBuf,
    /// Check every row and show what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `bty-lab machines export`.
#[derive(Debug, Args)]
pub struct MachinesExportArgs {
    /// csv or json (default: from --out's extension, else csv).
    #[arg(long, value_parser = ["csv", "json"])]
    pub format: Option<String>,
    /// Write the file here (atomically, mode 0644) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Which bty-web, and how to log in to it.
#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// bty-web's URL. Default: the deploy in --dest, else
    /// http://127.0.0.1:8080 (`bty-lab serve`).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Deploy directory whose bty-web to use when --server is not given.
    #[arg(long, value_name = "DEST", default_value = "./bty-host")]
    pub dest: PathBuf,
    /// Admin user.
    #[arg(long, default_value = "bty-lab")]
    pub user: String,
    /// Read the password from the first line of stdin. Otherwise
    /// BTY_ADMIN_PASSWORD, else a prompt on a terminal; a bty-web without a
    /// password needs none.
    #[arg(long)]
    pub password_stdin: bool,
}

/// `bty-lab image add`.
#[derive(Debug, Args)]
pub struct ImageAddArgs {
    /// Catalog name (letters, digits and . _ - +).
    pub name: String,
    /// The image's http(s) URL at its origin.
    pub url: String,
    /// sha256 of the bytes at URL (64 hex digits).
    #[arg(long)]
    pub sha256: Option<String>,
    /// Length in bytes of the bytes at URL.
    #[arg(long)]
    pub size: Option<u64>,
    /// img, img.gz, img.xz, img.zst, img.bz2 or qcow2 (default: from the
    /// URL's file name).
    #[arg(long)]
    pub format: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `bty-lab image ls`.
#[derive(Debug, Args)]
pub struct ImageLsArgs {
    /// Print bty-web's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `bty-lab image rm`.
#[derive(Debug, Args)]
pub struct ImageRmArgs {
    /// Catalog name.
    pub name: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `bty-lab flash`.
#[derive(Debug, Args)]
pub struct FlashArgs {
    /// The image: a file, or an http(s) URL (downloaded to $TMPDIR first).
    pub image: String,
    /// The whole disk to erase (/dev/sdX, /dev/disk/by-id/...), or an
    /// existing regular file.
    pub device: PathBuf,
    /// The image's format (img, img.gz, img.xz, img.zst, img.bz2, qcow2);
    /// default: from its name.
    #[arg(long, value_name = "F")]
    pub format: Option<String>,
    /// sha256 of the image file as stored (what sha256sum prints), checked
    /// before the disk is touched.
    #[arg(long, value_name = "H")]
    pub sha256: Option<String>,
    /// Do not ask to type the disk's serial.
    #[arg(long)]
    pub yes: bool,
}

/// `bty-lab usb write`.
#[derive(Debug, Args)]
pub struct UsbWriteArgs {
    /// The stick image (raw).
    pub file: PathBuf,
    /// The stick (/dev/sdX, /dev/disk/by-id/usb-...).
    pub device: PathBuf,
    /// Do not ask to type the stick's serial.
    #[arg(long)]
    pub yes: bool,
}

/// `bty-lab media ...`.
#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// Assemble the netboot kernel, initramfs and iPXE bootfiles.
    ///
    /// From Debian's kernel, busybox-static and ipxe packages (through the
    /// host's apt, or from --from DIR) and this binary as the agent. The
    /// result is cached per binary; a re-run is a cache hit.
    Build(MediaBuildArgs),
    /// Say which media is in place and whether it matches this binary.
    Status(MediaStatusArgs),
    /// Download the .debs a build needs into DIR (for --from elsewhere).
    Download {
        /// Directory to put the .debs in.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// `bty-lab media build`.
#[derive(Debug, Args)]
pub struct MediaBuildArgs {
    /// Also put the media into DIR (created; files replaced atomically).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Take the .debs from DIR (no network, no apt).
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Cache directory (default: /var/cache/bty as root, else
    /// $XDG_CACHE_HOME/bty).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Build even if the cache holds media for this binary.
    #[arg(long)]
    pub force: bool,
}

/// `bty-lab media status`.
#[derive(Debug, Args)]
pub struct MediaStatusArgs {
    /// A deploy directory: also report the media its bty-web serves (its
    /// boot dir, from its bty.toml and envvars).
    #[arg(value_name = "DEST")]
    pub dest: Option<PathBuf>,
    /// Also report the media in this boot directory.
    #[arg(long, value_name = "DIR")]
    pub boot_dir: Option<PathBuf>,
    /// Also report this initrd file.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// Cache directory (default as for `media build`).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What runs inside the images.
#[derive(Debug, Subcommand)]
pub enum Internal {
    /// Exit 0 if URL (http://... or tftp://host:port/file) answers.
    Healthcheck { url: String },
    /// bty-web from /etc/bty/bty.toml + BTY_* env.
    Web,
    /// withcache from WITHCACHE_* env, data in /data.
    Withcache,
    /// bty-tftp serving /srv/bty/boot.
    Tftp,
    /// A minimal HTTP server answering /healthz (engine tests).
    DummyHttp {
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: std::net::SocketAddr,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_documents_the_exit_codes() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("Exit status:"), "{help}");
        assert!(help.contains("  3  refused"), "{help}");
        // Subcommands keep their own help short.
        let mut cmd = Cli::command();
        let deploy = cmd.find_subcommand_mut("deploy").unwrap().render_help();
        assert!(!deploy.to_string().contains("Exit status:"));
    }

    #[test]
    fn deploy_flags_parse() {
        let cli = Cli::try_parse_from([
            "bty-lab",
            "deploy",
            "/opt/bty",
            "--images",
            "local",
            "--engine",
            "podman",
            "--host-addr",
            "10.0.0.5",
            "--no-tftp",
            "-y",
        ])
        .unwrap();
        let Command::Deploy(d) = cli.command else {
            panic!("not deploy")
        };
        assert_eq!(d.render.dest, PathBuf::from("/opt/bty"));
        assert_eq!(d.images, Some(ImagesFrom::Local));
        assert_eq!(d.engine.engine, Some(EngineChoice::Podman));
        assert!(d.render.no_tftp && d.yes);
        assert!(!d.render.no_second_stage);
    }

    #[test]
    fn engine_and_images_default_to_none_so_the_manifest_decides() {
        let cli = Cli::try_parse_from(["bty-lab", "deploy", "/opt/bty"]).unwrap();
        let Command::Deploy(d) = cli.command else {
            panic!("not deploy")
        };
        assert_eq!(d.engine.engine, None);
        assert_eq!(d.images, None);
        let cli = Cli::try_parse_from(["bty-lab", "status", "/opt/bty"]).unwrap();
        let Command::Status(st) = cli.command else {
            panic!("not status")
        };
        assert_eq!(st.engine.engine, None);
        let cli =
            Cli::try_parse_from(["bty-lab", "deploy", "/opt/bty", "--images", "auto"]).unwrap();
        let Command::Deploy(d) = cli.command else {
            panic!("not deploy")
        };
        assert_eq!(d.images, Some(ImagesFrom::Auto));
    }

    #[test]
    fn second_stage_flags_conflict() {
        let r = Cli::try_parse_from([
            "bty-lab",
            "init",
            "/x",
            "--no-second-stage",
            "--second-stage",
        ]);
        assert!(r.is_err());
    }

    #[test]
    fn image_add_flags_parse() {
        let cli = Cli::try_parse_from([
            "bty-lab",
            "image",
            "add",
            "deb",
            "https://o/deb.img.zst",
            "--sha256",
            "ab",
            "--size",
            "42",
            "--server",
            "http://h:9",
        ])
        .unwrap();
        let Command::Image(ImageCommand::Add(a)) = cli.command else {
            panic!("not image add")
        };
        assert_eq!(
            (a.name.as_str(), a.url.as_str()),
            ("deb", "https://o/deb.img.zst")
        );
        assert_eq!(a.size, Some(42));
        assert_eq!(a.server.server.as_deref(), Some("http://h:9"));
        assert_eq!(a.server.user, "bty-lab");
        assert!(Cli::try_parse_from(["bty-lab", "image", "add", "only-name"]).is_err());
        assert!(Cli::try_parse_from(["bty-lab", "image", "rm", "x", "--size", "1"]).is_err());
    }

    #[test]
    fn agent_args_pass_through_untouched() {
        let cli = Cli::try_parse_from([
            "bty-lab",
            "agent",
            "--server",
            "http://x",
            "--help",
            "--version",
        ])
        .unwrap();
        let Command::Agent { args } = cli.command else {
            panic!("not agent")
        };
        assert_eq!(args, ["--server", "http://x", "--help", "--version"]);
    }

    #[test]
    fn media_build_flags_parse() {
        let cli = Cli::try_parse_from([
            "bty-lab", "media", "build", "--from", "/d", "--out", "/o", "--force",
        ])
        .unwrap();
        let Command::Media(MediaCommand::Build(b)) = cli.command else {
            panic!("not media build")
        };
        assert_eq!(b.from, Some(PathBuf::from("/d")));
        assert_eq!(b.out, Some(PathBuf::from("/o")));
        assert!(b.force && b.cache.is_none());
    }

    #[test]
    fn media_flags_of_serve_deploy_upgrade_and_status() {
        let cli = Cli::try_parse_from(["bty-lab", "serve", "--from", "/debs"]).unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(a.from, Some(PathBuf::from("/debs")));
        assert!(
            Cli::try_parse_from(["bty-lab", "serve", "--from", "/d", "--netboot", "/m"]).is_err()
        );
        let cli = Cli::try_parse_from(["bty-lab", "upgrade", "/opt/bty", "--from", "/d"]).unwrap();
        let Command::Upgrade(u) = cli.command else {
            panic!("not upgrade")
        };
        assert_eq!(u.from, Some(PathBuf::from("/d")));
        let cli = Cli::try_parse_from(["bty-lab", "media", "status", "/opt/bty"]).unwrap();
        let Command::Media(MediaCommand::Status(st)) = cli.command else {
            panic!("not media status")
        };
        assert_eq!(st.dest, Some(PathBuf::from("/opt/bty")));
        assert!(st.boot_dir.is_none());
    }

    #[test]
    fn passwd_stdin_and_generate_conflict() {
        let r = Cli::try_parse_from(["bty-lab", "passwd", "--password-stdin", "--generate"]);
        assert!(r.is_err());
    }
}
