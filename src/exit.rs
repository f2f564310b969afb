//! bty-lab's exit status: one enum, decided where an error is made and
//! read once, in `main`. Errors stay `anyhow` all the way up; the few that
//! mean more than "it failed" carry a [`Code`] (a [`Coded`] somewhere in
//! their chain), so a script can tell "nothing was changed" from "the
//! stack is down" without reading the message.

use std::fmt;

/// What bty-lab's exit status means. `bty-lab --help` lists these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Ok = 0,
    /// Anything not listed below.
    Failure = 1,
    /// clap's own: an unknown flag, a missing or malformed argument.
    Usage = 2,
    /// A safety check said no before anything was changed.
    Refused = 3,
    /// No container engine answered, or not the one DEST was deployed on.
    EngineUnreachable = 4,
    /// The stack did not become healthy.
    Unhealthy = 5,
}

impl Code {
    /// Every code, in order, for the help text.
    pub const ALL: [Code; 6] = [
        Code::Ok,
        Code::Failure,
        Code::Usage,
        Code::Refused,
        Code::EngineUnreachable,
        Code::Unhealthy,
    ];

    /// One line (or a few, under 80 columns) on what the code means.
    fn meaning(self) -> &'static str {
        match self {
            Code::Ok => "success",
            Code::Failure => "any other failure",
            Code::Usage => "usage: an unknown flag, a missing or malformed argument",
            Code::Refused => {
                "refused, nothing was changed: files in DEST bty-lab did not\n     \
                 write, not root, --systemd without systemd, a downgrade\n     \
                 without --allow-downgrade, DEST deployed on another engine,\n     \
                 a destructive purge without --yes or a terminal, a\n     \
                 symbolic link where bty-lab writes in DEST or the data dir,\n     \
                 a flash onto a disk in use, too small or not confirmed,\n     \
                 a backup that is damaged, altered or from a newer bty,\n     \
                 a restore onto a serve dir whose serve runs"
            }
            Code::EngineUnreachable => {
                "no container engine answered (or not the one DEST was\n     \
                 deployed on)"
            }
            Code::Unhealthy => {
                "the stack did not become healthy: deploy, passwd, upgrade\n     \
                 or restore (also when it rolled back to the old state)"
            }
        }
    }
}

impl From<Code> for std::process::ExitCode {
    fn from(c: Code) -> Self {
        std::process::ExitCode::from(c as u8)
    }
}

/// The `Exit status:` section of `bty-lab --help`.
pub fn help() -> String {
    let mut s = String::from("Exit status:\n");
    for c in Code::ALL {
        s.push_str(&format!("  {}  {}\n", c as u8, c.meaning()));
    }
    s.trim_end().to_string()
}

/// An error that says which exit code it means; its message is printed
/// as it is.
#[derive(Debug)]
pub struct Coded {
    pub code: Code,
    message: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// An error with `code` and `message`.
pub fn coded(code: Code, message: impl fmt::Display) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code,
        message: message.to_string(),
    })
}

/// A safety refusal: nothing was changed.
pub fn refused(message: impl fmt::Display) -> anyhow::Error {
    coded(Code::Refused, message)
}

/// No engine answered.
pub fn unreachable(message: impl fmt::Display) -> anyhow::Error {
    coded(Code::EngineUnreachable, message)
}

/// The stack did not become healthy.
pub fn unhealthy(message: impl fmt::Display) -> anyhow::Error {
    coded(Code::Unhealthy, message)
}

/// The code `e` means: the first [`Coded`] in its chain, else
/// [`Code::Failure`].
pub fn code_of(e: &anyhow::Error) -> Code {
    e.chain()
        .find_map(|c| c.downcast_ref::<Coded>())
        .map_or(Code::Failure, |c| c.code)
}

/// A new message for `e` that keeps the code `e` means (for errors whose
/// text is rebuilt around a cause).
pub fn reword(e: &anyhow::Error, message: impl fmt::Display) -> anyhow::Error {
    coded(code_of(e), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_survives_context_and_rewording() {
        let e = refused("DEST holds foreign files").context("bty-lab deploy");
        assert_eq!(code_of(&e), Code::Refused);
        assert_eq!(format!("{e:#}"), "bty-lab deploy: DEST holds foreign files");
        let e = reword(
            &unhealthy("bty-web is not healthy"),
            "deploy did not finish",
        );
        assert_eq!(code_of(&e), Code::Unhealthy);
        assert_eq!(code_of(&anyhow::anyhow!("plain")), Code::Failure);
    }

    #[test]
    fn the_help_lists_every_code_within_80_columns() {
        let h = help();
        for c in Code::ALL {
            assert!(h.contains(&format!("\n  {}  ", c as u8)), "{h}");
        }
        assert!(h.lines().all(|l| l.len() < 80), "{h}");
        // Distinct codes, and 2 is clap's.
        let mut n: Vec<u8> = Code::ALL.iter().map(|c| *c as u8).collect();
        n.dedup();
        assert_eq!(n.len(), Code::ALL.len());
        assert_eq!(Code::Usage as u8, 2);
    }
}
