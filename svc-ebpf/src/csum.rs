//! Internet checksums (RFC 1071) of headers the programs build themselves.
//! Rewrites of existing packets use the kernel's incremental helpers instead.

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

/// Folds the carries and complements: the value to store, big-endian.
#[inline(always)]
pub fn finish(mut acc: u32) -> [u8; 2] {
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    (!(acc as u16)).to_be_bytes()
}

/// The IPv4 pseudo header's share of a TCP/UDP checksum.
#[inline(always)]
pub fn pseudo_header(saddr: [u8; 4], daddr: [u8; 4], proto: u8, l4_len: u16) -> u32 {
    let acc = add_words(&saddr, 0);
    let acc = add_words(&daddr, acc);
    acc + u32::from(proto) + u32::from(l4_len)
}
