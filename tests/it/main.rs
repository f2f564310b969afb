//! bty-lab integration tests: the real binary in a temp dir per test, and
//! (with BTY_ENGINE_TESTS) real Docker/Podman engines.

mod engines;
mod image;
mod render;
mod serve;
mod util;
