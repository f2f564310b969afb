//! iPXE scripts, rendered from templates compiled into the binary.
//!
//! Every value that reaches a script is validated before (MACs are parsed,
//! names and serials pass `bty_proto::text`, the Host header passes
//! `validate_host`, config values are checked at load). Free text that the
//! server composes itself still goes through the `ipxe_text` filter, which
//! keeps only characters with no meaning to iPXE.

use minijinja::{context, Environment};

use crate::config::BootConfig;
use crate::domain::cycle::{Answer, AnswerKind};

pub use crate::domain::cycle::ScriptCycle;

/// The compiled templates.
pub struct Templates {
    env: Environment<'static>,
}

/// Keep letters, digits and `space , . ( ) _ - : / =`; anything else
/// becomes `_`.
pub fn ipxe_text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " ,.()_-:/=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// Load every template.
    pub fn new() -> Templates {
        let mut env = Environment::new();
        env.set_keep_trailing_newline(true);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_filter("ipxe_text", |s: String| ipxe_text(&s));
        for (name, src) in [
            ("bootstrap.ipxe", include_str!("templates/bootstrap.ipxe")),
            ("local.ipxe", include_str!("templates/local.ipxe")),
            ("netboot.ipxe", include_str!("templates/netboot.ipxe")),
            ("parked.ipxe", include_str!("templates/parked.ipxe")),
            (
                "chain-bootstrap.ipxe",
                include_str!("templates/chain-bootstrap.ipxe"),
            ),
        ] {
            env.add_template(name, src)
                .unwrap_or_else(|e| panic!("built-in template {name} is broken: {e}"));
        }
        Templates { env }
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> String {
        self.env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .unwrap_or_else(|e| {
                // Only reachable through a bug in a built-in template; the
                // safest script for a machine is then "do nothing".
                tracing::error!("rendering {name}: {e}");
                "#!ipxe\necho bty-web: internal error, see its log\nexit\n".into()
            })
    }

    /// The script for `answer`: what `GET /pxe/{mac}` serves and what the
    /// machine page previews, so the two cannot differ. `host` is the
    /// validated `Host` the machine reached bty-web at.
    pub fn answer(&self, host: &str, boot: &BootConfig, answer: &Answer) -> String {
        let mac = answer.mac.to_string();
        let mode = answer.mode.as_str();
        let netboot = |cycle| {
            let (k, i, c) = (&boot.kernel, &boot.initrd, &boot.console);
            self.netboot(host, &mac, mode, k, i, c, cycle)
        };
        match &answer.kind {
            AnswerKind::Local { drive, why } => self.local(&mac, mode, drive, why),
            AnswerKind::Flash(cycle) => netboot(Some(cycle)),
            AnswerKind::Inventory => netboot(None),
            AnswerKind::Parked { reason } => {
                self.parked(host, &mac, &answer.mac.hyphenated(), reason)
            }
        }
    }

    /// `GET /pxe-bootstrap.ipxe`.
    pub fn bootstrap(&self, host: &str) -> String {
        self.render("bootstrap.ipxe", context! { host })
    }

    /// The local-disk boot.
    pub fn local(&self, mac: &str, mode: &str, drive: &str, why: &str) -> String {
        self.render("local.ipxe", context! { mac, mode, drive, why })
    }

    /// The netboot env chain: a flash (`cycle` set) or inventory.
    #[allow(clippy::too_many_arguments)]
    pub fn netboot(
        &self,
        host: &str,
        mac: &str,
        mode: &str,
        kernel: &str,
        initrd: &str,
        console: &str,
        cycle: Option<&ScriptCycle>,
    ) -> String {
        self.render(
            "netboot.ipxe",
            context! { host, mac, mode, kernel, initrd, console, cycle },
        )
    }

    /// A parked machine: say why, wait, ask again.
    pub fn parked(&self, host: &str, mac: &str, mac_hyphen: &str, why: &str) -> String {
        self.render("parked.ipxe", context! { host, mac, mac_hyphen, why })
    }

    /// iPXE asked for an iPXE bootfile: continue with the bootstrap chain.
    pub fn chain_bootstrap(&self, host: &str, name: &str) -> String {
        self.render("chain-bootstrap.ipxe", context! { host, name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipxe_text_neutralises_everything_else() {
        assert_eq!(
            ipxe_text("a\nchain http://x;${y}&&z"),
            "a_chain http://x___y___z"
        );
    }
}
