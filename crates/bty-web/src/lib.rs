//! bty-web: operator UI, REST API, PXE plans and boot artifacts
