//! CIDR blocks as roles and tokens bind them (`token_bound_cidrs`, `secret_id_bound_cidrs`):
//! parsed leniently (a bare address is its own /32 or /128), matched against a client address.
//! An empty list allows every address; a list nothing in which parses allows none.

use std::net::IpAddr;

/// `10.0.0.0/8`, or a bare address meaning itself, with host bits cleared.
pub fn parse(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
        .map(|net| net.trunc())
}

/// Whether `addr` falls in one of `cidrs`; an empty list allows all, an unknown address none.
pub fn allows(cidrs: &[String], addr: Option<IpAddr>) -> bool {
    if cidrs.is_empty() {
        return true;
    }
    let Some(addr) = addr else { return false };
    cidrs.iter().filter_map(|cidr| parse(cidr)).any(|net| net.contains(&addr))
}
