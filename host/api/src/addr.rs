//! Service base URLs: how a node, a meta member or a proxy is reached
//! (`http://host:port`, or `https://host:port` where TLS is served). Every
//! role checks the addresses it is given (config files, node registrations,
//! meta membership requests) with [`check_base_url`], so one address is
//! accepted or refused the same way everywhere, for the same reason.

/// Checks that `addr` is `scheme://host:port` with one of `schemes`: no
/// user info, path, query or trailing slash. (No length limit here: meta
/// applies this check to Raft log entries, whose replay must not change;
/// the request body limits bound their size.) The error says what is wrong, to be prefixed by
/// the caller with which address it is (`addr "x" is not http://host:port: ...`).
pub fn check_base_url(addr: &str, schemes: &[&str]) -> Result<(), String> {
    let uri: http::Uri = addr.parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
    if !uri.scheme_str().is_some_and(|s| schemes.contains(&s)) {
        return Err(format!("the scheme must be {}", schemes.join(" or ")));
    }
    let authority = uri.authority().ok_or("missing host")?;
    if authority.as_str().contains('@') {
        return Err("user info is not allowed".into());
    }
    if authority.host().is_empty() {
        return Err("missing host".into());
    }
    if authority.port_u16().is_none() {
        return Err("missing port".into());
    }
    if !(uri.path() == "/" || uri.path().is_empty()) || uri.query().is_some() || addr.ends_with('/') {
        return Err("no path, query or trailing slash".into());
    }
    Ok(())
}

/// `http://host:port or https://host:port` for `schemes`, for messages.
pub fn base_url_form(schemes: &[&str]) -> String {
    schemes.iter().map(|s| format!("{s}://host:port")).collect::<Vec<_>>().join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let both = ["http", "https"];
        for ok in ["http://a:1", "https://10.0.0.7:7000", "http://[::1]:80", "http://node-1.back:7100"] {
            assert_eq!(check_base_url(ok, &both), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("ftp://a:1", "the scheme must be http or https"),
            ("a:1", "the scheme must be"),
            ("http://a", "missing port"),
            ("http://u@a:1", "user info"),
            ("http://a:1/x", "no path"),
            ("http://a:1?q", "no path"),
            ("http://a:1//", "no path"),
            ("http://node-1.back:7100/", "trailing slash"),
            ("http://:1", "missing host"),
        ] {
            let e = check_base_url(bad, &both).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(check_base_url("https://a:1", &["http"]).unwrap_err().contains("the scheme must be http"));
        assert_eq!(base_url_form(&both), "http://host:port or https://host:port");
    }
}
