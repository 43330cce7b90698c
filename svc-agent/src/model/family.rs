//! The two address families. Every rule is written once and run for each
//! family, as kube-proxy runs one proxier per family in a dual-stack
//! cluster: a Service's frontends of a family take its cluster IP,
//! external addresses and endpoints of that family only.
use std::{fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

impl IpFamily {
    /// Both families, IPv4 first (the order frontends are made in).
    pub const ALL: [IpFamily; 2] = [IpFamily::IPv4, IpFamily::IPv6];

    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => IpFamily::IPv4,
            IpAddr::V6(_) => IpFamily::IPv6,
        }
    }

    /// Whether `address` is of this family.
    pub fn holds(self, address: IpAddr) -> bool {
        IpFamily::of(address) == self
    }

    /// The family's name in the API (`spec.ipFamilies`, an
    /// EndpointSlice's `addressType`).
    pub fn api_name(self) -> &'static str {
        match self {
            IpFamily::IPv4 => "IPv4",
            IpFamily::IPv6 => "IPv6",
        }
    }

    /// The family the API names `name`; `None` for any other name.
    pub fn from_api_name(name: &str) -> Option<Self> {
        IpFamily::ALL
            .into_iter()
            .find(|family| family.api_name() == name)
    }

    /// The other family.
    pub fn other(self) -> Self {
        match self {
            IpFamily::IPv4 => IpFamily::IPv6,
            IpFamily::IPv6 => IpFamily::IPv4,
        }
    }

    /// An address of this family written as the API writes it; `None` for
    /// anything else. An IPv4-mapped IPv6 address is not IPv4 here, as the
    /// API server refuses it in a Service or an endpoint.
    pub fn parse(self, text: &str) -> Option<IpAddr> {
        let address: IpAddr = text.trim().parse().ok()?;
        self.holds(address).then_some(address)
    }

    /// The addresses of `texts` of this family, in order, without
    /// duplicates.
    pub fn parse_all<'a>(self, texts: impl IntoIterator<Item = &'a String>) -> Vec<IpAddr> {
        let mut addresses = Vec::new();
        for text in texts {
            if let Some(address) = self.parse(text)
                && !addresses.contains(&address)
            {
                addresses.push(address);
            }
        }
        addresses
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.api_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_takes_its_own_addresses_once_each_in_order() {
        let texts: Vec<String> = [
            "198.19.0.10",
            " fd00:198:19::10 ",
            "198.19.0.10",
            "not an address",
            "198.19.0.11",
            "::ffff:198.19.0.12",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            IpFamily::IPv4.parse_all(&texts),
            ["198.19.0.10", "198.19.0.11"].map(|text| text.parse::<IpAddr>().unwrap())
        );
        assert_eq!(
            IpFamily::IPv6.parse_all(&texts),
            ["fd00:198:19::10", "::ffff:198.19.0.12"].map(|text| text.parse::<IpAddr>().unwrap())
        );
    }
}
