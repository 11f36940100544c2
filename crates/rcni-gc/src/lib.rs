//! A node's garbage collection: which attachments the container runtime still knows (CRI
//! `ListPodSandbox`), GC (spec 1.1.0) through every conflist of the conf dir with those as
//! `cni.dev/valid-attachments`, and libcni's result cache. Used by the node agent's periodic GC
//! and by `rcni gc`.
