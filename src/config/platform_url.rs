//! What hosting platforms hand a process: the Redis URL as redis-py reads it, and a port.
//!
//! Heroku, Render, Dokku and most compose files give an app `REDIS_URL`, and Heroku's Redis
//! presents a self-signed certificate, so its documentation (and every RQ app there) adds
//! `ssl_cert_reqs=none` to the URL for redis-py. redis-rs spells the same thing as the fragment
//! `#insecure`; [`translate`] turns redis-py's query parameter into it, so the URL an RQ app
//! already uses works unchanged, and refuses the values it cannot honour rather than ignoring
//! them.

/// The URL redis-rs should open for `url`: `ssl_cert_reqs=none` (or `CERT_NONE`) becomes
/// `#insecure` (no certificate check), `required` (or `CERT_REQUIRED`) is redis-rs's default
/// and is dropped; any other value, or the parameter on a non-TLS URL, is an error. Other URLs
/// are returned unchanged.
pub fn translate(url: &str) -> Result<String, String> {
    let Some((base, rest)) = url.split_once('?') else {
        return Ok(url.to_string());
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    let mut kept = Vec::new();
    let mut insecure = false;
    let mut mentioned = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "ssl_cert_reqs" {
            kept.push(pair);
            continue;
        }
        mentioned = true;
        match value.to_ascii_lowercase().as_str() {
            "none" | "cert_none" => insecure = true,
            "required" | "cert_required" => {}
            other => {
                return Err(format!(
                    "ssl_cert_reqs={other} is not supported: use none (no certificate check) or required"
                ))
            }
        }
    }
    if !mentioned {
        return Ok(url.to_string());
    }
    let tls = base.starts_with("rediss://") || base.starts_with("valkeys://");
    if !tls {
        return Err("ssl_cert_reqs only applies to a rediss:// URL".to_string());
    }
    let mut out = base.to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    match (insecure, fragment) {
        (true, None | Some("insecure")) => out.push_str("#insecure"),
        (false, Some(f)) => {
            out.push('#');
            out.push_str(f);
        }
        (false, None) => {}
        (true, Some(f)) => return Err(format!("unsupported URL fragment #{f}")),
    }
    Ok(out)
}

/// The listen address for a platform's `PORT`: every IPv4 address, as the platform's router
/// connects from outside the container. An invalid port is left for the address parser to
/// refuse, naming the variable.
pub fn listen_on_port(port: &str) -> String {
    format!("0.0.0.0:{}", port.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_py_certificate_modes_become_what_redis_rs_reads() {
        let ok = |url: &str| translate(url).expect(url);
        assert_eq!(ok("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(
            ok("rediss://:pw@h:6380?ssl_cert_reqs=none"),
            "rediss://:pw@h:6380#insecure"
        );
        assert_eq!(
            ok("rediss://h:6380/2?ssl_cert_reqs=CERT_NONE&protocol=resp3"),
            "rediss://h:6380/2?protocol=resp3#insecure"
        );
        assert_eq!(ok("rediss://h?ssl_cert_reqs=required"), "rediss://h");
        assert_eq!(ok("rediss://h/#insecure"), "rediss://h/#insecure");
        assert!(translate("rediss://h?ssl_cert_reqs=optional")
            .unwrap_err()
            .contains("ssl_cert_reqs=optional"));
        assert!(translate("redis://h?ssl_cert_reqs=none")
            .unwrap_err()
            .contains("rediss://"));
    }
}
