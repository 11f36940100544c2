//! rmasq: the chained CNI plugin. Everything lives in the library, which rbridge shares.
#[global_allocator]
static ALLOC: cni_types::alloc::PluginAlloc = cni_types::alloc::PluginAlloc;

fn main() {
    cni_types::skel::run(&rmasq::plugin::Rmasq, &rmasq::plugin::INFO)
}
