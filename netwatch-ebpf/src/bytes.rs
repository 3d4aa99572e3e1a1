//! Zeroing that stays inline.
//!
//! Learned the hard way: on the BPF target LLVM turns zeroed byte-array
//! padding, a struct built with `..Default::default()`, and a plain copy
//! of a byte array whose alignment it cannot prove (`a = b` for a
//! `[u8; 6]`) into a call to a `memset` or `memmove` subprogram that moves
//! one byte per loop iteration: a call, a stack frame and a loop on every
//! packet that takes the path (a 48-byte `memset` cost a new flow about
//! 90 ns). Volatile stores cannot be merged into such a call. `netwatch`'s
//! `shipped_programs_call_no_byte_loop_subprograms` test checks the built
//! object for any call left.

use core::mem::MaybeUninit;

/// Zeroes `out` with volatile word stores (8-byte ones where `T` allows,
/// else 4-byte ones) and returns it, where `T::default()` or a literal
/// built with `..Default::default()` becomes a `memset` call.
///
/// # Safety
/// All-zero bits must be a valid `T` (integers, byte arrays, `false`,
/// enums whose zero is a variant).
#[inline(always)]
pub unsafe fn zeroed_by_words<T>(out: &mut MaybeUninit<T>) -> &mut T {
    const {
        assert!(core::mem::align_of::<T>() >= 4 && core::mem::size_of::<T>().is_multiple_of(4));
    }
    if core::mem::align_of::<T>() >= 8 && core::mem::size_of::<T>().is_multiple_of(8) {
        // SAFETY: `out` is 8-byte aligned and a whole number of 8-byte
        // words long.
        unsafe {
            zero_words(
                out.as_mut_ptr().cast::<u64>(),
                core::mem::size_of::<T>() / 8,
            )
        };
    } else {
        // SAFETY: as above, for 4-byte words (asserted at compile time).
        unsafe {
            zero_words(
                out.as_mut_ptr().cast::<u32>(),
                core::mem::size_of::<T>() / 4,
            )
        };
    }
    // SAFETY: every byte is zero, which the caller says is a valid `T`.
    unsafe { out.assume_init_mut() }
}

/// Writes zero to the `count` words from `words`, each a volatile store.
///
/// # Safety
/// `words` must be aligned and valid for `count` writes.
#[inline(always)]
unsafe fn zero_words<W: From<u8>>(words: *mut W, count: usize) {
    let mut i = 0;
    while i < count {
        // SAFETY: inside the `count` words the caller vouches for.
        unsafe { words.add(i).write_volatile(W::from(0)) };
        i += 1;
    }
}
