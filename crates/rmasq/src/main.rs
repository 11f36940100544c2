//! rmasq: the chained CNI plugin. Everything lives in the library, which rbridge shares.
#[global_allocator]
static ALLOC: cni_plugin::alloc::PluginAlloc = cni_plugin::alloc::PluginAlloc;

fn main() {
    cni_plugin::skel::run(&rmasq::Rmasq, &rmasq::INFO)
}
