//! `bty-lab backup` / `restore` against real `bty-lab serve` processes and
//! real archives: a backup taken while a machine flashes and 20 clients
//! poll plans, restored into a fresh data dir; and every refusal (damaged,
//! altered, newer, engine down) leaving DEST byte for byte as it was.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::image::{hex_sha, http, origin, start_serve};
use crate::util::{exits_with, fails_with, ok, run, stderr, TestDir};

const REFUSED: i32 = 3;
const ENGINE_UNREACHABLE: i32 = 4;

const FLASHING: &str = "52:54:00:bb:00:01";
const FLASHED: &str = "52:54:00:bb:00:02";
const WAITING: &str = "52:54:00:bb:00:03";

fn json_of(port: u16, path: &str) -> Value {
    let (code, body) = http(port, "GET", path, None);
    assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn send(port: u16, method: &str, path: &str, body: &Value) -> Value {
    let (code, b) = http(port, method, path, Some(&body.to_string()));
    assert!(
        (200..300).contains(&code),
        "{method} {path}: {code} {}",
        String::from_utf8_lossy(&b)
    );
    serde_json::from_slice(&b).unwrap_or(Value::Null)
}

/// What the API says of the machines, their cycles and the events; the
/// fields a plan poll moves (last seen) are left out of machines.
fn state(web: u16) -> (Value, BTreeMap<String, Value>, Value) {
    let mut machines = json_of(web, "/api/machines");
    for m in machines.as_array_mut().unwrap() {
        let m = m.as_object_mut().unwrap();
        for k in ["last_seen_at", "last_seen_ip", "cycle"] {
            m.remove(k);
        }
    }
    let cycles = [FLASHING, FLASHED, WAITING]
        .iter()
        .map(|mac| {
            let c = json_of(web, &format!("/api/machines/{mac}/cycles"));
            (mac.to_string(), c)
        })
        .collect();
    let events = json_of(web, "/api/events?limit=500")["events"].clone();
    (machines, cycles, events)
}

/// Set up machines through the API: one flashing (plan taken, progress
/// reported, no done), one flashed, one waiting for its first boot.
fn machines_and_a_flash(web: u16, src: &str, sha: &str, size: usize) -> String {
    send(
        web,
        "POST",
        "/api/images",
        &json!({"name": "lab-image", "url": src, "sha256": sha, "size": size}),
    );
    let body = json!({"boot_mode": "bty-flash-once", "image": "lab-image",
                      "target_disk_serial": "BTYTEST"});
    for mac in [FLASHING, FLASHED, WAITING] {
        send(web, "PUT", &format!("/api/machines/{mac}"), &body);
    }
    let mut tokens = Vec::new();
    for mac in [FLASHING, FLASHED] {
        let (code, script) = http(web, "GET", &format!("/pxe/{mac}"), None);
        assert_eq!(code, 200);
        assert!(String::from_utf8_lossy(&script).contains("flashing"));
        let kernel = format!("/boot/bty-netboot-x86_64.vmlinuz?mac={mac}");
        assert_eq!(http(web, "GET", &kernel, None).0, 200);
        let plan = json_of(web, &format!("/pxe/{mac}/plan"));
        assert_eq!(plan["mode"], "flash", "{plan}");
        let token = plan["token"].as_str().unwrap().to_string();
        let p = json!({"token": token, "bytes_done": size / 2, "bytes_total": size,
                       "phase": "writing", "rate": 1e6});
        send(web, "POST", &format!("/pxe/{mac}/progress"), &p);
        tokens.push(token);
    }
    let done = json!({"token": tokens[1], "ok": true, "sha256": sha, "duration_s": 1.5});
    send(web, "POST", &format!("/pxe/{FLASHED}/done"), &done);
    tokens.remove(0)
}

fn pxe_script(web: u16, mac: &str) -> String {
    let (code, s) = http(web, "GET", &format!("/pxe/{mac}"), None);
    assert_eq!(code, 200);
    String::from_utf8(s).unwrap()
}

#[test]
fn backup_during_flash_and_polling_then_restore() {
    let t = TestDir::new();
    let body: Vec<u8> = (0..(64u32 << 10)).map(|i| (i * 7 % 251) as u8).collect();
    let sha = hex_sha(&body);
    let (origin_port, _) = origin(body.clone());
    let src = format!("http://127.0.0.1:{origin_port}/lab.img");
    let (serve, web, _) = start_serve(&t);
    let data = t.path().join("data");
    let token = machines_and_a_flash(web, &src, &sha, body.len());

    // 20 clients poll the flashing machine's plan (as its agent would)
    // all through the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let (polls, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let pollers: Vec<_> = (0..20)
        .map(|_| {
            let (stop, polls, bad) = (stop.clone(), polls.clone(), bad.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let (code, _) = http(web, "GET", &format!("/pxe/{FLASHING}/plan"), None);
                    polls.fetch_add(1, Ordering::SeqCst);
                    if code != 200 {
                        bad.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    let o = run(&["backup", data.to_str().unwrap()]);
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for p in pollers {
        p.join().unwrap();
    }
    ok(&o);
    let (polls, bad) = (polls.load(Ordering::SeqCst), bad.load(Ordering::SeqCst));
    assert!(polls > 20, "the pollers polled {polls} times");
    eprintln!("backup took {took:?} beside {polls} plan polls in all");
    assert_eq!(
        bad, 0,
        "{bad} of {polls} plan polls failed during the backup"
    );
    let err = stderr(&o);
    let archive = std::fs::read_dir(data.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .expect("an archive in DATA/backups");
    assert!(err.contains(&archive.display().to_string()), "{err}");
    for m in [
        "bty/state.db",
        "withcache/withcache.db",
        "blobs are not included",
    ] {
        assert!(err.contains(m), "{m} not said:\n{err}");
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let before = state(web);
    drop(serve);

    // A fresh serve on an empty data dir: restore is refused while it
    // runs, then goes through once it is stopped.
    let fresh = TestDir::new();
    let (serve2, web2, _) = start_serve(&fresh);
    assert_eq!(json_of(web2, "/api/machines"), json!([]));
    let data2 = fresh.path().join("data");
    let (a, d) = (archive.to_str().unwrap(), data2.to_str().unwrap());
    let o = run(&["restore", a, d]);
    fails_with(&o, "a `bty-lab serve` runs on");
    exits_with(&o, REFUSED);
    drop(serve2);
    let o = run(&["restore", a, d]);
    ok(&o);
    let err = stderr(&o);
    assert!(err.contains("1 flash cycle(s) open"), "{err}");
    assert!(err.contains(".pre-restore-"), "{err}");

    let (serve3, web3, _) = start_serve(&fresh);
    let after = state(web3);
    assert_eq!(after.0, before.0, "machines differ after the restore");
    assert_eq!(after.2, before.2, "events differ after the restore");
    for (mac, cycles) in &before.1 {
        let got = &after.1[mac];
        if mac != FLASHING {
            assert_eq!(got, cycles, "{mac}'s cycles differ");
            continue;
        }
        // The cycle the backup caught flashing is failed, with the reason,
        // and nothing else of it changed.
        let (mut was, mut now) = (cycles[0].clone(), got[0].clone());
        assert_eq!(was["state"], "flashing", "{was}");
        assert_eq!(now["state"], "failed", "{now}");
        assert_eq!(now["ok"], false);
        assert!(
            now["reason"]
                .as_str()
                .unwrap()
                .contains("restored from a backup taken during this flash"),
            "{now}"
        );
        assert!(now["finished_at"].is_string(), "{now}");
        for k in ["state", "ok", "reason", "finished_at"] {
            was.as_object_mut().unwrap().remove(k);
            now.as_object_mut().unwrap().remove(k);
        }
        assert_eq!(now, was);
    }
    // Its agent's reports now find no open cycle; its next PXE boot
    // flashes again (attempt 2), never the half-written local disk. The
    // flashed one boots its disk; the catalog (withcache's) is back.
    let p = json!({"token": token, "bytes_done": 10, "bytes_total": 20, "phase": "writing"});
    let (code, _) = http(
        web3,
        "POST",
        &format!("/pxe/{FLASHING}/progress"),
        Some(&p.to_string()),
    );
    assert_ne!(code, 200, "a report for the failed cycle was taken");
    let script = pxe_script(web3, FLASHING);
    assert!(
        script.contains("kernel http://") && script.contains("attempt 2"),
        "{script}"
    );
    assert!(!pxe_script(web3, FLASHED).contains("kernel "));
    let images = json_of(web3, "/api/images");
    assert!(images.to_string().contains("lab-image"), "{images}");
    drop(serve3);
}

/// Every file under `dir` with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The members of a tar.zst, in order.
fn members(archive: &Path) -> Vec<(String, Vec<u8>)> {
    let f = std::fs::File::open(archive).unwrap();
    let mut tar = tar::Archive::new(zstd::Decoder::new(f).unwrap());
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            (name, b)
        })
        .collect()
}

fn pack(out: &Path, members: &[(String, Vec<u8>)]) {
    let f = std::fs::File::create(out).unwrap();
    let mut tar = tar::Builder::new(zstd::Encoder::new(f, 3).unwrap());
    for (name, b) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(b.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, b.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
}

/// Restore `archive` into `dest`: refused with `code` and `needle`, and
/// `dest` byte for byte as it was.
fn refused(archive: &Path, dest: &Path, code: i32, needle: &str) {
    let before = tree(dest);
    let o = run(&["restore", archive.to_str().unwrap(), dest.to_str().unwrap()]);
    fails_with(&o, needle);
    exits_with(&o, code);
    assert!(
        tree(dest) == before,
        "{} changed: {}",
        dest.display(),
        stderr(&o)
    );
}

#[test]
fn restore_refuses_damaged_altered_newer_archives_and_a_down_engine() {
    let t = TestDir::new();
    let (serve, web, _) = start_serve(&t);
    let body = json!({"boot_mode": "bty-inventory"});
    send(web, "PUT", &format!("/api/machines/{WAITING}"), &body);
    drop(serve);
    let data = t.path().join("data");
    let good = t.path().join("good.tar.zst");
    ok(&run(&[
        "backup",
        data.to_str().unwrap(),
        "--out",
        good.to_str().unwrap(),
    ]));
    assert!(!data.join("backups").exists(), "--out was not used");

    // Truncated: half of it.
    let bytes = std::fs::read(&good).unwrap();
    let cut = t.path().join("cut.tar.zst");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    refused(&cut, &data, REFUSED, "truncated or damaged");

    // Altered: one byte of the database flipped, the old manifest kept.
    let mut m = members(&good);
    let db = m.iter_mut().find(|(n, _)| n == "bty/state.db").unwrap();
    let mid = db.1.len() / 2;
    db.1[mid] ^= 0x01;
    let altered = t.path().join("altered.tar.zst");
    pack(&altered, &m);
    refused(
        &altered,
        &data,
        REFUSED,
        "does not match its manifest entry",
    );

    // Newer: a real archive whose database is at a schema this bty does
    // not know yet.
    let newer_db = t.path().join("newer.db");
    std::fs::copy(data.join("web/state.db"), &newer_db).unwrap();
    let latest = bty_web::db::schema::LATEST;
    rusqlite::Connection::open(&newer_db)
        .unwrap()
        .pragma_update(None, "user_version", latest + 1)
        .unwrap();
    let newer = t.path().join("newer.tar.zst");
    let mut w = bty_web::backup::Writer::create(&newer, "bty-lab backup").unwrap();
    w.add_sqlite("bty/state.db", &newer_db, t.path(), &mut |_, _| {})
        .unwrap();
    w.finish().unwrap();
    refused(&newer, &data, REFUSED, &format!("at schema {}", latest + 1));
    refused(&newer, &data, REFUSED, "upgrade bty-lab first");

    // A deploy whose engine does not answer: refused before anything is
    // stopped (4), the archive itself being fine.
    let dest = t.path().join("lab");
    ok(&run(&[
        "init",
        dest.to_str().unwrap(),
        "--host-addr",
        "10.0.0.5",
    ]));
    let manifest = dest.join(".bty-lab.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str(&format!(
        "\n[engine]\nkind = \"docker\"\naddr = \"{}\"\n",
        t.path().join("gone.sock").display()
    ));
    std::fs::write(&manifest, text).unwrap();
    std::fs::create_dir_all(dest.join("data/bty")).unwrap();
    std::fs::write(dest.join("data/bty/state.db"), b"the current state").unwrap();
    refused(&good, &dest, ENGINE_UNREACHABLE, "does not answer");

    // Not a file at all, and nothing to restore from: refused too.
    refused(
        &t.path().join("none.tar.zst"),
        &data,
        REFUSED,
        "is not a file",
    );
}
