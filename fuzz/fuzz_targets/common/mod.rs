//! Input decoding and buffers shared by the `classify` and `c_abi` targets (each includes this
//! file with `mod common;`).

use derm_runtime::Arena;

/// Reads the input front to back; past the end every read is zero.
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    pub fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    pub fn le(&mut self, n: usize) -> u64 {
        (0..n).fold(0u64, |v, i| v | u64::from(self.u8()) << (8 * i))
    }

    /// A size: the tag's low two bits choose small (0..=63), 16-bit, any `usize`, or
    /// `usize::MAX` minus a small number.
    pub fn size(&mut self) -> usize {
        let tag = self.u8();
        let small = usize::from(tag >> 2);
        match tag & 3 {
            0 => small,
            1 => self.le(2) as usize,
            2 => self.le(8) as usize,
            _ => usize::MAX - small,
        }
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// A zeroed arena on the heap (it is too large for the stack).
pub fn boxed_arena() -> Box<Arena> {
    let layout = std::alloc::Layout::new::<Arena>();
    // SAFETY: Arena is a plain array of f32, for which all-zero bytes are valid; the layout is
    // Arena's own, so Box may free it.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout).cast::<Arena>();
        assert!(!p.is_null(), "out of memory allocating the arena");
        Box::from_raw(p)
    }
}

/// `len` bytes made by repeating `seed` (zeros when it is empty).
pub fn repeat(seed: &[u8], len: usize) -> Vec<u8> {
    if seed.is_empty() {
        return vec![0; len];
    }
    seed.iter().copied().cycle().take(len).collect()
}
