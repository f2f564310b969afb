fn main() {
    eprintln!("withcache: not built yet");
    std::process::exit(1);
}
