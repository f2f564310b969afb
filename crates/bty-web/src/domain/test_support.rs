//! Fixtures for the domain's unit tests: an in-memory database with the
//! real schema, a catalog snapshot, a machine in a flash mode.

use std::collections::BTreeMap;

use crate::db::sql::Conn;
use bty_proto::catalog::CatalogEntry;
use bty_proto::{BootMode, ImageFormat, Mac};

use crate::catalog::{Image, Snapshot, Source, SourceStatus};
use crate::db::machines::{self, Settings};

/// The machine most tests use.
pub fn mac() -> Mac {
    "52:54:00:12:34:56".parse().unwrap()
}

/// An empty, migrated database: in memory (SQLite), or under
/// `BTY_TEST_DB=postgres` a fresh database on the test kit's PostgreSQL.
pub fn conn() -> Conn {
    if bty_testkit::pg::selected() {
        let mut c = Conn::postgres(&bty_testkit::pg::fresh_database()).unwrap();
        crate::db::schema::migrate(&mut c).unwrap();
        return c;
    }
    let raw = rusqlite::Connection::open_in_memory().unwrap();
    crate::db::configure(&raw).unwrap();
    let mut c = Conn::sqlite(raw);
    crate::db::schema::migrate(&mut c).unwrap();
    c
}

/// A catalog with `debian-12` (and nothing else).
pub fn snapshot() -> Snapshot {
    let entry = CatalogEntry {
        name: "debian-12".into(),
        src: "https://images.example/debian-12.img.zst".into(),
        sha256: Some("ab".repeat(32)),
        size: Some(1234),
        format: None,
        arch: None,
        description: None,
    };
    let image = Image {
        url: entry.src.clone(),
        entry,
        resolved_format: ImageFormat::Zst,
        source: Source::Static,
        cache: None,
    };
    Snapshot {
        images: BTreeMap::from([("debian-12".to_string(), image)]),
        static_file: SourceStatus::Off,
        withcache: SourceStatus::Off,
        problems: Vec::new(),
        sites: Default::default(),
    }
}

/// `mode` with `debian-12` onto disk `BTYTEST`.
pub fn settings(mode: BootMode) -> Settings {
    Settings {
        name: None,
        boot_mode: mode,
        image: Some("debian-12".into()),
        target_disk_serial: Some("BTYTEST".into()),
        sanboot_drive: None,
        labels: Vec::new(),
    }
}

/// Store `s` for [`mac`] (arming generation 0) without the registry's
/// events.
pub fn put(conn: &Conn, s: &Settings) {
    machines::upsert(conn, mac(), s, 0, &crate::db::now()).unwrap();
}
