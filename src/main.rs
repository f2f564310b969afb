//! `bty-lab`: the operator's CLI.
fn main() {
    eprintln!("bty-lab: not built yet");
    std::process::exit(1);
}
