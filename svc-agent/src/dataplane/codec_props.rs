//! Properties of the conversions between the model and the map layouts:
//! each field reads back as it was written, in network byte order where
//! the field's name ends in `_be`, with its reserved bytes zero; and whole
//! frontends written through the planner read back from the maps as they
//! were.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use svc_common::{
    PORT_NAME_LEN, SCOPE_ALL, SERVICE_NAME_LEN, backend_flags, frontend_kind, proto, rev_nat_flags,
};

use super::{
    NodeSettings, addr_be, addr_from_be, backend, header_key, kind_from_number, kind_number, meta,
    meta_text, node_config, node_settings, protocol_from_number, protocol_number, rev_nat,
    service_cidrs, service_cidrs6, source_range,
};
use crate::dataplane::{
    apply,
    entries::{BackendEntry, ByFamily, SlotKey},
    fake::FakeMaps,
    readback,
};
use crate::model::{
    BackendRef, BackendState, Cidr, Frontend, FrontendKind, LbMode, OnEmpty, Protocol,
};

fn protocol() -> impl Strategy<Value = Protocol> {
    prop::sample::select(&[Protocol::TCP, Protocol::UDP, Protocol::SCTP][..])
}

fn kind() -> impl Strategy<Value = FrontendKind> {
    prop::sample::select(
        &[
            FrontendKind::ClusterIP,
            FrontendKind::NodePort,
            FrontendKind::LoadBalancer,
            FrontendKind::ExternalIP,
        ][..],
    )
}

fn address() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

/// An address of either family.
fn any_address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        address().prop_map(IpAddr::from),
        any::<u128>().prop_map(|bits| Ipv6Addr::from(bits).into()),
    ]
}

/// `address` (IPv4) in `family`'s form: itself, or fd00:: with its last
/// two bytes (as the lab numbers its IPv6 addresses).
fn of_family(address: IpAddr, ipv6: bool) -> IpAddr {
    match address {
        IpAddr::V4(v4) if ipv6 => {
            let [.., third, last] = v4.octets();
            Ipv6Addr::new(
                0xfd00,
                0x198,
                0x18,
                u16::from(third),
                0,
                0,
                0,
                u16::from(last),
            )
            .into()
        }
        other => other,
    }
}

/// Text of any characters, up to `most` of them.
fn text(most: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=most).prop_map(String::from_iter)
}

fn backend_ref() -> impl Strategy<Value = BackendRef> {
    (
        (1u8..=6).prop_map(|last| Ipv4Addr::new(198, 18, 1, last)),
        prop::sample::select(&[8080u16, 8081][..]),
        prop::sample::select(&[BackendState::Ready, BackendState::Terminating][..]),
        any::<bool>(),
    )
        .prop_map(|(address, port, state, local)| BackendRef {
            address: address.into(),
            port,
            state,
            local,
        })
}

/// A network (host bits clear), as translate hands them on.
fn network() -> impl Strategy<Value = Cidr> {
    (address(), 0u8..=32).prop_map(|(address, prefix)| {
        let mask = Cidr {
            address: address.into(),
            prefix,
        }
        .mask();
        Cidr {
            address: Ipv4Addr::from(u32::from(address) & mask).into(),
            prefix,
        }
    })
}

prop_compose! {
    /// A frontend of any shape the model makes: names that fit the
    /// metadata fields, backends ready first, affinity and health check
    /// port absent or non-zero. Backends are of the frontend's family;
    /// source ranges are IPv4 frontends' only (IPv6 ones are left out by
    /// the translator).
    fn frontend(addresses: impl Strategy<Value = IpAddr>)(
        service in "[a-z0-9-]{1,20}/[a-zé0-9-]{1,60}",
        port_name in "[a-z0-9-]{0,15}",
        kind in kind(),
        address in addresses,
        port in any::<u16>(),
        protocol in protocol(),
        mut backends in prop::collection::vec(backend_ref(), 0..=5),
        affinity_timeout_seconds in prop::option::of(1u32..),
        on_empty in prop::sample::select(&[OnEmpty::Reject, OnEmpty::Drop][..]),
        source_ranges in prop::collection::btree_set(network(), 0..=3),
        health_check_node_port in prop::option::of(1u16..),
    ) -> Frontend {
        backends.sort_by_key(|backend| backend.state);
        let ipv6 = address.is_ipv6();
        for backend in &mut backends {
            backend.address = of_family(backend.address, ipv6);
        }
        let source_ranges = if ipv6 { Default::default() } else { source_ranges };
        Frontend {
            service,
            port_name,
            kind,
            address,
            port,
            protocol,
            backends,
            affinity_timeout_seconds,
            on_empty,
            source_ranges: source_ranges.into_iter().collect(),
            health_check_node_port,
            // Half of them (by port: proptest's tuples hold 12 strategies).
            lb_algorithm: if port % 2 == 0 {
                crate::model::LbAlgorithm::Maglev
            } else {
                crate::model::LbAlgorithm::Random
            },
        }
    }
}

/// Frontends with unique address, port and protocol (as translate gives
/// them), from four addresses of each family so that two generations
/// share some.
fn frontends() -> impl Strategy<Value = Vec<Frontend>> {
    let address = (1u8..=4, any::<bool>())
        .prop_map(|(last, ipv6)| of_family(Ipv4Addr::new(198, 19, 0, last).into(), ipv6));
    prop::collection::vec(frontend(address), 0..=6).prop_map(|mut frontends| {
        frontends.sort_by_key(|f| (f.address, f.port, f.protocol));
        frontends.dedup_by_key(|f| (f.address, f.port, f.protocol));
        frontends
    })
}

/// Frontends in the order readback gives them, source ranges sorted.
fn as_read(frontends: &[Frontend]) -> Vec<Frontend> {
    let mut frontends = frontends.to_vec();
    for frontend in &mut frontends {
        frontend.source_ranges.sort();
    }
    frontends.sort_by(|a, b| {
        (&a.service, a.kind, a.address, a.port, a.protocol)
            .cmp(&(&b.service, b.kind, b.address, b.port, b.protocol))
    });
    frontends
}

fn read_back(maps: &FakeMaps) -> Vec<Frontend> {
    let read: Vec<Frontend> = readback::frontends(&maps.contents)
        .into_iter()
        .map(|(frontend, _)| frontend)
        .collect();
    as_read(&read)
}

proptest! {
    #[test]
    fn addresses_and_ports_are_written_in_network_byte_order(
        address in address(),
        port in any::<u16>(),
        protocol in protocol(),
        local in any::<bool>(),
        any in any_address(),
    ) {
        prop_assert_eq!(addr_be(address).to_ne_bytes(), address.octets());
        prop_assert_eq!(addr_from_be(addr_be(address)), address);

        let written = backend(any, port, protocol, local);
        let (octets, port_be, proto, flags, read) = match written.kernel() {
            ByFamily::V4(entry) => (
                entry.addr_be.to_ne_bytes().to_vec(),
                entry.port_be,
                entry.proto,
                entry.flags,
                BackendEntry::from_v4(&entry),
            ),
            ByFamily::V6(entry) => (
                entry.addr.to_vec(),
                entry.port_be,
                entry.proto,
                entry.flags,
                BackendEntry::from_v6(&entry),
            ),
        };
        let wanted = match any {
            IpAddr::V4(address) => address.octets().to_vec(),
            IpAddr::V6(address) => address.octets().to_vec(),
        };
        prop_assert_eq!(octets, wanted);
        prop_assert_eq!(read, written);
        prop_assert_eq!(port_be.to_ne_bytes(), port.to_be_bytes());
        prop_assert_eq!(protocol_from_number(proto), Some(protocol));
        prop_assert_eq!(flags & backend_flags::LOCAL != 0, local);
        prop_assert_eq!(flags & !backend_flags::LOCAL, 0);
    }

    #[test]
    fn protocol_and_kind_numbers_read_back_and_others_are_refused(
        protocol in protocol(),
        kind in kind(),
        number in any::<u8>(),
    ) {
        prop_assert_eq!(protocol_from_number(protocol_number(protocol)), Some(protocol));
        prop_assert_eq!(kind_from_number(kind_number(kind)), Some(kind));
        match protocol_from_number(number) {
            Some(read) => prop_assert_eq!(protocol_number(read), number),
            None => prop_assert!(![proto::TCP, proto::UDP, proto::SCTP].contains(&number)),
        }
        match kind_from_number(number) {
            Some(read) => prop_assert_eq!(kind_number(read), number),
            None => prop_assert!(![
                frontend_kind::CLUSTER_IP,
                frontend_kind::NODE_PORT,
                frontend_kind::LOAD_BALANCER,
                frontend_kind::EXTERNAL_IP,
            ]
            .contains(&number)),
        }
    }

    /// The SERVICES key names address, port and protocol, in wire order,
    /// and nothing else: two frontends share a key exactly when they share
    /// those three. The reverse translation says the same address and port.
    #[test]
    fn a_frontend_key_is_its_address_port_and_protocol_alone(
        a in frontend(any_address()),
        b in frontend(any_address()),
        same in any::<bool>(),
    ) {
        let b = if same {
            Frontend { address: a.address, port: a.port, protocol: a.protocol, ..b }
        } else {
            b
        };
        let key = header_key(&a);
        let (octets, port_be, proto, rest, read) = match (key.kernel(), a.address) {
            (ByFamily::V4(kernel), IpAddr::V4(address)) => (
                kernel.addr_be.to_ne_bytes().to_vec() == address.octets(),
                kernel.port_be,
                kernel.proto,
                (kernel.scope, kernel.slot, kernel._pad),
                SlotKey::from_v4(&kernel),
            ),
            (ByFamily::V6(kernel), IpAddr::V6(address)) => (
                kernel.addr == address.octets(),
                kernel.port_be,
                kernel.proto,
                (kernel.scope, kernel.slot, kernel._pad),
                SlotKey::from_v6(&kernel),
            ),
            (kernel, address) => {
                return Err(TestCaseError::fail(format!("{address} keyed as {kernel:?}")));
            }
        };
        prop_assert!(octets, "the key holds the address's bytes in network order");
        prop_assert_eq!(read, key);
        prop_assert_eq!(port_be.to_ne_bytes(), a.port.to_be_bytes());
        prop_assert_eq!(protocol_from_number(proto), Some(a.protocol));
        prop_assert_eq!(rest, (SCOPE_ALL, 0, 0));
        prop_assert_eq!(
            key == header_key(&b),
            (a.address, a.port, a.protocol) == (b.address, b.port, b.protocol)
        );

        let reverse = rev_nat(&a);
        prop_assert_eq!((reverse.address, reverse.port_be), (key.address, key.port_be));
        let expected_flags = if a.kind == FrontendKind::NodePort {
            rev_nat_flags::LOCAL_ADDRESS
        } else {
            0
        };
        prop_assert_eq!(reverse.flags, expected_flags);
    }

    /// Service CIDRs read back as their networks (host bits cleared), in
    /// order; an address is in an entry exactly when it is in the CIDR.
    #[test]
    fn node_settings_read_back_with_padding_zero(
        node_address in address(),
        hairpin_address in address(),
        nat_ports in (any::<u16>(), any::<u16>()),
        cidrs in prop::collection::vec((address(), 0u8..=32), 0..=svc_common::MAX_SERVICE_CIDRS),
        cidrs6 in prop::collection::vec(
            (any::<u128>(), 0u8..=128),
            0..=svc_common::MAX_SERVICE_CIDRS,
        ),
        probe in address(),
        probe6 in any::<u128>(),
        near in any::<bool>(),
        lb_mode in prop::sample::select(vec![LbMode::Snat, LbMode::Dsr, LbMode::Hybrid]),
    ) {
        // IPv4 CIDRs first, as the readback gives them.
        let given: Vec<Cidr> = cidrs
            .iter()
            .map(|&(address, prefix)| Cidr { address: address.into(), prefix })
            .chain(cidrs6.iter().map(|&(bits, prefix)| Cidr {
                address: Ipv6Addr::from(bits).into(),
                prefix,
            }))
            .collect();
        // An IPv6 probe in the first CIDR's network half the time.
        let probe6 = match cidrs6.first() {
            Some(&(bits, prefix)) if near => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                Ipv6Addr::from((bits & mask) | (probe6 & !mask))
            }
            _ => Ipv6Addr::from(probe6),
        };
        let settings = NodeSettings {
            node_address,
            hairpin_address,
            nat_ports,
            service_cidrs: given,
            lb_mode,
        };
        let config = node_config(&settings);
        prop_assert_eq!(config.node_addr_be.to_ne_bytes(), node_address.octets());
        prop_assert_eq!(config.hairpin_addr_be.to_ne_bytes(), hairpin_address.octets());
        prop_assert_eq!(config._pad, [0; 3]);
        let entry = service_cidrs(&settings.service_cidrs).unwrap();
        prop_assert_eq!(entry._pad, 0);
        prop_assert_eq!(
            entry.contain(addr_be(probe)),
            settings.service_cidrs.iter().any(|cidr| cidr.contains(probe.into()))
        );
        let entry6 = service_cidrs6(&settings.service_cidrs).unwrap();
        prop_assert_eq!(entry6._pad, 0);
        prop_assert_eq!(
            entry6.contain(&probe6.octets()),
            settings.service_cidrs.iter().any(|cidr| cidr.contains(probe6.into()))
        );
        let read = node_settings(&config, &entry, &entry6);
        prop_assert_eq!(read.service_cidrs.len(), settings.service_cidrs.len());
        for (read, given) in read.service_cidrs.iter().zip(&settings.service_cidrs) {
            prop_assert_eq!(read.prefix, given.prefix);
            prop_assert!(given.contains(read.address) && read.contains(given.address));
            prop_assert_eq!(read.network(), read.address);
        }
        prop_assert_eq!(
            (read.node_address, read.hairpin_address, read.nat_ports, read.lb_mode),
            (node_address, hairpin_address, nat_ports, lb_mode)
        );
    }

    #[test]
    fn more_service_cidrs_than_the_map_holds_are_refused(extra in 1usize..4) {
        let cidr = Cidr { address: Ipv4Addr::new(198, 19, 0, 0).into(), prefix: 16 };
        let cidrs = vec![cidr; svc_common::MAX_SERVICE_CIDRS + extra];
        prop_assert!(service_cidrs(&cidrs).is_none());
        prop_assert!(service_cidrs(&cidrs[..svc_common::MAX_SERVICE_CIDRS]).is_some());
    }

    /// A SRC_RANGES entry holds the CIDR's network (host bits cleared):
    /// two addresses with one prefix give one entry exactly when the CIDR
    /// holds both, and it matches what the CIDR matches. The prefix length
    /// counts the 32 bits of rev_nat_id first.
    #[test]
    fn a_source_range_entry_is_the_network_of_its_cidr(
        rev_nat_id in any::<u32>(),
        address in address(),
        prefix in 0u8..=32,
        bits in any::<u32>(),
        inside in any::<bool>(),
    ) {
        let entry = source_range(rev_nat_id, address, prefix);
        prop_assert_eq!(entry.rev_nat_id, rev_nat_id);
        prop_assert_eq!(entry.prefix_len, 32 + u32::from(prefix));
        let cidr = Cidr { address: address.into(), prefix };
        let mask = cidr.mask();
        // Another address, in the CIDR half the time.
        let other = Ipv4Addr::from(if inside {
            (u32::from(address) & mask) | (bits & !mask)
        } else {
            bits
        });
        prop_assert_eq!(
            source_range(rev_nat_id, other, prefix) == entry,
            cidr.contains(other.into())
        );
        let network = Cidr { address: addr_from_be(entry.addr_be).into(), prefix };
        prop_assert_eq!(network.contains(other.into()), cidr.contains(other.into()));
    }

    /// Names that fit their field read back whole; longer ones are cut at
    /// the last character that fits. Bytes past the name, and the padding,
    /// stay zero.
    #[test]
    fn metadata_reads_back_names_whole_or_cut_at_a_character(
        frontend in frontend(any_address()),
        service in text(140),
        port_name in text(20),
    ) {
        let frontend = Frontend { service, port_name, ..frontend };
        let written = meta(&frontend);
        prop_assert_eq!(kind_from_number(written.kind), Some(frontend.kind));
        prop_assert_eq!(
            Some(written.health_check_node_port).filter(|port| *port != 0),
            frontend.health_check_node_port
        );
        prop_assert_eq!((written._pad, written._pad2), (0, 0));
        for (name, field, len, size) in [
            (&frontend.service, &written.service[..], written.service_len, SERVICE_NAME_LEN),
            (&frontend.port_name, &written.port_name[..], written.port_name_len, PORT_NAME_LEN),
        ] {
            let read = meta_text(field, len);
            prop_assert!(name.starts_with(&read), "{:?} is not the start of {:?}", read, name);
            prop_assert!(read.len() <= size);
            let next = name[read.len()..].chars().next();
            prop_assert!(
                next.is_none_or(|next| read.len() + next.len_utf8() > size),
                "{:?} cut short of what fits", read
            );
            prop_assert!(field[usize::from(len)..].iter().all(|byte| *byte == 0));
        }
    }

    /// Whatever a metadata field holds (another writer, a torn or older
    /// entry), reading it never fails: its valid text comes back as it is.
    #[test]
    fn metadata_of_any_bytes_reads_without_failing(
        field in prop::collection::vec(any::<u8>(), 0..=SERVICE_NAME_LEN),
        len in any::<u8>(),
    ) {
        let read = meta_text(&field, len);
        let used = &field[..usize::from(len).min(field.len())];
        match std::str::from_utf8(used) {
            Ok(valid) => prop_assert_eq!(read, valid),
            Err(_) => prop_assert!(read.contains(char::REPLACEMENT_CHARACTER)),
        }
    }

    /// Frontends written to the maps read back as they were, after a
    /// second update too (frontends kept, changed, gone and new, by the
    /// same agent or by a new one that reads the maps first).
    #[test]
    fn frontends_written_to_the_maps_read_back_as_they_were(
        first in frontends(),
        second in frontends(),
        new_agent in any::<bool>(),
    ) {
        let mut maps = FakeMaps::default();
        let mut held = None;
        apply::apply(&mut maps, &mut held, &first, svc_common::maglev::MIN_TABLE_SIZE).expect("fake maps take any update");
        prop_assert_eq!(read_back(&maps), as_read(&first));
        if new_agent {
            held = None;
        }
        apply::apply(&mut maps, &mut held, &second, svc_common::maglev::MIN_TABLE_SIZE).expect("fake maps take any update");
        prop_assert_eq!(read_back(&maps), as_read(&second));
    }
}
