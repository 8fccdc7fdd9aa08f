//! Listen-address parsing exposed to JavaScript, so option validation and the master
//! agree on what an address means.

use napi::{Error, Result, Status};
use napi_derive::napi;

/// Parse a listen address (`host:port`, `:port`, `tcp://host:port`, `[::1]:port`,
/// `unix:/path`) and return its canonical form; throws a message naming the address.
#[napi]
pub fn normalize_listen_address(address: String) -> Result<String> {
    baton_core::addr::parse(&address)
        .map(|a| a.to_string())
        .map_err(|e| Error::new(Status::InvalidArg, e.to_string()))
}
