//! A listen address parsed for a listener JavaScript opens itself (the health endpoint):
//! the address parser is crates/baton-core/src/addr.rs, and JavaScript receives the parts
//! `net.Server.listen()` takes instead of parsing the string again.

use baton_core::addr::{self, ListenAddr};
use napi_derive::napi;

/// A listen address parsed: its canonical form and what `net.Server.listen()` takes
/// (`path` for a Unix socket; `host` and `port` for TCP, `host` empty for all interfaces).
#[napi(object)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenTarget {
    /// The canonical form (`127.0.0.1:8080`, `:9000`, `[::1]:80`, `unix:/run/app.sock`).
    pub address: String,
    /// TCP: the host name or IP literal (IPv6 without brackets); empty for all interfaces.
    pub host: Option<String>,
    /// TCP: the port (0: one the kernel picks).
    pub port: Option<u32>,
    /// A Unix socket's path.
    pub path: Option<String>,
}

/// Parse `address`; the error says what is wrong with it and which forms are accepted.
pub fn parse(address: &str) -> Result<ListenTarget, addr::AddrError> {
    let parsed = addr::parse(address)?;
    let canonical = parsed.to_string();
    Ok(match parsed {
        ListenAddr::Tcp { host, port } => ListenTarget {
            address: canonical,
            host: Some(host),
            port: Some(u32::from(port)),
            path: None,
        },
        ListenAddr::Unix(path) => ListenTarget {
            address: canonical,
            host: None,
            port: None,
            path: Some(path.to_string_lossy().into_owned()),
        },
    })
}
