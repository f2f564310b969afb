//! `bty-lab usb build`: the USB stick from the command line (the work is
//! in crate::usb).

use anyhow::Result;

use crate::cli::{UsbBuildArgs, UsbCommand};
use crate::usb;

/// Run a usb subcommand.
pub fn run(cmd: UsbCommand) -> Result<()> {
    match cmd {
        UsbCommand::Build(a) => build(a),
        UsbCommand::Write(a) => super::flash::usb_write(a),
    }
}

fn build(a: UsbBuildArgs) -> Result<()> {
    let netboot = crate::cli::netboot_dir(a.netboot.as_deref());
    if let (Some(dir), Some(_)) = (&netboot, &a.from) {
        anyhow::bail!(
            "--from builds this binary's media, and $BTY_NETBOOT_DIR names the operator's \
             ({}): choose one (unset BTY_NETBOOT_DIR to build)",
            dir.display()
        );
    }
    let o = usb::Options {
        out: a.out,
        images: a.images,
        server: a.server,
        user: a.user,
        password_stdin: a.password_stdin,
        key_label: a.key_label,
        auto: a.auto,
        from: a.from,
        netboot,
    };
    let built = usb::build(&o)?;
    println!("{}", o.out.display());
    eprintln!(
        "  ESP {} MiB at {} MiB, data {} MiB at {} MiB",
        built.layout.esp_size >> 20,
        built.layout.esp_start >> 20,
        built.layout.data_size >> 20,
        built.layout.data_start >> 20
    );
    for i in &built.manifest.images {
        eprintln!(
            "  {:24} {:8} {:>12} bytes  sha256 {}",
            i.name,
            i.format.as_str(),
            i.stored_size,
            i.stored_sha256
        );
    }
    if let Some(server) = &built.manifest.server {
        eprintln!(
            "  server {server}: its catalog is offered and flashes show on its machine pages \
             (stick key \"{}\"; revoke it on the Settings page)",
            built.key_label.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
