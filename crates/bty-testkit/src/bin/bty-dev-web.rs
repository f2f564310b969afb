//! `bty-dev-web`: a real bty-web (the test kit's, on 127.0.0.1) with one
//! machine set to flash one image, for development checks of the agent
//! by hand: `media/boot-test.sh` boots the netboot media in qemu against
//! it, `bench/flash.sh` runs the agent against it.
//!
//! ```text
//! bty-dev-web serve --image FILE --mac MAC [--format img.zst] [--serial BTYTEST]
//!                   [--mode bty-flash-once] [--image-url URL | --guest-host 10.0.2.2]
//!                   [--port-file FILE]
//! bty-dev-web arm   --server URL --mac MAC
//! bty-dev-web check --server URL --mac MAC [--disk-sha256 HEX]
//! ```
//!
//! `serve` runs until SIGINT or SIGTERM. Without `--image-url` it also
//! serves the image (the kit's origin, with Range) and names it in the
//! catalog as `http://GUEST-HOST:PORT/NAME`: a qemu guest on user
//! networking reaches the host's loopback as 10.0.2.2. The agent's plan
//! and reports are bty-web's own, `bty-proto` on both ends.
//!
//! `arm` makes PXE contacts until the next plan is a flash (for
//! `bty-flash-always`, which boots the disk once after each flash), then
//! fetches the netboot kernel as iPXE would: bty-web hands the plan only to
//! the address that did (127.0.0.1, which a qemu guest on user networking
//! also appears as).
//! `check` passes when the machine has exactly one flash cycle, closed
//! `done` and ok by one `flash.done` event, with the digest read back
//! equal to `--disk-sha256`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use bty_proto::{BootMode, ImageFormat};
use bty_testkit::client::Client;
use bty_testkit::web::{is_flash, Web, WebClient};
use bty_testkit::Origin;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

/// A real bty-web for development checks of the agent.
#[derive(Parser)]
#[command(name = "bty-dev-web")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run bty-web with one machine set to flash one image.
    Serve(Serve),
    /// PXE contacts until the machine's next plan is a flash.
    Arm(Target),
    /// Check that the machine was flashed once, ok.
    Check(Check),
}

#[derive(clap::Args)]
struct Serve {
    /// The image: its bytes are hashed and sized for the catalog.
    #[arg(long, value_name = "file")]
    image: PathBuf,
    /// Its container format (default: from the file name, else img).
    #[arg(long, value_name = "format")]
    format: Option<ImageFormat>,
    /// The machine.
    #[arg(long, value_name = "mac")]
    mac: String,
    /// Serial of the disk to write.
    #[arg(long, value_name = "serial", default_value = "BTYTEST")]
    serial: String,
    /// The machine's boot mode.
    #[arg(long, value_name = "mode", default_value = "bty-flash-once")]
    mode: BootMode,
    /// Where the agent downloads the image; without it, served here.
    #[arg(long, value_name = "url")]
    image_url: Option<String>,
    /// The host name the agent reaches this machine's loopback by (for
    /// the image served here).
    #[arg(long, value_name = "host", default_value = "127.0.0.1")]
    guest_host: String,
    /// Write bty-web's port here once it answers.
    #[arg(long, value_name = "file")]
    port_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct Target {
    /// bty-web, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "url")]
    server: String,
    /// The machine.
    #[arg(long, value_name = "mac")]
    mac: String,
}

#[derive(clap::Args)]
struct Check {
    #[command(flatten)]
    target: Target,
    /// The digest the agent must have read back from the disk.
    #[arg(long, value_name = "hex")]
    disk_sha256: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let r = match Cli::parse().cmd {
        Cmd::Serve(s) => serve(s).await,
        Cmd::Arm(t) => arm(t).await,
        Cmd::Check(c) => check(c).await,
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bty-dev-web: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// sha256 and length of the file, read in 4 MiB steps.
fn digest(path: &PathBuf) -> anyhow::Result<(String, u64)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(h.finalize()), len))
}

async fn serve(s: Serve) -> anyhow::Result<()> {
    let name = s
        .image
        .file_name()
        .and_then(|n| n.to_str())
        .context("the image has no file name")?
        .to_string();
    let format = s
        .format
        .or_else(|| ImageFormat::from_file_name(&name))
        .unwrap_or(ImageFormat::Raw);
    let (sha, size) = digest(&s.image)?;
    // Served here unless it is somewhere already (kept alive to the end).
    let (origin, url) = match s.image_url {
        Some(u) => (None, u),
        None => {
            let bytes = std::fs::read(&s.image)?;
            let o = Origin::files([(name.clone(), bytes)]);
            let url = format!("http://{}:{}/{name}", s.guest_host, o.addr.port());
            (Some(o), url)
        }
    };
    let dir = tempfile::tempdir()?;
    let catalog = format!(
        "version = 1\n[[images]]\nname = \"dev-image\"\nsrc = {url:?}\nsha256 = {sha:?}\n\
         size = {size}\nformat = {:?}\n",
        format.as_str()
    );
    std::fs::write(dir.path().join("catalog.toml"), catalog)?;
    let web = Web::try_start_in(dir, "").await?;
    let body = json!({"boot_mode": s.mode, "image": "dev-image", "target_disk_serial": s.serial});
    let (st, v) = web.put_machine(&s.mac, &body).await;
    if st != 200 && st != 201 {
        bail!("registering {}: {st} {v}", s.mac);
    }
    if let Some(p) = &s.port_file {
        std::fs::write(p, web.addr.port().to_string())?;
    }
    println!(
        "bty-dev-web: bty-web on {}; {} ({format}, {size} bytes, sha256 {sha}) at {url}; \
         {} set to {} onto serial {}",
        web.base,
        s.image.display(),
        s.mac,
        s.mode.as_str(),
        s.serial
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    web.stop().await;
    drop(origin);
    Ok(())
}

fn client(t: &Target) -> WebClient {
    WebClient(Client::new(&t.server, true))
}

async fn arm(t: Target) -> anyhow::Result<()> {
    let c = client(&t);
    for _ in 0..3 {
        if is_flash(&c.pxe(&t.mac).await) {
            c.boot_kernel(&t.mac).await;
            return Ok(());
        }
    }
    bail!("{}: three PXE contacts and no flash offered", t.mac)
}

/// The parts of a cycle (`GET /api/machines/{mac}/cycles`) checked here.
#[derive(Deserialize, Debug)]
struct Cycle {
    id: i64,
    state: String,
    ok: Option<bool>,
    reason: Option<String>,
    disk_sha256: Option<String>,
    bytes_done: Option<u64>,
}

async fn check(c: Check) -> anyhow::Result<()> {
    let t = &c.target;
    let web = client(t);
    let cycles: Vec<Cycle> = web.get_as(&format!("/api/machines/{}/cycles", t.mac)).await;
    let [cy] = cycles.as_slice() else {
        bail!(
            "{}: {} flash cycles, not one: {cycles:?}",
            t.mac,
            cycles.len()
        );
    };
    if cy.state != "done" || cy.ok != Some(true) {
        bail!(
            "cycle {} is {} (ok {:?}, {:?})",
            cy.id,
            cy.state,
            cy.ok,
            cy.reason
        );
    }
    if let Some(want) = &c.disk_sha256 {
        if cy.disk_sha256.as_deref() != Some(want.as_str()) {
            bail!("the agent read back {:?}, not {want}", cy.disk_sha256);
        }
    }
    let closes = web
        .events(&t.mac)
        .await
        .iter()
        .filter(|e| e["kind"] == "flash.done" || e["kind"] == "flash.failed")
        .count();
    if closes != 1 {
        bail!("{closes} flash.done/flash.failed events, not one");
    }
    println!(
        "bty-dev-web: cycle {} done ok, disk sha256 {}, last progress {} bytes",
        cy.id,
        cy.disk_sha256.as_deref().unwrap_or("-"),
        cy.bytes_done.unwrap_or(0)
    );
    Ok(())
}
