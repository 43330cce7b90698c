//! Running a plan (plan.rs) against the maps, all of it or none of it.
//!
//! When an operation fails, the ones before it are undone in reverse
//! order, which walks back through the same safe states the plan walked
//! through, to the tables the plan started from. The maps' Service tables
//! are then the old ones, frontend by frontend, and the next apply (which
//! reads the maps again) converges.
use svc_common::{MAX_BACKENDS, MAX_FRONTENDS, MAX_SERVICE_SLOTS, MAX_SOURCE_RANGES, names};

use aya::maps::MapError;

use super::{
    DataplaneError,
    held::Held,
    maps::{ServiceMaps, map_error},
    plan::{self, ApplyReport, Desired, Op, Plan, Step},
};

/// Makes `maps` hold exactly `desired`. `held` is what they hold, as the
/// last apply left them (read from the maps when `None`); it is kept only
/// when every write went through.
pub fn apply<M: ServiceMaps, F: Desired>(
    maps: &mut M,
    held: &mut Option<Held>,
    desired: &[F],
) -> Result<ApplyReport, DataplaneError> {
    let mut state = match held.take() {
        Some(state) => state,
        None => Held::new(maps.contents()?),
    };
    let plan = plan::plan(&mut state, desired)?;
    if plan.steps.is_empty() {
        *held = Some(state);
        return Ok(plan.report);
    }
    let ran = run(&plan, maps);
    // Also after a failure: some writes may have gone through and been
    // undone, and flow caches may hold either.
    maps.next_generation()
        .map_err(map_error(names::TABLES_GENERATION))?;
    ran?;
    *held = Some(state);
    Ok(plan.report)
}

/// Runs every step of `plan`; on a failure, undoes the ones that ran and
/// returns the failure.
pub fn run(plan: &Plan, maps: &mut impl ServiceMaps) -> Result<(), DataplaneError> {
    for (done, step) in plan.steps.iter().enumerate() {
        if let Err(error) = execute(maps, &step.op) {
            undo(maps, &plan.steps[..done]);
            return Err(step_error(step, error));
        }
    }
    Ok(())
}

fn undo(maps: &mut impl ServiceMaps, done: &[Step]) {
    for step in done.iter().rev() {
        let Some(inverse) = step.op.inverse() else {
            continue;
        };
        if let Err(error) = execute(maps, &inverse) {
            // What is left is a mix; the next apply reads it and repairs it.
            tracing::warn!(%error, op = %inverse, "undoing a failed update failed");
            return;
        }
    }
}

/// Performs one operation. Removing an entry that is not there is done.
pub fn execute(maps: &mut impl ServiceMaps, op: &Op) -> Result<(), MapError> {
    let result = match op {
        Op::ResetCounters { rev_nat_id } => maps.reset_counters(*rev_nat_id),
        Op::PutRevNat {
            rev_nat_id,
            rev_nat,
            ..
        } => maps.put_rev_nat(*rev_nat_id, *rev_nat),
        Op::PutMeta {
            rev_nat_id, meta, ..
        } => maps.put_meta(*rev_nat_id, *meta),
        Op::PutBackend { id, backend } => maps.put_backend(*id, *backend),
        Op::PutSlot { key, slot, .. } => maps.put_slot(*key, *slot),
        Op::PutRange(range) => maps.put_range(*range),
        Op::RemoveRange(range) => maps.remove_range(*range),
        Op::ForgetAffinities { rev_nat_id, keep } => {
            maps.forget_affinities(*rev_nat_id, keep.as_ref())
        }
        Op::RemoveSlot { key, .. } => maps.remove_slot(*key),
        Op::RemoveRevNat { rev_nat_id, .. } => maps.remove_rev_nat(*rev_nat_id),
        Op::RemoveMeta { rev_nat_id, .. } => maps.remove_meta(*rev_nat_id),
        Op::RemoveBackend { id, .. } => maps.remove_backend(*id),
    };
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

/// A failed step as an error: `Full` (naming the Service and the map's
/// capacity) when a map had no room, else the map's error.
fn step_error(step: &Step, error: MapError) -> DataplaneError {
    let map = step.op.map();
    match &step.service {
        Some(service) if is_full(&error) => DataplaneError::Full {
            map,
            service: service.to_string(),
            entries: capacity(map),
        },
        _ => map_error(map)(error),
    }
}

fn capacity(map: &'static str) -> u32 {
    match map {
        names::SERVICES => MAX_SERVICE_SLOTS,
        names::BACKENDS => MAX_BACKENDS,
        names::SOURCE_RANGES => MAX_SOURCE_RANGES,
        _ => MAX_FRONTENDS,
    }
}

/// A map refused an entry for want of room: E2BIG from hash maps, ENOSPC
/// from LPM tries.
fn is_full(error: &MapError) -> bool {
    matches!(
        error,
        MapError::SyscallError(e)
            if matches!(e.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC))
    )
}
