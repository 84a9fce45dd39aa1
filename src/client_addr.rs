//! Who a request came from, as lockout, the audit log and sessions record it: an IP address,
//! or `unix` for a peer on a Unix domain socket listener (which has no address). A leaf
//! module: it owns this one value type and decides nothing; `web` resolves a request's client
//! (through `listen.trusted_proxies`), `login` counts failures per client, `events` logs it.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

/// The client of a request, or a peer: an IP address, or `unix`.
///
/// A peer on a Unix socket is a process on this host that may open the socket file (mode
/// 0660: authgate's user and group), in a sidecar the proxy beside authgate. It has no
/// address of its own, so every client it forwards is `unix` (one lockout bucket, like
/// every client behind an untrusted proxy on 127.0.0.1) unless `listen.trusted_proxies`
/// lists `"unix"`; then its `X-Forwarded-For` names the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientAddr {
    Ip(IpAddr),
    /// A peer on a Unix domain socket; written `unix` (in the log, the lockout key
    /// `ip:unix`, a session's `client`, and `listen.trusted_proxies`).
    Unix,
}

impl ClientAddr {
    /// The IP address, when the client has one.
    pub fn ip(self) -> Option<IpAddr> {
        match self {
            Self::Ip(ip) => Some(ip),
            Self::Unix => None,
        }
    }
}

impl From<IpAddr> for ClientAddr {
    fn from(ip: IpAddr) -> Self {
        Self::Ip(ip)
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(f),
            Self::Unix => f.write_str("unix"),
        }
    }
}

impl std::str::FromStr for ClientAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "unix" {
            return Ok(Self::Unix);
        }
        text.parse::<IpAddr>()
            .map(Self::Ip)
            .map_err(|_| format!("{text:?} is neither an IP address nor \"unix\""))
    }
}

impl<'de> Deserialize<'de> for ClientAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_and_shows_ip_and_unix() {
        for text in ["127.0.0.1", "::1", "unix"] {
            assert_eq!(text.parse::<ClientAddr>().unwrap().to_string(), text);
        }
        assert!("localhost".parse::<ClientAddr>().is_err());
        assert!("unix:/x".parse::<ClientAddr>().is_err());
        assert_eq!(ClientAddr::Unix.ip(), None);
    }
}
