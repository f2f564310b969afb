//! Scheduled backups (`[backup]`, `/api/backups`, the Settings page's
//! Backups section) against a real bty-web on real SQLite: the archives
//! are read back with `backup::verify` and the snapshot opened with
//! SQLite. The schedule runs at `every = "1s"` so the file stays fast.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bty_testkit::poll::until;
use bty_testkit::web::{use_database, Web, WebClient, MAC};
use bty_web::backup;
use bty_web::backups::{CONFIG_MEMBER, DB_MEMBER, MADE_BY, POSTGRES_OFF};
use serde_json::{json, Value};

const PW: &str = "backup-admin-pw";

fn admin(web: &Web) -> WebClient {
    web.admin("bty-lab", PW)
}

fn archives(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| bty_web::backups::archive_time(n).is_some())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Verify the archive at `path` and count the machines its database holds.
fn machines_in(path: &Path) -> (backup::Manifest, i64, PathBuf, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let m = backup::verify(path, out.path()).unwrap();
    let db = out.path().join(DB_MEMBER);
    let n = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM machines WHERE mac = ?1", [MAC], |r| {
            r.get(0)
        })
        .unwrap();
    (m, n, db, out)
}

#[tokio::test]
async fn the_schedule_writes_verified_archives_and_keeps_the_newest() {
    if bty_testkit::pg::skip_on_postgres("the archives are SQLite snapshots") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bdir = dir.path().join("backups");
    std::fs::create_dir(&bdir).unwrap();
    // Not archives of bty-web's: never pruned, never listed.
    for foreign in [
        "notes.txt",
        "bty-x.tar.zst",
        "bty-20000101T000000Z.tar.zst.partial",
    ] {
        std::fs::write(bdir.join(foreign), b"mine").unwrap();
    }
    let web = Web::start_in(dir, "[backup]\nevery = \"1s\"\nkeep = 2\n").await;
    web.put_machine_ok(MAC, &json!({"boot_mode": "ipxe-exit"}))
        .await;
    let made = until(
        Duration::from_secs(12),
        "three scheduled backups",
        || async {
            let (_, m) = web.get_text("/metrics").await;
            let n: u64 = m
                .lines()
                .find_map(|l| l.strip_prefix("bty_backups_total "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            (n >= 3).then_some(n)
        },
    )
    .await;
    let dir = web.stop().await;
    let bdir = dir.path().join("backups");
    let names = archives(&bdir);
    assert_eq!(names.len(), 2, "{made} made, keep = 2: {names:?}");
    for foreign in [
        "notes.txt",
        "bty-x.tar.zst",
        "bty-20000101T000000Z.tar.zst.partial",
    ] {
        assert_eq!(
            std::fs::read(bdir.join(foreign)).unwrap(),
            b"mine",
            "{foreign}"
        );
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let newest = bdir.join(names.last().unwrap());
    assert_eq!(mode(&newest), 0o600);
    let (m, n, _, _keep) = machines_in(&newest);
    assert_eq!(m.made_by, MADE_BY);
    assert_eq!(n, 1, "the snapshot holds the machine registered before it");
    assert!(m.member(DB_MEMBER).is_some());
}

#[tokio::test]
async fn back_up_now_lists_and_downloads_for_the_admin_only() {
    if bty_testkit::pg::skip_on_postgres("the archives are SQLite snapshots") {
        return;
    }
    let web = Web::start(&format!(
        "[admin]\npassword = {PW:?}\n[backup]\nevery = \"off\"\n"
    ))
    .await;
    let a = admin(&web);
    a.put_machine_ok(MAC, &json!({"boot_mode": "ipxe-exit"}))
        .await;
    let (s, made) = a.post_json("/api/backups", &json!({})).await;
    assert_eq!(s, 201, "{made}");
    let name = made["name"].as_str().unwrap().to_string();
    let path = web.path().join("backups").join(&name);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(made["size"], bytes.len());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&web.path().join("backups")), 0o700);

    let (s, list) = a.get_json("/api/backups").await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["schedule"]["off"], "[backup] every = \"off\"");
    assert_eq!(list["archives"][0]["name"], name.as_str());
    assert_eq!(list["archives"][0]["size"], bytes.len());
    assert!(list["archives"][0]["created"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    let r = a.get(&format!("/api/backups/{name}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cd = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(cd, format!("attachment; filename=\"{name}\""));
    let got = r.bytes().await.unwrap();
    assert_eq!(got.as_ref(), bytes.as_slice(), "the download is the file");
    let copy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(copy.path(), &got).unwrap();
    let (m, n, _, _keep) = machines_in(copy.path());
    assert_eq!((m.made_by.as_str(), n), (MADE_BY, 1));

    // The Settings page lists it with a human size and a download link.
    let (s, page) = a.page("/ui/settings").await;
    assert_eq!(s, 200);
    assert!(
        page.contains(&format!("href=\"/api/backups/{name}\"")),
        "{page}"
    );
    assert!(page.contains("Scheduled backups are off"), "{page}");
    assert!(page.contains(" KiB<") || page.contains(" B<"), "{page}");

    // Nobody else.
    let anon = web.anonymous();
    for path in ["/api/backups".to_string(), format!("/api/backups/{name}")] {
        let r = anon.get(&path).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = anon.post("/api/backups").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = a
        .post("/api/backups")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a foreign Origin makes no backup");
    assert_eq!(archives(&web.path().join("backups")).len(), 1);

    // Only listed archives: no other file, no way out of the directory.
    let bdir = web.path().join("backups");
    std::fs::write(bdir.join("notes.txt"), b"x").unwrap();
    std::os::unix::fs::symlink(
        web.path().join("state.db"),
        bdir.join("bty-20000101T000000Z.tar.zst"),
    )
    .unwrap();
    for bad in [
        "../state.db",
        "..%2Fstate.db",
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E%2Fstate.db",
        "bty-x.tar.zst",
        "bty-20991231T235959Z.tar.zst",
        "bty-20000101T000000Z.tar.zst",
        "notes.txt",
        &format!("{name}%2F"),
    ] {
        let r = a.get(&format!("/api/backups/{bad}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{bad}");
    }
    let (_, list) = a.get_json("/api/backups").await;
    assert_eq!(list["archives"].as_array().unwrap().len(), 1, "{list}");

    // The Settings page's button does what POST /api/backups does.
    let (s, _, h) = a.post_form("/ui/settings/backups", &[]).await;
    assert_eq!(s, 303);
    let to = bty_testkit::client::location(&h);
    assert!(to.starts_with("/ui/settings?backup=bty-"), "{to}");
    let (_, page) = a.page(&to).await;
    assert!(page.contains("id=\"backup-notice\""), "{page}");
    let (_, list) = a.get_json("/api/backups").await;
    let names: Vec<&str> = list["archives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{list}");
    assert!(names[0] > name.as_str(), "newest first: {names:?}");
    assert!(
        page.contains(&format!("Backup {} written", names[0])),
        "{page}"
    );
    web.stop().await;
}

#[tokio::test]
async fn a_failed_backup_is_shown_and_the_next_run_succeeds() {
    if bty_testkit::pg::skip_on_postgres("the archives are SQLite snapshots") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be: as root, permissions would
    // not stop the writer, this does.
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let web = Web::start_in(
        dir,
        &format!(
            "[backup]\nevery = \"1s\"\ndir = {:?}\n",
            blocked.display().to_string()
        ),
    )
    .await;
    let page = until(
        Duration::from_secs(8),
        "the failure on Settings",
        || async {
            let (_, p) = web.page("/ui/settings").await;
            p.contains("id=\"backup-failure\"").then_some(p)
        },
    )
    .await;
    assert!(page.contains("The last backup failed"), "{page}");
    assert!(
        page.contains(&format!("creating {}", blocked.display())),
        "{page}"
    );
    let (s, v) = web
        .get_json("/api/events?kind=backup.failed&limit=10")
        .await;
    assert_eq!(s, 200);
    let ev = &v["events"][0];
    assert_eq!(ev["kind"], "backup.failed", "{v}");
    assert!(
        ev["summary"].as_str().unwrap().contains("[backup] dir"),
        "{ev}"
    );
    let (s, list) = web.get_json("/api/backups").await;
    assert_eq!(s, 200, "the server keeps serving");
    assert!(list["last_failure"]["reason"].as_str().is_some(), "{list}");
    let (s, _) = web.get_json("/api/machines").await;
    assert_eq!(s, 200);

    std::fs::remove_file(&blocked).unwrap();
    let list: Value = until(Duration::from_secs(8), "a backup after the fix", || async {
        let (_, l) = web.get_json("/api/backups").await;
        (l["archives"].as_array().is_some_and(|a| !a.is_empty()) && l["last_failure"].is_null())
            .then_some(l)
    })
    .await;
    assert!(list["last_success"].is_string(), "{list}");
    let (_, page) = web.page("/ui/settings").await;
    assert!(!page.contains("id=\"backup-failure\""), "{page}");
    let (_, m) = web.get_text("/metrics").await;
    assert!(!m.contains("bty_backups_failed_total 0\n"), "{m}");
    assert!(
        !m.contains("bty_backup_last_success_timestamp_seconds 0\n"),
        "{m}"
    );
    web.stop().await;
}

#[tokio::test]
async fn bad_backup_settings_stop_the_start() {
    for (extra, key) in [
        ("[backup]\nevery = \"soon\"\n", "[backup] every"),
        ("[backup]\nevery = \"0m\"\n", "[backup] every"),
        ("[backup]\nkeep = 0\n", "[backup] keep"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let e = Web::try_start_in(dir, extra).await.unwrap_err();
        assert!(format!("{e:#}").contains(key), "{extra}: {e:#}");
    }
}

/// The archive keeps the `bty.toml` bty-web was started with, which only
/// `Config::load` knows (the kit's `Web` starts from a string), so this
/// test starts bty-web itself.
#[tokio::test]
async fn the_archive_holds_the_config_file() {
    if bty_testkit::pg::skip_on_postgres("the archives are SQLite snapshots") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let boot = state.join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    let toml = format!(
        "[server]\nstate_dir = {:?}\n[backup]\nevery = \"off\"\n# a comment kept\n",
        state.display().to_string()
    );
    let file = state.join("bty.toml");
    std::fs::write(&file, &toml).unwrap();
    let cfg = bty_web::Config::load(Some(&file)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bty_web::serve(cfg, listener, async {
        let _ = rx.await;
    }));
    let c = WebClient(bty_testkit::client::Client::new(
        &format!("http://{addr}"),
        true,
    ));
    let made = until(Duration::from_secs(5), "bty-web up", || async {
        let r = c.post("/api/backups").send().await.ok()?;
        (r.status() == 201).then_some(())?;
        r.json::<Value>().await.ok()
    })
    .await;
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    let path = state.join("backups").join(made["name"].as_str().unwrap());
    let (m, _, _, out) = machines_in(&path);
    assert!(m.member(CONFIG_MEMBER).is_some(), "{m:?}");
    assert_eq!(
        std::fs::read_to_string(out.path().join(CONFIG_MEMBER)).unwrap(),
        toml
    );
}

#[tokio::test]
async fn on_postgresql_the_schedule_is_off_and_settings_says_why() {
    let dir = tempfile::tempdir().unwrap();
    if !bty_testkit::pg::selected() {
        if !bty_testkit::pg::available() {
            return;
        }
        use_database(dir.path(), &bty_testkit::pg::fresh_database()).unwrap();
    }
    let web = Web::start_in(dir, "[backup]\nevery = \"1s\"\n").await;
    let (_, page) = web.page("/ui/settings").await;
    assert!(POSTGRES_OFF.starts_with("PostgreSQL: back up with pg_dump"));
    assert!(
        page.contains("Scheduled backups are off: PostgreSQL: back up with pg_dump"),
        "{page}"
    );
    assert!(!page.contains("id=\"back-up-now\""), "{page}");
    let (s, e) = web.post_json("/api/backups", &json!({})).await;
    assert_eq!(s, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("pg_dump"), "{e}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(archives(&web.path().join("backups")).is_empty());
    web.stop().await;
}

#[tokio::test]
async fn a_backup_dir_inside_the_boot_dir_is_refused() {
    if bty_testkit::pg::skip_on_postgres("the archives are SQLite snapshots") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let inside = dir.path().join("boot").join("backups");
    let web = Web::start_in(
        dir,
        &format!(
            "[backup]\nevery = \"off\"\ndir = {:?}\n",
            inside.display().to_string()
        ),
    )
    .await;
    let (s, e) = web.post_json("/api/backups", &json!({})).await;
    assert_eq!(s, 500, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("/boot/ serves"),
        "{e}"
    );
    assert!(!inside.exists(), "nothing is created in the boot dir");
    web.stop().await;
}
