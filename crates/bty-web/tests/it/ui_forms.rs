//! The operator UI against a real bty-web on 127.0.0.1: login, every
//! form's bad input (a clear message and nothing saved, checked through
//! the REST API afterwards), bulk actions, acknowledgements, the pages and
//! the live stream.

use std::time::Duration;

use bty_proto::BootMode;
use bty_testkit::client::{cookie_pair, header, location, Fetch};
use bty_testkit::sse;
use bty_testkit::web::{Web, MAC};
use serde_json::{json, Value};

const MAC2: &str = "52:54:00:ab:cd:02";
const FIVE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn ui_login_logout_and_guard() {
    let s = Web::start("[admin]\npassword = \"correct horse\"\n").await;
    let c = &s.no_redirect;
    // Not logged in: pages redirect to the login form, keeping the target.
    let r = c.get(s.url("/ui/machines?page=2")).fetch().await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        location(r.headers()),
        "/ui/login?next=/ui/machines%3Fpage%3D2"
    );
    // htmx requests are told to navigate instead.
    let r = c
        .get(s.url("/ui/machines"))
        .header("hx-request", "true")
        .fetch()
        .await;
    assert_eq!(
        r.headers().get("hx-redirect").unwrap(),
        "/ui/login?next=/ui/machines"
    );
    // The form renders, without the default-password banner.
    let (st, body) = s.get_text("/ui/login").await;
    assert_eq!(st, 200);
    assert!(
        body.contains("Log in to bty") && !body.contains("well-known default"),
        "{body}"
    );
    // Empty fields.
    let (st, body, _) = s
        .post_form("/ui/login", &[("user", "bty-lab"), ("password", "")])
        .await;
    assert_eq!(st, 422);
    assert!(
        body.contains("Enter both the user name and the password."),
        "{body}"
    );
    // Wrong password: a clear message, the user name kept, no cookie.
    let (st, body, h) = s
        .post_form("/ui/login", &[("user", "bty-lab"), ("password", "wrong")])
        .await;
    assert_eq!(st, 401);
    assert!(
        body.contains("Wrong user name or password.") && body.contains("value=\"bty-lab\""),
        "{body}"
    );
    assert!(h.get("set-cookie").is_none());
    // A login posted from another site is refused.
    let r = c
        .post(s.url("/ui/login"))
        .header("origin", "http://evil.example")
        .form(&[("user", "bty-lab"), ("password", "correct horse")])
        .fetch()
        .await;
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none());
    // Right password: a session cookie and on to `next` (only local paths).
    let (st, _, h) = s
        .post_form(
            "/ui/login",
            &[
                ("user", "bty-lab"),
                ("password", "correct horse"),
                ("next", "https://evil.example/"),
            ],
        )
        .await;
    assert_eq!(st, 303);
    assert_eq!(location(&h), "/ui/dashboard");
    let cookie = cookie_pair(&h);
    assert!(header(&h, "set-cookie").contains("HttpOnly"));
    let r = c
        .get(s.url("/ui/machines"))
        .header("cookie", &cookie)
        .fetch()
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("<h1>Machines</h1>"));
    // Logged in: the login page moves on.
    let r = c
        .get(s.url("/ui/login"))
        .header("cookie", &cookie)
        .fetch()
        .await;
    assert_eq!(r.status(), 303);
    // A state change from a foreign Origin is refused even with the cookie,
    // and nothing is saved.
    let r = c
        .post(s.url("/ui/machines"))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .form(&[("mac", MAC), ("boot_mode", "ipxe-exit")])
        .fetch()
        .await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("another site"));
    let r = c
        .get(s.url("/api/machines"))
        .basic_auth("bty-lab", Some("correct horse"))
        .fetch()
        .await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
    // Same-origin POST works.
    let r = c
        .post(s.url("/ui/machines"))
        .header("cookie", &cookie)
        .header("origin", s.base.clone())
        .form(&[("mac", MAC), ("boot_mode", "ipxe-exit")])
        .fetch()
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    // Logout clears the cookie.
    let r = c
        .post(s.url("/ui/logout"))
        .header("cookie", &cookie)
        .fetch()
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(r.headers()), "/ui/login");
    assert!(header(r.headers(), "set-cookie").contains("Max-Age=0"));
    s.stop().await;
}

#[tokio::test]
async fn ui_login_rate_limit_message() {
    let s = Web::start("[admin]\npassword = \"correct horse\"\n").await;
    let mut last = (0, String::new());
    for _ in 0..30 {
        let (st, body, h) = s
            .post_form("/ui/login", &[("user", "bty-lab"), ("password", "nope")])
            .await;
        last = (st, body);
        if st == 429 {
            let secs: u64 = header(&h, "retry-after").parse().unwrap();
            assert!(secs >= 1);
            break;
        }
        assert_eq!(st, 401);
    }
    assert_eq!(last.0, 429, "never rate limited");
    assert!(
        last.1
            .contains("Too many failed logins from your address. Wait"),
        "{}",
        last.1
    );
    // Even the right password is refused while limited.
    let (st, _, h) = s
        .post_form(
            "/ui/login",
            &[("user", "bty-lab"), ("password", "correct horse")],
        )
        .await;
    assert_eq!(st, 429);
    assert!(h.get("set-cookie").is_none());
    s.stop().await;
}

#[tokio::test]
async fn ui_default_password_banner_points_at_passwd() {
    let s = Web::start("[admin]\npassword = \"bty-lab\"\n").await;
    let (_, body) = s.get_text("/ui/login").await;
    assert!(
        body.contains("well-known default") && body.contains("bty-lab passwd"),
        "{body}"
    );
    s.stop().await;
    // Open mode says so on every page.
    let s = Web::start("").await;
    let (st, body) = s.get_text("/ui/dashboard").await;
    assert_eq!(st, 200);
    assert!(body.contains("No admin password is set"), "{body}");
    s.stop().await;
}

/// A form, the status it must get, and texts the answer must contain.
type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a [&'a str]);

#[tokio::test]
async fn ui_register_bad_input_saves_nothing() {
    let s = Web::start("").await;
    let cases: &[Case] = &[
        (
            &[("mac", "52:54:00:zz:00:01"), ("boot_mode", "ipxe-exit")],
            422,
            &["MAC:", "52:54:00:zz:00:01"],
        ),
        (&[("mac", ""), ("boot_mode", "ipxe-exit")], 422, &["MAC:"]),
        (
            &[("mac", MAC), ("name", "bad;name")],
            422,
            &["name: contains &#x27;;&#x27;"],
        ),
        (
            &[("mac", MAC), ("image", "no-such-image")],
            422,
            &["is not in the catalog"],
        ),
        (
            &[
                ("mac", MAC),
                ("boot_mode", "bty-flash-once"),
                ("image", "debian-12"),
            ],
            422,
            &["writes a disk: give the target disk"],
        ),
        (
            &[
                ("mac", MAC),
                ("boot_mode", "bty-flash-once"),
                ("target_disk_serial", "S1"),
            ],
            422,
            &["flashes an image: pick one"],
        ),
        (
            &[("mac", MAC), ("boot_mode", "turbo")],
            422,
            &["unknown boot mode"],
        ),
        (
            &[("mac", MAC), ("sanboot_drive", "80")],
            422,
            &["not a BIOS drive number"],
        ),
        (
            &[("mac", MAC), ("labels", "ok, $(reboot)")],
            422,
            &["labels:", "separate labels with commas"],
        ),
        (
            &[("mac", MAC), ("target_disk_serial", "S1\nchain http://x")],
            422,
            &["target_disk_serial:"],
        ),
        // Several problems at once are all reported.
        (
            &[("mac", "nope"), ("name", "a b"), ("sanboot_drive", "0xZZ")],
            422,
            &["MAC:", "name:", "sanboot_drive:"],
        ),
    ];
    for (form, status, needles) in cases {
        let (st, body, _) = s.post_form("/ui/machines", form).await;
        assert_eq!(st, *status, "{form:?}: {body}");
        assert!(body.contains("Nothing was saved"), "{form:?}: {body}");
        for n in *needles {
            assert!(body.contains(n), "{form:?}: missing {n:?} in {body}");
        }
        // The typed values come back for correction.
        if let Some((_, name)) = form.iter().find(|(k, _)| *k == "name") {
            if !name.contains(';') {
                assert!(body.contains(&format!("value=\"{name}\"")), "{body}");
            }
        }
        assert!(s.machines().await.is_empty(), "{form:?} saved something");
    }
    // Registered fine, then the same MAC again: 409 with a link to it.
    let (st, _, h) = s
        .post_form(
            "/ui/machines",
            &[
                ("mac", "52-54-00-12-34-56"),
                ("name", "node1"),
                ("boot_mode", "bty-flash-once"),
                ("image", "debian-12"),
                ("target_disk_serial", "BTYTEST"),
                ("labels", "rack3, gpu"),
            ],
        )
        .await;
    assert_eq!(st, 303);
    assert_eq!(
        location(&h),
        "/ui/machines/52-54-00-12-34-56?saved=registered"
    );
    let m = s.machine(MAC).await;
    assert_eq!(m["name"], "node1");
    assert_eq!(m["labels"], json!(["gpu", "rack3"]));
    let (st, body, _) = s
        .post_form("/ui/machines", &[("mac", MAC), ("name", "other")])
        .await;
    assert_eq!(st, 409);
    assert!(
        body.contains("already registered") && body.contains("/ui/machines/52-54-00-12-34-56"),
        "{body}"
    );
    assert_eq!(s.machine(MAC).await["name"], "node1");
    s.stop().await;
}

#[tokio::test]
async fn ui_edit_bad_input_keeps_the_record() {
    let s = Web::start("").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    let before = s.machine(MAC).await;
    let path = "/ui/machines/52-54-00-12-34-56";
    let (st, body, _) = s
        .post_form(
            path,
            &[
                ("boot_mode", "bty-flash-always"),
                ("image", "debian-12"),
                ("sanboot_drive", "zz"),
            ],
        )
        .await;
    assert_eq!(st, 422);
    assert!(
        body.contains("sanboot_drive:") && body.contains("writes a disk"),
        "{body}"
    );
    assert_eq!(s.machine(MAC).await, before);
    // Inventory reported: the serial must be one of its disks.
    let (st, v) = s
        .post_json(
            &format!("/pxe/{MAC}/inventory"),
            &json!({"disks": [{"name": "/dev/vda", "serial": "BTYTEST", "size_bytes": 1073741824u64},
                              {"name": "/dev/vdb", "serial": "SPARE-1", "model": "<script>alert(1)</script>"}],
                    "nics": [{"name": "eth0", "mac": MAC, "link_up": true}]}),
        )
        .await;
    assert!(st == 204 || st == 200, "{st} {v}");
    let (_, page) = s.get_text(path).await;
    // Machine-supplied text is escaped.
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;")
            && !page.contains("<script>alert"),
        "{page}"
    );
    assert!(
        page.contains("<select id=\"f-target\"") && page.contains("SPARE-1"),
        "{page}"
    );
    let before = s.machine(MAC).await;
    let (st, body, _) = s
        .post_form(
            path,
            &[
                ("boot_mode", "bty-flash-once"),
                ("image", "debian-12"),
                ("target_disk_serial", "NOT-THERE"),
            ],
        )
        .await;
    assert_eq!(st, 422);
    assert!(
        body.contains("is not one of the disks this machine reported (BTYTEST, SPARE-1)"),
        "{body}"
    );
    assert_eq!(s.machine(MAC).await, before);
    // A good edit saves and redirects.
    let (st, _, h) = s
        .post_form(
            path,
            &[
                ("boot_mode", "bty-flash-once"),
                ("image", "debian-12"),
                ("target_disk_serial", "SPARE-1"),
                ("name", "n2"),
            ],
        )
        .await;
    assert_eq!(st, 303);
    assert!(location(&h).ends_with("?saved=updated"));
    let m = s.machine(MAC).await;
    assert_eq!(
        (m["target_disk_serial"].as_str(), m["name"].as_str()),
        (Some("SPARE-1"), Some("n2"))
    );
    // Unknown machine and a bad MAC in the path.
    let (st, body, _) = s
        .post_form(
            "/ui/machines/52-54-00-00-00-09",
            &[("boot_mode", "ipxe-exit")],
        )
        .await;
    assert_eq!(st, 404);
    assert!(body.contains("nothing was saved"), "{body}");
    let (st, _) = s.get_text("/ui/machines/not-a-mac").await;
    assert_eq!(st, 400);
    // Delete, then deleting again says so.
    let (st, _, h) = s.post_form(&format!("{path}/delete"), &[]).await;
    assert_eq!(st, 303);
    assert_eq!(
        location(&h),
        "/ui/machines?done=deleted&what=52-54-00-12-34-56"
    );
    let (_, list) = s.get_text(&location(&h)).await;
    assert!(
        list.contains("Machine 52:54:00:12:34:56 deleted."),
        "{list}"
    );
    let (st, _, _) = s.post_form(&format!("{path}/delete"), &[]).await;
    assert_eq!(st, 404);
    assert!(s.machines().await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn ui_bulk_is_all_or_nothing() {
    let s = Web::start("").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    let (st, _) = s
        .put_machine(MAC2, &json!({"boot_mode": "ipxe-exit"}))
        .await;
    assert_eq!(st, 201);
    let snapshot = s.machines().await;
    // No selection.
    let (st, body, _) = s
        .post_form(
            "/ui/machines/bulk",
            &[("action", "assign"), ("image", "alpine")],
        )
        .await;
    assert_eq!(st, 422);
    assert!(body.contains("Select at least one machine"), "{body}");
    // No action value.
    let (st, body, _) = s
        .post_form("/ui/machines/bulk", &[("mac", MAC), ("action", "assign")])
        .await;
    assert_eq!(st, 422);
    assert!(body.contains("Pick the image to assign."), "{body}");
    // Flash mode for both: MAC2 has no image or target, so nothing changes.
    let (st, body, _) = s
        .post_form(
            "/ui/machines/bulk",
            &[
                ("mac", MAC),
                ("mac", MAC2),
                ("action", "mode"),
                ("boot_mode", "bty-flash-always"),
                ("page", "1"),
                ("filter", "all"),
            ],
        )
        .await;
    assert_eq!(st, 422);
    assert!(
        body.contains("Nothing was changed") && body.contains(&format!("{MAC2}: ")),
        "{body}"
    );
    assert_eq!(s.machines().await, snapshot);
    // A bad MAC among the selection.
    let (st, body, _) = s
        .post_form(
            "/ui/machines/bulk",
            &[
                ("mac", "xx"),
                ("action", "mode"),
                ("boot_mode", "ipxe-exit"),
            ],
        )
        .await;
    assert_eq!(st, 422);
    assert!(body.contains("&quot;xx&quot;: invalid MAC"), "{body}");
    assert_eq!(s.machines().await, snapshot);
    // Assign an image to both: fine.
    let (st, _, h) = s
        .post_form(
            "/ui/machines/bulk",
            &[
                ("mac", MAC),
                ("mac", MAC2),
                ("action", "assign"),
                ("image", "alpine"),
                ("filter", "assigned"),
                ("per_page", "10"),
            ],
        )
        .await;
    assert_eq!(st, 303);
    assert!(
        location(&h).contains("filter=assigned") && location(&h).contains("done=updated&what=2"),
        "{}",
        location(&h)
    );
    for m in s.machines().await {
        assert_eq!(m["image"], "alpine", "{m}");
    }
    s.stop().await;
}

#[tokio::test]
async fn ui_events_acknowledge() {
    let s = Web::start("").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    let evs = s.events(MAC).await;
    assert!(!evs.is_empty());
    let id = evs[0]["id"].as_i64().unwrap().to_string();
    let (st, body, _) = s.post_form("/ui/events/ack", &[("action", "ack")]).await;
    assert_eq!(st, 400);
    assert!(body.contains("Select at least one event"), "{body}");
    let (st, body, _) = s
        .post_form("/ui/events/ack", &[("id", "1; drop table events")])
        .await;
    assert_eq!(st, 400);
    assert!(
        body.contains("is not a number; nothing was changed"),
        "{body}"
    );
    let (st, body, _) = s
        .post_form("/ui/events/ack", &[("id", &id), ("action", "explode")])
        .await;
    assert_eq!(st, 400, "{body}");
    let (_, page) = s.get_text("/ui/events?only=unacked").await;
    assert!(page.contains(&format!("value=\"{id}\"")), "{page}");
    let (st, _, h) = s
        .post_form(
            "/ui/events/ack",
            &[
                ("id", &id),
                ("action", "ack"),
                ("return_to", "/ui/events?only=unacked"),
            ],
        )
        .await;
    assert_eq!(st, 303);
    assert_eq!(location(&h), "/ui/events?only=unacked&acked=1");
    let (_, page) = s.get_text("/ui/events?only=unacked").await;
    assert!(!page.contains(&format!("value=\"{id}\"")), "{page}");
    let (_, page) = s.get_text("/ui/events").await;
    assert!(page.contains("acknowledged"), "{page}");
    // An open redirect through return_to is not possible.
    let (_, _, h) = s
        .post_form(
            "/ui/events/ack",
            &[("id", &id), ("return_to", "//evil.example/ui/events")],
        )
        .await;
    assert!(
        location(&h).starts_with("/ui/events?acked="),
        "{}",
        location(&h)
    );
    // Search and MAC filter; a bad MAC is reported, not fatal.
    let (st, page) = s.get_text("/ui/events?mac=zz").await;
    assert_eq!(st, 200);
    assert!(page.contains("MAC filter"), "{page}");
    let (_, page) = s.get_text("/ui/events?q=machine.created").await;
    assert!(page.contains("machine.created"), "{page}");
    s.stop().await;
}

#[tokio::test]
async fn ui_pages_render_and_preview_has_no_side_effects() {
    let s = Web::start("").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    for p in [
        "/ui/dashboard",
        "/ui/machines",
        "/ui/machines/new",
        "/ui/images",
        "/ui/events",
        "/ui/settings",
    ] {
        let (st, body) = s.get_text(p).await;
        assert_eq!(st, 200, "{p}: {body}");
        assert!(body.contains("</html>"), "{p}");
    }
    let (_, images) = s.get_text("/ui/images").await;
    assert!(
        images.contains("debian-12") && images.contains("0123456789abcdef"),
        "{images}"
    );
    let (_, settings) = s.get_text("/ui/settings").await;
    assert!(
        settings.contains("dhcp-pxe") && settings.contains("[server] state_dir"),
        "{settings}"
    );
    // htmx gets only the main block.
    let r = s
        .get("/ui/machines")
        .header("hx-request", "true")
        .fetch()
        .await;
    let frag = r.text().await.unwrap();
    assert!(
        frag.contains("<h1>Machines</h1>") && !frag.contains("<html"),
        "{frag}"
    );
    // The preview: flash chain, and no cycle or event is created by it.
    let events_before = s.events(MAC).await.len();
    let (st, script) = s.get_text("/ui/machines/52-54-00-12-34-56/ipxe").await;
    assert_eq!(st, 200);
    assert!(
        script.starts_with("#!ipxe")
            && script.contains("debian-12")
            && script.contains("kernel http://"),
        "{script}"
    );
    let (_, page) = s.get_text("/ui/machines/52:54:00:12:34:56").await;
    assert!(page.contains("opens a new cycle"), "{page}");
    assert_eq!(s.events(MAC).await.len(), events_before);
    let (_, cycles) = s.get_json(&format!("/api/machines/{MAC}/cycles")).await;
    assert_eq!(cycles, json!([]));
    // Unknown machine: a 404 page.
    let (st, body) = s.get_text("/ui/machines/52-54-00-00-00-09").await;
    assert_eq!(st, 404);
    assert!(
        body.contains("No machine 52:54:00:00:00:09 is registered"),
        "{body}"
    );
    // Static assets are compiled in, with their licenses.
    let (st, js) = s.get_text("/ui/static/htmx.min.js").await;
    assert_eq!(st, 200);
    assert!(js.starts_with("/* htmx 2.") && js.contains("Zero-Clause BSD"));
    let (st, _) = s.get_text("/ui/static/nope.js").await;
    assert_eq!(st, 404);
    s.stop().await;
}

#[tokio::test]
async fn ui_list_filters_sort_and_paging() {
    let s = Web::start("").await;
    for i in 0..30u8 {
        let mac = format!("52:54:00:00:01:{i:02x}");
        let body = if i % 3 == 0 {
            json!({"boot_mode": "ipxe-exit", "image": "alpine", "name": format!("n{i:02}")})
        } else {
            json!({"boot_mode": "ipxe-exit", "name": format!("n{i:02}"), "labels": ["rack3"]})
        };
        assert!(s.put_machine(&mac, &body).await.0 == 201);
    }
    let (_, p) = s.get_text("/ui/machines?per_page=10&page=2").await;
    assert!(
        p.contains("30 machines, page 2 of 3")
            && p.contains("52:54:00:00:01:0a")
            && !p.contains("52:54:00:00:01:09<"),
        "{p}"
    );
    let (_, p) = s.get_text("/ui/machines?filter=assigned&per_page=25").await;
    assert!(p.contains("10 machines (assigned)"), "{p}");
    let (_, p) = s
        .get_text("/ui/machines?filter=discovered&per_page=25")
        .await;
    assert!(p.contains("20 machines (discovered)"), "{p}");
    let (_, p) = s.get_text("/ui/machines?q=52-54-00-00-01-1D").await;
    assert!(
        p.contains("1 machine matching") && p.contains("52:54:00:00:01:1d"),
        "{p}"
    );
    let (_, p) = s
        .get_text("/ui/machines?sort=name&dir=desc&per_page=10")
        .await;
    let first = p.find("52:54:00:00:01:1d").unwrap();
    let second = p.find("52:54:00:00:01:1c").unwrap();
    assert!(first < second, "descending by name");
    // Past the end: the last page.
    let (_, p) = s.get_text("/ui/machines?per_page=10&page=99").await;
    assert!(p.contains("page 3 of 3"), "{p}");
    // Garbage parameters fall back.
    let (st, _) = s
        .get_text("/ui/machines?sort=1;drop&dir=x&per_page=7&page=-1&filter=zzz")
        .await;
    assert_eq!(st, 200);
    s.stop().await;
}

#[tokio::test]
async fn ui_live_sends_only_what_the_page_shows() {
    let s = Web::start("").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    s.flash(MAC2, BootMode::FlashOnce).await;
    // The list page shows only MAC; the detail page is about MAC.
    let list = s.get("/ui/live?view=machines&keys=525400123456");
    let mut list = sse::Reader::new(list.fetch().await);
    let detail = s.get("/ui/live?view=machine&mac=525400123456");
    let mut detail = sse::Reader::new(detail.fetch().await);
    assert!(list.until(FIVE, |n, _| n == "hello").await.is_some());
    assert!(detail.until(FIVE, |n, _| n == "hello").await.is_some());
    s.pxe(MAC).await;
    s.boot_kernel(MAC).await;
    let plan = s.plan(MAC).await;
    let token = plan["token"].as_str().unwrap().to_string();
    s.progress(MAC, &token, 500).await;
    // Either the bar alone, or (when the cycle's state changed in the same
    // tick) the status section that holds it.
    let bar = detail
        .until(FIVE, |n, d| {
            (n == "progress" || n == "status") && d.contains("50%")
        })
        .await
        .expect("progress on the detail page")
        .data;
    assert!(
        bar.contains("value=\"50") && bar.contains("sse-swap=\"progress\""),
        "{bar}"
    );
    // A later report comes as the bar alone.
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.progress(MAC, &token, 750).await;
    let bar = detail
        .until(FIVE, |n, d| n == "progress" && d.contains("75%"))
        .await
        .expect("bar only")
        .data;
    assert!(bar.starts_with("<div class=\"progress\""), "{bar}");
    // MAC2 changes: the list gets a notice, never a row of MAC2.
    s.pxe(MAC2).await;
    let sse::Event { name, data } = list
        .until(FIVE, |n, _| {
            n == "notice" || n.starts_with("row-") || n.starts_with("prog-")
        })
        .await
        .expect("list update");
    assert!(
        !name.contains("525400abcd02") && !data.contains("52:54:00:ab:cd:02<"),
        "{name}: {data}"
    );
    // done: the detail page gets the status with last-flashed filled in.
    let (st, _) = s.done(MAC, &token, true).await;
    assert_eq!(st, 200);
    let status = detail
        .until(FIVE, |n, _| n == "status")
        .await
        .expect("status")
        .data;
    assert!(
        status.contains("id=\"last-flashed\"><time datetime="),
        "{status}"
    );
    let row = list
        .until(FIVE, |n, _| n == "row-525400123456")
        .await
        .expect("row")
        .data;
    assert!(
        row.starts_with("<tr id=\"m-525400123456\"") && row.contains("flashed"),
        "{row}"
    );
    // Bad scopes are refused.
    let (st, _) = s.get_text("/ui/live?view=machines&keys=zz").await;
    assert_eq!(st, 400);
    let (st, _) = s.get_text("/ui/live?view=everything").await;
    assert_eq!(st, 400);
    drop(list);
    drop(detail);
    s.stop().await;
}
