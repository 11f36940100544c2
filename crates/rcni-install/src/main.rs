fn main() {
    eprintln!("not yet written");
    std::process::exit(1);
}
