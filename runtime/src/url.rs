//! Node and object addresses: `actogrid://host:port/name`.
//!
//! The scheme is fixed, the port is mandatory (nodes listen on ephemeral
//! ports, so a default would only ever be wrong) and the name is one path
//! segment. IPv6 hosts are written in brackets, as in any URL.

use std::fmt;
use std::str::FromStr;

/// The address of a node (or of a named object on a node).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeUrl {
    host: String,
    port: u16,
    name: String,
}

/// Why a string is not a valid [`NodeUrl`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a node URL: {reason} (expected actogrid://host:port/name)")]
pub struct ParseNodeUrlError {
    input: String,
    reason: &'static str,
}

impl NodeUrl {
    /// The URL scheme.
    pub const SCHEME: &'static str = "actogrid";

    /// Builds a URL from its parts.
    pub fn new(host: impl Into<String>, port: u16, name: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            name: name.into(),
        }
    }

    /// Host name or address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// TCP port of the runtime's server.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Node or object name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for NodeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(
                f,
                "{}://[{}]:{}/{}",
                Self::SCHEME,
                self.host,
                self.port,
                self.name
            )
        } else {
            write!(
                f,
                "{}://{}:{}/{}",
                Self::SCHEME,
                self.host,
                self.port,
                self.name
            )
        }
    }
}

impl FromStr for NodeUrl {
    type Err = ParseNodeUrlError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ParseNodeUrlError {
            input: input.to_owned(),
            reason,
        };
        let rest = input
            .strip_prefix("actogrid://")
            .ok_or_else(|| fail("the scheme must be actogrid://"))?;
        let (authority, name) = rest
            .split_once('/')
            .ok_or_else(|| fail("the name is missing"))?;
        if name.is_empty() || name.contains('/') {
            return Err(fail("the name must be one non-empty path segment"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, port) = v6
                .split_once("]:")
                .ok_or_else(|| fail("bad bracketed host"))?;
            (host, port)
        } else {
            authority
                .rsplit_once(':')
                .ok_or_else(|| fail("the port is missing"))?
        };
        if host.is_empty() {
            return Err(fail("the host is empty"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| fail("the port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(fail("the port is not a number from 1 to 65535"));
        }
        Ok(Self::new(host, port, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_v4_and_v6() {
        for text in [
            "actogrid://node-1.example:7000/workers-0",
            "actogrid://[::1]:9/x",
        ] {
            let url: NodeUrl = text.parse().expect("valid url");
            assert_eq!(url.to_string(), text);
        }
    }

    #[test]
    fn rejects_what_is_not_a_node_url() {
        for text in [
            "rmi://host:1099/x",
            "actogrid://host/x",
            "actogrid://host:0/x",
            "actogrid://host:70000/x",
            "actogrid://:1/x",
            "actogrid://host:1/",
            "actogrid://host:1/a/b",
        ] {
            assert!(
                text.parse::<NodeUrl>().is_err(),
                "{text} should be rejected"
            );
        }
    }
}
