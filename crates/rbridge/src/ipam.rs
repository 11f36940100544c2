//! The IPAM plugin's ADD, as one job: started before anything else, from the calling thread
//! (measured: spawning it from a helper thread made the ADD 4-13% slower), so it allocates while
//! the links are built; its result taken once they are ready; its allocation released with IPAM
//! DEL when the ADD fails.

use cni_plugin::delegate::{self, Running, UndoAdd};
use cni_plugin::Call;
use cni_types::error::DELEGATE_FAILED;
use cni_types::{CniError, CniResult, Result, Verb};

/// The IPAM ADD in flight, and its undo. Dropped without [`IpamAdd::keep`], it waits for the
/// plugin if it is still running (so the DEL never races the ADD), then runs IPAM DEL.
pub struct IpamAdd<'a> {
    name: String,
    // Declared before `undo`, so that it drops first: the child is reaped before the DEL.
    running: Option<Running>,
    undo: Option<UndoAdd<'a>>,
}

impl<'a> IpamAdd<'a> {
    pub fn start(call: &'a Call, name: &str) -> Result<IpamAdd<'a>> {
        let running = delegate::start(call, name, Verb::Add, &call.stdin)?;
        Ok(IpamAdd {
            name: name.to_string(),
            running: Some(running),
            undo: Some(UndoAdd::new(call, name)),
        })
    }

    /// The plugin's result, in any version it answered in (once). A failed IPAM ADD is kept:
    /// as upstream, it is not followed by IPAM DEL, which could release the address of a live
    /// attachment with the same container ID and ifname (an ADD retried after success).
    pub fn result(&mut self, call: &Call) -> Result<CniResult> {
        let running = self
            .running
            .take()
            .ok_or_else(|| CniError::io("the IPAM result was taken already"))?;
        let result = running
            .finish_add(call.version)
            .inspect_err(|_| self.keep())?;
        if result.ips.is_empty() {
            return Err(CniError::new(
                DELEGATE_FAILED,
                format!("IPAM plugin {} returned no IP address", self.name),
            ));
        }
        Ok(result)
    }

    /// Keeps what IPAM did: on success, or when undoing it could hurt a live attachment.
    pub fn keep(&mut self) {
        if let Some(undo) = self.undo.take() {
            undo.disarm();
        }
    }
}
