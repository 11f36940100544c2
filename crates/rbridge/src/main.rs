fn main() {
    cni_types::skel::run(&rbridge::Bridge, &rbridge::INFO)
}
