//! Fuzz the inventory as bty-web takes it from `POST /pxe/{mac}/inventory`:
//! any JSON value (axum's `Json<serde_json::Value>`), then, for an object,
//! the [`Inventory`] it reads as (what `domain::cycle::inventory::check`
//! does). Never a panic; what parses serialises and parses back equal.
#![no_main]

use bty_proto::inventory::Inventory;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if !body.is_object() {
        return;
    }
    let Ok(inv) = serde_json::from_value::<Inventory>(body.clone()) else {
        return;
    };
    // The same bytes read straight into the type (as the agent's own
    // tests do) agree, when they parse: a repeated field is an error there
    // but the last one wins in a `Value`.
    if let Ok(direct) = serde_json::from_slice::<Inventory>(data) {
        assert_eq!(direct, inv);
    }
    // What the server stores (the body as posted) reads the same again.
    let stored = body.to_string();
    let back: Inventory = serde_json::from_str(&stored).unwrap();
    assert_eq!(back, inv);
    let again: Inventory = serde_json::from_str(&serde_json::to_string(&inv).unwrap()).unwrap();
    assert_eq!(again, inv);
});
