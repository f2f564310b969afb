//! iPXE scripts and the Secure Boot chain's GRUB configs, rendered from
//! templates compiled into the binary.
//!
//! Every value that reaches a script is validated before (MACs are parsed,
//! names and serials pass `bty_proto::text`, the Host header passes
//! `validate_host`, config values are checked at load). Free text that the
//! server composes itself still goes through the `ipxe_text` filter (iPXE)
//! or `grub_text` (GRUB), which keep only characters with no meaning to
//! the reader.

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

/// Keep letters, digits and `space , . ( ) _ - : / = +`; anything else
/// becomes `_`. What is left has no meaning to GRUB's script reader
/// (`$`, `;`, quotes, `\`, braces, `|`, `&`, `<`, `>`, `#`, newlines,
/// glob characters are all gone). Templates put the result inside
/// single quotes or a comment, or use it where a validated value (a file
/// name, the console) already has no space.
pub fn grub_text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " ,.()_-:/=+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What a GRUB local boot chainloads, in order, from the first ESP that
/// has it: the removable-media loader every installed OS leaves, Debian's
/// shim, Windows' boot manager.
pub const GRUB_LOADERS: &[&str] = &[
    "/EFI/BOOT/BOOTX64.EFI",
    "/EFI/debian/shimx64.efi",
    "/EFI/Microsoft/Boot/bootmgfw.efi",
];

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
        env.add_filter("grub_text", |s: String| grub_text(&s));
        for (name, src) in [
            ("bootstrap.ipxe", include_str!("templates/bootstrap.ipxe")),
            ("local.ipxe", include_str!("templates/local.ipxe")),
            ("netboot.ipxe", include_str!("templates/netboot.ipxe")),
            ("parked.ipxe", include_str!("templates/parked.ipxe")),
            (
                "chain-bootstrap.ipxe",
                include_str!("templates/chain-bootstrap.ipxe"),
            ),
            ("grub.cfg.grub", include_str!("templates/grub.cfg.grub")),
            ("local.grub", include_str!("templates/local.grub")),
            ("netboot.grub", include_str!("templates/netboot.grub")),
            ("parked.grub", include_str!("templates/parked.grub")),
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
                if name.ends_with(".grub") {
                    "echo 'bty-web: internal error, see its log'\nsleep 30\nreboot\n".into()
                } else {
                    "#!ipxe\necho bty-web: internal error, see its log\nexit\n".into()
                }
            })
    }

    /// `GET /grub/grub.cfg`: the same for every machine.
    pub fn grub_cfg(&self) -> String {
        self.render("grub.cfg.grub", context! {})
    }

    /// The GRUB config for `answer`: what `GET /grub/grub.cfg-{mac}`
    /// serves and the machine page previews, from the same [`Answer`] as
    /// the iPXE script. `host` is the validated `Host` (bty-tftp sends the
    /// address the machine reached it at).
    pub fn grub_answer(&self, host: &str, boot: &BootConfig, answer: &Answer) -> String {
        let mac = answer.mac.to_string();
        let mac_hyphen = answer.mac.hyphenated();
        let mode = answer.mode.as_str();
        let netboot = |cycle: Option<&ScriptCycle>| {
            let (kernel, initrd, console) = (&boot.kernel, &boot.initrd, &boot.console);
            self.render(
                "netboot.grub",
                context! { host, mac, mac_hyphen, mode, kernel, initrd, console, cycle },
            )
        };
        match &answer.kind {
            AnswerKind::Local { why, .. } => self.render(
                "local.grub",
                context! { mac, mode, why, loaders => GRUB_LOADERS },
            ),
            AnswerKind::Flash(cycle) => netboot(Some(cycle)),
            AnswerKind::Inventory => netboot(None),
            AnswerKind::Parked { reason } => {
                self.render("parked.grub", context! { mac, why => reason })
            }
        }
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

    #[test]
    fn grub_text_neutralises_everything_else() {
        assert_eq!(
            grub_text("a\nb;c$d'e\"f{g}h#i\\j|k&l<m>n*o?p[q]r`s"),
            "a_b_c_d_e_f_g_h_i_j_k_l_m_n_o_p_q_r_s"
        );
        assert_eq!(
            grub_text("debian-12 (x86_64) v1.2+3"),
            "debian-12 (x86_64) v1.2+3"
        );
    }
}
