//! Event acknowledgements across the schema-3 migration: a database
//! written by a release that kept acks in the UI's side table
//! `ui_event_acks` is upgraded in place and keeps every ack.

use bty_proto::BootMode;
use bty_testkit::client::{header, Fetch};
use bty_testkit::web::{Web, MAC};
use bty_web::db::schema;
use bty_web::db::sql::Conn;
use rusqlite::Connection;

use crate::inode;

#[tokio::test]
async fn ui_acks_from_the_old_side_table_survive_the_migration() {
    if bty_testkit::pg::skip_on_postgres(
        "the SQLite-only ui_event_acks side table of releases up to 2",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    {
        // Schema 2 plus the table the old UI module created on first use,
        // with one acknowledged and one open failure.
        let mut c = Conn::sqlite(Connection::open(&db).unwrap());
        schema::migrate_to(&mut c, 2).unwrap();
        c.execute_batch(&format!(
            "INSERT INTO events (id, ts, kind, mac, summary) VALUES
               (7, '2026-05-01T10:00:00Z', 'flash.failed', '{MAC}', 'old acked failure'),
               (8, '2026-05-01T11:00:00Z', 'flash.failed', '{MAC}', 'old open failure');
             CREATE TABLE ui_event_acks (event_id INTEGER PRIMARY KEY, at TEXT NOT NULL);
             INSERT INTO ui_event_acks VALUES (7, '2026-05-02T09:30:00Z');"
        ))
        .unwrap();
    }
    let before = inode(&db);
    let s = Web::start_in(dir, "").await;
    let (st, page) = s.get_text("/ui/events?only=unacked").await;
    assert_eq!(st, 200);
    assert!(page.contains("old open failure"), "{page}");
    assert!(!page.contains("old acked failure"), "{page}");
    let (_, page) = s.get_text("/ui/events").await;
    assert!(page.contains("old acked failure"), "{page}");
    // The dashboard counts only the open failure.
    let (_, page) = s.get_text("/ui/dashboard").await;
    assert!(
        page.contains("1 failure event(s) not acknowledged"),
        "{page}"
    );
    let dir = s.stop().await;
    let c = Conn::sqlite(Connection::open(dir.path().join("state.db")).unwrap());
    assert_eq!(schema::version(&c).unwrap(), schema::LATEST);
    let acked: Vec<(i64, Option<String>)> = c
        .query_map(
            "SELECT id, acked_at FROM events WHERE id IN (7, 8) ORDER BY id",
            (),
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        acked,
        vec![(7, Some("2026-05-02T09:30:00Z".to_string())), (8, None)],
        "the ack and its time were carried over"
    );
    let side: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'ui_event_acks'",
            (),
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(side, 0, "the side table is gone once its rows moved");
    assert_eq!(
        before,
        inode(&dir.path().join("state.db")),
        "upgraded in place"
    );
}

#[test]
fn ui_acks_migration_works_without_the_side_table() {
    // Most old databases never had an ack, so never had the table.
    let mut c = Conn::sqlite(Connection::open_in_memory().unwrap());
    schema::migrate_to(&mut c, 2).unwrap();
    c.execute_batch("INSERT INTO events (ts, kind, summary) VALUES ('t', 'x', 'y')")
        .unwrap();
    schema::migrate(&mut c).unwrap();
    let acked: Option<String> = c
        .query_row("SELECT acked_at FROM events", (), |r| r.get(0))
        .unwrap();
    assert_eq!(acked, None);
}

#[tokio::test]
async fn ui_ack_then_unack_round_trips_through_the_column() {
    let s = Web::start("").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    let id = s.events(MAC).await[0]["id"].as_i64().unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (action, expect) in [("ack", "acked=1"), ("ack", "acked=0"), ("unack", "acked=1")] {
        let r = client
            .post(s.url("/ui/events/ack"))
            .form(&[("id", id.to_string().as_str()), ("action", action)])
            .fetch()
            .await;
        assert_eq!(r.status(), 303);
        let loc = header(r.headers(), "location");
        assert!(loc.ends_with(expect), "{action}: {loc}");
    }
    let (_, page) = s.get_text("/ui/events?only=unacked").await;
    assert!(page.contains(&format!("value=\"{id}\"")), "{page}");
    s.stop().await;
}
