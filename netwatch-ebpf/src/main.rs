//! The object netwatch loads: one file per attach point. The benchmark's
//! reference programs live in an object of their own (`bench.rs`).
#![no_std]
#![no_main]

mod from_container;
mod kernel_drops;
mod macvlan_child;
mod macvlan_parent;
mod to_container;
mod uplink;

netwatch_ebpf::license_section!();

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
