//! The contract between netwatch's kernel programs and its user space.
//!
//! Everything that crosses the kernel/user boundary lives here and only here:
//! map keys and values, ring buffer records, drop reasons, map and program
//! names — all `#[repr(C)]` with explicit padding and compile-time layout
//! asserts — plus the one verdict function that both the kernel programs and
//! the user-space reference model call, so policy semantics exist once.
//!
//! The crate is `no_std`; the `user` feature adds `aya::Pod` impls, the
//! `serde` feature serde impls, `Display` and `FromStr` for the names users
//! see (verdicts, directions, drop reasons, protocols).
#![no_std]

pub mod dns;
pub mod endpoint;
pub mod event;
pub mod flow;
pub mod kdrop;
pub mod names;
pub mod packet;
pub mod protocol;
pub mod reason;
pub mod verdict;

/// Layout assert used by every contract type: a mismatch between the kernel's
/// and user space's idea of a type must fail the build, not corrupt a map.
#[macro_export]
macro_rules! assert_layout {
    ($ty:ty, size = $size:expr, align = $align:expr) => {
        const _: () = assert!(core::mem::size_of::<$ty>() == $size);
        const _: () = assert!(core::mem::align_of::<$ty>() == $align);
    };
}

/// Implements `aya::Pod` for contract types when built for user space.
macro_rules! user_pod {
    ($($ty:ty),+ $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: every listed type is `#[repr(C)]`, `Copy`, made only of
            // integers and byte arrays, and has explicit padding fields, so
            // every bit pattern is valid and there are no uninitialised holes.
            unsafe impl aya::Pod for $ty {}
        )+
    };
}
pub(crate) use user_pod;
