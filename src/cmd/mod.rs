//! One module per subcommand. Each turns its clap args (and DEST's
//! manifest) into a plan, checked before anything is written, then runs
//! it as the numbered steps the operator sees (`ui::Steps`), each step a
//! short function. What several commands share: [`resolve`] (flags over
//! the manifest), [`files`] (DEST's files), [`boot`] (the netboot media in
//! bty-web's boot dir).

pub mod backup;
pub mod boot;
pub mod checks;
pub mod deploy;
pub mod files;
pub mod flash;
pub mod image;
pub mod init;
pub mod logs;
pub mod machines;
pub mod media;
pub mod passwd;
pub mod purge;
pub mod resolve;
pub mod serve;
pub mod status;
#[cfg(test)]
pub mod testkit;
pub mod upgrade;
pub mod usb;

use anyhow::Result;

use crate::{deploydir, exit, quadlet};

/// What plans are checked against about this host; tests make their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// This process runs as root.
    pub root: bool,
    /// systemd is PID 1 (Quadlet units can run).
    pub systemd: bool,
}

impl Host {
    /// This host, now.
    pub fn this() -> Host {
        Host {
            root: deploydir::is_root(),
            systemd: quadlet::systemd_running(),
        }
    }

    /// Refuse Quadlet mode when systemd does not run; nothing is touched yet.
    pub fn require_systemd(&self) -> Result<()> {
        if self.systemd {
            return Ok(());
        }
        Err(exit::refused(
            "--systemd installs Quadlet units for systemd, but systemd is not running on this \
             host (no /run/systemd/system; PID 1 is something else, as in most containers). \
             Nothing was changed. Deploy without --systemd to run the stack through the engine \
             API, or use `bty-lab init --systemd` to only render the units",
        ))
    }
}

/// Ask y/N on a terminal (`terminal`: stdin is one); refuse when there is
/// none to ask on.
pub fn confirm(question: &str, yes: bool, terminal: bool) -> Result<bool> {
    if yes {
        return Ok(true);
    }
    if !terminal {
        return Err(exit::refused(
            "refusing to proceed unattended: stdin is not a terminal; re-run with --yes to confirm",
        ));
    }
    Ok(dialoguer::Confirm::new()
        .with_prompt(question)
        .default(false)
        .interact()?)
}

/// Is stdin a terminal?
pub fn stdin_is_terminal() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdin().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_systemd_and_an_unattended_question_are_refusals() {
        let host = Host {
            root: true,
            systemd: false,
        };
        let e = host.require_systemd().unwrap_err();
        assert_eq!(exit::code_of(&e), exit::Code::Refused);
        assert!(e.to_string().contains("systemd is not running"), "{e}");
        let e = confirm("Proceed?", false, false).unwrap_err();
        assert_eq!(exit::code_of(&e), exit::Code::Refused);
        assert!(e.to_string().contains("--yes"), "{e}");
        assert!(confirm("Proceed?", true, false).unwrap());
    }
}
