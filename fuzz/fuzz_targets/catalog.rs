//! Fuzz the static catalog TOML as bty-web reads it. bty-web's reader
//! (`catalog::read_static` and `check_entry`) is private and reachable only
//! through the async, file-based `Catalog::refresh`, so this target runs
//! the same steps on the same types: `toml::from_str::<CatalogFile>`, the
//! version check, the per-entry checks (bty-proto's validators and format
//! guess), the blob URL of a usable entry, and the `GET /catalog.toml`
//! serialisation, which must parse back to the same entries.
#![no_main]

use bty_proto::catalog::{blob_key, blob_url, decode_blob_key, CatalogFile};
use bty_proto::ImageFormat;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = toml::from_str::<CatalogFile>(text) else {
        return;
    };
    if file.version != 1 {
        return;
    }
    for e in &file.images {
        let usable = bty_proto::text::validate_image_name(&e.name).is_ok()
            && bty_proto::text::validate_http_url("src", &e.src).is_ok()
            && e.sha256
                .as_deref()
                .is_none_or(|s| bty_proto::text::validate_sha256("sha256", s).is_ok());
        let format = e.format.or_else(|| ImageFormat::from_file_name(&e.src));
        if usable && format.is_some() {
            let url = blob_url("http://cache.example:8081", &e.src);
            assert!(url.starts_with("http://cache.example:8081/"));
            assert_eq!(
                decode_blob_key(&blob_key(&e.src)).as_deref(),
                Some(e.src.as_str())
            );
        }
    }
    let out = toml::to_string(&file).unwrap();
    let back: CatalogFile = toml::from_str(&out).unwrap();
    assert_eq!(back, file);
});
