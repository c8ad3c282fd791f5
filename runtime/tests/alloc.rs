//! `classify` and `run` allocate nothing: a counting global allocator sees
//! zero allocations from the calling thread during the calls.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use derm_runtime::{INPUT_LEN, Image, classify, run};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Only this thread is measured: the test harness allocates on others.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let (a0, b0) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (
        r,
        ALLOCATIONS.load(Ordering::Relaxed) - a0,
        BYTES.load(Ordering::Relaxed) - b0,
    )
}

#[test]
fn classify_and_run_allocate_zero_bytes() {
    let mut arena = common::boxed_arena();
    let (w, h) = (317, 211);
    let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 256) as u8).collect();
    let input = vec![0.1f32; INPUT_LEN];
    let input: &[f32; INPUT_LEN] = input.as_slice().try_into().unwrap();

    // The counter works: a Vec on this thread is seen.
    let (_, n, _) = counted(|| std::hint::black_box(vec![1u8; 10]));
    assert_eq!(n, 1, "the counting allocator does not count");

    let (p, n, bytes) = counted(|| classify(Image::new(w, h, &pixels).unwrap(), &mut arena));
    p.unwrap();
    assert_eq!((n, bytes), (0, 0), "classify allocated");
    let (_, n, bytes) = counted(|| run(input, &mut arena));
    assert_eq!((n, bytes), (0, 0), "run allocated");
    // Errors allocate nothing either.
    let (e, n, _) = counted(|| {
        classify(
            Image {
                width: 0,
                height: 0,
                pixels: &[],
            },
            &mut arena,
        )
    });
    assert!(e.is_err());
    assert_eq!(n, 0, "the error path allocated");
}
