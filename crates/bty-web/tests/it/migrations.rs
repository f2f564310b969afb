//! Migrations on real database files: an old schema is upgraded in place
//! with its data, foreign and newer databases are left untouched.

use bty_testkit::web::*;
use bty_web::db::schema;

use crate::inode;
use bty_web::db::sql::Conn;
use rusqlite::Connection;

/// The SQLite file at `path` behind the store's seam (what `schema` takes).
fn open(path: &std::path::Path) -> Conn {
    Conn::sqlite(Connection::open(path).unwrap())
}

#[tokio::test]
async fn schema_1_database_is_migrated_in_place_with_its_data() {
    if bty_testkit::pg::skip_on_postgres(
        "a schema-1 SQLite state.db upgraded in place (PostgreSQL: pg::migrate, tests/it/pg.rs)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    {
        // A database as the first release wrote it: schema 1, no cycles.
        let mut c = open(&db);
        schema::migrate_to(&mut c, 1).unwrap();
        c.execute_batch(
            "INSERT INTO machines (mac, name, boot_mode, image, target_disk_serial, created_at, updated_at)
               VALUES ('52:54:00:12:34:56', 'runner-1', 'bty-flash-once', 'debian-12', 'BTYTEST', 't0', 't0');
             INSERT INTO machine_labels VALUES ('52:54:00:12:34:56', 'rack1');
             INSERT INTO events (ts, kind, mac, summary) VALUES ('t0', 'machine.created', '52:54:00:12:34:56', 'old');",
        )
        .unwrap();
        assert_eq!(schema::version(&c).unwrap(), 1);
    }
    let before = inode(&db);
    let s = Web::start_in(dir, "").await;
    let m = s.machine(MAC).await;
    assert_eq!(m["name"], "runner-1");
    assert_eq!(m["labels"], serde_json::json!(["rack1"]));
    assert_eq!(m["arm_gen"], 0);
    assert!(s.events(MAC).await.iter().any(|e| e["summary"] == "old"));
    // The migrated machine flashes.
    assert!(is_flash(&s.pxe(MAC).await));
    let dir = s.stop().await;
    let c = open(&dir.path().join("state.db"));
    assert_eq!(schema::version(&c).unwrap(), schema::LATEST);
    assert_eq!(
        before,
        inode(&dir.path().join("state.db")),
        "the file was upgraded in place, not replaced"
    );
    let baks = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("bak")
        })
        .count();
    assert_eq!(baks, 0);
    let mode: String = c
        .query_row("PRAGMA journal_mode", (), |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn every_migration_step_applies_on_top_of_the_previous() {
    for target in 1..=schema::LATEST {
        let mut c = Conn::sqlite(Connection::open_in_memory().unwrap());
        schema::migrate_to(&mut c, target).unwrap();
        assert_eq!(schema::version(&c).unwrap(), target);
        schema::migrate(&mut c).unwrap();
        assert_eq!(schema::version(&c).unwrap(), schema::LATEST);
        // Idempotent.
        schema::migrate(&mut c).unwrap();
    }
}

#[test]
fn a_failing_migration_leaves_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let mut c = open(&db);
    schema::migrate_to(&mut c, 1).unwrap();
    // Sabotage migration 2: a table it creates already exists.
    c.execute_batch("CREATE TABLE cycles (x INTEGER)").unwrap();
    let e = schema::migrate(&mut c).unwrap_err();
    assert!(format!("{e:#}").contains("schema version 2"), "{e:#}");
    assert_eq!(schema::version(&c).unwrap(), 1);
    let cols: Vec<String> = c
        .query_map("SELECT name FROM pragma_table_info('machines')", (), |r| {
            r.get(0)
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        !cols.contains(&"arm_gen".to_string()),
        "half of migration 2 was not kept"
    );
}

#[test]
fn python_and_newer_databases_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    {
        let c = Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE bty_version (version TEXT NOT NULL PRIMARY KEY); INSERT INTO bty_version VALUES ('0.77.2');").unwrap();
    }
    let e = bty_web::db::Db::open(&db).err().unwrap();
    assert!(format!("{e:#}").contains("Python"), "{e:#}");
    let c = Connection::open(&db).unwrap();
    let v: String = c
        .query_row("SELECT version FROM bty_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, "0.77.2");

    let db2 = dir.path().join("newer.db");
    {
        let c = Connection::open(&db2).unwrap();
        c.pragma_update(None, "user_version", schema::LATEST + 1)
            .unwrap();
    }
    let e = bty_web::db::Db::open(&db2).err().unwrap();
    assert!(format!("{e:#}").contains("newer bty-web"), "{e:#}");
}

/// Schema 6: the cycles of an older database become PXE cycles (the
/// decision keeps reading them) and the stick keys' table starts empty.
#[tokio::test]
async fn schema_5_cycles_become_pxe_cycles_and_sticks_start_empty() {
    if bty_testkit::pg::skip_on_postgres(
        "a schema-5 SQLite state.db upgraded in place (PostgreSQL: pg::migrate, tests/it/pg.rs)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    {
        let mut c = open(&db);
        schema::migrate_to(&mut c, 5).unwrap();
        c.execute_batch(
            "INSERT INTO machines (mac, name, boot_mode, image, target_disk_serial, created_at, updated_at)
               VALUES ('52:54:00:12:34:56', 'runner-1', 'bty-flash-once', 'debian-12', 'BTYTEST', 't0', 't0');
             INSERT INTO cycles (mac, arm_gen, attempt, token, state, boot_mode, image_name, image_url,
               image_sha256, image_size, image_format, target_serial, offered_at, offered_ip)
               VALUES ('52:54:00:12:34:56', 0, 1, 'aaaa', 'offered', 'bty-flash-once', 'debian-12',
               'https://images.example/debian-12.img.zst', 'x', 1234, 'img.zst', 'BTYTEST', 't0', '127.0.0.1');",
        )
        .unwrap();
    }
    let s = Web::start_in(dir, "").await;
    let hist = s.cycles(MAC).await;
    assert_eq!(hist.len(), 1);
    assert_eq!(hist[0]["via"], "pxe");
    assert!(hist[0]["image_source"].is_null());
    // Still the machine's current cycle: the same one is offered again.
    assert_eq!(s.machine(MAC).await["cycle"]["id"], hist[0]["id"]);
    assert!(is_flash(&s.pxe(MAC).await));
    assert_eq!(s.cycles(MAC).await.len(), 1, "no new cycle was opened");
    assert_eq!(s.get_json("/api/sticks").await.1, serde_json::json!([]));
    let dir = s.stop().await;
    let c = open(&dir.path().join("state.db"));
    assert_eq!(schema::version(&c).unwrap(), schema::LATEST);
}

/// `bty-lab restore` fails the cycles a snapshot caught open, on the
/// snapshot as it is (any schema, before bty-web migrates it): open ones
/// become failed with the reason, finished ones stay as they were.
#[test]
fn fail_open_fails_the_open_cycles_of_a_snapshot_at_any_schema() {
    use bty_web::db::cycles;
    let mut c1 = Conn::sqlite(Connection::open_in_memory().unwrap());
    schema::migrate_to(&mut c1, 1).unwrap();
    assert_eq!(
        cycles::fail_open(&c1, "restored", "t1").unwrap(),
        0,
        "schema 1: no cycles"
    );
    for target in 2..=schema::LATEST {
        let mut c = Conn::sqlite(Connection::open_in_memory().unwrap());
        schema::migrate_to(&mut c, target).unwrap();
        c.execute_batch(
            "INSERT INTO machines (mac, boot_mode, created_at, updated_at) \
               VALUES ('52:54:00:12:34:56', 'bty-flash-once', 't0', 't0');",
        )
        .unwrap();
        for (i, state) in [
            "offered",
            "booted",
            "flashing",
            "done",
            "failed",
            "cancelled",
        ]
        .iter()
        .enumerate()
        {
            c.execute(
                "INSERT INTO cycles (id, mac, arm_gen, attempt, token, state, boot_mode, \
                 image_name, image_url, image_format, target_serial, offered_at, reason) \
                 VALUES (?1, '52:54:00:12:34:56', 0, 1, ?2, ?3, 'bty-flash-once', 'debian-12', \
                 'http://x/d.img', 'img', 'BTYTEST', 't0', 'was')",
                bty_web::db::sql::params![i as i64 + 1, format!("tok{i}"), *state],
            )
            .unwrap();
        }
        let n = cycles::fail_open(&c, "restored from a backup", "t1").unwrap();
        assert_eq!(n, 3, "schema {target}");
        let rows: Vec<(String, Option<String>, Option<String>)> = c
            .query_map(
                "SELECT state, reason, finished_at FROM cycles ORDER BY id",
                (),
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let failed = (
            "failed".to_string(),
            Some("restored from a backup".to_string()),
            Some("t1".to_string()),
        );
        assert_eq!(
            &rows[..3],
            &[failed.clone(), failed.clone(), failed],
            "schema {target}"
        );
        for (row, state) in rows[3..].iter().zip(["done", "failed", "cancelled"]) {
            assert_eq!(
                row,
                &(state.to_string(), Some("was".to_string()), None),
                "schema {target}"
            );
        }
    }
}
