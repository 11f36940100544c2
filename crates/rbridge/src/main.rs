#[global_allocator]
static ALLOC: cni_plugin::alloc::PluginAlloc = cni_plugin::alloc::PluginAlloc;

fn main() {
    cni_plugin::skel::run(&rbridge::Bridge, &rbridge::INFO)
}
