//! `bty-lab machines import|export` against a real `bty-lab serve`: a
//! round trip through files, and a bad file's errors as FILE:LINE: FIELD.

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output, Stdio};

use crate::image::{http, start_serve, PW};
use crate::util::{exits_with, fails_with, ok, stderr, stdout, TestDir};

const HEADER: &str = "mac,name,boot_mode,image,target_disk_serial,sanboot_drive,labels";

/// `bty-lab machines ARGS --server URL` with the admin password in the
/// environment, stdin closed.
fn machines(web: u16, args: &[&str]) -> Output {
    Command::new(crate::util::bin())
        .arg("machines")
        .args(args)
        .args(["--server", &format!("http://127.0.0.1:{web}")])
        .env("BTY_ADMIN_PASSWORD", PW)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn machines_import_export_round_trip_through_serve() {
    let t = TestDir::new();
    let (_serve, web, _) = start_serve(&t);
    let good = t.path().join("lab.csv");
    std::fs::write(
        &good,
        format!(
            "{HEADER}\n52:54:00:cc:00:01,pc-1,bty-inventory,,,,rack1;gpu\n\
             52-54-00-CC-00-02,pc-2,ipxe-exit,,,0x81,\n52:54:00:cc:00:03,,,,,,\n"
        ),
    )
    .unwrap();

    // A dry run writes nothing and says what would happen.
    let o = machines(web, &["import", good.to_str().unwrap(), "--dry-run"]);
    ok(&o);
    assert!(stdout(&o).contains("would create 3"), "{}", stdout(&o));
    let (_, list) = http(web, "GET", "/api/machines", None);
    assert_eq!(list, b"[]");

    let o = machines(web, &["import", good.to_str().unwrap()]);
    ok(&o);
    assert!(
        stdout(&o).contains("3 created, 0 updated, 0 unchanged"),
        "{}",
        stdout(&o)
    );

    // Export to a file (atomically, 0644) and to stdout as JSON.
    let out = t.path().join("exported.csv");
    let o = machines(web, &["export", "--out", out.to_str().unwrap()]);
    ok(&o);
    let first = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        first,
        format!(
            "{HEADER}\n52:54:00:cc:00:01,pc-1,bty-inventory,,,,gpu;rack1\n\
             52:54:00:cc:00:02,pc-2,ipxe-exit,,,0x81,\n52:54:00:cc:00:03,,ipxe-exit,,,,\n"
        )
    );
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let o = machines(web, &["export", "--format", "json"]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[0]["labels"], serde_json::json!(["gpu", "rack1"]));

    // Purge, import the export, export again: the same bytes.
    for m in [
        "52:54:00:cc:00:01",
        "52:54:00:cc:00:02",
        "52:54:00:cc:00:03",
    ] {
        let (code, _) = http(web, "DELETE", &format!("/api/machines/{m}"), None);
        assert_eq!(code, 204);
    }
    let o = machines(web, &["import", out.to_str().unwrap()]);
    ok(&o);
    let o = machines(web, &["export"]);
    ok(&o);
    assert_eq!(stdout(&o), first, "export, purge, import, export");

    // A bad file: every error as FILE:LINE: FIELD: message, exit 3
    // (refused), nothing written.
    let bad = t.path().join("bad.csv");
    std::fs::write(
        &bad,
        format!(
            "{HEADER}\n52:54:00:cc:00:01,renamed,ipxe-exit,,,,\n52:54:00:zz:00:09,x,,,,,\n\
             52:54:00:cc:00:04,y,flash,,,,\n"
        ),
    )
    .unwrap();
    let o = machines(web, &["import", bad.to_str().unwrap()]);
    exits_with(&o, 3);
    let shown = bad.display();
    fails_with(&o, &format!("{shown}:3: mac: "));
    fails_with(&o, &format!("{shown}:4: boot_mode: "));
    fails_with(&o, "2 row(s) with errors; nothing was imported");
    assert!(!stderr(&o).contains(":2:"), "{}", stderr(&o));
    let o = machines(web, &["export"]);
    assert_eq!(stdout(&o), first, "the bad file changed nothing");

    // Over bty-web's 8 MiB: refused, exit 3.
    let big = t.path().join("big.csv");
    let row = "52:54:00:cc:00:05,pc-5,ipxe-exit,,,,\n";
    let rows = row.repeat(9 * 1024 * 1024 / row.len());
    std::fs::write(&big, format!("{HEADER}\n{rows}")).unwrap();
    let o = machines(web, &["import", big.to_str().unwrap()]);
    exits_with(&o, 3);
    fails_with(&o, "at most 8 MiB");

    // The extension names the format.
    let txt = t.path().join("lab.txt");
    std::fs::write(&txt, "x").unwrap();
    let o = machines(web, &["import", txt.to_str().unwrap()]);
    fails_with(&o, "must end in .csv or .json");
}
