//! The namespaces and links of a lab, built one piece at a time. [`Lab`]
//! (tests, in one process) and the `svc-lab` tool (a lab that outlives the
//! command that made it) both build with these functions, so both get the
//! same addressing:
//!
//! - fabric: one namespace with bridge `br0` joining the nodes and the
//!   client, 198.18.0.0/24; node i is 198.18.0.(10+i), the client
//!   198.18.0.100;
//! - node i's pods: 198.18.i.0/24; pod j is 198.18.i.(10+j)/32 behind the
//!   host-side veth `lxc<j>`, whose gateway address 198.18.i.1 sits on the
//!   node side of every pod veth (a routed, not bridged, pod network);
//! - pods reach 198.18.0.0/15 through that gateway; nobody has a default
//!   route.
//!
//! Every namespace is dual-stack: the same plan in fd00:198:18::/48
//! (node i fd00:198:18::(10+i)/64 on the fabric, the client
//! fd00:198:18::100, node i's pods fd00:198:18:i::(10+j)/128 behind the
//! gateway fd00:198:18:i::1, fd00:198:18::/47 through it, which holds the
//! Service range fd00:198:19::/112). Addresses are added without duplicate
//! address detection: usable at once.
//!
//! [`Lab`]: crate::Lab
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{
    LabError,
    netns::{self, Netns},
};

/// Where LoadBalancer ingress IPs come from.
pub const LB_POOL: &str = "198.19.255.0/24";
pub const LB_POOL6: &str = "fd00:198:19::ff:0/112";
pub const CLIENT_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const CLIENT_ADDRESS6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 0x100);
/// What pods and the client reach over IPv6 through their gateway: the
/// lab's addresses and its Service range.
const LAB_PREFIX6: &str = "fd00:198:18::/47";
/// Most pods one node holds (pod j gets 198.18.i.(10+j)).
pub const MAX_PODS_PER_NODE: usize = 200;
/// Most nodes one lab holds.
pub const MAX_NODES: usize = 200;

/// Node `number`'s (1-based) address on the fabric.
pub fn node_address(number: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + number)
}

/// `n` written in decimal, read as hexadecimal: IPv6 addresses that read
/// as their IPv4 twins (198.18.1.10 and fd00:198:18:1::10).
fn hextet(n: u8) -> u16 {
    let n = u16::from(n);
    (n / 100) * 0x100 + (n / 10 % 10) * 0x10 + n % 10
}

/// Node `number`'s IPv6 address on the fabric.
pub fn node_address6(number: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, hextet(10 + number))
}

/// Node `number`'s pod CIDR.
pub fn pod_cidr(number: u8) -> String {
    format!("198.18.{number}.0/24")
}

/// Node `number`'s IPv6 pod CIDR.
pub fn pod_cidr6(number: u8) -> String {
    format!("fd00:198:18:{number}::/64")
}

/// The IPv6 address of the pod at `address` (its IPv4 one):
/// fd00:198:18:i::(10+j) for 198.18.i.(10+j).
pub fn pod_address6(address: Ipv4Addr) -> Ipv6Addr {
    let [_, _, number, host] = address.octets();
    Ipv6Addr::new(0xfd00, 0x198, 0x18, hextet(number), 0, 0, 0, hextet(host))
}

/// The address of pod `index` (0-based) on node `number`.
pub fn pod_address(number: u8, index: usize) -> Result<Ipv4Addr, LabError> {
    let index = u8::try_from(index)
        .ok()
        .filter(|i| usize::from(*i) < MAX_PODS_PER_NODE)
        .ok_or_else(|| LabError::Topology("at most 200 pods per node".into()))?;
    Ok(Ipv4Addr::new(198, 18, number, 10 + index))
}

/// The host-side veth of pod `index` in its node's namespace.
pub fn pod_interface(index: usize) -> String {
    format!("lxc{index}")
}

/// The fabric port (in the fabric namespace) of node `number`.
pub fn fabric_port(number: u8) -> String {
    format!("n{number}")
}

/// The fabric: a namespace holding bridge `br0`.
pub fn create_fabric(name: &str) -> Result<Netns, LabError> {
    let fabric = Netns::create(name)?;
    fabric.ip(&["link", "add", "br0", "type", "bridge"])?;
    fabric.ip(&["link", "set", "br0", "up"])?;
    Ok(fabric)
}

/// A veth from `ns` (as `eth0`, holding `address`/24 and `address6`/64)
/// to the fabric bridge.
pub fn plug_into_fabric(
    fabric: &Netns,
    ns: &Netns,
    port: &str,
    (address, address6): (Ipv4Addr, Ipv6Addr),
) -> Result<(), LabError> {
    add_veth(fabric, port, ns)?;
    fabric.ip(&["link", "set", port, "master", "br0", "up"])?;
    ns.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"])?;
    add_address6(ns, &format!("{address6}/64"), "eth0")?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    checksum_offload_off(fabric, port)?;
    checksum_offload_off(ns, "eth0")
}

/// A node namespace named `name`, forwarding, plugged into the fabric as
/// node `number`.
pub fn create_node(fabric: &Netns, name: &str, number: u8) -> Result<Netns, LabError> {
    let ns = Netns::create(name)?;
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
        // Replies a node translates may leave by the interface they came
        // in on; that is not a routing mistake to report.
        ("net.ipv4.conf.all.send_redirects", "0"),
        ("net.ipv4.conf.default.send_redirects", "0"),
        ("net.ipv6.conf.all.forwarding", "1"),
    ] {
        ns.sysctl(key, value)?;
    }
    plug_into_fabric(
        fabric,
        &ns,
        &fabric_port(number),
        (node_address(number), node_address6(number)),
    )?;
    Ok(ns)
}

/// Routes from every node to every other node's pod CIDR (`nodes` holds
/// each node's namespace and number).
pub fn route_pod_cidrs(nodes: &[(&Netns, u8)]) -> Result<(), LabError> {
    for (ns, number) in nodes {
        for (_, other) in nodes {
            if other != number {
                let via = node_address(*other).to_string();
                ns.ip(&["route", "add", &pod_cidr(*other), "via", &via])?;
                let via = node_address6(*other).to_string();
                ns.ip(&["-6", "route", "add", &pod_cidr6(*other), "via", &via])?;
            }
        }
    }
    Ok(())
}

/// The external client: on the fabric, LoadBalancer ingress IPs reached
/// through every node (as a cloud LB in front of the NodePorts sends them),
/// pod and Service addresses through the first node.
pub fn create_client(fabric: &Netns, name: &str, node_numbers: &[u8]) -> Result<Netns, LabError> {
    let client = Netns::create(name)?;
    plug_into_fabric(fabric, &client, "client", (CLIENT_ADDRESS, CLIENT_ADDRESS6))?;
    route_lb_pool(&client, node_numbers)?;
    if let Some(first) = node_numbers.first() {
        let via = node_address(*first).to_string();
        client.ip(&["route", "add", "198.18.0.0/15", "via", &via])?;
        let via = node_address6(*first).to_string();
        client.ip(&["-6", "route", "add", LAB_PREFIX6, "via", &via])?;
    }
    Ok(client)
}

/// Routes the client's LoadBalancer ingress IPs through the nodes
/// `node_numbers`: one next hop, or a multipath route over several (the
/// kernel's default hash: by addresses). Replaces the route there was.
pub fn route_lb_pool(client: &Netns, node_numbers: &[u8]) -> Result<(), LabError> {
    let hops: Vec<String> = node_numbers
        .iter()
        .map(|n| node_address(*n).to_string())
        .collect();
    let hops6: Vec<String> = node_numbers
        .iter()
        .map(|n| node_address6(*n).to_string())
        .collect();
    for (family, pool, hops) in [("-4", LB_POOL, hops), ("-6", LB_POOL6, hops6)] {
        let mut route = vec![family, "route", "replace", pool];
        if let [only] = &hops[..] {
            route.extend(["via", only.as_str()]);
        } else {
            for hop in &hops {
                route.extend(["nexthop", "via", hop.as_str()]);
            }
        }
        client.ip(&route)?;
    }
    Ok(())
}

/// A pod namespace named `name` as pod `index` of node `number`, joined to
/// the node by a veth. Returns the namespace, its address and the host-side
/// interface (its IPv6 address is [`pod_address6`] of that address).
pub fn create_pod(
    node: &Netns,
    name: &str,
    number: u8,
    index: usize,
) -> Result<(Netns, Ipv4Addr, String), LabError> {
    let address = pod_address(number, index)?;
    let gateway = Ipv4Addr::new(198, 18, number, 1).to_string();
    let host_interface = pod_interface(index);
    let ns = Netns::create(name)?;
    // No pod of the node has this index, but the veth of one that had it
    // can outlive it: the kernel tears a deleted namespace (and the veth
    // peer in it) down asynchronously, later still while anything refers
    // to it. Its host side would make the new veth "File exists".
    if node.ip(&["link", "show", &host_interface]).is_ok() {
        node.ip(&["link", "del", &host_interface])?;
    }
    add_veth(node, &host_interface, &ns)?;
    ns.ip(&["addr", "add", &format!("{address}/32"), "dev", "eth0"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    ns.ip(&["route", "add", &gateway, "dev", "eth0", "scope", "link"])?;
    ns.ip(&[
        "route",
        "add",
        "198.18.0.0/15",
        "via",
        &gateway,
        "dev",
        "eth0",
    ])?;
    node.ip(&[
        "addr",
        "add",
        &format!("{gateway}/32"),
        "dev",
        &host_interface,
    ])?;
    node.ip(&["link", "set", &host_interface, "up"])?;
    node.ip(&[
        "route",
        "add",
        &format!("{address}/32"),
        "dev",
        &host_interface,
    ])?;
    let address6 = pod_address6(address);
    let gateway6 = Ipv6Addr::new(0xfd00, 0x198, 0x18, hextet(number), 0, 0, 0, 1).to_string();
    add_address6(&ns, &format!("{address6}/128"), "eth0")?;
    ns.ip(&["-6", "route", "add", &gateway6, "dev", "eth0"])?;
    ns.ip(&[
        "-6",
        "route",
        "add",
        LAB_PREFIX6,
        "via",
        &gateway6,
        "dev",
        "eth0",
    ])?;
    add_address6(node, &format!("{gateway6}/128"), &host_interface)?;
    node.ip(&[
        "-6",
        "route",
        "add",
        &format!("{address6}/128"),
        "dev",
        &host_interface,
    ])?;
    checksum_offload_off(&ns, "eth0")?;
    checksum_offload_off(node, &host_interface)?;
    Ok((ns, address, host_interface))
}

/// Adds an IPv6 address, usable at once (no duplicate address detection:
/// the lab hands out every address once).
fn add_address6(ns: &Netns, address: &str, interface: &str) -> Result<(), LabError> {
    ns.ip(&["-6", "addr", "add", address, "dev", interface, "nodad"])?;
    Ok(())
}

/// A veth `interface` in `near` whose peer is `eth0` in `far`.
fn add_veth(near: &Netns, interface: &str, far: &Netns) -> Result<(), LabError> {
    let args = [
        "link", "add", interface, "type", "veth", "peer", "name", "eth0", "netns",
    ];
    let mut args = args.to_vec();
    args.push(far.name());
    near.ip(&args)?;
    Ok(())
}

fn checksum_offload_off(ns: &Netns, interface: &str) -> Result<(), LabError> {
    // Without this a veth hands packets on with a partial checksum, and a
    // datapath that breaks checksums would still pass every test.
    netns::run(ns.command("ethtool")?.args(["-K", interface, "tx", "off"]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_read_as_their_ipv4_twins() {
        let pod = pod_address(12, 190).unwrap();
        assert_eq!(pod, Ipv4Addr::new(198, 18, 12, 200));
        assert_eq!(pod_address6(pod).to_string(), "fd00:198:18:12::200");
        assert_eq!(node_address6(2).to_string(), "fd00:198:18::12");
        assert_eq!(pod_cidr6(12), "fd00:198:18:12::/64");
        assert_eq!(CLIENT_ADDRESS6.to_string(), "fd00:198:18::100");
    }

    #[test]
    fn addresses_follow_the_plan() {
        assert_eq!(node_address(2), Ipv4Addr::new(198, 18, 0, 12));
        assert_eq!(pod_cidr(3), "198.18.3.0/24");
        assert_eq!(pod_address(2, 1).ok(), Some(Ipv4Addr::new(198, 18, 2, 11)));
        assert!(pod_address(1, 200).is_err());
    }
}
