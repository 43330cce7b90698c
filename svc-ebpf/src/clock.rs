//! The coarse clock, read at most once per timer tick per CPU.
use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns};

use crate::maps::CLOCK_V1;

/// The time, in nanoseconds. Flow timestamps (ct.rs) and the answer budget
/// (reject.rs) need second, not nanosecond, precision: the coarse clock,
/// which only moves at the timer tick. Even that is a helper call costing
/// ~10 ns per packet, so each CPU keeps the value it read last with the
/// jiffy it read it in (jiffies64 is a plain load: the verifier inlines
/// it) and reads the clock again only once the tick has moved. A read just
/// as the tick moves may keep the previous tick's time for one tick: well
/// under the second that matters here.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without arguments.
    let jiffy = unsafe { bpf_jiffies64() };
    let Some(cached) = CLOCK_V1.get_ptr_mut(0) else {
        // SAFETY: helper without arguments.
        return unsafe { bpf_ktime_get_coarse_ns() };
    };
    // SAFETY: per-CPU slot, only this CPU uses it while we run.
    unsafe {
        if (*cached).jiffy != jiffy || (*cached).ns == 0 {
            (*cached).ns = bpf_ktime_get_coarse_ns();
            (*cached).jiffy = jiffy;
        }
        (*cached).ns
    }
}
