//! Capabilities a path rule can grant, and a compact set of them.

use std::fmt;

/// One capability of Vault's ACL language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    Create,
    Read,
    Update,
    Patch,
    Delete,
    List,
    Sudo,
    Deny,
}

impl Capability {
    /// Every capability, in the alphabetical order of their names (the order Vault's
    /// `sys/capabilities` lists them in).
    pub const ALL: [Capability; 8] = [
        Capability::Create,
        Capability::Delete,
        Capability::Deny,
        Capability::List,
        Capability::Patch,
        Capability::Read,
        Capability::Sudo,
        Capability::Update,
    ];

    /// Parses a capability name as written in a policy. Case-sensitive, like Vault: `"Read"` is not
    /// a capability.
    pub fn parse(s: &str) -> Option<Capability> {
        Some(match s {
            "create" => Capability::Create,
            "read" => Capability::Read,
            "update" => Capability::Update,
            "patch" => Capability::Patch,
            "delete" => Capability::Delete,
            "list" => Capability::List,
            "sudo" => Capability::Sudo,
            "deny" => Capability::Deny,
            _ => return None,
        })
    }

    /// The name as written in policies and returned by `sys/capabilities`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Capability::Create => "create",
            Capability::Read => "read",
            Capability::Update => "update",
            Capability::Patch => "patch",
            Capability::Delete => "delete",
            Capability::List => "list",
            Capability::Sudo => "sudo",
            Capability::Deny => "deny",
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Capability::Create => 1,
            Capability::Read => 1 << 1,
            Capability::Update => 1 << 2,
            Capability::Patch => 1 << 3,
            Capability::Delete => 1 << 4,
            Capability::List => 1 << 5,
            Capability::Sudo => 1 << 6,
            Capability::Deny => 1 << 7,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Capabilities(u8);

impl Capabilities {
    /// The empty set.
    pub const fn empty() -> Capabilities {
        Capabilities(0)
    }

    /// Everything but `deny`: what the root token holds everywhere.
    pub const fn all_grants() -> Capabilities {
        Capabilities(!Capability::Deny.bit())
    }

    /// The set holding only `deny`.
    pub const fn deny() -> Capabilities {
        Capabilities(Capability::Deny.bit())
    }

    pub const fn contains(&self, capability: Capability) -> bool {
        self.0 & capability.bit() != 0
    }

    pub fn insert(&mut self, capability: Capability) {
        self.0 |= capability.bit();
    }

    pub fn remove(&mut self, capability: Capability) {
        self.0 &= !capability.bit();
    }

    #[must_use]
    pub const fn union(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }

    /// Whether every capability of `other` is in `self`.
    pub const fn is_superset(&self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn is_empty(&self) -> bool {
        self.0 == 0
    }

    pub const fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    /// The raw bits, for callers that cache or hash decisions.
    pub const fn bits(&self) -> u8 {
        self.0
    }

    /// Members in alphabetical order of their names.
    pub fn iter(&self) -> impl Iterator<Item = Capability> + '_ {
        Capability::ALL.into_iter().filter(move |c| self.contains(*c))
    }

    /// Names sorted alphabetically, as Vault's `sys/capabilities` returns them.
    pub fn to_strings(&self) -> Vec<String> {
        self.iter().map(|c| c.as_str().to_owned()).collect()
    }
}

impl From<Capability> for Capabilities {
    fn from(capability: Capability) -> Capabilities {
        Capabilities(capability.bit())
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Capabilities {
        let mut set = Capabilities::empty();
        for c in iter {
            set.insert(c);
        }
        set
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, c) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(c.as_str())?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        for c in Capability::ALL {
            assert_eq!(Capability::parse(c.as_str()), Some(c));
        }
        assert_eq!(Capability::parse("Read"), None);
        assert_eq!(Capability::parse("root"), None);
        let names: Vec<&str> = Capability::ALL.iter().map(|c| c.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }

    #[test]
    fn set_operations() {
        let mut set: Capabilities = [Capability::Update, Capability::Read].into_iter().collect();
        assert!(set.contains(Capability::Read));
        assert!(!set.contains(Capability::List));
        assert_eq!(set.to_strings(), vec!["read", "update"]);
        set.insert(Capability::Create);
        assert_eq!(set.len(), 3);
        set.remove(Capability::Read);
        assert_eq!(set.to_strings(), vec!["create", "update"]);
        assert!(Capabilities::empty().is_empty());
        assert!(!Capabilities::all_grants().contains(Capability::Deny));
        assert_eq!(Capabilities::all_grants().len(), 7);
        let u = Capabilities::from(Capability::List).union(Capabilities::deny());
        assert_eq!(u.to_string(), "[deny, list]");
        assert!(u.is_superset(Capabilities::deny()));
    }
}
