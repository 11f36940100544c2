#[global_allocator]
static ALLOC: cni_types::alloc::PluginAlloc = cni_types::alloc::PluginAlloc;

fn main() {
    cni_types::skel::run(&rhost_local::HostLocal, &rhost_local::INFO)
}
