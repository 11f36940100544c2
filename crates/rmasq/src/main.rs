//! rmasq: the chained CNI plugin. Everything lives in the library, which rbridge shares.
fn main() {
    cni_types::skel::run(&rmasq::plugin::Rmasq, &rmasq::plugin::INFO)
}
