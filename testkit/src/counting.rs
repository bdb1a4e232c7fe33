//! A global allocator for tests that bound memory: [`Counting`] forwards every call to
//! [`System`] and counts the bytes each thread asked for (allocations, and what a realloc
//! grew by; frees are not subtracted), so a bound measured on one thread is deterministic.
//!
//! A test binary installs it with
//! `#[global_allocator] static COUNTING: testkit::counting::Counting = testkit::counting::Counting;`
//! and measures with [`allocated_by`] (or [`allocated`] before and after).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The counting allocator; see the module documentation.
pub struct Counting;

thread_local! {
    /// Bytes allocated (or grown by realloc) by this thread so far.
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = ALLOCATED.try_with(|a| a.set(a.get() + bytes as u64));
}

// The only unsafe code here: an allocator that counts and forwards every call to `System`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size.saturating_sub(layout.size()));
        System.realloc(ptr, layout, new_size)
    }
}

/// Bytes this thread has asked for so far (0 unless [`Counting`] is the global allocator).
pub fn allocated() -> u64 {
    ALLOCATED.with(Cell::get)
}

/// Bytes this thread asked for while running `work`.
pub fn allocated_by(work: impl FnOnce()) -> u64 {
    let before = allocated();
    work();
    allocated() - before
}
