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
    // An IPv4 client on a dual-stack listener arrives as ::ffff:a.b.c.d.
    let Some(addr) = addr.map(|addr| addr.to_canonical()) else { return false };
    cidrs.iter().filter_map(|cidr| parse(cidr)).any(|net| net.contains(&addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_match_plain_and_ipv4_mapped_clients() {
        let bounds = ["10.0.0.0/8".to_owned(), "2001:db8::/32".to_owned()];
        assert!(allows(&bounds, "10.1.2.3".parse().ok()));
        assert!(allows(&bounds, "::ffff:10.1.2.3".parse().ok()), "a dual-stack listener's IPv4 client");
        assert!(allows(&bounds, "2001:db8::7".parse().ok()));
        assert!(!allows(&bounds, "192.168.1.1".parse().ok()));
        assert!(!allows(&bounds, None));
        assert!(allows(&[], None));
        assert!(!allows(&["garbage".to_owned()], "10.1.2.3".parse().ok()), "nothing parses: nothing allowed");
        assert_eq!(parse("10.1.2.3/8").map(|n| n.to_string()).as_deref(), Some("10.0.0.0/8"));
    }
}
