//! Blocked destinations: IPv4/IPv6 prefixes with a name, filled into the kernel's LPM tries.

use std::{fmt, net::IpAddr, str::FromStr};

/// A destination prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("'{0}': not an IP address or CIDR prefix")]
    Address(String),
    #[error("'{0}': prefix length must be 0..=32 for IPv4 and 0..=128 for IPv6")]
    Length(String),
    #[error("'{0}': host bits set below the prefix length")]
    HostBits(String),
}

impl FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| PrefixError::Address(s.to_owned()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .map_err(|_| PrefixError::Length(s.to_owned()))?,
        };
        if len > max {
            return Err(PrefixError::Length(s.to_owned()));
        }
        let prefix = Prefix { addr, len };
        if prefix.masked() != prefix.addr {
            return Err(PrefixError::HostBits(s.to_owned()));
        }
        Ok(prefix)
    }
}

impl Prefix {
    fn masked(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A named blocked destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Rule name reported in events.
    pub name: &'static str,
    pub prefix: Prefix,
}

/// The built-in list: cloud instance-metadata, credential and platform endpoints.
pub const METADATA_ENDPOINTS: [(&str, &str); 7] = [
    ("metadata-imds-v4", "169.254.169.254/32"),
    ("metadata-imds-v6", "fd00:ec2::254/128"),
    ("metadata-container-credentials", "169.254.170.2/32"),
    ("metadata-pod-identity-v4", "169.254.170.23/32"),
    ("metadata-pod-identity-v6", "fd00:ec2::23/128"),
    ("metadata-alibaba", "100.100.100.200/32"),
    ("metadata-azure-wireserver", "168.63.129.16/32"),
];

/// The built-in destination list, parsed.
pub fn metadata_endpoints() -> Vec<Destination> {
    METADATA_ENDPOINTS
        .iter()
        .map(|(name, cidr)| Destination {
            name,
            prefix: cidr.parse().expect("built-in prefixes are valid"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefixes_and_rejects_bad_ones() {
        let p: Prefix = "169.254.169.254".parse().unwrap();
        assert_eq!(p.len, 32);
        assert_eq!("fd00:ec2::/32".parse::<Prefix>().unwrap().len, 32);
        assert_eq!(
            "10.0.0.1/8".parse::<Prefix>(),
            Err(PrefixError::HostBits("10.0.0.1/8".into()))
        );
        assert_eq!(
            "1.2.3.4/33".parse::<Prefix>(),
            Err(PrefixError::Length("1.2.3.4/33".into()))
        );
        assert_eq!(
            "nope".parse::<Prefix>(),
            Err(PrefixError::Address("nope".into()))
        );
        assert_eq!("0.0.0.0/0".parse::<Prefix>().unwrap().len, 0);
    }

    #[test]
    fn built_in_list_is_the_documented_one() {
        let list: Vec<String> = metadata_endpoints()
            .iter()
            .map(|d| d.prefix.to_string())
            .collect();
        assert_eq!(
            list,
            [
                "169.254.169.254/32",
                "fd00:ec2::254/128",
                "169.254.170.2/32",
                "169.254.170.23/32",
                "fd00:ec2::23/128",
                "100.100.100.200/32",
                "168.63.129.16/32"
            ]
        );
    }
}
