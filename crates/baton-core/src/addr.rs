//! Listen addresses as users write them (`--listen`, `listen: [...]`), parsed into
//! [`ListenAddr`] and printed back in one canonical form.
//!
//! Accepted forms: `host:port`, `:port` (all interfaces), `tcp://host:port`,
//! `[::1]:port`, `tcp://[::1]:port`, `unix:/abs/or/rel/path`, `unix:///abs/path`.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;

/// Where a group listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address. `host` is a name or an IP literal without brackets; an empty host
    /// means all interfaces. Port 0 asks the kernel for an ephemeral port.
    Tcp {
        /// Host name or IP literal (IPv6 without brackets); empty = all interfaces.
        host: String,
        /// TCP port, 0 = ephemeral.
        port: u16,
    },
    /// A Unix domain socket path (absolute or relative to the master's working directory).
    Unix(PathBuf),
}

/// A listen address that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrError {
    /// The text as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid listen address \"{}\": {} (expected host:port, :port, tcp://host:port, [::1]:port or unix:/path)",
            self.input, self.reason
        )
    }
}

impl std::error::Error for AddrError {}

/// Parses a listen address; see the module documentation for the accepted forms.
pub fn parse(s: &str) -> Result<ListenAddr, AddrError> {
    let err = |reason: String| AddrError {
        input: s.to_string(),
        reason,
    };
    if s.is_empty() {
        return Err(err("the address is empty".into()));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(err("it contains control characters".into()));
    }

    if let Some(rest) = s.strip_prefix("unix:") {
        return parse_unix(rest).map_err(err);
    }
    if let Some(idx) = s.find("://") {
        let scheme = &s[..idx];
        let rest = &s[idx + 3..];
        if scheme.eq_ignore_ascii_case("tcp") {
            return parse_tcp(rest).map_err(err);
        }
        return Err(err(format!(
            "unknown scheme \"{scheme}://\"; use tcp://host:port for TCP or unix:/path for a Unix socket"
        )));
    }
    parse_tcp(s).map_err(err)
}

fn parse_unix(rest: &str) -> Result<ListenAddr, String> {
    let path = if let Some(after) = rest.strip_prefix("//") {
        // unix:///abs/path -> "/abs/path"; unix://name is a URL with a host, which we do
        // not support.
        if !after.starts_with('/') {
            return Err(
                "unix:// must be followed by an absolute path (unix:///abs/path); for a relative path write unix:rel/path"
                    .into(),
            );
        }
        after
    } else {
        rest
    };
    if path.is_empty() {
        return Err("the Unix socket path is empty".into());
    }
    Ok(ListenAddr::Unix(PathBuf::from(path)))
}

fn parse_tcp(s: &str) -> Result<ListenAddr, String> {
    if s.is_empty() {
        return Err("the address is empty".into());
    }
    let (host, port) = if let Some(after_bracket) = s.strip_prefix('[') {
        let close = after_bracket
            .find(']')
            .ok_or_else(|| "missing ']' after the IPv6 address".to_string())?;
        let host = &after_bracket[..close];
        let after = &after_bracket[close + 1..];
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| "missing :port after the IPv6 address, e.g. [::1]:3000".to_string())?;
        validate_ipv6(host)?;
        (host, port)
    } else {
        let colon = s.rfind(':').ok_or_else(|| {
            format!(
                "missing port; write host:port or :port (e.g. \"{}:3000\" or \":{}\")",
                s, s
            )
        })?;
        let host = &s[..colon];
        if host.contains(':') {
            return Err("an IPv6 address needs brackets, e.g. [::1]:3000".into());
        }
        validate_host(host)?;
        (host, &s[colon + 1..])
    };
    let port = parse_port(port)?;
    Ok(ListenAddr::Tcp {
        host: host.to_string(),
        port,
    })
}

fn validate_ipv6(host: &str) -> Result<(), String> {
    // Allow a zone id (fe80::1%eth0); only the address part must be valid IPv6.
    let (ip, zone) = match host.split_once('%') {
        Some((ip, zone)) => (ip, Some(zone)),
        None => (host, None),
    };
    if ip.parse::<Ipv6Addr>().is_err() {
        return Err(format!("\"{host}\" is not a valid IPv6 address"));
    }
    if let Some(zone) = zone {
        if zone.is_empty()
            || !zone
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(format!("\"{host}\" has an invalid IPv6 zone id"));
        }
    }
    Ok(())
}

fn validate_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Ok(());
    }
    if host.len() > 253 {
        return Err("the host name is longer than 253 characters".into());
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "the host \"{host}\" contains '{c}'; a host is a name or an IP address"
        ));
    }
    Ok(())
}

fn parse_port(port: &str) -> Result<u16, String> {
    if port.is_empty() {
        return Err("missing port number after ':'".into());
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the port \"{port}\" is not a number"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("the port {port} is out of range (0..=65535)"))
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            ListenAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            ListenAddr::Unix(path) => {
                let p = path.display().to_string();
                if p.starts_with("//") {
                    // "unix://x" would read as a URL; the triple-slash form keeps it a path.
                    write!(f, "unix://{p}")
                } else {
                    write!(f, "unix:{p}")
                }
            }
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tcp(host: &str, port: u16) -> ListenAddr {
        ListenAddr::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn parses_tcp_forms() {
        assert_eq!(parse("127.0.0.1:3000").unwrap(), tcp("127.0.0.1", 3000));
        assert_eq!(parse("localhost:80").unwrap(), tcp("localhost", 80));
        assert_eq!(parse(":3000").unwrap(), tcp("", 3000));
        assert_eq!(
            parse("tcp://example.com:443").unwrap(),
            tcp("example.com", 443)
        );
        assert_eq!(parse("TCP://:1").unwrap(), tcp("", 1));
        assert_eq!(parse("[::1]:3000").unwrap(), tcp("::1", 3000));
        assert_eq!(parse("tcp://[::1]:3000").unwrap(), tcp("::1", 3000));
        assert_eq!(parse("[::]:0").unwrap(), tcp("::", 0));
        assert_eq!(parse("[fe80::1%eth0]:80").unwrap(), tcp("fe80::1%eth0", 80));
        assert_eq!(parse("0.0.0.0:65535").unwrap(), tcp("0.0.0.0", 65535));
        assert_eq!(parse(":0").unwrap(), tcp("", 0));
    }

    #[test]
    fn parses_unix_forms() {
        assert_eq!(
            parse("unix:/run/app.sock").unwrap(),
            ListenAddr::Unix("/run/app.sock".into())
        );
        assert_eq!(
            parse("unix:rel/app.sock").unwrap(),
            ListenAddr::Unix("rel/app.sock".into())
        );
        assert_eq!(
            parse("unix:///run/app.sock").unwrap(),
            ListenAddr::Unix("/run/app.sock".into())
        );
    }

    fn reason(s: &str) -> String {
        parse(s).unwrap_err().reason
    }

    #[test]
    fn rejects_bad_input() {
        assert!(reason("").contains("empty"));
        assert!(reason("3000").contains("missing port"));
        assert!(reason("localhost").contains("missing port"));
        assert!(reason("localhost:").contains("missing port"));
        assert!(reason("host:abc").contains("not a number"));
        assert!(reason("host:-1").contains("not a number"));
        assert!(reason("host:65536").contains("out of range"));
        assert!(reason("host:99999999999").contains("out of range"));
        assert!(reason("http://x:1").contains("tcp://"));
        assert!(reason("::1:3000").contains("brackets"));
        assert!(reason("[::1]").contains("missing :port"));
        assert!(reason("[::1:3000").contains("']'"));
        assert!(reason("[nope]:1").contains("IPv6"));
        assert!(reason("a b:1").contains("contains ' '"));
        assert!(reason("a\0b:1").contains("control"));
        assert_eq!(
            parse("unix:/tmp/my app.sock").unwrap(),
            ListenAddr::Unix("/tmp/my app.sock".into())
        );
        assert!(reason("ho/st:1").contains("contains '/'"));
        assert!(reason("unix:").contains("empty"));
        assert!(reason("unix://host/x").contains("absolute path"));
        assert!(reason("tcp://").contains("empty"));
    }

    #[test]
    fn error_display_names_input_and_forms() {
        let e = parse("http://x:1").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("invalid listen address \"http://x:1\": "),
            "{msg}"
        );
        assert!(
            msg.ends_with("(expected host:port, :port, tcp://host:port, [::1]:port or unix:/path)")
        );
    }

    #[test]
    fn displays_canonical_form() {
        assert_eq!(tcp("127.0.0.1", 3000).to_string(), "127.0.0.1:3000");
        assert_eq!(tcp("::1", 3000).to_string(), "[::1]:3000");
        assert_eq!(tcp("", 3000).to_string(), ":3000");
        assert_eq!(ListenAddr::Unix("/p".into()).to_string(), "unix:/p");
        assert_eq!(parse("tcp://[::1]:3000").unwrap().to_string(), "[::1]:3000");
        assert_eq!(parse("unix:///a/b").unwrap().to_string(), "unix:/a/b");
        let odd = parse("unix:////x").unwrap();
        assert_eq!(parse(&odd.to_string()).unwrap(), odd);
    }

    proptest! {
        #[test]
        fn tcp_round_trips(host in "([a-z0-9][a-z0-9.-]{0,20})?", port in any::<u16>()) {
            let a = tcp(&host, port);
            prop_assert_eq!(parse(&a.to_string()).unwrap(), a);
        }

        #[test]
        fn ipv6_round_trips(ip in any::<[u16; 8]>(), port in any::<u16>()) {
            let a = tcp(&Ipv6Addr::from(ip).to_string(), port);
            prop_assert_eq!(parse(&a.to_string()).unwrap(), a);
        }

        #[test]
        fn unix_round_trips(path in "[a-zA-Z0-9/._-]{1,40}") {
            let a = ListenAddr::Unix(PathBuf::from(&path));
            prop_assert_eq!(parse(&a.to_string()).unwrap(), a);
        }

        #[test]
        fn never_panics(s in "\\PC{0,30}") {
            let _ = parse(&s);
        }
    }
}
