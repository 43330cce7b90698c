//! Running a plan (plan.rs) against the maps, one chunk at a time, each
//! whole or not at all.
//!
//! When an operation fails, the ones of its chunk before it are undone in
//! reverse order, which walks back through the same safe states the chunk
//! walked through, to where it started. Every frontend is then as it was
//! or as it is wanted (chunks before the failed one ran whole, later ones
//! did not run), the agent's memory of the maps is dropped, and the next
//! apply reads them back and converges.
use std::sync::Arc;

use aya::maps::MapError;
use svc_common::{MAX_BACKENDS, MAX_FRONTENDS, MAX_SERVICE_SLOTS, MAX_SOURCE_RANGES, names};

use super::{
    DataplaneError,
    held::Held,
    maps::{ServiceMaps, map_error},
    plan::{self, ApplyReport, Chunk, Desired, Op},
};
use crate::model::{Frontend, IpFamily};

/// Makes `maps` hold exactly `desired`, Maglev tables of `maglev_size`
/// entries. `held` is what they hold, as the last apply left them (read
/// from the maps when `None`); it is kept only when every write went
/// through.
pub fn apply<M: ServiceMaps, F: Desired>(
    maps: &mut M,
    held: &mut Option<Held>,
    desired: &[F],
    maglev_size: u16,
) -> Result<ApplyReport, DataplaneError> {
    let mut state = match held.take() {
        Some(state) => state,
        None => Held::new(maps.contents()?, maglev_size),
    };
    state.maglev_size = maglev_size;
    run_plan(maps, held, state, |state, run| {
        plan::plan_each(state, desired, run)
    })
}

/// Writes `written` and removes `removed` in `maps`, which hold `held`
/// (see [`plan::plan_delta`]), all else staying as it is.
pub fn apply_delta<M: ServiceMaps>(
    maps: &mut M,
    held: &mut Option<Held>,
    written: &[Arc<Frontend>],
    removed: &[Arc<Frontend>],
) -> Result<ApplyReport, DataplaneError> {
    let Some(state) = held.take() else {
        return Err(DataplaneError::NothingHeld);
    };
    run_plan(maps, held, state, |state, run| {
        plan::plan_delta(state, written, removed, run)
    })
}

/// Runs what `plan` plans from `state`, chunk by chunk; `held` is
/// `state` afterwards if every write went through.
fn run_plan<M: ServiceMaps>(
    maps: &mut M,
    held: &mut Option<Held>,
    mut state: Held,
    plan: impl FnOnce(
        &mut Held,
        &mut dyn FnMut(Chunk<'_>) -> Result<(), DataplaneError>,
    ) -> Result<ApplyReport, DataplaneError>,
) -> Result<ApplyReport, DataplaneError> {
    let mut wrote = false;
    let applied = plan(&mut state, &mut |chunk| {
        wrote = true;
        run(chunk, maps)
    });
    if wrote {
        // Also after a failure: chunks before it changed the tables, and
        // flow caches may hold what they copied from the old ones.
        maps.next_generation()
            .map_err(map_error(names::TABLES_GENERATION))?;
    }
    let report = applied?;
    *held = Some(state);
    Ok(report)
}

/// Runs every operation of `chunk`; on a failure, undoes the ones that ran
/// and returns the failure.
pub fn run(chunk: Chunk<'_>, maps: &mut impl ServiceMaps) -> Result<(), DataplaneError> {
    for (done, op) in chunk.ops.iter().enumerate() {
        if let Err(error) = execute(maps, op) {
            undo(maps, &chunk.ops[..done]);
            return Err(op_error(op, chunk.service, error));
        }
    }
    Ok(())
}

fn undo(maps: &mut impl ServiceMaps, done: &[Op]) {
    for op in done.iter().rev() {
        let Some(inverse) = op.inverse() else {
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
        Op::PutMaglev { start, entries } => maps.put_maglev(*start, entries),
        Op::PutRange(range) => maps.put_range(*range),
        Op::RemoveRange(range) => maps.remove_range(*range),
        Op::ForgetAffinities { rev_nat_id, keep } => {
            maps.forget_affinities(*rev_nat_id, keep.as_ref())
        }
        Op::RemoveSlot { key, .. } => maps.remove_slot(*key),
        Op::RemoveRevNat { rev_nat_id, was } => {
            maps.remove_rev_nat(*rev_nat_id, IpFamily::of(was.address))
        }
        Op::RemoveMeta { rev_nat_id, .. } => maps.remove_meta(*rev_nat_id),
        Op::RemoveBackend { id, was } => maps.remove_backend(*id, IpFamily::of(was.address)),
    };
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

/// A failed operation as an error: `Full` (naming the Service and the
/// map's capacity) when a map had no room, else the map's error.
fn op_error(op: &Op, service: Option<&str>, error: MapError) -> DataplaneError {
    let map = op.map();
    match service {
        Some(service) if is_full(&error) => DataplaneError::Full {
            map,
            service: service.to_owned(),
            entries: capacity(map),
        },
        _ => map_error(map)(error),
    }
}

fn capacity(map: &'static str) -> u32 {
    match map {
        names::SERVICES | names::SERVICES6 => MAX_SERVICE_SLOTS,
        names::BACKENDS | names::BACKENDS6 => MAX_BACKENDS,
        names::SOURCE_RANGES => MAX_SOURCE_RANGES,
        names::MAGLEV => svc_common::maglev::MAX_ENTRIES,
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
