//! `/boot/{name}`: Range, HEAD, traversal, `?mac=` and the iPXE chain.

use bty_proto::BootMode;
use bty_testkit::client::Fetch;
use bty_testkit::web::*;
use serde_json::json;

#[tokio::test]
async fn range_head_and_full() {
    let s = Web::start("").await;
    let kernel = "/boot/bty-netboot-x86_64.vmlinuz";
    let r = s.get(kernel).fetch().await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(
        r.headers()["content-length"],
        KERNEL_BYTES.len().to_string().as_str()
    );
    assert!(r.headers().contains_key("date"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), KERNEL_BYTES);

    let r = s.get(kernel).header("range", "bytes=2-5").fetch().await;
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 2-5/{}", KERNEL_BYTES.len()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &KERNEL_BYTES[2..=5]);

    let r = s.get(kernel).header("range", "bytes=-3").fetch().await;
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        &KERNEL_BYTES[KERNEL_BYTES.len() - 3..]
    );

    let r = s.get(kernel).header("range", "bytes=999-").fetch().await;
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{}", KERNEL_BYTES.len()).as_str()
    );
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("range"));

    let r = s.get(kernel).header("range", "bytes=0-1,4-5").fetch().await;
    assert_eq!(r.status(), 200, "multiple ranges: whole file");

    let r = s.head(kernel).fetch().await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        KERNEL_BYTES.len().to_string().as_str()
    );
    assert!(r.bytes().await.unwrap().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn traversal_and_symlink_escape_are_refused() {
    let s = Web::start("").await;
    std::fs::write(s.path().join("secret"), b"no").unwrap();
    std::os::unix::fs::symlink(s.path().join("secret"), s.path().join("boot/link")).unwrap();
    std::fs::create_dir(s.path().join("boot/sub")).unwrap();
    for (raw, want) in [
        ("/boot/..%2Fsecret", 400),
        ("/boot/%2E%2E", 400),
        ("/boot/.hidden", 400),
        ("/boot/a%5Cb", 400),
        ("/boot/a%00b", 400),
        ("/boot/link", 404),
        ("/boot/sub", 404),
        ("/boot/missing.efi", 404),
    ] {
        let resp = s
            .raw(&format!(
                "GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            ))
            .await;
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {want}")),
            "{raw}: {}",
            resp.lines().next().unwrap_or("")
        );
        assert!(!resp.contains("\r\n\r\nno"), "{raw} leaked the file");
    }
    // `GET /boot/../secret` normalised by clients never reaches /boot.
    let (st, _) = s.get_text("/secret").await;
    assert_eq!(st, 404);
    s.stop().await;
}

#[tokio::test]
async fn mac_query_marks_booted_only_when_the_file_is_served() {
    let s = Web::start("").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    s.pxe(MAC).await;
    let r = s.get(&format!("/boot/missing?mac={MAC}")).fetch().await;
    assert_eq!(r.status(), 404);
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "offered");
    let r = s
        .head(&format!("/boot/bty-netboot-x86_64.vmlinuz?mac={MAC}"))
        .fetch()
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.machine(MAC).await["cycle"]["state"],
        "offered",
        "HEAD does not arm"
    );
    let r = s
        .get("/boot/bty-netboot-x86_64.vmlinuz?mac=zz")
        .fetch()
        .await;
    assert_eq!(r.status(), 400);
    s.boot_kernel(MAC).await;
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "booted");
    assert!(s
        .events(MAC)
        .await
        .iter()
        .any(|e| e["kind"] == "cycle.booted"));
    // An unknown MAC just gets the file.
    s.boot_kernel("52:54:00:00:00:99").await;
    s.stop().await;
}

#[tokio::test]
async fn ipxe_asking_for_its_bootfile_gets_the_chain_script() {
    let s = Web::start("").await;
    let r = s
        .get("/boot/ipxe.efi")
        .header("user-agent", "iPXE/1.21.1+ (g4bd064de)")
        .fetch()
        .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.starts_with("#!ipxe\n"), "{body}");
    assert!(
        body.contains(&format!("chain http://{}/pxe-bootstrap.ipxe", s.addr)),
        "{body}"
    );
    // Firmware (UEFI HTTP Boot) and curl get the binary.
    for ua in ["UefiHttpBoot/1.0", "curl/7.88.1"] {
        let r = s
            .get("/boot/ipxe.efi")
            .header("user-agent", ua)
            .fetch()
            .await;
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"MZ-fake-ipxe-efi");
    }
    // Non-bootfiles are served as files even to iPXE.
    let r = s
        .get("/boot/bty-netboot-x86_64.vmlinuz")
        .header("user-agent", "iPXE/1.21.1")
        .fetch()
        .await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), KERNEL_BYTES);
    // The chain script carries the validated Host only.
    let resp = s
        .raw("GET /boot/snponly.efi HTTP/1.1\r\nHost: evil\r\n chain http://x\r\nUser-Agent: iPXE/1.0\r\nConnection: close\r\n\r\n")
        .await;
    assert!(!resp.contains("chain http://x"), "{resp}");
    let _ = json!({});
    s.stop().await;
}

#[tokio::test]
async fn bootstrap_fetches_are_counted() {
    let s = Web::start("").await;
    let (_, m) = s.get_text("/metrics").await;
    assert!(m.contains("bty_pxe_bootstraps_total 0\n"), "{m}");
    for _ in 0..2 {
        let (status, body) = s.get_text("/pxe-bootstrap.ipxe").await;
        assert_eq!(status, 200);
        assert!(body.starts_with("#!ipxe\n"), "{body}");
    }
    let (_, m) = s.get_text("/metrics").await;
    assert!(m.contains("bty_pxe_bootstraps_total 2\n"), "{m}");
    s.stop().await;
}
