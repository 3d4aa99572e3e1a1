//! netwatch's kernel programs (the entry points live in `main.rs`).
#![no_std]
