//! Where the programs' flow cache keeps a flow: one slot per 5-tuple hash,
//! in a per-CPU array (svc-ebpf's cache.rs). Here so the per-packet
//! benchmark can choose flows that share a slot.

/// Slots per CPU; a power of two.
pub const SLOTS: u32 = 4096;
const SLOT_BITS: u32 = SLOTS.trailing_zeros();
const _: () = assert!(SLOTS.is_power_of_two());

/// A flow's 5-tuple (fields in network order) and where its packets come
/// in (`from_world`: a node NIC, else a pod's veth) as two words: what a
/// slot stores, and compares in two instructions.
#[inline(always)]
pub fn key(
    (saddr_be, daddr_be): (u32, u32),
    (sport_be, dport_be): (u16, u16),
    proto: u8,
    from_world: bool,
) -> [u64; 2] {
    [
        u64::from(saddr_be) | (u64::from(daddr_be) << 32),
        u64::from(sport_be)
            | (u64::from(dport_be) << 16)
            | (u64::from(proto) << 32)
            | (u64::from(from_world) << 40),
    ]
}

/// The slot of `key`. Multiplication alone is nearly linear: flows that
/// differ only in the client port would keep a fixed distance between
/// their slots. The shift between the multiplications breaks that, and the
/// top bits of the last product pick the slot. The two words are
/// multiplied side by side, so the chain is two multiplications long.
#[inline(always)]
pub fn slot(key: &[u64; 2]) -> u32 {
    const K1: u64 = 0x9e37_79b9_7f4a_7c15;
    const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;
    let mut hash = key[0].wrapping_mul(K1) ^ key[1].wrapping_mul(K2);
    hash ^= hash >> 31;
    (hash.wrapping_mul(K1) >> (64 - SLOT_BITS)) as u32
}
