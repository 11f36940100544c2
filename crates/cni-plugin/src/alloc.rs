//! The plugin binaries' global allocator. A plugin process lives a few milliseconds and
//! frees almost nothing before it exits; musl's malloc (the release binaries are static musl)
//! takes a lock on every call and maps and unmaps its groups for mid-sized requests, each
//! unmapping a TLB flush on every CPU the process runs on. Measured with `scripts/bench` on
//! journaled ext4 and xfs: an ADD is 11-17% slower with musl's malloc than with this.
//!
//! Requests up to 72 KiB (netlink's 64 KiB receive buffers included) are bump-allocated from
//! per-thread chunks of a static region: no lock, no system call, and memory the process never
//! touches costs nothing. Freeing the most recent allocation of a thread gives it back
//! (temporaries); other frees are dropped, which is harmless for a process that exits within
//! milliseconds. Larger requests, and everything once the region is used up (a long-running
//! subcommand), go to the system allocator.
//!
//! A plugin's `main.rs` only names it: `#[global_allocator] static A: PluginAlloc = PluginAlloc;`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Address space reserved for bump allocation. Untouched pages of it are never backed.
const REGION: usize = 8 << 20;
/// What a thread takes from the region at a time.
const CHUNK: usize = 256 << 10;
/// Requests above this go to the system allocator; a fresh chunk always holds one.
const SMALL: usize = 72 << 10;

#[repr(C, align(4096))]
struct Region(UnsafeCell<[u8; REGION]>);

// SAFETY: bytes of the region are handed out to one owner each (chunks by an atomic counter,
// allocations within a chunk by the one thread that owns it).
unsafe impl Sync for Region {}

static MEMORY: Region = Region(UnsafeCell::new([0; REGION]));
static NEXT_CHUNK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's chunk: next free address, end, and where the memory never handed out
    /// (still zero) begins; all 0 before its first allocation.
    static BUMP: Cell<(usize, usize, usize)> = const { Cell::new((0, 0, 0)) };
}

fn base() -> usize {
    MEMORY.0.get() as usize
}

fn in_region(p: *mut u8) -> bool {
    (p as usize).wrapping_sub(base()) < REGION
}

fn align_up(addr: usize, align: usize) -> usize {
    (addr + align - 1) & !(align - 1)
}

/// Bump-allocates `l` from this thread's chunk, taking a new chunk when it does not fit; None
/// when the region is used up. Also returns where the block's possibly written part ends (the
/// rest is still zero).
fn bump(l: Layout) -> Option<(*mut u8, usize)> {
    BUMP.with(|b| {
        let (next, end, fresh) = b.get();
        let start = align_up(next, l.align());
        if next != 0 && start + l.size() <= end {
            b.set((start + l.size(), end, fresh.max(start + l.size())));
            return Some((start as *mut u8, fresh.clamp(start, start + l.size())));
        }
        if NEXT_CHUNK.load(Ordering::Relaxed) >= REGION {
            return None;
        }
        let offset = NEXT_CHUNK.fetch_add(CHUNK, Ordering::Relaxed);
        if offset >= REGION {
            return None;
        }
        let chunk = base() + offset;
        // Chunks are 4 KiB aligned and requests at most 72 KiB: one always fits a fresh chunk.
        let start = align_up(chunk, l.align());
        b.set((start + l.size(), chunk + CHUNK, start + l.size()));
        Some((start as *mut u8, start))
    })
}

/// Is the block at `p` of `size` bytes the latest allocation in this thread's chunk (next, end)?
/// It must lie in the chunk: a block of another thread's chunk can end exactly where this one
/// starts.
fn is_top(p: *mut u8, size: usize, next: usize, end: usize) -> bool {
    end != 0 && p as usize >= end - CHUNK && p as usize + size == next
}

/// See the module documentation.
pub struct PluginAlloc;

unsafe impl GlobalAlloc for PluginAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() <= SMALL && l.align() <= 4096 {
            if let Some((p, _)) = bump(l) {
                return p;
            }
        }
        System.alloc(l)
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.size() <= SMALL && l.align() <= 4096 {
            if let Some((p, written_end)) = bump(l) {
                // Given-back memory may have been written; memory never handed out is zero, and
                // left untouched (not backed).
                std::ptr::write_bytes(p, 0, written_end - p as usize);
                return p;
            }
        }
        System.alloc_zeroed(l)
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if !in_region(p) {
            return System.dealloc(p, l);
        }
        BUMP.with(|b| {
            let (next, end, fresh) = b.get();
            if is_top(p, l.size(), next, end) {
                b.set((p as usize, end, fresh));
            }
        })
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        if !in_region(p) {
            return System.realloc(p, l, new_size);
        }
        // The most recent allocation of this thread grows or shrinks in place when it fits.
        let in_place = BUMP.with(|b| {
            let (next, end, fresh) = b.get();
            let fits = is_top(p, l.size(), next, end) && p as usize + new_size <= end;
            if fits {
                b.set((p as usize + new_size, end, fresh.max(p as usize + new_size)));
            }
            fits
        });
        if in_place {
            return p;
        }
        let new_layout = Layout::from_size_align_unchecked(new_size, l.align());
        let q = self.alloc(new_layout);
        if !q.is_null() {
            std::ptr::copy_nonoverlapping(p, q, l.size().min(new_size));
            self.dealloc(p, l);
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn small_allocations_come_from_the_region_aligned_and_apart() {
        let a = PluginAlloc;
        unsafe {
            let x = a.alloc(layout(3, 1));
            let y = a.alloc(layout(16, 16));
            assert!(in_region(x) && in_region(y));
            assert_eq!(y as usize % 16, 0);
            assert!(y as usize >= x as usize + 3);
            x.write_bytes(0xaa, 3);
            y.write_bytes(0xbb, 16);
            assert_eq!(*x.add(2), 0xaa);
            a.dealloc(y, layout(16, 16));
            a.dealloc(x, layout(3, 1));
        }
    }

    #[test]
    fn the_latest_allocation_is_given_back_and_grows_in_place() {
        let a = PluginAlloc;
        unsafe {
            let x = a.alloc(layout(64, 8));
            a.dealloc(x, layout(64, 8));
            let y = a.alloc(layout(64, 8));
            assert_eq!(x, y, "a freed top allocation is reused");
            let z = a.realloc(y, layout(64, 8), 1000);
            assert_eq!(z, y, "the top allocation grows in place");
            // Not the top any more: moved, contents kept.
            z.write_bytes(7, 1000);
            let w = a.alloc(layout(8, 8));
            let moved = a.realloc(z, layout(1000, 8), 2000);
            assert_ne!(moved, z);
            assert_eq!(*moved.add(999), 7);
            a.dealloc(w, layout(8, 8));
            a.dealloc(moved, layout(2000, 8));
        }
    }

    #[test]
    fn zeroed_memory_is_zero_even_when_given_back_dirty() {
        let a = PluginAlloc;
        unsafe {
            let x = a.alloc(layout(128, 8));
            x.write_bytes(0xff, 128);
            a.dealloc(x, layout(128, 8));
            let y = a.alloc_zeroed(layout(128, 8));
            assert_eq!(x, y);
            assert!((0..128).all(|i| *y.add(i) == 0));
            a.dealloc(y, layout(128, 8));
        }
    }

    /// Zeroed requests write only memory that was handed out before: the rest of a chunk is
    /// still zero and stays untouched (not backed), which matters for 64 KiB buffers.
    #[test]
    fn zeroed_memory_is_written_only_where_it_was_used_before() {
        std::thread::spawn(|| unsafe {
            let a = PluginAlloc;
            let x = a.alloc(layout(100, 8));
            x.write_bytes(0xff, 100);
            a.dealloc(x, layout(100, 8));
            let (next, _, fresh) = BUMP.with(|b| b.get());
            assert_eq!((next, fresh), (x as usize, x as usize + 100));
            let (y, written_end) = bump(layout(4000, 8)).unwrap();
            assert_eq!((y, written_end), (x, x as usize + 100));
            let z = a.alloc_zeroed(layout(64 << 10, 8));
            assert!((0..64 << 10).all(|i| *z.add(i) == 0));
            assert_eq!(BUMP.with(|b| b.get()).2, z as usize + (64 << 10));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn large_allocations_and_their_growth_go_to_the_system() {
        let a = PluginAlloc;
        unsafe {
            let x = a.alloc(layout(SMALL + 1, 8));
            assert!(!in_region(x));
            let small = a.alloc(layout(100, 8));
            small.write_bytes(3, 100);
            let top = a.alloc(layout(8, 8));
            // Growing a small one (not the latest) past the limit moves it out, contents kept.
            let big = a.realloc(small, layout(100, 8), 3 * SMALL);
            assert!(!in_region(big));
            *big.add(3 * SMALL - 1) = 9;
            assert_eq!(*big.add(99), 3);
            a.dealloc(big, layout(3 * SMALL, 8));
            a.dealloc(top, layout(8, 8));
            a.dealloc(x, layout(SMALL + 1, 8));
        }
    }

    /// A block of the chunk below this thread's, freed here when this thread has given back
    /// everything: it ends where this thread's next allocation would start, but is not ours.
    #[test]
    fn a_block_of_another_chunk_is_never_taken_back() {
        // Some chunk below the one the next thread takes.
        std::thread::spawn(|| unsafe { PluginAlloc.alloc(layout(8, 8)) as usize })
            .join()
            .unwrap();
        std::thread::spawn(|| unsafe {
            let a = PluginAlloc;
            let x = a.alloc(layout(16, 8));
            a.dealloc(x, layout(16, 8));
            let below = x.sub(16);
            assert!(in_region(below));
            // Not written to: it belongs to another thread.
            a.dealloc(below, layout(16, 8));
            assert_eq!(a.alloc(layout(16, 8)), x);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn threads_allocate_from_chunks_of_their_own() {
        let firsts: Vec<usize> = (0..4)
            .map(|_| std::thread::spawn(|| unsafe { PluginAlloc.alloc(layout(32, 8)) as usize }))
            .map(|h| h.join().unwrap())
            .collect();
        for (i, x) in firsts.iter().enumerate() {
            assert!(in_region(*x as *mut u8));
            for y in &firsts[i + 1..] {
                assert!(x.abs_diff(*y) >= CHUNK, "threads share a chunk");
            }
        }
    }
}
