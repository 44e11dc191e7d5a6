//! The address a role tells others to reach it at, when its config gives
//! none: a node registers it with meta, a proxy reports it to meta (the
//! console's proxy list). Listening on an unspecified address (`0.0.0.0`,
//! `[::]`) says nothing another host can use, so the machine's host name
//! stands in for it (a container's or pod's name resolves on its network).

use std::net::SocketAddr;

/// The machine's host name (`HOSTNAME`, else `/etc/hostname`), cut to 64
/// characters of `A-Z a-z 0-9 - _ .` (others become `-`); `fallback` when
/// there is none.
pub fn host_name(fallback: &str) -> String {
    let raw = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    let name: String = raw.trim().chars().take(64).map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
    if name.is_empty() { fallback.to_string() } else { name }
}

/// `scheme://listen`, with the host name for an unspecified `listen` address.
pub fn default_advertise(scheme: &str, listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        format!("{scheme}://{}:{}", host_name("localhost"), listen.port())
    } else {
        format!("{scheme}://{listen}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_specified_listen_address_is_advertised_as_is() {
        assert_eq!(default_advertise("http", "127.0.0.1:7000".parse().unwrap()), "http://127.0.0.1:7000");
        assert_eq!(default_advertise("https", "[::1]:7000".parse().unwrap()), "https://[::1]:7000");
    }

    #[test]
    fn an_unspecified_one_is_replaced_by_the_host_name() {
        let a = default_advertise("http", "0.0.0.0:7000".parse().unwrap());
        let host = a.strip_prefix("http://").and_then(|a| a.strip_suffix(":7000")).unwrap();
        assert!(!host.is_empty() && host != "0.0.0.0", "{a}");
        assert_eq!(host, host_name("localhost"));
        assert!(host.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "{host}");
    }
}
