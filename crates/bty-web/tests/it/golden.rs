//! Every iPXE script against a golden file in tests/golden/.
//! `BTY_BLESS=1 cargo test -p bty-web --test it golden` rewrites them.

use std::path::PathBuf;

use bty_proto::BootMode;
use bty_testkit::web::*;
use bty_web::ipxe::{ScriptCycle, Templates};
use serde_json::json;

fn check(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("BTY_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing; run with BTY_BLESS=1", path.display()));
    assert_eq!(
        got, want,
        "{name} differs from its golden file (BTY_BLESS=1 to accept)"
    );
}

const HOST: &str = "192.0.2.10:8080";
const M: &str = "52:54:00:12:34:56";

#[test]
fn templates_match_golden_files() {
    let t = Templates::new();
    check("bootstrap.ipxe", &t.bootstrap(HOST));
    check(
        "local-ipxe-exit.ipxe",
        &t.local(M, "ipxe-exit", "0x80", "boot_mode is ipxe-exit"),
    );
    check(
        "local-after-flash.ipxe",
        &t.local(
            M,
            "bty-flash-always",
            "0x81",
            "the flash is done, this boot is the local disk",
        ),
    );
    let c = ScriptCycle {
        id: 42,
        attempt: 2,
        image_name: "debian-12".into(),
        target_serial: "S4EWNX0N123456 W".into(),
    };
    check(
        "flash.ipxe",
        &t.netboot(
            HOST,
            M,
            "bty-flash-once",
            "bty-netboot-x86_64.vmlinuz",
            "bty-netboot-x86_64.initrd",
            "console=tty0 console=ttyS0,115200",
            Some(&c),
        ),
    );
    check(
        "inventory.ipxe",
        &t.netboot(HOST, M, "bty-inventory", "k.vmlinuz", "i.initrd", "", None),
    );
    check(
        "parked.ipxe",
        &t.parked(
            HOST,
            M,
            "52-54-00-12-34-56",
            "3 flash attempts did not end in done ok (limit flash.max_attempts = 3)",
        ),
    );
    check("chain-bootstrap.ipxe", &t.chain_bootstrap(HOST, "ipxe.efi"));
}

#[test]
fn exact_contract_lines() {
    let t = Templates::new();
    assert_eq!(
        t.bootstrap(HOST),
        "#!ipxe\nchain http://192.0.2.10:8080/pxe/${mac:hexhyp}\n"
    );
    let local = t.local(M, "ipxe-exit", "0x80", "x");
    assert!(local.ends_with(
        "\niseq ${platform} efi && exit 1 || sanboot --no-describe --drive 0x80 || exit\n"
    ));
    let c = ScriptCycle {
        id: 1,
        attempt: 1,
        image_name: "a".into(),
        target_serial: "S".into(),
    };
    let flash = t.netboot(
        HOST,
        M,
        "bty-flash-once",
        "k",
        "i",
        "console=ttyS0",
        Some(&c),
    );
    assert!(flash.contains(&format!(
        "\nkernel http://{HOST}/boot/k?mac={M} initrd=i bty.server=http://{HOST} bty.mac={M} console=ttyS0\ninitrd http://{HOST}/boot/i?mac={M}\nboot\n"
    )), "{flash}");
}

#[tokio::test]
async fn served_scripts_match_golden_files() {
    // The same scripts as the server sends them (Host = the test socket,
    // so normalise it).
    let s = Web::start("").await;
    let norm = |t: String| t.replace(&s.addr.to_string(), "HOST");
    check(
        "served-bootstrap.ipxe",
        &norm(s.get_text("/pxe-bootstrap.ipxe").await.1),
    );
    check("served-inventory.ipxe", &norm(s.pxe(MAC).await));
    s.flash(MAC, BootMode::FlashOnce).await;
    check("served-flash.ipxe", &norm(s.pxe(MAC).await));
    let (st, _) = s.put_machine(MAC, &json!({"boot_mode": "ipxe-exit"})).await;
    assert_eq!(st, 200);
    check("served-local.ipxe", &norm(s.pxe(MAC).await));
    s.stop().await;
}

/// The Secure Boot chain's GRUB configs, one per kind of answer.
#[test]
fn grub_templates_match_golden_files() {
    use bty_web::domain::cycle::{Answer, AnswerKind};
    let t = Templates::new();
    let boot = bty_web::config::BootConfig::default();
    let mac: bty_proto::Mac = M.parse().unwrap();
    let answer = |mode, kind| Answer { mac, mode, kind };
    check("grub.cfg.grub", &t.grub_cfg());
    let c = ScriptCycle {
        id: 42,
        attempt: 2,
        image_name: "debian-12".into(),
        target_serial: "S4EWNX0N123456 W".into(),
    };
    let cases = [
        (
            "flash.grub",
            answer(BootMode::FlashOnce, AnswerKind::Flash(c)),
        ),
        (
            "inventory.grub",
            answer(BootMode::Inventory, AnswerKind::Inventory),
        ),
        (
            "local.grub",
            answer(
                BootMode::FlashAlways,
                AnswerKind::Local {
                    drive: "0x80".into(),
                    why: "the flash is done, this boot is the local disk",
                },
            ),
        ),
        (
            "parked.grub",
            answer(
                BootMode::FlashOnce,
                AnswerKind::Parked {
                    reason:
                        "3 flash attempts did not end in done ok (limit flash.max_attempts = 3)"
                            .into(),
                },
            ),
        ),
    ];
    for (name, a) in cases {
        check(name, &t.grub_answer(HOST, &boot, &a));
    }
}
