//! Fuzz the agent's reports as bty-web reads them off the LAN: the bodies
//! of `POST /pxe/{mac}/progress`, `/done` and `/status`, parsed with
//! serde_json from the raw bytes (what axum's `Json` extractor does).
//! Whatever a machine posts, the server gets a value or an error, never a
//! panic; what it accepts serialises and parses again.
#![no_main]

use bty_proto::plan::{DoneReport, LegacyStatus, ProgressReport};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(p) = serde_json::from_slice::<ProgressReport>(data) {
        let again: ProgressReport =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(again.token, p.token);
        assert_eq!(again.bytes_done, p.bytes_done);
        assert_eq!(again.bytes_total, p.bytes_total);
        assert_eq!(again.phase, p.phase);
        assert_eq!(again.rate.is_some(), p.rate.is_some());
        let _ = p.phase.as_str();
    }
    if let Ok(d) = serde_json::from_slice::<DoneReport>(data) {
        let again: DoneReport = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(again.token, d.token);
        assert_eq!(again.ok, d.ok);
        assert_eq!(again.reason, d.reason);
        assert_eq!(again.sha256, d.sha256);
    }
    if let Ok(s) = serde_json::from_slice::<LegacyStatus>(data) {
        let again: LegacyStatus =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }
});
