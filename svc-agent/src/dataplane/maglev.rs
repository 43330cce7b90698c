//! Maglev lookup tables (Eisenbud et al., NSDI 2016, section 3.4), built
//! from the backends' identities only: every node builds the same table
//! for the same backends, whatever order it learnt them in. Pure.
//!
//! Each backend has a permutation of the table's entries (an offset and a
//! skip from two hashes of its address and port; the size is prime, so
//! every skip visits every entry). The backends take turns, in the order
//! of their identities, each claiming its next preferred entry not yet
//! claimed, until every entry is someone's. So each backend holds
//! `size / n` entries or one more, and removing one backend moves its
//! entries and only a few others (the paper's figure 10 measures how few).
use std::net::{IpAddr, SocketAddr};

/// A table: which of `backends` each entry names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// The backends, sorted by address and port.
    pub backends: Vec<SocketAddr>,
    /// One index into `backends` per entry.
    pub entries: Vec<u16>,
}

impl Table {
    /// The table of `size` entries (a prime) for `backends` (duplicates
    /// count once). Empty without backends. At most `u16::MAX` backends.
    pub fn build(backends: &[SocketAddr], size: u16) -> Table {
        let mut backends = backends.to_vec();
        backends.sort_unstable();
        backends.dedup();
        backends.truncate(usize::from(u16::MAX));
        if backends.is_empty() || size == 0 {
            return Table {
                backends,
                entries: Vec::new(),
            };
        }
        let size32 = u32::from(size);
        // Each backend's next preferred entry, and its step.
        let mut next: Vec<u32> = Vec::with_capacity(backends.len());
        let mut skip: Vec<u32> = Vec::with_capacity(backends.len());
        for backend in &backends {
            let hash = identity_hash(backend);
            next.push(((hash >> 32) as u32) % size32);
            skip.push(if size32 > 1 {
                (hash as u32) % (size32 - 1) + 1
            } else {
                1
            });
        }
        const FREE: u16 = u16::MAX;
        let mut entries = vec![FREE; usize::from(size)];
        let mut filled = 0usize;
        'fill: loop {
            for (index, (next, skip)) in next.iter_mut().zip(&skip).enumerate() {
                while entries[*next as usize] != FREE {
                    *next = (*next + *skip) % size32;
                }
                entries[*next as usize] = index as u16;
                *next = (*next + *skip) % size32;
                filled += 1;
                if filled == entries.len() {
                    break 'fill;
                }
            }
        }
        Table { backends, entries }
    }

    /// The backend entry `index` names.
    pub fn backend(&self, index: usize) -> Option<SocketAddr> {
        let entry = *self.entries.get(index)?;
        self.backends.get(usize::from(entry)).copied()
    }
}

/// Whether `size` is a table size the datapath takes: a prime between
/// svc-common's MIN_TABLE_SIZE and MAX_TABLE_SIZE.
pub fn valid_size(size: u16) -> bool {
    use svc_common::maglev::{MAX_TABLE_SIZE, MIN_TABLE_SIZE};
    (MIN_TABLE_SIZE..=MAX_TABLE_SIZE).contains(&size)
        && (2..)
            .take_while(|d: &u32| d * d <= u32::from(size))
            .all(|d| u32::from(size) % d != 0)
}

/// A stable 64-bit hash of a backend's identity (FNV-1a over its address,
/// 4 or 16 bytes, and port, then MurmurHash3's 64-bit finalizer): the same
/// on every node and in every build.
fn identity_hash(backend: &SocketAddr) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let octets: &[u8] = match backend.ip() {
        IpAddr::V4(address) => &address.octets(),
        IpAddr::V6(address) => &address.octets(),
    };
    for byte in octets.iter().copied().chain(backend.port().to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;

    const SIZE: u16 = svc_common::maglev::DEFAULT_TABLE_SIZE;

    fn backends(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| {
                SocketAddr::new(
                    Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250) as u8 + 1).into(),
                    8080,
                )
            })
            .collect()
    }

    /// Entries per backend, by backend.
    fn shares(table: &Table) -> Vec<usize> {
        let mut shares = vec![0; table.backends.len()];
        for entry in &table.entries {
            shares[usize::from(*entry)] += 1;
        }
        shares
    }

    #[test]
    fn sizes_taken_are_primes_in_range() {
        for size in [251, 16_381, 32_749, 65_521] {
            assert!(valid_size(size), "{size}");
        }
        // 16383 = 3 * 43 * 127; 241 is prime but too small; 65535 = 3 * ...
        for size in [0, 1, 2, 241, 16_383, 16_384, 65_535] {
            assert!(!valid_size(size), "{size}");
        }
    }

    #[test]
    fn no_backends_give_an_empty_table() {
        assert!(Table::build(&[], SIZE).entries.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Every node builds the same table: order and repeats of the
        /// backends it learnt do not matter.
        #[test]
        fn the_same_backends_in_any_order_give_the_same_table(
            n in 1usize..60,
            shuffle in any::<u64>(),
        ) {
            let sorted = backends(n);
            let mut shuffled = sorted.clone();
            // A permutation from the seed (Fisher-Yates with an LCG).
            let mut state = shuffle;
            for i in (1..shuffled.len()).rev() {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                shuffled.swap(i, (state >> 33) as usize % (i + 1));
            }
            shuffled.push(sorted[0]);
            let a = Table::build(&sorted, SIZE);
            let b = Table::build(&shuffled, SIZE);
            prop_assert_eq!(a.entries.len(), usize::from(SIZE));
            prop_assert_eq!(a, b);
        }

        /// Each backend holds size / n entries or one more: within 1% of
        /// each other while n <= size / 100.
        #[test]
        fn every_backend_holds_an_equal_share(n in 1usize..=163) {
            let table = Table::build(&backends(n), SIZE);
            let shares = shares(&table);
            let (min, max) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            prop_assert!(max - min <= 1, "shares from {min} to {max}");
            prop_assert!((max - min) as f64 <= *max as f64 * 0.01, "{min}..{max} is over 1%");
        }

        /// Removing one backend of n moves its own entries (1/n of the
        /// table) and at most 2% of the table besides. Maglev moves a few
        /// entries of the others too (section 5.3 of the paper): from
        /// about 0.4% to 1.4% of the table at the default size.
        #[test]
        fn removing_one_backend_moves_its_entries_and_few_others(
            (n, size) in prop_oneof![
                (2usize..=100, Just(SIZE)),
                (2usize..=100, Just(svc_common::maglev::MAX_TABLE_SIZE)),
            ],
            pick in any::<prop::sample::Index>(),
        ) {
            let all = backends(n);
            let removed = all[pick.index(n)];
            let rest: Vec<SocketAddr> = all.iter().copied().filter(|b| *b != removed).collect();
            let before = Table::build(&all, size);
            let after = Table::build(&rest, size);
            let (mut moved, mut others_moved) = (0usize, 0usize);
            for index in 0..usize::from(size) {
                let (old, new) = (before.backend(index).unwrap(), after.backend(index).unwrap());
                prop_assert_ne!(new, removed);
                if old != new {
                    moved += 1;
                    if old != removed {
                        others_moved += 1;
                    }
                }
            }
            let size = f64::from(size);
            prop_assert!(
                moved as f64 <= size / n as f64 + size * 0.02,
                "{moved} of {size} entries moved with 1 of {n} backends removed"
            );
            prop_assert!(others_moved as f64 <= size * 0.02, "{others_moved} others moved");
        }
    }
}
