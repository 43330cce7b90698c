//! The Service maps' entries as the plan and the agent's memory of the
//! maps hold them: of either address family. IPv4 and IPv6 entries live
//! in maps of their own (SERVICES and SERVICES6, BACKENDS and BACKENDS6,
//! REV_NAT and REV_NAT6, with one id space per pair); only this module and
//! the kernel maps (maps.rs) know that.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use svc_common::{Backend, Backend6, FrontendKey, FrontendKey6, RevNat, RevNat6};

/// An IPv4 address as the IPv4 maps hold it: network order, in a u32.
pub fn addr_be(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

pub fn addr_from_be(addr_be: u32) -> Ipv4Addr {
    Ipv4Addr::from(addr_be.to_ne_bytes())
}

/// One of a pair of values of the two families' maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByFamily<V4, V6> {
    V4(V4),
    V6(V6),
}

/// A SERVICES or SERVICES6 key: one frontend (address, port, protocol)
/// and one slot of it. Slot 0 holds the frontend's header, slots 1.. its
/// backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotKey {
    pub address: IpAddr,
    pub port_be: u16,
    pub proto: u8,
    pub slot: u16,
}

impl SlotKey {
    pub fn new(address: IpAddr, port_be: u16, proto: u8, slot: u16) -> Self {
        Self {
            address,
            port_be,
            proto,
            slot,
        }
    }

    pub fn with_slot(&self, slot: u16) -> Self {
        Self { slot, ..*self }
    }

    /// The key in its family's map.
    pub fn kernel(&self) -> ByFamily<FrontendKey, FrontendKey6> {
        match self.address {
            IpAddr::V4(address) => ByFamily::V4(FrontendKey::new(
                addr_be(address),
                self.port_be,
                self.proto,
                self.slot,
            )),
            IpAddr::V6(address) => ByFamily::V6(FrontendKey6::new(
                address.octets(),
                self.port_be,
                self.proto,
                self.slot,
            )),
        }
    }

    /// A key read from SERVICES (the scope is always `SCOPE_ALL`).
    pub fn from_v4(key: &FrontendKey) -> Self {
        Self::new(
            addr_from_be(key.addr_be).into(),
            key.port_be,
            key.proto,
            key.slot,
        )
    }

    /// A key read from SERVICES6.
    pub fn from_v6(key: &FrontendKey6) -> Self {
        Self::new(
            Ipv6Addr::from(key.addr).into(),
            key.port_be,
            key.proto,
            key.slot,
        )
    }
}

/// A BACKENDS or BACKENDS6 value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendEntry {
    pub address: IpAddr,
    pub port_be: u16,
    pub proto: u8,
    /// svc_common's `backend_flags`.
    pub flags: u8,
}

impl BackendEntry {
    pub fn kernel(&self) -> ByFamily<Backend, Backend6> {
        match self.address {
            IpAddr::V4(address) => ByFamily::V4(Backend {
                addr_be: addr_be(address),
                port_be: self.port_be,
                proto: self.proto,
                flags: self.flags,
            }),
            IpAddr::V6(address) => ByFamily::V6(Backend6 {
                addr: address.octets(),
                port_be: self.port_be,
                proto: self.proto,
                flags: self.flags,
            }),
        }
    }

    pub fn from_v4(backend: &Backend) -> Self {
        Self {
            address: addr_from_be(backend.addr_be).into(),
            port_be: backend.port_be,
            proto: backend.proto,
            flags: backend.flags,
        }
    }

    pub fn from_v6(backend: &Backend6) -> Self {
        Self {
            address: Ipv6Addr::from(backend.addr).into(),
            port_be: backend.port_be,
            proto: backend.proto,
            flags: backend.flags,
        }
    }
}

/// A REV_NAT or REV_NAT6 value: the frontend replies must appear to come
/// from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevNatEntry {
    pub address: IpAddr,
    pub port_be: u16,
    /// svc_common's `rev_nat_flags`.
    pub flags: u16,
}

impl RevNatEntry {
    pub fn kernel(&self) -> ByFamily<RevNat, RevNat6> {
        match self.address {
            IpAddr::V4(address) => ByFamily::V4(RevNat {
                addr_be: addr_be(address),
                port_be: self.port_be,
                flags: self.flags,
            }),
            IpAddr::V6(address) => ByFamily::V6(RevNat6 {
                addr: address.octets(),
                port_be: self.port_be,
                flags: self.flags,
            }),
        }
    }

    pub fn from_v4(rev_nat: &RevNat) -> Self {
        Self {
            address: addr_from_be(rev_nat.addr_be).into(),
            port_be: rev_nat.port_be,
            flags: rev_nat.flags,
        }
    }

    pub fn from_v6(rev_nat: &RevNat6) -> Self {
        Self {
            address: Ipv6Addr::from(rev_nat.addr).into(),
            port_be: rev_nat.port_be,
            flags: rev_nat.flags,
        }
    }
}
