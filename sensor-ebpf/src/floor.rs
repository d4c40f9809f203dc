//! Bench only (`sensor floor`, run by `cargo xtask bench`; never attached by `sensor run`): the
//! cost of the kill tier's hooks with nothing in them, the floor the real programs are measured
//! against (docs/benchmarks.md).
//!
//! - `sensor_floor`: an empty tracepoint program, attached to every tracepoint the kill tier
//!   uses (one program, many links);
//! - `sensor_floor_sys_enter` / `sensor_floor_sys_exit`: the other design, one `tp_btf` program
//!   on each raw syscall tracepoint that runs for every syscall and looks the syscall number up
//!   in a bitmap of the hooked ones (`SENSOR_FLOOR_SYSCALLS`, filled by `sensor floor`), the
//!   least such a dispatcher costs per syscall.

use aya_ebpf::{
    macros::{btf_tracepoint, map, tracepoint},
    maps::Array,
    programs::{BtfTracePointContext, TracePointContext},
};

/// Bit `n % 64` of slot `n / 64`: syscall number `n` is hooked.
#[map]
static SENSOR_FLOOR_SYSCALLS: Array<u64> = Array::with_max_entries(8, 0);

#[tracepoint]
pub fn sensor_floor(_ctx: TracePointContext) -> u32 {
    0
}

#[btf_tracepoint(function = "sys_enter")]
pub fn sensor_floor_sys_enter(ctx: BtfTracePointContext) -> i32 {
    // sys_enter(struct pt_regs *regs, long id)
    let id: i64 = ctx.arg(1);
    hooked(id)
}

#[btf_tracepoint(function = "sys_exit")]
pub fn sensor_floor_sys_exit(_ctx: BtfTracePointContext) -> i32 {
    // sys_exit(struct pt_regs *regs, long ret): the syscall number is not an argument here (a
    // dispatcher would read it from the registers); the bitmap lookup stands for that.
    hooked(0)
}

#[inline(always)]
fn hooked(id: i64) -> i32 {
    if !(0..512).contains(&id) {
        return 0;
    }
    match SENSOR_FLOOR_SYSCALLS.get((id / 64) as u32) {
        Some(bits) if bits & (1 << (id % 64)) != 0 => 1,
        _ => 0,
    }
}
