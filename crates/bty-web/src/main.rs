fn main() {
    eprintln!("bty-web: not built yet");
    std::process::exit(1);
}
