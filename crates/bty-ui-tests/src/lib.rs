//! The fixtures of the operator UI tests, on the test kit
//! (`bty-testkit`): a real bty-web with a password and a two-image catalog,
//! a real withcache with a password and a quota, and a slow origin for it
//! to download from. The browser (chromedriver, headless Chromium), the
//! simulated agent and the page helpers are the kit's.
//!
//! This crate only exists for its tests (`publish = false`); it keeps the
//! WebDriver client out of the product crates' dev-dependencies.

use std::time::Duration;

use bty_testkit::cache::Cache;
use bty_testkit::web::{Web, WebClient};
use bty_testkit::Origin;

/// The admin password of the test servers (not the default one).
pub const PASSWORD: &str = "ui-test-password";
/// The admin user.
pub const USER: &str = "bty-lab";
/// sha256 of the catalog's image (and what the agent "reads back").
pub const SHA: &str = "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";
/// Size of the catalog's image: 4 GiB.
pub const IMAGE_SIZE: u64 = 4 << 30;

/// bty-web in-process with [`PASSWORD`] and a two-image catalog
/// (`debian-12`, 4 GiB with [`SHA`]; `alpine-3.20`).
pub async fn web() -> anyhow::Result<Web> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("catalog.toml"), catalog())?;
    Web::try_start_in(dir, &format!("[admin]\npassword = {PASSWORD:?}\n")).await
}

/// The two-image catalog of the test servers.
fn catalog() -> String {
    format!(
        "version = 1\n\
         [[images]]\nname = \"debian-12\"\nsrc = \"http://127.0.0.1:9/debian-12.img.zst\"\nsha256 = \"{SHA}\"\nsize = {IMAGE_SIZE}\ndescription = \"Debian 12 generic cloud\"\n\
         [[images]]\nname = \"alpine-3.20\"\nsrc = \"http://127.0.0.1:9/alpine.img.gz\"\n"
    )
}

/// [`web`] keeping its store in the PostgreSQL database at `url`: call it
/// twice with one URL for two replicas of one bty-web. Its per-address
/// connection cap is raised: every simulated target of a test connects
/// from 127.0.0.1, where a lab's machines each have their own address.
pub async fn web_on(url: &str) -> anyhow::Result<Web> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("catalog.toml"), catalog())?;
    bty_testkit::web::use_database(dir.path(), url)?;
    Web::try_start_in(
        dir,
        &format!("[admin]\npassword = {PASSWORD:?}\n[http]\nmax_connections_per_ip = 4096\n"),
    )
    .await
}

/// `web`'s client with the admin login.
pub fn admin(web: &Web) -> WebClient {
    web.admin(USER, PASSWORD)
}

/// withcache in-process with [`USER`] / [`PASSWORD`] and a 1 GiB quota.
pub async fn cache() -> anyhow::Result<Cache> {
    let dir = tempfile::tempdir()?;
    Cache::try_start_in(dir, |o| {
        o.admin_user = USER.to_string();
        o.admin_password = Some(PASSWORD.to_string());
        o.max_bytes = Some(1 << 30);
    })
    .await
}

/// An origin that sends `body` slowly, `chunk` bytes then a pause of
/// `pause`, so a download takes long enough to watch; no Range, no ETag
/// (withcache handles a resume as a restart).
pub fn slow_origin(body: Vec<u8>, chunk: usize, pause: Duration) -> Origin {
    let o = Origin::start(body);
    o.with(|c| {
        c.chunk = chunk;
        c.delay = pause;
        c.ranges = false;
        c.etag = false;
    });
    o
}
