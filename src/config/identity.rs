//! Who a person is when no bearer token is sent: a browser session (`http.session_ttl`) and the
//! identity a reverse proxy a team already runs for single sign-on vouches for
//! (`[http.proxy_identity]`: oauth2-proxy's `X-Auth-Request-Email`, Pomerium's or any
//! `X-Forwarded-User`), trusted only from the proxies' own addresses and mapped to a role by
//! lists of names in the config.

use std::net::IpAddr;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration::HumanDuration;
use super::role::Role;
use crate::glob::GlobList;

/// How long a browser session lasts when `http.session_ttl` is not set.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// `[http.proxy_identity]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProxyIdentitySection {
    pub header: Spanned<String>,
    pub trusted_proxies: Spanned<Vec<String>>,
    #[serde(default)]
    pub operate: Vec<String>,
    #[serde(default)]
    pub read: Vec<String>,
}

/// An address or a network (`10.0.0.0/8`, `fd00::/8`) a proxy may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Network {
    /// `10.0.0.5`, `10.0.0.0/8`, `::1`, `fd00::/8`.
    pub fn parse(text: &str) -> Result<Network, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or a network like 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Network { addr, prefix })
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `[http.proxy_identity]`, validated.
#[derive(Debug, Clone)]
pub struct ProxyIdentity {
    /// The request header that names the user (lowercase, as HTTP compares it).
    pub header: String,
    pub trusted_proxies: Vec<Network>,
    operate: Option<GlobList>,
    read: Option<GlobList>,
}

impl ProxyIdentity {
    /// Whether a request from `peer` may name its user with the header.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(peer))
    }

    /// The role of `user`: `operate` when a name of `operate` matches, else `read` when one of
    /// `read` does, else none (the request is refused).
    pub fn role_of(&self, user: &str) -> Option<Role> {
        if self.operate.as_ref().is_some_and(|g| g.is_match(user)) {
            Some(Role::Operate)
        } else if self.read.as_ref().is_some_and(|g| g.is_match(user)) {
            Some(Role::Read)
        } else {
            None
        }
    }
}

/// Validates `[http.proxy_identity]`, reporting each problem at its key.
pub(super) fn build_proxy_identity(
    section: Option<&ProxyIdentitySection>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Option<ProxyIdentity> {
    let section = section?;
    let header = section.header.get_ref().trim().to_ascii_lowercase();
    let mut ok = true;
    if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() || header.is_empty() {
        err(
            Some(section.header.span()),
            format!("{:?} is not an HTTP header name", section.header.get_ref()),
        );
        ok = false;
    } else if matches!(
        header.as_str(),
        "authorization" | "cookie" | "host" | "origin" | "content-length" | "content-type"
    ) {
        err(
            Some(section.header.span()),
            format!("{header} cannot carry the proxy's user: use the header your proxy sets, e.g. X-Auth-Request-Email"),
        );
        ok = false;
    }
    let mut trusted_proxies = Vec::new();
    for text in section.trusted_proxies.get_ref() {
        match Network::parse(text) {
            Ok(n) => trusted_proxies.push(n),
            Err(m) => {
                err(Some(section.trusted_proxies.span()), m);
                ok = false;
            }
        }
    }
    if trusted_proxies.is_empty() && ok {
        err(
            Some(section.trusted_proxies.span()),
            "trusted_proxies is empty: no request could name its user".into(),
        );
        ok = false;
    }
    let globs = |names: &[String]| -> Result<Option<GlobList>, String> {
        if names.is_empty() {
            Ok(None)
        } else {
            GlobList::new(names).map(Some)
        }
    };
    let operate = globs(&section.operate).unwrap_or_else(|m| {
        err(Some(section.header.span()), format!("operate: {m}"));
        ok = false;
        None
    });
    let read = globs(&section.read).unwrap_or_else(|m| {
        err(Some(section.header.span()), format!("read: {m}"));
        ok = false;
        None
    });
    if ok && operate.is_none() && read.is_none() {
        err(
            Some(section.header.span()),
            "give operate = [...] or read = [...]: names (globs) of the users of each role".into(),
        );
        ok = false;
    }
    ok.then_some(ProxyIdentity {
        header,
        trusted_proxies,
        operate,
        read,
    })
}

/// `http.session_ttl`: 1 minute to 30 days.
pub(super) fn session_ttl(
    value: Option<&Spanned<HumanDuration>>,
    err: &mut impl FnMut(Option<Range<usize>>, String),
) -> Duration {
    let Some(value) = value else {
        return DEFAULT_SESSION_TTL;
    };
    let ttl = value.get_ref().0;
    if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(30 * 86_400) {
        err(
            Some(value.span()),
            "session_ttl must be between 1m and 30d".into(),
        );
        return DEFAULT_SESSION_TTL;
    }
    ttl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses_and_no_others() {
        let net = Network::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(
            net.contains("::ffff:10.1.0.9".parse().unwrap()),
            "IPv4-mapped"
        );
        let one = Network::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all = Network::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6 = Network::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0/8", "::/129", ""] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }
}
