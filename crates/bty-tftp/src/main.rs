fn main() {
    eprintln!("bty-tftp: not built yet");
    std::process::exit(1);
}
