//! Fuzz the TFTP packet parser and the pure layers a request reaches
//! before any I/O: option negotiation and the lexical path rules.
#![no_main]

use std::time::Duration;

use bty_tftp::options::{negotiate, Limits};
use bty_tftp::packet::{self, Packet};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(p) = packet::parse(data) else { return };
    match p {
        Packet::Rrq(req) | Packet::Wrq(req) => {
            assert!(!req.filename.is_empty());
            assert!(req.filename.len() <= packet::MAX_FILENAME);
            assert!(req.options.len() <= packet::MAX_OPTIONS);
            let limits = Limits {
                max_blksize: 1468,
                max_windowsize: 64,
                default_timeout: Duration::from_secs(1),
                max_timeout: Duration::from_secs(5),
            };
            let n = negotiate(&req.options, u64::MAX, &limits);
            assert!((8..=1468).contains(&n.blksize) || n.blksize == 512);
            assert!((1..=64).contains(&n.windowsize));
            assert!(n.timeout <= Duration::from_secs(5));
            if let Ok(rel) = bty_tftp::path::relative(req.filename) {
                assert!(rel.is_relative());
                assert!(!rel.components().any(|c| c == std::path::Component::ParentDir));
            }
            // What the server would send back must parse again.
            let oack = packet::oack(&n.oack);
            assert!(matches!(packet::parse(&oack), Ok(Packet::Oack(_))));
        }
        Packet::Error { message, .. } => {
            let again = packet::error(packet::ErrorCode::NotDefined, &message);
            assert!(matches!(packet::parse(&again), Ok(Packet::Error { .. })));
        }
        _ => {}
    }
});
