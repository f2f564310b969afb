//! One place to add an image: `POST /api/images`, `DELETE /api/images/{name}`,
//! the Images page's form and the static catalog's registration in
//! withcache, against a real withcache (with its service token), a real
//! bty-web and a real origin, all on 127.0.0.1.

use std::time::Duration;

use bty_proto::catalog::blob_url;
use bty_testkit::cache::{Cache, CacheClient};
use bty_testkit::client::{cookie_pair, slashes, Fetch};
use bty_testkit::poll::until;
use bty_testkit::web::{Web, MAC};
use bty_testkit::{data, sha256_hex as sha, Origin};
use reqwest::Method;
use serde_json::{json, Value};

const TOKEN: &str = "bty-web-to-withcache-0123456789abcdef";
const PW: &str = "admin-password";
const WC_PW: &str = "withcache-password";
/// How long a background step (a registration, a download) may take.
const WAIT: Duration = Duration::from_secs(30);

/// A real withcache with an admin password and (maybe) the service token.
async fn withcache(token: Option<&str>) -> Cache {
    Cache::start(|o| {
        o.admin_password = Some(WC_PW.into());
        o.api_token = token.map(bty_auth::ServiceToken::new);
    })
    .await
}

/// An operator's entry in withcache.
async fn wc_add(wc: &CacheClient, name: &str, src: &str) {
    let r = wc.add(json!({"name": name, "src": src})).await;
    let st = r.status();
    assert_eq!(st, 201, "{}", r.text().await.unwrap());
}

/// bty-web's config: the admin password, withcache at `wc` with `token`,
/// polled rarely (600 s): anything sooner is bty-web's own doing.
fn web_toml(wc: Option<&str>, token: Option<&str>) -> String {
    let mut t = format!("[admin]\npassword = \"{PW}\"\n");
    if let Some(u) = wc {
        t += &format!("[withcache]\nurl = \"{u}\"\nrefresh_secs = 600\n");
        if let Some(tok) = token {
            t += &format!("token = \"{tok}\"\n");
        }
    }
    t
}

/// bty-web with a static catalog file of `catalog` (TOML).
async fn web_with_catalog(catalog: &str, toml: &str) -> Web {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("catalog.toml"), catalog).unwrap();
    Web::start_in(dir, toml).await
}

async fn api(s: &Web, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    s.admin("bty-lab", PW)
        .send_json(method, path, body.as_ref())
        .await
}

async fn add(s: &Web, body: Value) -> (u16, Value) {
    api(s, Method::POST, "/api/images", Some(body)).await
}

/// `GET /api/images`, whole.
async fn images(s: &Web) -> Value {
    let (st, v) = api(s, Method::GET, "/api/images", None).await;
    assert_eq!(st, 200, "{v}");
    v
}

async fn image_names(s: &Web) -> Vec<String> {
    let all = s.admin("bty-lab", PW).images().await;
    all.iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

async fn image(s: &Web, name: &str) -> Option<Value> {
    let all = s.admin("bty-lab", PW).images().await;
    all.into_iter().find(|i| i["name"] == name)
}

async fn bytes(url: &str) -> Vec<u8> {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn image_added_through_the_api_flows_to_a_flash_plan() {
    let body = data(3 << 20, 7);
    let o = Origin::files(vec![("images/lab.img.gz", body.clone())]);
    let wc = withcache(Some(TOKEN)).await;
    let s = Web::start(&web_toml(Some(&wc.base), Some(TOKEN))).await;
    let src = format!("{}/images/lab.img.gz", o.base());

    let (st, v) = add(&s, json!({"name": "lab-image", "url": src})).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["name"], "lab-image");
    assert_eq!(v["source"], "withcache");
    assert_eq!(v["src"], src);
    assert_eq!(v["resolved_format"], "img.gz");
    assert_eq!(v["url"], blob_url(&wc.base, &src));
    // Assignable at once: in the catalog before any poll, and a PUT takes it.
    assert!(image_names(&s).await.contains(&"lab-image".to_string()));
    let (st, m) = api(
        &s,
        Method::PUT,
        &format!("/api/machines/{MAC}"),
        Some(json!({"boot_mode": "bty-flash-once", "image": "lab-image", "target_disk_serial": "BTYTEST"})),
    )
    .await;
    assert_eq!(st, 201, "{m}");
    // withcache downloads it (started by the add, no other request).
    let cached = until(WAIT, "withcache to cache lab-image", || async {
        image(&s, "lab-image")
            .await
            .filter(|i| i["cache"]["state"] == "cached")
    })
    .await;
    assert_eq!(cached["sha256"], sha(&body));
    let w = wc.admin().entries().await;
    let e = w.iter().find(|e| e["name"] == "lab-image").unwrap();
    assert_eq!(e["src"], src);
    assert_eq!(e["state"], "cached");
    // The plan: withcache's URL, with the sha256 and size withcache measured
    // (none were given), and behind it the origin's bytes.
    s.pxe(MAC).await;
    s.boot_kernel(MAC).await;
    let p = s.plan(MAC).await;
    assert_eq!(p["mode"], "flash", "{p}");
    assert_eq!(p["image"]["url"], blob_url(&wc.base, &src));
    assert_eq!(p["image"]["sha256"], sha(&body));
    assert_eq!(p["image"]["size"], body.len() as u64);
    assert_eq!(p["image"]["format"], "img.gz");
    let got = bytes(p["image"]["url"].as_str().unwrap()).await;
    assert!(
        got == body,
        "withcache served other bytes than the origin's"
    );
    assert_eq!(o.gets(), 1, "the origin was fetched once");
    assert_eq!(wc.admin().misses().await, Vec::<Value>::new());
}

#[tokio::test]
async fn bad_image_input_is_a_400_naming_the_field_and_saves_nothing() {
    let o = Origin::files(vec![("a.img", data(1000, 1))]);
    let wc = withcache(Some(TOKEN)).await;
    wc_add(
        &wc.admin(),
        "taken-in-withcache",
        &format!("{}/taken.img", o.base()),
    )
    .await;
    let s = Web::start(&web_toml(Some(&wc.base), Some(TOKEN))).await;
    // The static entries are registered in withcache in the background;
    // let that finish so "unchanged" below means something.
    until(WAIT, "the static entries in withcache", || async {
        let n = wc.admin().names().await;
        (n.contains(&"debian-12".into()) && n.contains(&"alpine".into())).then_some(())
    })
    .await;
    until(WAIT, "bty-web to list withcache's entry", || async {
        image(&s, "taken-in-withcache").await
    })
    .await;
    let wc_before = wc.admin().names().await;
    let web_before = image_names(&s).await;
    assert_eq!(wc_before.len(), 3, "{wc_before:?}");

    let url = format!("{}/a.img", o.base());
    let cases = [
        ("url", json!({"name": "new", "url": "ftp://h/a.img"})),
        ("url", json!({"name": "new", "url": "not a url"})),
        ("url", json!({"name": "new"})),
        ("name", json!({"name": "debian-12", "url": url})),
        ("name", json!({"name": "taken-in-withcache", "url": url})),
        ("name", json!({"name": "bad name!", "url": url})),
        ("name", json!({"name": "", "url": url})),
        (
            "sha256",
            json!({"name": "new", "url": url, "sha256": "a".repeat(63)}),
        ),
        (
            "sha256",
            json!({"name": "new", "url": url, "sha256": "a".repeat(65)}),
        ),
        (
            "sha256",
            json!({"name": "new", "url": url, "sha256": "g".repeat(64)}),
        ),
        ("size", json!({"name": "new", "url": url, "size": 0})),
        ("size", json!({"name": "new", "url": url, "size": -5})),
        ("size", json!({"name": "new", "url": url, "size": "12x"})),
        (
            "format",
            json!({"name": "new", "url": url, "format": "iso"}),
        ),
        (
            "format",
            json!({"name": "new", "url": format!("{}/a.iso", o.base())}),
        ),
    ];
    for (field, body) in cases {
        let (st, v) = add(&s, body.clone()).await;
        assert_eq!(st, 400, "{body}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with(&format!("{field}:")) && msg.contains("nothing was saved"),
            "{body}: {msg}"
        );
    }
    // Several bad fields: each is named.
    let (st, v) = add(
        &s,
        json!({"name": "x y", "url": "file:///etc/passwd", "sha256": "abc"}),
    )
    .await;
    assert_eq!(st, 400);
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("name:") && msg.contains("url:") && msg.contains("sha256:"),
        "{msg}"
    );
    // Unknown fields are refused, not dropped.
    let (st, _) = add(&s, json!({"name": "new", "url": url, "pinned": true})).await;
    assert_eq!(st, 400);
    // No login: 401.
    let (st, _) = s
        .post_json("/api/images", &json!({"name": "new", "url": url}))
        .await;
    assert_eq!(st, 401);
    // A cookie session from a foreign page: 403.
    let r = s
        .post("/api/login")
        .json(&json!({"password": PW}))
        .fetch()
        .await;
    let pair = cookie_pair(r.headers());
    let r = s
        .post("/api/images")
        .header("cookie", &pair)
        .header("origin", "http://evil.example")
        .json(&json!({"name": "new", "url": url}))
        .fetch()
        .await;
    assert_eq!(r.status(), 403);

    // Nothing changed anywhere, even after withcache is read again.
    s.post("/api/images/refresh")
        .basic_auth("bty-lab", Some(PW))
        .fetch()
        .await;
    assert_eq!(wc.admin().names().await, wc_before);
    assert_eq!(image_names(&s).await, web_before);

    // The same cookie from bty-web's own page works (the refusal above was
    // the Origin, not the session).
    let r = s
        .post("/api/images")
        .header("cookie", &pair)
        .header("origin", &s.base)
        .json(
            &json!({"name": "via-cookie", "url": url, "sha256": sha(&data(1000, 1)), "size": 1000}),
        )
        .fetch()
        .await;
    assert_eq!(r.status(), 201);
    assert!(wc.admin().names().await.contains(&"via-cookie".to_string()));
}

#[tokio::test]
async fn withcache_missing_refusing_or_absent_is_a_clear_error_and_saves_nothing() {
    let url = "http://127.0.0.1:9/a.img";
    // Nothing listens on the configured withcache.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let s = Web::start(&web_toml(Some(&dead_url), Some(TOKEN))).await;
    let before = image_names(&s).await;
    let (st, v) = add(&s, json!({"name": "new", "url": url})).await;
    assert_eq!(st, 502, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("unreachable") && msg.contains(&dead_url) && msg.contains("nothing was saved"),
        "{msg}"
    );
    assert_eq!(image_names(&s).await, before);
    s.stop().await;

    // withcache runs but bty-web's token is not its token.
    let wc = withcache(Some(TOKEN)).await;
    let s = Web::start(&web_toml(
        Some(&wc.base),
        Some("not-the-withcache-token-000"),
    ))
    .await;
    let (st, v) = add(&s, json!({"name": "new", "url": url})).await;
    assert_eq!(st, 502, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("BTY_WITHCACHE_TOKEN") && msg.contains("WITHCACHE_API_TOKEN"),
        "{msg}"
    );
    assert!(!wc.admin().names().await.contains(&"new".to_string()));
    // The catalog page says so too (and the open catalog is still read).
    let problems = until(WAIT, "the token problem", || async {
        let v = images(&s).await;
        (!v["problems"].as_array().unwrap().is_empty()).then_some(v["problems"].clone())
    })
    .await;
    assert!(
        problems.to_string().contains("WITHCACHE_API_TOKEN"),
        "{problems}"
    );
    assert_eq!(images(&s).await["withcache"]["state"], "ok");
    s.stop().await;

    // No withcache at all: images come from the static file, and the
    // error says which.
    let s = Web::start(&web_toml(None, None)).await;
    let (st, v) = add(&s, json!({"name": "new", "url": url})).await;
    assert_eq!(st, 409, "{v}");
    let msg = v["error"].as_str().unwrap();
    let file = s.path().join("catalog.toml").display().to_string();
    assert!(
        msg.contains("[withcache] url")
            && msg.contains("static catalog file")
            && msg.contains(&file),
        "{msg}"
    );
    assert_eq!(image_names(&s).await, vec!["alpine", "debian-12"]);
}

#[tokio::test]
async fn static_entries_are_registered_in_withcache_and_served_without_a_withcache_step() {
    let body = data(2 << 20, 3);
    let shared = data(5000, 4);
    let v2 = data(7000, 5);
    let o = Origin::files(vec![
        ("static.img", body.clone()),
        ("shared.img", shared.clone()),
        ("static-v2.img", v2.clone()),
    ]);
    let wc = withcache(Some(TOKEN)).await;
    // withcache already has, added by an operator, a "clash" for another
    // src and the src of "shared-static" under another name; and, added by
    // bty-web (with the token) from an older version of the file, "moved"
    // for its old src.
    wc_add(&wc.admin(), "clash", "http://127.0.0.1:9/other.img").await;
    wc_add(
        &wc.admin(),
        "already-there",
        &format!("{}/shared.img", o.base()),
    )
    .await;
    let r = wc
        .http
        .post(format!("{}/catalog/entries", wc.base))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "moved", "src": "http://127.0.0.1:9/old.img"}))
        .fetch()
        .await;
    assert_eq!(r.status(), 201);
    let catalog = |static_src: &str| {
        format!(
            "version = 1\n\
             [[images]]\nname = \"static-img\"\nsrc = \"{0}/{static_src}\"\n\
             [[images]]\nname = \"clash\"\nsrc = \"{0}/clash.img\"\n\
             [[images]]\nname = \"shared-static\"\nsrc = \"{0}/shared.img\"\n\
             [[images]]\nname = \"moved\"\nsrc = \"{0}/moved.img\"\n",
            o.base()
        )
    };
    let catalog_v2 = catalog("static-v2.img");
    let catalog = catalog("static.img");
    let s = web_with_catalog(&catalog, &web_toml(Some(&wc.base), Some(TOKEN))).await;
    let src = format!("{}/static.img", o.base());

    // Registered with no withcache step: nobody called withcache's API.
    until(WAIT, "static-img in withcache", || async {
        wc.admin()
            .names()
            .await
            .contains(&"static-img".to_string())
            .then_some(())
    })
    .await;
    let entries = wc.admin().entries().await;
    let e = |n: &str| entries.iter().find(|e| e["name"] == n).cloned();
    assert_eq!(e("static-img").unwrap()["src"], src);
    assert_eq!(e("static-img").unwrap()["format"], "img");
    assert_eq!(e("static-img").unwrap()["added_by"], "bty-web");
    // The operator's clash is left alone and reported; the shared src is
    // not added twice; bty-web's own "moved" follows the file.
    assert_eq!(e("clash").unwrap()["src"], "http://127.0.0.1:9/other.img");
    assert!(e("shared-static").is_none(), "{entries:?}");
    assert_eq!(
        e("moved").unwrap()["src"],
        format!("{}/moved.img", o.base())
    );
    assert_eq!(entries.len(), 4, "{entries:?}");
    let problems = images(&s).await["problems"].clone();
    assert_eq!(problems.as_array().unwrap().len(), 1, "{problems}");
    let p0 = problems[0].as_str().unwrap();
    assert!(
        p0.contains("\"clash\"") && p0.contains("another src") && p0.contains("operator"),
        "{p0}"
    );

    // Once cached, the static entry shows withcache's state and measured
    // digest (it gave none); only then is it flashable (a plan always
    // carries sha256 and size). withcache fetched it when bty-web
    // registered it, or now that its blob is asked for; read withcache now
    // rather than in 600 s.
    let got = bytes(&blob_url(&wc.base, &src)).await;
    assert!(
        got == body,
        "withcache served other bytes than the origin's"
    );
    let img = until(WAIT, "static-img cached", || async {
        api(&s, Method::POST, "/api/images/refresh", None).await;
        image(&s, "static-img")
            .await
            .filter(|i| i["cache"]["state"] == "cached")
    })
    .await;
    // A machine flashes it: the plan points at withcache, withcache serves
    // the origin's bytes, and records no miss.
    let (st, m) = api(
        &s,
        Method::PUT,
        &format!("/api/machines/{MAC}"),
        Some(json!({"boot_mode": "bty-flash-once", "image": "static-img", "target_disk_serial": "BTYTEST"})),
    )
    .await;
    assert_eq!(st, 201, "{m}");
    s.pxe(MAC).await;
    s.boot_kernel(MAC).await;
    let p = s.plan(MAC).await;
    assert_eq!(p["image"]["url"], blob_url(&wc.base, &src));
    let got = bytes(p["image"]["url"].as_str().unwrap()).await;
    assert!(
        got == body,
        "withcache served other bytes than the origin's"
    );
    let got = bytes(&blob_url(&wc.base, &format!("{}/shared.img", o.base()))).await;
    assert!(got == shared);
    assert_eq!(wc.admin().misses().await, Vec::<Value>::new());
    assert_eq!(img["source"], "static");
    assert_eq!(img["sha256"], sha(&body));
    assert_eq!(img["size"], body.len() as u64);

    // The operator points static-img at a new version in the file: within
    // seconds withcache's entry (bty-web's own) follows, and the image is
    // served from the new src.
    std::fs::write(s.path().join("catalog.toml"), catalog_v2).unwrap();
    let src2 = format!("{}/static-v2.img", o.base());
    until(WAIT, "withcache to follow the edited file", || async {
        let e = wc.admin().entries().await;
        e.iter()
            .any(|e| e["name"] == "static-img" && e["src"] == src2.as_str())
            .then_some(())
    })
    .await;
    let img = image(&s, "static-img").await.unwrap();
    assert_eq!(img["url"], blob_url(&wc.base, &src2));
    assert!(bytes(&blob_url(&wc.base, &src2)).await == v2);
    assert_eq!(wc.admin().misses().await, Vec::<Value>::new());
}

#[tokio::test]
async fn delete_removes_withcache_entries_and_refuses_static_ones() {
    let wc = withcache(Some(TOKEN)).await;
    let s = Web::start(&web_toml(Some(&wc.base), Some(TOKEN))).await;
    let (st, v) = add(
        &s,
        json!({"name": "to-delete+1", "url": "http://127.0.0.1:9/x.img.xz"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let r = s.delete("/api/images/to-delete+1").fetch().await;
    assert_eq!(r.status(), 401);
    let (st, v) = api(&s, Method::DELETE, "/api/images/to-delete+1", None).await;
    assert_eq!(st, 204, "{v}");
    assert!(!wc
        .admin()
        .names()
        .await
        .contains(&"to-delete+1".to_string()));
    assert!(image(&s, "to-delete+1").await.is_none());
    let (st, _) = api(&s, Method::DELETE, "/api/images/to-delete+1", None).await;
    assert_eq!(st, 404);
    let (st, v) = api(&s, Method::DELETE, "/api/images/debian-12", None).await;
    assert_eq!(st, 409);
    let file = s.path().join("catalog.toml").display().to_string();
    assert!(v["error"].as_str().unwrap().contains(&file), "{v}");
    assert!(image(&s, "debian-12").await.is_some());
    // An image may be called "refresh" too.
    let (st, _) = add(
        &s,
        json!({"name": "refresh", "url": "http://127.0.0.1:9/r.img"}),
    )
    .await;
    assert_eq!(st, 201);
    let (st, _) = api(&s, Method::DELETE, "/api/images/refresh", None).await;
    assert_eq!(st, 204);
    assert!(!wc.admin().names().await.contains(&"refresh".to_string()));
}

#[tokio::test]
async fn ui_add_image_form_shows_field_errors_adds_and_deletes() {
    let o = Origin::files(vec![("ui.img.zst", data(4096, 9))]);
    let wc = withcache(Some(TOKEN)).await;
    let s = Web::start(&web_toml(Some(&wc.base), Some(TOKEN))).await;
    let c = s.no_redirect.clone();
    let post = |path: &str, form: &[(&str, &str)], origin: Option<&str>| {
        let mut rb = c
            .post(s.url(path))
            .basic_auth("bty-lab", Some(PW))
            .form(form);
        if let Some(o) = origin {
            rb = rb.header("origin", o);
        }
        rb.send()
    };
    let admin = s.admin("bty-lab", PW);
    let page = || async { admin.page("/ui/images").await.1 };
    until(WAIT, "the static entries in withcache", || async {
        (wc.admin().names().await.len() == 2).then_some(())
    })
    .await;
    let wc_before = wc.admin().names().await;
    assert!(page().await.contains("id=\"image-form\""));

    // Bad input: 422, every field's message next to it, the typed values
    // kept, nothing saved.
    let r = post(
        "/ui/images",
        &[
            ("name", "bad name!"),
            ("url", "ftp://h/x.img"),
            ("sha256", "abc"),
            ("size", "12x"),
            ("format", ""),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let body = slashes(r.text().await.unwrap());
    for id in ["err-name", "err-url", "err-sha256", "err-size"] {
        assert!(body.contains(&format!("id=\"{id}\"")), "{id}: {body}");
    }
    assert!(body.contains("Nothing was saved"), "{body}");
    assert!(body.contains("value=\"ftp://h/x.img\""), "{body}");
    assert!(body.contains("must be exactly 64 hex digits"), "{body}");
    // A taken name, with good other fields.
    let url = format!("{}/ui.img.zst", o.base());
    let r = post("/ui/images", &[("name", "debian-12"), ("url", &url)], None)
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("id=\"err-name\"") && body.contains("exists already"),
        "{body}"
    );
    assert_eq!(wc.admin().names().await, wc_before);

    // From another site: refused.
    let r = post(
        "/ui/images",
        &[("name", "ui-image"), ("url", &url)],
        Some("http://evil.example"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(wc.admin().names().await, wc_before);

    // Good input: added, back to the page with a notice and the row.
    let r = post(
        "/ui/images",
        &[("name", "ui-image"), ("url", &url), ("format", "img.zst")],
        Some(&s.base),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/images?added=ui-image");
    let r = c
        .get(s.url("/ui/images?added=ui-image"))
        .basic_auth("bty-lab", Some(PW))
        .fetch()
        .await;
    let body = slashes(r.text().await.unwrap());
    assert!(body.contains("Image ui-image added"), "{body}");
    assert!(body.contains("id=\"img-ui-image\"") && body.contains("id=\"delete-ui-image\""));
    assert!(
        !body.contains("id=\"delete-debian-12\""),
        "static rows have no delete"
    );
    assert!(wc.admin().names().await.contains(&"ui-image".to_string()));

    // Delete: refused from another site, done from ours.
    let r = post(
        "/ui/images/ui-image/delete",
        &[],
        Some("http://evil.example"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    assert!(wc.admin().names().await.contains(&"ui-image".to_string()));
    let r = post("/ui/images/ui-image/delete", &[], Some(&s.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/images?deleted=ui-image");
    assert!(!wc.admin().names().await.contains(&"ui-image".to_string()));
    assert!(!page().await.contains("id=\"img-ui-image\""));
    // A static entry cannot be deleted here; the page says where it lives.
    let r = post("/ui/images/debian-12/delete", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body = slashes(r.text().await.unwrap());
    assert!(
        body.contains("static catalog file") && body.contains("catalog.toml"),
        "{body}"
    );
    s.stop().await;

    // withcache down: the form says so above the fields, keeps the values.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let s = Web::start(&web_toml(Some(&dead_url), Some(TOKEN))).await;
    let r = c
        .post(s.url("/ui/images"))
        .basic_auth("bty-lab", Some(PW))
        .form(&[("name", "ui-image"), ("url", url.as_str())])
        .fetch()
        .await;
    assert_eq!(r.status(), 502);
    let body = slashes(r.text().await.unwrap());
    assert!(
        body.contains("id=\"form-errors\"")
            && body.contains("Nothing was saved: withcache at")
            && body.contains("unreachable")
            && body.contains("value=\"ui-image\""),
        "{body}"
    );
    s.stop().await;

    // Without withcache the page has no form and says where images come from.
    let s = Web::start(&web_toml(None, None)).await;
    let r = c
        .get(s.url("/ui/images"))
        .basic_auth("bty-lab", Some(PW))
        .fetch()
        .await;
    let body = slashes(r.text().await.unwrap());
    assert!(!body.contains("id=\"image-form\""), "{body}");
    assert!(
        body.contains("[[images]]") && body.contains("catalog.toml"),
        "{body}"
    );
}
