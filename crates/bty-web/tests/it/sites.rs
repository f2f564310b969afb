//! Issue 15, sites: a target gets the withcache of the site its address
//! falls in (`[[sites]]`), else the default `[withcache] url`. Targets are
//! clients bound to other 127.0.0.x addresses (another LAN host to a
//! server on 127.0.0.1); the end-to-end test runs a real origin, a central
//! withcache and a rack withcache whose upstream is the central one.

use std::net::{IpAddr, Ipv4Addr};

use bty_proto::catalog::blob_url;
use bty_proto::BootMode;
use bty_testkit::cache::Cache;
use bty_testkit::client::Fetch;
use bty_testkit::web::*;
use bty_testkit::{data, sha256_hex as sha, Origin};
use serde_json::{json, Value};

/// The default catalog's `debian-12` src.
const SRC: &str = "https://images.example/debian-12.img.zst";

/// A client of `web` connecting from 127.0.`c`.`d`.
fn from(web: &Web, c: u8, d: u8) -> WebClient {
    WebClient(web.0.from_ip(IpAddr::V4(Ipv4Addr::new(127, 0, c, d))))
}

/// Boot `mac` as a target at `target` does (PXE, netboot kernel, plan) and
/// return the plan's image URL.
async fn plan_url(web: &Web, target: &WebClient, mac: &str) -> String {
    web.flash(mac, BootMode::FlashOnce).await;
    assert!(is_flash(&target.pxe(mac).await));
    target.boot_kernel(mac).await;
    let plan: Value = target.plan(mac).await;
    plan["image"]["url"].as_str().unwrap().to_string()
}

/// Closed loopback ports as withcache URLs: the plans only name them (no
/// request leaves this host, and none of these is fetched).
fn urls() -> (String, String, String, String) {
    let port = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let u = |p: u16| format!("http://127.0.0.1:{p}");
    (u(port()), u(port()), u(port()), u(port()))
}

#[tokio::test]
async fn targets_get_their_sites_withcache_and_the_longest_prefix_wins() {
    let (central, campus, rack_a, rack_b) = urls();
    let toml = format!(
        "[withcache]\nurl = \"{central}/\"\nrefresh_secs = 600\n\
         [[sites]]\nname = \"campus\"\nsubnets = [\"127.0.0.0/24\", \"fd00:c::/32\"]\nwithcache = \"{campus}\"\n\
         [[sites]]\nname = \"rack-a\"\nsubnets = [\"127.0.0.2/32\"]\nwithcache = \"{rack_a}/\"\n\
         [[sites]]\nname = \"rack-b\"\nsubnets = [\"127.0.0.3/32\", \"fd00:b::/48\"]\nwithcache = \"{rack_b}\"\n"
    );
    let web = Web::start(&toml).await;
    let cases = [
        (
            "52:54:00:00:00:02",
            0,
            2,
            &rack_a,
            "rack-a (/32 inside campus /24)",
        ),
        ("52:54:00:00:00:03", 0, 3, &rack_b, "rack-b"),
        ("52:54:00:00:00:09", 0, 9, &campus, "campus"),
        ("52:54:00:00:01:01", 1, 1, &central, "no site: the default"),
    ];
    for (mac, c, d, wc, why) in cases {
        let target = from(&web, c, d);
        let url = plan_url(&web, &target, mac).await;
        assert_eq!(url, blob_url(wc, SRC), "127.0.{c}.{d}: {why}");
        // The cycle records the URL the target was given.
        let cycles = web.cycles(mac).await;
        assert_eq!(cycles[0]["image_url"], url.as_str(), "{cycles:?}");
        // A client's /catalog.toml has its site's URLs too.
        let (st, cat) = target.get_text("/catalog.toml").await;
        assert_eq!(st, 200);
        assert!(cat.contains(&format!("src = \"{url}\"")), "{why}: {cat}");
        // The machine page names the site (none: no line).
        let (st, page) = web.get_text(&format!("/ui/machines/{mac}")).await;
        assert_eq!(st, 200);
        let site = why.split(' ').next().unwrap();
        match why.starts_with("no site") {
            true => assert!(!page.contains("id=\"site\""), "{page}"),
            false => assert!(
                page.contains(&format!("id=\"site\">{site} ")),
                "{why}: {page}"
            ),
        }
    }
}

#[tokio::test]
async fn without_withcache_images_come_from_the_origin_whatever_the_site() {
    let (_, _, rack_a, _) = urls();
    let toml = format!(
        "[[sites]]\nname = \"rack-a\"\nsubnets = [\"127.0.0.0/8\"]\nwithcache = \"{rack_a}\"\n"
    );
    let web = Web::start(&toml).await;
    let url = plan_url(&web, &from(&web, 0, 2), MAC).await;
    assert_eq!(url, SRC);
}

#[tokio::test]
async fn bad_sites_stop_the_start_and_name_the_site_and_field() {
    let ok = "withcache = \"http://127.0.0.1:9\"";
    let cases = [
        (
            "name = \"rack a\"\nsubnets = [\"10.0.0.0/8\"]\n".to_string() + ok,
            "name",
        ),
        ("name = \"r\"\nsubnets = []\n".to_string() + ok, "subnets"),
        (
            "name = \"r\"\nsubnets = [\"10.0.0.0/40\"]\n".to_string() + ok,
            "subnets",
        ),
        (
            "name = \"r\"\nsubnets = [\"rack\"]\n".to_string() + ok,
            "subnets",
        ),
        (
            "name = \"r\"\nsubnets = [\"10.0.0.0/8\"]\nwithcache = \"ftp://x\"".to_string(),
            "withcache",
        ),
    ];
    for (site, field) in cases {
        let toml = format!("[[sites]]\n{site}\n");
        let e = Web::try_start_in(tempfile::tempdir().unwrap(), &toml)
            .await
            .err()
            .unwrap_or_else(|| panic!("{site} was accepted"));
        let e = format!("{e:#}");
        assert!(e.contains("[[sites]]"), "{e}");
        assert!(e.contains(field), "{field}: {e}");
    }
    let twice = format!(
        "[[sites]]\nname = \"r\"\nsubnets = [\"10.0.0.0/8\"]\n{ok}\n\
         [[sites]]\nname = \"r\"\nsubnets = [\"10.1.0.0/16\"]\n{ok}\n"
    );
    let e = Web::try_start_in(tempfile::tempdir().unwrap(), &twice)
        .await
        .expect_err("a name used twice");
    assert!(format!("{e:#}").contains("used twice"), "{e:#}");
}

#[tokio::test]
async fn a_stick_at_a_site_is_given_the_sites_withcache() {
    let (central, _, rack_a, _) = urls();
    let toml = format!(
        "[withcache]\nurl = \"{central}\"\nrefresh_secs = 600\n\
         [[sites]]\nname = \"rack-a\"\nsubnets = [\"127.0.0.2/32\"]\nwithcache = \"{rack_a}\"\n"
    );
    let web = Web::start(&toml).await;
    let (st, v) = web.post_json("/api/sticks", &json!({"label": "lab"})).await;
    assert_eq!(st, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_string();
    for (c, d, wc) in [(0, 2, &rack_a), (1, 1, &central)] {
        let r = from(&web, c, d)
            .get("/stick/catalog")
            .bearer_auth(&key)
            .fetch()
            .await;
        assert_eq!(r.status(), 200);
        let cat: Value = r.json().await.unwrap();
        assert_eq!(cat["images"][0]["url"], blob_url(wc, SRC).as_str(), "{cat}");
    }
}

/// The whole chain: bty-web hands a rack target the rack cache's URL, the
/// rack cache fetches from the central one, which fetches the origin: two
/// targets on the rack, one origin fetch, one central transfer.
#[tokio::test]
async fn two_targets_on_a_rack_pull_the_image_across_the_wan_once() {
    let body = data(2 << 20, 151);
    let truth = sha(&body);
    let origin = Origin::start(body.clone());
    origin.with(|c| {
        c.chunk = 64 << 10;
        c.delay = std::time::Duration::from_millis(5);
    });
    let src = origin.url("images/rack.img");
    let central = Cache::start(|_| {}).await;
    let r = central.add(json!({"name": "rack-img", "src": src})).await;
    assert_eq!(r.status(), 201);
    let rack_base = central.base.clone();
    let rack = Cache::start(move |o| {
        o.upstream = Some(rack_base);
        o.allow_private_origins = false;
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let size = body.len();
    std::fs::write(
        dir.path().join("catalog.toml"),
        format!(
            "version = 1\n[[images]]\nname = \"rack-img\"\nsrc = \"{src}\"\n\
             sha256 = \"{truth}\"\nsize = {size}\nformat = \"img\"\n"
        ),
    )
    .unwrap();
    let toml = format!(
        "[withcache]\nurl = \"{}\"\nrefresh_secs = 600\n\
         [[sites]]\nname = \"rack\"\nsubnets = [\"127.0.0.2/31\"]\nwithcache = \"{}\"\n",
        central.base, rack.base
    );
    let web = Web::start_in(dir, &toml).await;
    let mut urls = Vec::new();
    for (mac, d) in [("52:54:00:00:00:02", 2), ("52:54:00:00:00:03", 3)] {
        let body = json!({"boot_mode": "bty-flash-once", "image": "rack-img",
                          "target_disk_serial": "BTYTEST"});
        web.put_machine_ok(mac, &body).await;
        let target = from(&web, 0, d);
        assert!(is_flash(&target.pxe(mac).await));
        target.boot_kernel(mac).await;
        let plan = target.plan(mac).await;
        urls.push(plan["image"]["url"].as_str().unwrap().to_string());
    }
    assert_eq!(urls[0], blob_url(&rack.base, &src));
    assert_eq!(urls[0], urls[1]);

    // Both targets download at once, as two agents on the rack would.
    let get = |u: String| async move {
        let r = reqwest::get(&u).await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap()
    };
    let (a, b) = tokio::join!(get(urls[0].clone()), get(urls[1].clone()));
    assert_eq!(sha(&a), truth);
    assert_eq!(sha(&b), truth);
    assert_eq!(origin.gets(), 1, "the origin is fetched once");
    assert_eq!(central.metric("bytes_served_total").await, size as u64);
    // Clients finish once the bytes are verified, a moment before the
    // blob is synced and indexed (the counter).
    let stored = rack.metric_once_set("downloads_completed_total").await;
    assert_eq!(stored, 1, "the rack stored the blob once");
}
