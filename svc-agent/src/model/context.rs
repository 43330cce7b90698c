//! What `translate` needs to know about the node it plans for, and the
//! agent's own settings.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::Node;

use super::{
    IpFamily,
    snapshot::{LABEL_TOPOLOGY_ZONE, Snapshot},
};

/// The node the tables are for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeContext {
    /// metadata.name of the Node: endpoints whose nodeName equals it are local.
    pub name: String,
    /// Its `topology.kubernetes.io/zone` label (topology hints match on it).
    pub zone: Option<String>,
    /// Its InternalIP and ExternalIP addresses of both families
    /// (status.addresses): NodePorts are served on them unless
    /// [`Config::nodeport_addresses`] names others.
    pub node_addresses: Vec<IpAddr>,
}

/// The agent's settings that change what it programs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Serve NodePorts on these instead of on all the Node's own
    /// addresses (`--nodeport-addresses`).
    pub nodeport_addresses: Option<Vec<NodePortAddress>>,
    /// externalIPs are programmed only inside these (--external-ip-cidrs,
    /// as the DenyServiceExternalIPs admission plugin would for the API);
    /// empty allows every one, as kube-proxy does.
    pub external_ip_cidrs: Vec<Cidr>,
    /// How frontends pick backends unless their Service's
    /// `svc-lb.io/lb-algorithm` annotation says otherwise.
    pub lb_algorithm: super::LbAlgorithm,
}

/// One `--nodeport-addresses` entry: kube-proxy's forms, a CIDR (the
/// node's addresses inside it) or `primary` (the node's first address of
/// each family), and an address (that one, whether or not the Node lists
/// it: for a node whose Node object does not say all its addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodePortAddress {
    Address(IpAddr),
    Cidr(Cidr),
    Primary,
}

impl std::str::FromStr for NodePortAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text == "primary" {
            Ok(NodePortAddress::Primary)
        } else if text.contains('/') {
            text.parse().map(NodePortAddress::Cidr)
        } else {
            text.parse().map(NodePortAddress::Address).map_err(|_| {
                format!(
                    "{text:?} is neither an address, a CIDR (like 198.18.0.0/24 or \
                     fd00:198:18::/64) nor `primary`"
                )
            })
        }
    }
}

impl std::fmt::Display for NodePortAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodePortAddress::Address(address) => write!(f, "{address}"),
            NodePortAddress::Cidr(cidr) => write!(f, "{cidr}"),
            NodePortAddress::Primary => f.write_str("primary"),
        }
    }
}

/// A CIDR of either family, written `a.b.c.d/len` or `fd00::/len` (also
/// in JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn family(&self) -> IpFamily {
        IpFamily::of(self.address)
    }

    /// An IPv4 prefix as a mask (host order): its first `prefix` bits set.
    /// For an IPv6 CIDR, the mask of its prefix cut to 32 bits: use
    /// [`Cidr::contains`] or [`Cidr::network`] unless the family is known.
    pub fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix.min(32)))
            .unwrap_or(0)
    }

    /// An IPv6 prefix as a mask (host order): its first `prefix` bits set.
    pub fn mask128(&self) -> u128 {
        u128::MAX
            .checked_shl(128 - u32::from(self.prefix.min(128)))
            .unwrap_or(0)
    }

    /// The address with its host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.address {
            IpAddr::V4(address) => Ipv4Addr::from(u32::from(address) & self.mask()).into(),
            IpAddr::V6(address) => Ipv6Addr::from(u128::from(address) & self.mask128()).into(),
        }
    }

    /// Whether `address` is inside; never across families.
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.address, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = self.mask();
                u32::from(address) & mask == u32::from(network) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = self.mask128();
                u128::from(address) & mask == u128::from(network) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{text:?} is not a CIDR (like 198.19.0.0/16 or fd00:198:19::/112)");
        let (address, prefix) = text.split_once('/').ok_or_else(bad)?;
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let bits = match address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix > bits {
            return Err(bad());
        }
        Ok(Cidr { address, prefix })
    }
}

impl Config {
    /// Whether an externalIP may be programmed.
    pub fn allows_external_ip(&self, address: IpAddr) -> bool {
        self.external_ip_cidrs.is_empty()
            || self
                .external_ip_cidrs
                .iter()
                .any(|cidr| cidr.contains(address))
    }

    /// The addresses of `family` NodePort frontends are made for on
    /// `node`, each once, in the order the settings and the Node give
    /// them.
    pub fn nodeport_addresses_for(&self, node: &NodeContext, family: IpFamily) -> Vec<IpAddr> {
        let own = node
            .node_addresses
            .iter()
            .copied()
            .filter(|address| family.holds(*address));
        let Some(entries) = &self.nodeport_addresses else {
            return own.collect();
        };
        let mut addresses = Vec::new();
        for entry in entries {
            let found: Vec<IpAddr> = match entry {
                NodePortAddress::Address(address) => vec![*address],
                NodePortAddress::Cidr(cidr) => own.clone().filter(|a| cidr.contains(*a)).collect(),
                NodePortAddress::Primary => own.clone().take(1).collect(),
            };
            for address in found {
                if family.holds(address) && !addresses.contains(&address) {
                    addresses.push(address);
                }
            }
        }
        addresses
    }

    /// The NodePort addresses of both families on `node`.
    pub fn all_nodeport_addresses(&self, node: &NodeContext) -> Vec<IpAddr> {
        IpFamily::ALL
            .into_iter()
            .flat_map(|family| self.nodeport_addresses_for(node, family))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeContextError {
    #[error(
        "node {node:?} has no Node object (known nodes: {known}); add its Node \
         manifest (with status.addresses) or give the NodePort addresses \
         yourself (--nodeport-addresses)"
    )]
    NodeNotFound { node: String, known: String },
}

impl NodeContext {
    /// The context of a Node object.
    pub fn from_node(node: &Node) -> Self {
        let zone = node
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(LABEL_TOPOLOGY_ZONE))
            .filter(|zone| !zone.is_empty())
            .cloned();
        let mut node_addresses = Vec::new();
        let addresses = node
            .status
            .as_ref()
            .and_then(|status| status.addresses.as_deref())
            .unwrap_or_default();
        for address in addresses {
            if address.type_ != "InternalIP" && address.type_ != "ExternalIP" {
                continue;
            }
            if let Ok(ip) = address.address.trim().parse::<IpAddr>()
                && !node_addresses.contains(&ip)
            {
                node_addresses.push(ip);
            }
        }
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            zone,
            node_addresses,
        }
    }

    /// The context of node `name` in `snapshot`. A node without a Node
    /// object is planned without zone and own addresses, which is only
    /// useful when `config` names the NodePort addresses.
    pub fn from_snapshot(
        snapshot: &Snapshot,
        name: &str,
        config: &Config,
    ) -> Result<Self, NodeContextError> {
        Self::from_nodes(&snapshot.nodes, name, config)
    }

    /// [`from_snapshot`](Self::from_snapshot) with the Node objects only.
    pub fn from_nodes(
        nodes: &[Node],
        name: &str,
        config: &Config,
    ) -> Result<Self, NodeContextError> {
        if let Some(node) = super::node_named(nodes, name) {
            return Ok(Self::from_node(node));
        }
        if config.nodeport_addresses.is_some() {
            return Ok(Self {
                name: name.to_owned(),
                ..Self::default()
            });
        }
        let known: Vec<&str> = nodes
            .iter()
            .filter_map(|node| node.metadata.name.as_deref())
            .collect();
        Err(NodeContextError::NodeNotFound {
            node: name.to_owned(),
            known: if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn node(name: &str, zone: Option<&str>, addresses: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: zone.map(|zone| [(LABEL_TOPOLOGY_ZONE.to_owned(), zone.to_owned())].into()),
                ..ObjectMeta::default()
            },
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(type_, address)| NodeAddress {
                            type_: (*type_).into(),
                            address: (*address).into(),
                        })
                        .collect(),
                ),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn node_addresses_are_internal_and_external_of_both_families_without_duplicates() {
        let context = NodeContext::from_node(&node(
            "node-1",
            Some("zone-a"),
            &[
                ("Hostname", "node-1"),
                ("InternalIP", "198.18.0.11"),
                ("InternalIP", "fd00::11"),
                ("ExternalIP", "198.18.100.11"),
                ("ExternalIP", "198.18.0.11"),
            ],
        ));
        assert_eq!(context.name, "node-1");
        assert_eq!(context.zone.as_deref(), Some("zone-a"));
        assert_eq!(
            context.node_addresses,
            ["198.18.0.11", "fd00::11", "198.18.100.11"]
                .map(|text| text.parse::<IpAddr>().unwrap())
        );
    }

    #[test]
    fn cidrs_of_both_families_hold_their_own_addresses_only() {
        let v4: Cidr = "198.19.0.0/16".parse().unwrap();
        let v6: Cidr = "fd00:198:19::/112".parse().unwrap();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(v4.contains(ip("198.19.255.1")));
        assert!(!v4.contains(ip("198.20.0.1")));
        assert!(v6.contains(ip("fd00:198:19::ffff")));
        assert!(!v6.contains(ip("fd00:198:19::1:0")));
        assert!(!v6.contains(ip("198.19.0.1")));
        assert!(!v4.contains(ip("::ffff:198.19.0.1")));
        let host_bits: Cidr = "fd00:198:19::7/112".parse().unwrap();
        assert_eq!(host_bits.network(), ip("fd00:198:19::"));
        assert_eq!(v6.to_string(), "fd00:198:19::/112");
        assert!("fd00::/129".parse::<Cidr>().is_err());
        assert!("198.19.0.0/33".parse::<Cidr>().is_err());
    }

    #[test]
    fn nodeport_address_cidrs_and_primary_pick_among_the_nodes_own() {
        let context = NodeContext::from_node(&node(
            "node-1",
            None,
            &[
                ("InternalIP", "198.18.0.11"),
                ("InternalIP", "fd00:198:18::11"),
                ("ExternalIP", "198.18.100.11"),
                ("ExternalIP", "fd00:198:18:100::11"),
            ],
        ));
        let nodeport = |entries: &str| -> Vec<String> {
            let config = Config {
                nodeport_addresses: Some(
                    entries
                        .split(',')
                        .map(|entry| entry.parse().unwrap())
                        .collect(),
                ),
                ..Config::default()
            };
            config
                .all_nodeport_addresses(&context)
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(nodeport("198.18.100.0/24"), ["198.18.100.11"]);
        assert_eq!(nodeport("primary"), ["198.18.0.11", "fd00:198:18::11"]);
        assert_eq!(
            nodeport("fd00:198:18:100::/64,primary,198.18.0.0/16"),
            [
                "198.18.0.11",
                "198.18.100.11",
                "fd00:198:18:100::11",
                "fd00:198:18::11"
            ]
        );
        assert_eq!(nodeport("10.0.0.0/8"), [] as [&str; 0]);
        for bad in ["primary/8", "198.18.0.0/33", "node", ""] {
            assert!(bad.parse::<NodePortAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_zone_label_is_no_zone() {
        let context = NodeContext::from_node(&node("node-1", Some(""), &[]));
        assert_eq!(context.zone, None);
    }

    #[test]
    fn configured_nodeport_addresses_replace_the_nodes_own() {
        let context =
            NodeContext::from_node(&node("node-1", None, &[("InternalIP", "198.18.0.11")]));
        let own = Config::default();
        let of = |config: &Config, family| -> Vec<IpAddr> {
            config.nodeport_addresses_for(&context, family)
        };
        assert_eq!(of(&own, IpFamily::IPv4), [Ipv4Addr::new(198, 18, 0, 11)]);
        assert_eq!(of(&own, IpFamily::IPv6), [] as [IpAddr; 0]);
        let configured = Config {
            nodeport_addresses: Some(vec![
                "198.18.5.5".parse().unwrap(),
                "fd00:198:18::5".parse().unwrap(),
            ]),
            ..Config::default()
        };
        assert_eq!(
            of(&configured, IpFamily::IPv4),
            [Ipv4Addr::new(198, 18, 5, 5)]
        );
        assert_eq!(
            of(&configured, IpFamily::IPv6),
            ["fd00:198:18::5".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn unknown_node_is_an_error_naming_the_known_ones() {
        let snapshot = Snapshot {
            nodes: vec![node("node-1", None, &[]), node("node-2", None, &[])],
            ..Snapshot::default()
        };
        let error = NodeContext::from_snapshot(&snapshot, "node-9", &Config::default())
            .expect_err("node-9 is not in the snapshot");
        let text = error.to_string();
        assert!(text.contains("\"node-9\""), "{text}");
        assert!(text.contains("node-1, node-2"), "{text}");
        assert!(text.contains("--nodeport-addresses"), "{text}");
    }

    #[test]
    fn unknown_node_with_configured_addresses_plans_without_zone() {
        let config = Config {
            nodeport_addresses: Some(vec!["198.18.5.5".parse().unwrap()]),
            ..Config::default()
        };
        let context = NodeContext::from_snapshot(&Snapshot::default(), "node-9", &config)
            .expect("configured addresses stand in for the Node");
        assert_eq!(context.name, "node-9");
        assert_eq!(context.zone, None);
        assert!(context.node_addresses.is_empty());
    }
}
