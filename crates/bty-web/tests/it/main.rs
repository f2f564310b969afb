//! bty-web's integration tests: one binary, a module per area, each test
//! against a real bty-web on 127.0.0.1 with a temp state dir (the test
//! kit's `Web`), real SQLite files and real HTTP clients. The golden
//! scripts stay in `tests/golden/`; `BTY_BLESS=1 cargo test -p bty-web
//! --test it golden` rewrites them.

mod auth;
mod backups;
mod bad_input;
mod boot;
mod curl_walkthrough;
mod cycles;
mod golden;
mod grub;
mod hostile;
mod images;
mod machines_import;
mod migrations;
mod pg;
mod sites;
mod stick;
mod ui_event_acks;
mod ui_forms;

/// The inode of `p` (a migration must upgrade the file in place).
fn inode(p: &std::path::Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap())
}

/// A connection of the test's own to `web`'s store, whichever engine it
/// runs on (to forge what the API would refuse, or read what it hides).
fn store(web: &bty_testkit::web::Web) -> bty_web::db::sql::Conn {
    store_in(&web.path())
}

/// [`store`] of the bty-web that ran on state dir `dir`.
fn store_in(dir: &std::path::Path) -> bty_web::db::sql::Conn {
    match bty_testkit::web::database_url_in(dir) {
        Some(url) => bty_web::db::sql::Conn::postgres(&url).unwrap(),
        None => bty_web::db::sql::Conn::sqlite(
            rusqlite::Connection::open(dir.join("state.db")).unwrap(),
        ),
    }
}
