fn main() {
    cni_types::skel::run(&rhost_local::HostLocal, &rhost_local::INFO)
}
