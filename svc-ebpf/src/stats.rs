//! Counters: per-packet visibility without logging.
use svc_common::DropReason;

use crate::maps::{DROPS_V2, FE_STATS_V1};

#[inline(always)]
pub fn count_drop(reason: DropReason) {
    count_drop_at(reason as u32);
}

/// [`count_drop`] by the reason's index.
#[inline(always)]
pub fn count_drop_at(index: u32) {
    if let Some(counters) = DROPS_V2.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { (*counters).packets += 1 };
    }
}

#[inline(always)]
pub fn count_frontend(rev_nat_id: u32, bytes: u32) {
    if let Some(counters) = FE_STATS_V1.get_ptr_mut(rev_nat_id) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe {
            (*counters).packets += 1;
            (*counters).bytes += u64::from(bytes);
        }
    }
}
