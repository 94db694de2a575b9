//! Host names and origins, as `http.allowed_hosts` and `http.allowed_origins` write them and as
//! a request's `Host` and `Origin` headers carry them. Pure: the HTTP guard
//! (`src/http/guard.rs`) compares what it parses here, and the config refuses at load what would
//! never match.
//!
//! Names compare in lower case without a trailing dot (`LocalHost.` is `localhost`, as DNS has
//! it); IP literals compare as addresses (`[::1]`, `127.0.0.1`), an IPv4-mapped IPv6 address as
//! its IPv4 one.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// A host without its port: an IP literal or a DNS name, normalised for comparison.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    /// Lower case, no trailing dot, only `a-z 0-9 - _ .`.
    Name(String),
}

impl Host {
    /// Parses a host without a port: `example.com`, `Example.COM.`, `10.0.0.5`, `[::1]` (an IPv6
    /// literal may also be written without brackets here, as `::1`).
    pub fn parse(text: &str) -> Result<Host, String> {
        if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            return match inner.parse::<Ipv6Addr>() {
                Ok(ip) => Ok(Host::Ip(IpAddr::V6(ip).to_canonical())),
                Err(_) => Err(format!("{text:?} is not an IPv6 address")),
            };
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Host::Ip(ip.to_canonical()));
        }
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        if name.is_empty() || name.len() > 253 {
            return Err(format!("{text:?} is not a host name"));
        }
        for label in name.split('.') {
            let chars_ok = label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
            if label.is_empty()
                || label.len() > 63
                || !chars_ok
                || label.starts_with('-')
                || label.ends_with('-')
            {
                return Err(format!(
                    "{text:?} is not a host name (labels of letters, digits, '-' and '_', separated by dots)"
                ));
            }
        }
        Ok(Host::Name(name))
    }

    /// Parses an authority as a `Host` header or an origin carries it: `host`, `host:port`,
    /// `[v6]` or `[v6]:port`. The port, when written, must be a number up to 65535.
    pub fn parse_with_port(text: &str) -> Result<(Host, Option<u16>), String> {
        let (host, port) = if text.starts_with('[') {
            match text.find(']') {
                Some(end) => {
                    let rest = &text[end + 1..];
                    match rest.strip_prefix(':') {
                        Some(port) => (&text[..=end], Some(port)),
                        None if rest.is_empty() => (text, None),
                        None => return Err(format!("{text:?} is not HOST[:PORT]")),
                    }
                }
                None => return Err(format!("{text:?} is not HOST[:PORT]")),
            }
        } else {
            match text.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        let port = match port {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("port {p:?} is over 65535"))?,
            ),
            Some(p) => return Err(format!("{p:?} in {text:?} is not a port")),
            None => None,
        };
        Ok((Host::parse(host)?, port))
    }

    /// `localhost` or a name under it (RFC 6761: these never leave the machine, so no one else
    /// can point them at another address), or a loopback address (127.0.0.0/8, `::1`).
    pub fn is_local(&self) -> bool {
        match self {
            Host::Ip(ip) => ip.is_loopback(),
            Host::Name(name) => name == "localhost" || name.ends_with(".localhost"),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// One entry of `http.allowed_hosts`: a host (any port), or `*.example.com` for every name below
/// `example.com` (not `example.com` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHost {
    Exact(Host),
    /// The parent name, without the `*.`.
    Below(String),
}

impl AllowedHost {
    pub fn parse(text: &str) -> Result<AllowedHost, String> {
        if let Some(parent) = text.strip_prefix("*.") {
            return match Host::parse(parent)? {
                Host::Name(name) => Ok(AllowedHost::Below(name)),
                Host::Ip(_) => Err(format!("{text:?}: a wildcard needs a name after \"*.\"")),
            };
        }
        if text.contains('*') {
            return Err(format!(
                "{text:?}: the only wildcard is a leading \"*.\" (e.g. \"*.example.com\")"
            ));
        }
        if text.contains("://") || text.contains('/') {
            return Err(format!(
                "{text:?} is not a host name; write the name alone (\"rq.example.com\"), and origins in http.allowed_origins"
            ));
        }
        match Host::parse(text) {
            Ok(host) => Ok(AllowedHost::Exact(host)),
            Err(_) if Host::parse_with_port(text).is_ok() => Err(format!(
                "{text:?} has a port; ports are not compared, write the name alone"
            )),
            Err(e) => Err(e),
        }
    }

    pub fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (AllowedHost::Exact(allowed), host) => allowed == host,
            (AllowedHost::Below(parent), Host::Name(name)) => name
                .strip_suffix(parent.as_str())
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
            (AllowedHost::Below(_), Host::Ip(_)) => false,
        }
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowedHost::Exact(host) => write!(f, "{host}"),
            AllowedHost::Below(parent) => write!(f, "*.{parent}"),
        }
    }
}

/// `http` or `https`: the only schemes a browser sends the console's requests from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A web origin, `scheme://host[:port]`, with the scheme's default port filled in, so
/// `https://a.example` and `https://A.example:443` are the same origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
}

impl Origin {
    /// Parses an origin as the `Origin` header serialises it (and as `http.allowed_origins`
    /// takes it): a scheme, `://`, an authority, nothing after it.
    pub fn parse(text: &str) -> Result<Origin, String> {
        let Some((scheme, authority)) = text.split_once("://") else {
            return Err(format!("{text:?} is not an origin (scheme://host[:port])"));
        };
        let scheme = if scheme.eq_ignore_ascii_case("http") {
            Scheme::Http
        } else if scheme.eq_ignore_ascii_case("https") {
            Scheme::Https
        } else {
            return Err(format!("{text:?}: the scheme must be http or https"));
        };
        if authority.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "{text:?} is not an origin: no path, query or user, only scheme://host[:port]"
            ));
        }
        let (host, port) =
            Host::parse_with_port(authority).map_err(|e| format!("{text:?}: {e}"))?;
        Ok(Origin {
            scheme,
            host,
            port: port.unwrap_or(scheme.default_port()),
        })
    }

    /// Whether this origin is the one of a page served by the host a request names
    /// (`Host: host[:port]`), whichever of http or https it was served over: a TLS-terminating
    /// proxy in front of the daemon does not change the `Host`.
    pub fn is_served_by(&self, host: &Host, port: Option<u16>) -> bool {
        self.host == *host && self.port == port.unwrap_or(self.scheme.default_port())
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}", self.host)?;
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Host {
        Host::Name(n.into())
    }

    #[test]
    fn hosts_are_compared_in_lower_case_without_a_trailing_dot() {
        assert_eq!(Host::parse("LocalHost.").unwrap(), name("localhost"));
        assert_eq!(
            Host::parse("RQ.Example.COM").unwrap(),
            name("rq.example.com")
        );
        assert_eq!(
            Host::parse("[::1]").unwrap(),
            Host::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            Host::parse("::1").unwrap(),
            Host::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            Host::parse("[::ffff:127.0.0.1]").unwrap(),
            Host::Ip("127.0.0.1".parse().unwrap()),
            "an IPv4-mapped address is its IPv4 address"
        );
        for bad in [
            "",
            ".",
            "a..b",
            "-a.example",
            "a b",
            "a/b",
            "evil@x",
            "[nope]",
            "[1.2.3.4]",
        ] {
            assert!(Host::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_authority_splits_into_host_and_port_and_ipv6_needs_brackets() {
        let cases: &[(&str, Host, Option<u16>)] = &[
            (
                "127.0.0.1:9732",
                Host::Ip("127.0.0.1".parse().unwrap()),
                Some(9732),
            ),
            ("[::1]:9732", Host::Ip("::1".parse().unwrap()), Some(9732)),
            ("[::1]", Host::Ip("::1".parse().unwrap()), None),
            ("LOCALHOST.:80", name("localhost"), Some(80)),
            ("evil.example:9732", name("evil.example"), Some(9732)),
            ("evil.example", name("evil.example"), None),
        ];
        for (text, host, port) in cases {
            assert_eq!(
                Host::parse_with_port(text).unwrap(),
                (host.clone(), *port),
                "{text}"
            );
        }
        for bad in [
            "::1:9732",
            "[::1]9732",
            "[::1",
            "a:",
            "a:b",
            "a:99999",
            "a:1:2",
            ":80",
            "a:+80",
        ] {
            assert!(Host::parse_with_port(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn local_hosts_are_loopback_addresses_and_localhost_names() {
        for local in [
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
            "localhost",
            "LOCALHOST.",
            "app.localhost",
        ] {
            assert!(Host::parse(local).unwrap().is_local(), "{local}");
        }
        for other in [
            "10.0.0.1",
            "0.0.0.0",
            "[::]",
            "localhost.evil.example",
            "notlocalhost",
            "evil.example",
        ] {
            assert!(!Host::parse(other).unwrap().is_local(), "{other}");
        }
    }

    #[test]
    fn allowed_hosts_match_names_exactly_or_below_a_wildcard() {
        let exact = AllowedHost::parse("RQ.example.com").unwrap();
        assert!(exact.matches(&name("rq.example.com")));
        assert!(!exact.matches(&name("x.rq.example.com")));
        let below = AllowedHost::parse("*.example.com").unwrap();
        assert!(below.matches(&name("rq.example.com")));
        assert!(below.matches(&name("a.b.example.com")));
        assert!(!below.matches(&name("example.com")));
        assert!(!below.matches(&name("evilexample.com")));
        let ip = AllowedHost::parse("10.0.0.5").unwrap();
        assert!(ip.matches(&Host::Ip("10.0.0.5".parse().unwrap())));
        for (bad, says) in [
            ("rq.example.com:9732", "has a port"),
            ("https://rq.example.com", "not a host name"),
            ("*", "wildcard"),
            ("a.*.example.com", "wildcard"),
            ("*.10.0.0.5", "wildcard needs a name"),
            ("", "not a host name"),
            ("bad name", "not a host name"),
        ] {
            let e = AllowedHost::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn origins_fill_in_the_default_port_and_match_the_host_they_were_served_by() {
        let o = Origin::parse("HTTPS://Ops.Example.com").unwrap();
        assert_eq!(o, Origin::parse("https://ops.example.com:443").unwrap());
        assert_eq!(o.to_string(), "https://ops.example.com");
        assert!(o.is_served_by(&name("ops.example.com"), None));
        assert!(o.is_served_by(&name("ops.example.com"), Some(443)));
        assert!(!o.is_served_by(&name("ops.example.com"), Some(9732)));
        let local = Origin::parse("http://127.0.0.1:9732").unwrap();
        let ip = Host::Ip("127.0.0.1".parse().unwrap());
        assert!(local.is_served_by(&ip, Some(9732)));
        assert!(!local.is_served_by(&ip, Some(9733)));
        assert!(!local.is_served_by(&name("localhost"), Some(9732)));
        assert!(Origin::parse("http://[::1]:9732")
            .unwrap()
            .is_served_by(&Host::Ip("::1".parse().unwrap()), Some(9732)));
        for bad in [
            "null",
            "ftp://x.example",
            "http://x.example/",
            "http://user@x.example",
            "http://x.example:99999",
            "x.example",
            "http://",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad:?}");
        }
    }
}
