//! Test builds only: a global allocator that counts, per thread, the bytes held and their peak,
//! so a test measures the memory of the structures it builds (the memory-per-file bound of
//! issue 11 §5) without other tests' threads in the figures. Counts are approximate for memory
//! freed by another thread than the one that allocated it (the tests using it run on one).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// The counting allocator (the system allocator underneath).
pub struct Counting;

fn note(delta: isize) {
    let _ = HELD.try_with(|h| {
        let v = h.get() + delta;
        h.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v);
            }
        });
    });
}

// SAFETY: every call is passed on to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            note(l.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            note(l.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) };
        note(-(l.size() as isize));
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: as above.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            note(new as isize - l.size() as isize);
        }
        q
    }
}

/// Bytes this thread holds now.
pub fn held() -> isize {
    HELD.with(Cell::get)
}

/// Starts a new peak measurement from what is held now.
pub fn reset_peak() {
    PEAK.with(|p| p.set(held()));
}

/// The most this thread held since [`reset_peak`].
pub fn peak() -> isize {
    PEAK.with(Cell::get)
}
