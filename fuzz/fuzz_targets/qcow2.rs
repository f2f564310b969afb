//! Fuzz the agent's qcow2 header parser and the cluster map built from
//! it: whatever an image's first bytes say, the agent answers with an
//! error, never a panic, an overflow or a map beyond its bound.
#![no_main]

use bty_agent::qcow2::{self, Layout, MAX_MAP_CLUSTERS};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(h) = qcow2::parse_header(data) else {
        return;
    };
    assert!((9..=21).contains(&h.cluster_bits));
    let cs = 1u64 << h.cluster_bits;
    assert!(h.virtual_size.div_ceil(cs) <= MAX_MAP_CLUSTERS);
    // The tables come from the same bytes, where the header points (what a
    // Range GET past the end would return: less, or nothing).
    let at = |off: u64, len: u64| -> Vec<u8> {
        let start = usize::try_from(off).unwrap_or(usize::MAX);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        data.get(start..)
            .map(|rest| rest.iter().take(len).copied().collect())
            .unwrap_or_default()
    };
    let l1 = at(h.l1_offset, u64::from(h.l1_size) * 8);
    let mut loads = 0u64;
    let layout = Layout::from_tables(h, &l1, |off| {
        loads += 1;
        Ok(at(off, cs))
    });
    assert!(loads <= u64::from(h.l1_size));
    if let Ok(l) = layout {
        assert_eq!(l.virtual_size, h.virtual_size);
    }
});
