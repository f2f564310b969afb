//! The Secure Boot chain's GRUB reads (`/grub/*`), as bty-tftp relays
//! them: from 127.0.0.1 (bty-tftp beside bty-web) with the relay key and
//! the machine's address ([`MACHINE`], 127.0.0.3) in the headers, and the
//! TFTP server's address as `Host`. The machine's agent then talks to
//! bty-web directly, from [`MACHINE`].

use std::net::{IpAddr, Ipv4Addr};

use bty_proto::relay::{CLIENT_HEADER, KEY_HEADER};
use bty_proto::BootMode;
use bty_testkit::client::Fetch;
use bty_testkit::web::*;
use serde_json::{json, Value};

const KEY: &str = "relay-key-of-the-grub-tests-0123456789";
/// The machine's address: what bty-tftp names in `x-bty-relay-client`.
const MACHINE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// The address the machine reached bty-tftp at, as bty-tftp sends it.
const HOST: &str = "192.0.2.10:8080";
const KERNEL: &str = "bty-netboot-x86_64.vmlinuz";
const INITRD: &str = "bty-netboot-x86_64.initrd";

fn with_key(extra: &str) -> String {
    format!("[pxe]\nrepeat_window_secs = 0\nrelay_key = {KEY:?}\n{extra}")
}

/// The machine's own client (its agent, after Linux booted).
fn machine(s: &Web) -> WebClient {
    WebClient(s.0.from_ip(IpAddr::V4(MACHINE)))
}

/// A relayed GET of `grub/<rest>` for [`MACHINE`] with `key`.
fn relayed_with(s: &Web, rest: &str, key: Option<&str>) -> reqwest::RequestBuilder {
    let r = s
        .get(&format!("/grub/{rest}"))
        .header(CLIENT_HEADER, MACHINE.to_string())
        .header("host", HOST);
    match key {
        Some(k) => r.header(KEY_HEADER, k),
        None => r,
    }
}

/// A relayed GET with the right key: status and text.
async fn relayed(s: &Web, rest: &str) -> (u16, String) {
    let r = relayed_with(s, rest, Some(KEY)).fetch().await;
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// The per-MAC config GRUB reads for [`MAC`], relayed (asserts 200).
async fn mac_config(s: &Web) -> String {
    let (st, text) = relayed(s, &format!("grub.cfg-{MAC}")).await;
    assert_eq!(st, 200, "{text}");
    grub_parses(&text);
    text
}

/// GRUB's kernel fetch, relayed (asserts the bytes).
async fn relayed_kernel(s: &Web) {
    let r = relayed_with(s, &format!("boot/{MAC_HYP}/{KERNEL}"), Some(KEY))
        .fetch()
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), KERNEL_BYTES);
}

/// GRUB's own parser (`grub-script-check`, grub-common) accepts `cfg`.
/// It checks the syntax GRUB reads, not what the commands do.
fn grub_parses(cfg: &str) {
    if !bty_testkit::tools::have("grub-script-check", "grub-common") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grub.cfg");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new("grub-script-check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "grub-script-check rejects:\n{cfg}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn token(plan: &Value) -> String {
    plan["token"].as_str().expect("a flash plan").to_string()
}

fn is_grub_flash(cfg: &str) -> bool {
    cfg.contains(&format!("linux $prefix/boot/{MAC_HYP}/{KERNEL} "))
        && cfg.contains(&format!("initrd $prefix/boot/{MAC_HYP}/{INITRD}\n"))
        && cfg.contains("\nboot\n")
        && cfg.contains(": flashing ")
}

fn is_grub_local(cfg: &str) -> bool {
    cfg.contains("chainloader /EFI/BOOT/BOOTX64.EFI") && !cfg.contains("linux ")
}

/// The last command of a config: what GRUB does when everything before
/// fell through. Never GRUB's prompt.
fn last_command(cfg: &str) -> &str {
    cfg.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("")
}

#[tokio::test]
async fn grub_cfg_is_the_same_for_everyone_and_asks_for_the_mac_config() {
    let s = Web::start(&with_key("")).await;
    let (st, plain) = s.get_text("/grub/grub.cfg").await;
    assert_eq!(st, 200, "{plain}");
    let (st, relayed_cfg) = relayed(&s, "grub.cfg").await;
    assert_eq!(st, 200);
    assert_eq!(plain, relayed_cfg, "one config for every machine");
    grub_parses(&plain);
    let lines: Vec<&str> = plain
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(lines[0], "set timeout=0", "{plain}");
    assert!(lines[1].starts_with("echo "), "{plain}");
    assert_eq!(
        lines[2], "source $prefix/grub.cfg-$net_default_mac",
        "{plain}"
    );
    assert!(
        lines[3].starts_with("echo ") && lines[3].contains("no bootable answer"),
        "{plain}"
    );
    assert_eq!(&lines[4..], ["sleep 30", "reboot"], "{plain}");
    // A wrong key shows at the first file GRUB reads.
    let r = relayed_with(&s, "grub.cfg", Some("wrong")).fetch().await;
    assert_eq!(r.status(), 403);
    s.stop().await;
}

#[tokio::test]
async fn flash_once_over_grub_boots_plans_and_reports_for_the_relayed_address() {
    let s = Web::start(&with_key("")).await;
    s.flash(MAC, BootMode::FlashOnce).await;
    let cfg = mac_config(&s).await;
    assert!(is_grub_flash(&cfg), "{cfg}");
    assert!(
        cfg.contains(&format!(
            "linux $prefix/boot/{MAC_HYP}/{KERNEL} bty.server=http://{HOST} bty.mac={MAC} \
             console=tty0 console=ttyS0,115200\n"
        )),
        "{cfg}"
    );
    assert!(
        !cfg.contains("initrd="),
        "GRUB hands the initrd over: {cfg}"
    );
    assert!(cfg.contains("(cycle 1, attempt 1)"), "{cfg}");
    assert_eq!(last_command(&cfg), "reboot", "{cfg}");
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "offered");

    // The cycle was offered to the relayed address, not to bty-tftp's:
    // the same kernel fetched directly from 127.0.0.1 boots nothing.
    s.boot_kernel(MAC).await;
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "offered");
    let (st, _) = s.get_json(&format!("/pxe/{MAC}/plan")).await;
    assert_eq!(st, 409, "no plan before the kernel fetch");

    // GRUB's kernel fetch, relayed, boots it for the machine's address.
    relayed_kernel(&s).await;
    let m = s.machine(MAC).await;
    assert_eq!(m["cycle"]["state"], "booted", "{m}");
    let booted = s
        .events(MAC)
        .await
        .into_iter()
        .find(|e| e["kind"] == "cycle.booted")
        .expect("a cycle.booted event");
    assert!(
        booted.to_string().contains(&MACHINE.to_string()),
        "{booted}"
    );

    // The plan goes to the machine, not to another host (here bty-tftp's).
    let (st, e) = s.get_json(&format!("/pxe/{MAC}/plan")).await;
    assert_eq!(st, 403, "{e}");
    let agent = machine(&s);
    let plan = agent.plan(MAC).await;
    assert_eq!(plan["mode"], "flash", "{plan}");
    assert_eq!(
        plan["report"]["done"],
        format!("http://{}/pxe/{MAC_HYP}/done", s.addr)
    );
    let t = token(&plan);
    assert_eq!(s.done(MAC, &t, true).await.0, 403, "not from another host");
    assert_eq!(agent.progress(MAC, &t, 500).await.0, 200);
    assert_eq!(agent.done(MAC, &t, true).await.0, 200);
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "done");

    // flash-once: the disk from now on, over GRUB as over iPXE.
    for _ in 0..2 {
        let cfg = mac_config(&s).await;
        assert!(is_grub_local(&cfg), "{cfg}");
    }
    assert!(is_local(&s.pxe(MAC).await));
    assert_eq!(s.cycles(MAC).await.len(), 1);
    s.stop().await;
}

/// Everything a refused relayed request could have changed.
async fn snapshot(s: &Web) -> (Value, usize, usize) {
    (
        s.machine(MAC).await,
        s.cycles(MAC).await.len(),
        s.events(MAC).await.len(),
    )
}

#[tokio::test]
async fn relayed_requests_without_the_right_key_are_refused_and_change_nothing() {
    let s = Web::start(&with_key("")).await;
    s.flash(MAC, BootMode::FlashOnce).await;
    let before = snapshot(&s).await;
    let names = [
        format!("grub.cfg-{MAC}"),
        format!("boot/{MAC_HYP}/{KERNEL}"),
        "grub.cfg".to_string(),
    ];
    for name in &names {
        for key in [Some("wrong-key"), Some(""), None, Some(&KEY[1..])] {
            let r = relayed_with(&s, name, key).fetch().await;
            assert_eq!(r.status(), 403, "{name} with {key:?}");
            let e: Value = r.json().await.unwrap();
            let msg = e["error"].as_str().unwrap();
            assert!(msg.contains("relay_key"), "{msg}");
            assert!(!msg.contains(KEY), "the key is never shown: {msg}");
        }
        // The right key, but a client that is no address.
        let r = s
            .get(&format!("/grub/{name}"))
            .header(KEY_HEADER, KEY)
            .header(CLIENT_HEADER, "10.0.0.1; rm")
            .fetch()
            .await;
        assert_eq!(r.status(), 403, "{name}");
        let e: Value = r.json().await.unwrap();
        assert!(e["error"].as_str().unwrap().contains("IP address"), "{e}");
    }
    assert_eq!(
        snapshot(&s).await,
        before,
        "refused requests change nothing"
    );
    // The same holds on the iPXE surface: one rule for the open routes.
    let r = s
        .get(&format!("/pxe/{MAC}"))
        .header(CLIENT_HEADER, MACHINE.to_string())
        .fetch()
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(snapshot(&s).await, before);
    s.stop().await;

    // No key configured: every relayed request is refused.
    let s = Web::start("").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    let before = snapshot(&s).await;
    for name in &names {
        let r = relayed_with(&s, name, Some(KEY)).fetch().await;
        assert_eq!(r.status(), 403, "{name}");
        let e: Value = r.json().await.unwrap();
        let msg = e["error"].as_str().unwrap();
        assert!(msg.contains("no [pxe] relay_key"), "{msg}");
    }
    assert_eq!(snapshot(&s).await, before);
    // Without relay headers the routes answer the HTTP peer, as /pxe does.
    let (st, cfg) = s.get_text(&format!("/grub/grub.cfg-{MAC}")).await;
    assert_eq!(st, 200);
    assert!(is_grub_flash(&cfg), "{cfg}");
    let r = s
        .get(&format!("/grub/boot/{MAC_HYP}/{KERNEL}"))
        .fetch()
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "booted");
    assert_eq!(s.plan(MAC).await["mode"], "flash");
    s.stop().await;
}

#[tokio::test]
async fn flash_always_alternates_over_grub_on_the_same_cycles_as_ipxe() {
    let s = Web::start(&with_key("")).await;
    s.flash(MAC, BootMode::FlashAlways).await;
    let agent = machine(&s);
    let mut ids = Vec::new();
    for round in 0..2 {
        let cfg = mac_config(&s).await;
        assert!(is_grub_flash(&cfg), "round {round}: {cfg}");
        relayed_kernel(&s).await;
        let plan = agent.plan(MAC).await;
        ids.push(plan["cycle"].as_str().unwrap().to_string());
        assert_eq!(agent.done(MAC, &token(&plan), true).await.0, 200);
        let cfg = mac_config(&s).await;
        assert!(is_grub_local(&cfg), "the disk's turn: {cfg}");
    }
    assert_ne!(ids[0], ids[1], "each flash is a new cycle");
    // The disk turn was spent over GRUB: iPXE's next answer is a flash.
    let script = agent.pxe(MAC).await;
    assert!(is_flash(&script), "{script}");
    assert!(script.contains("(cycle 3, attempt 1)"), "{script}");
    let hist = s.cycles(MAC).await;
    assert_eq!(hist.len(), 3);
    let (_, m) = s.get_text("/metrics").await;
    assert!(m.contains("bty_pxe_offers_total{kind=\"flash\"} 3"), "{m}");
    s.stop().await;
}

#[tokio::test]
async fn inventory_parked_and_local_configs() {
    let s = Web::start(&with_key("[flash]\nmax_attempts = 1\n")).await;
    // An unknown MAC: registered, inventory netboot.
    let cfg = mac_config(&s).await;
    assert!(cfg.contains("report inventory"), "{cfg}");
    assert!(
        cfg.contains(&format!(
            "linux $prefix/boot/{MAC_HYP}/{KERNEL} bty.server=http://{HOST} bty.mac={MAC} "
        )),
        "{cfg}"
    );
    assert!(cfg.contains(&format!("initrd $prefix/boot/{MAC_HYP}/{INITRD}\n")));
    assert!(!cfg.contains("flashing"), "{cfg}");
    assert_eq!(last_command(&cfg), "reboot");
    assert_eq!(s.machine(MAC).await["boot_mode"], "bty-inventory");

    // Out of attempts: parked, asking again.
    s.flash(MAC, BootMode::FlashOnce).await;
    assert!(is_grub_flash(&mac_config(&s).await));
    relayed_kernel(&s).await;
    let agent = machine(&s);
    let plan = agent.plan(MAC).await;
    assert_eq!(agent.done(MAC, &token(&plan), false).await.0, 200);
    let cfg = mac_config(&s).await;
    assert!(cfg.contains(&format!("echo 'bty: {MAC} is parked: 1 flash attempts")));
    assert!(cfg.contains("\nsleep 60\n"), "{cfg}");
    assert!(
        cfg.contains(&format!("\nconfigfile $prefix/grub.cfg-{MAC}\n")),
        "{cfg}"
    );
    assert!(!cfg.contains("linux ") && !cfg.contains("chainloader"));
    assert_eq!(last_command(&cfg), "reboot");
    assert!(is_parked(&s.pxe(MAC).await), "iPXE agrees");

    // Local: chainload the ESP's loaders in turn, then the firmware.
    s.put_machine_ok(MAC, &json!({"boot_mode": "ipxe-exit"}))
        .await;
    let cfg = mac_config(&s).await;
    let mut at = 0;
    for loader in [
        "/EFI/BOOT/BOOTX64.EFI",
        "/EFI/debian/shimx64.efi",
        "/EFI/Microsoft/Boot/bootmgfw.efi",
    ] {
        let block = format!(
            "if search --no-floppy --file --set=root {loader}; then\n  \
             echo \"bty: chainloading {loader} from $root\"\n  \
             chainloader {loader}\n  boot\nfi\n"
        );
        let found = cfg[at..]
            .find(&block)
            .unwrap_or_else(|| panic!("{block} in order in {cfg}"));
        at += found + block.len();
    }
    assert!(cfg[at..].contains("\nexit 1\n"), "{cfg}");
    assert!(!cfg.contains("linux "), "{cfg}");
    assert_eq!(last_command(&cfg), "reboot");
    s.stop().await;
}

#[tokio::test]
async fn a_browser_gets_the_preview_and_changes_nothing() {
    let s = Web::start(&with_key("")).await;
    s.flash(MAC, BootMode::FlashOnce).await;
    let before = snapshot(&s).await;
    for (h, v) in [
        ("sec-fetch-mode", "no-cors"),
        ("origin", "http://evil.example"),
    ] {
        let r = s
            .get(&format!("/grub/grub.cfg-{MAC}"))
            .header(h, v)
            .fetch()
            .await;
        assert_eq!(r.status(), 200, "{h}");
        let cfg = r.text().await.unwrap();
        assert!(
            is_grub_flash(&cfg) && cfg.contains("(cycle 0, attempt 1)"),
            "{cfg}"
        );
        let r = s
            .get(&format!("/grub/boot/{MAC_HYP}/{KERNEL}"))
            .header(h, v)
            .fetch()
            .await;
        assert_eq!(r.status(), 200, "{h}");
    }
    assert_eq!(snapshot(&s).await, before, "a browser changes nothing");
    // The machine page's plain-text preview is what GRUB is then served
    // (the cycle not opened yet shows as 0).
    let (st, preview) = s.get_text(&format!("/ui/machines/{MAC_HYP}/grub")).await;
    assert_eq!(st, 200, "{preview}");
    let (st, served) = s.get_text(&format!("/grub/grub.cfg-{MAC}")).await;
    assert_eq!(st, 200);
    assert_eq!(preview, served.replace("cycle 1,", "cycle 0,"));
    let (st, page) = s.page(&format!("/ui/machines/{MAC_HYP}")).await;
    assert_eq!(st, 200);
    let page = bty_testkit::client::slashes(page);
    assert!(page.contains("GRUB config it would get now"), "{page}");
    assert!(
        page.contains(&format!("linux $prefix/boot/{MAC_HYP}/{KERNEL} ")),
        "{page}"
    );
    assert!(page.contains(&format!("href=\"/ui/machines/{MAC_HYP}/grub\"")));
    let (st, _) = s.get_text("/ui/machines/52-54-00-00-00-99/grub").await;
    assert_eq!(st, 404);
    s.stop().await;
}

/// GRUB's reader would take `'`, `"`, `$`, `;`, `{`, `#` or a newline in a
/// value as script. The park reason is the only free text stored; forged
/// straight into the database, it still cannot add a command.
#[tokio::test]
async fn hostile_text_cannot_inject_grub_commands() {
    let s = Web::start(&with_key("[flash]\nmax_attempts = 1\n")).await;
    s.flash(MAC, BootMode::FlashOnce).await;
    mac_config(&s).await;
    relayed_kernel(&s).await;
    let agent = machine(&s);
    let plan = agent.plan(MAC).await;
    agent.done(MAC, &token(&plan), false).await;
    assert!(mac_config(&s).await.contains("is parked"));
    let evil = "x'\nreboot\necho \"$(id)\"; set root=${evil} {a} # \\ | && `y`";
    {
        let db = crate::store(&s);
        let n = db
            .execute(
                "UPDATE machines SET parked_reason = ?1 WHERE mac = ?2",
                bty_web::db::sql::params![evil, MAC],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let cfg = mac_config(&s).await;
    let line = cfg
        .lines()
        .find(|l| l.starts_with("echo") && l.contains("is parked:"))
        .expect("the park line");
    let inside = line
        .strip_prefix(&format!("echo 'bty: {MAC} is parked: x_"))
        .and_then(|l| l.strip_suffix('\''))
        .unwrap_or_else(|| panic!("one quoted word list: {line}"));
    assert!(inside.starts_with("_reboot_echo _"), "{inside}");
    for c in ['\'', '"', '$', ';', '{', '}', '#', '\\', '|', '&', '`'] {
        assert!(!inside.contains(c), "{c:?} in {inside}");
    }
    let commands: Vec<&str> = cfg
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(
        commands,
        ["echo", "echo", "sleep", "configfile", "reboot"],
        "{cfg}"
    );
    // A Host header that would add words is refused before rendering.
    for host in ["h;reboot", "h${x}", "h\"x", "h'x"] {
        let resp = s
            .raw(&format!(
                "GET /grub/grub.cfg-{MAC} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            ))
            .await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{host:?}: {resp}");
    }
    s.stop().await;
}

#[tokio::test]
async fn boot_files_range_head_and_refusals() {
    let s = Web::start(&with_key("")).await;
    let r = relayed_with(&s, &format!("boot/{MAC_HYP}/missing.img"), Some(KEY))
        .fetch()
        .await;
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("missing.img"), "{e}");
    let path = format!("/grub/boot/{MAC_HYP}/{KERNEL}");
    let r = s.get(&path).header("range", "bytes=2-5").fetch().await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &KERNEL_BYTES[2..=5]);
    let r = s.head(&path).fetch().await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        KERNEL_BYTES.len().to_string().as_str()
    );
    for (bad, status) in [
        (format!("/grub/boot/{MAC_HYP}/..%2fstate.db"), 400),
        (format!("/grub/boot/{MAC_HYP}/.hidden"), 400),
        (format!("/grub/boot/not-a-mac/{KERNEL}"), 400),
        ("/grub/menu.lst".to_string(), 404),
        ("/grub/grub.cfg-zz".to_string(), 400),
    ] {
        let (st, t) = s.get_text(&bad).await;
        assert_eq!(st, status, "{bad}: {t}");
    }
    s.stop().await;
}
