//! Internet checksums (RFC 1071) of headers the programs build, and the
//! incremental update (RFC 1624) XDP uses where TC has kernel helpers.

/// Adds `bytes` as big-endian 16-bit words to `acc`.
#[inline(always)]
pub fn add_words<const N: usize>(bytes: &[u8; N], mut acc: u32) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        acc += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    acc
}

#[inline(always)]
fn fold(mut acc: u32) -> u16 {
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// Folds the carries and complements: the value to store, big-endian.
#[inline(always)]
pub fn finish(acc: u32) -> [u8; 2] {
    (!fold(acc)).to_be_bytes()
}

/// An IPv4 address's share of a header checksum's sum; the address as read
/// from the packet.
#[inline(always)]
pub fn address_sum(addr_be: u32) -> u32 {
    add_words(&addr_be.to_ne_bytes(), 0)
}

/// The IPv4 pseudo header's share of a TCP/UDP checksum.
#[inline(always)]
pub fn pseudo_header(saddr: [u8; 4], daddr: [u8; 4], proto: u8, l4_len: u16) -> u32 {
    let acc = add_words(&saddr, 0);
    let acc = add_words(&daddr, acc);
    acc + u32::from(proto) + u32::from(l4_len)
}

/// What a field's change from `old` to `new` adds to a checksum's sum
/// (RFC 1624 eqn. 3: ~m + m'), for [`apply`]. `old` and `new` are the
/// field's bytes as in the packet (2 or 4 of them; unused high bytes zero).
/// Changes of several fields covered by one checksum add up.
#[inline(always)]
pub fn change(old: [u8; 4], new: [u8; 4], size: u8) -> u32 {
    let mut acc = u32::from(!u16::from_be_bytes([old[0], old[1]]));
    acc += u32::from(u16::from_be_bytes([new[0], new[1]]));
    if size == 4 {
        acc += u32::from(!u16::from_be_bytes([old[2], old[3]]));
        acc += u32::from(u16::from_be_bytes([new[2], new[3]]));
    }
    acc
}

/// [`change`] of an IPv4 address, both as read from the packet.
#[inline(always)]
pub fn address_change(old_be: u32, new_be: u32) -> u32 {
    change(old_be.to_ne_bytes(), new_be.to_ne_bytes(), 4)
}

/// [`change`] of a TCP/UDP port, both as read from the packet.
#[inline(always)]
pub fn port_change(old_be: u16, new_be: u16) -> u32 {
    let (old, new) = (old_be.to_ne_bytes(), new_be.to_ne_bytes());
    change([old[0], old[1], 0, 0], [new[0], new[1], 0, 0], 2)
}

/// The checksum (as stored, big-endian bytes) after the covered bytes
/// changed by `change` (the sum of [`change`]s).
#[inline(always)]
pub fn apply(csum: [u8; 2], change: u32) -> [u8; 2] {
    finish(u32::from(!u16::from_be_bytes(csum)) + change)
}
