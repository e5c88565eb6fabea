//! The compiled union of a token's policies, and the per-request access decision (Vault's `NewACL` and
//! `AllowOperation` semantics).
//!
//! Build cost is paid once per policy set so that a check is a single walk of a byte trie (exact and
//! glob rules) plus a scan of the `+` rules; the only allocations are splitting the request path (when
//! `+` rules exist) and lower-casing request parameter names.

use crate::capability::{Capabilities, Capability};
use crate::params::check_parameters;
use crate::parse::{ParameterMap, PathRule, PatternKind, Policy};
use crate::{normalize_name, ROOT_POLICY};
use serde_json::{Map, Value};
use std::cmp::{Ordering, Reverse};
use std::collections::BTreeMap;
use std::time::Duration;

/// The logical operation of a request. The server maps HTTP methods (and, for writes, the backend's
/// existence check: create vs update) onto these; renew/revoke/rollback map to `Update` as in Vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    List,
    Create,
    Update,
    Patch,
    Delete,
}

impl Operation {
    /// The capability a rule must grant for this operation.
    pub fn capability(self) -> Capability {
        match self {
            Operation::Read => Capability::Read,
            Operation::List => Capability::List,
            Operation::Create => Capability::Create,
            Operation::Update => Capability::Update,
            Operation::Patch => Capability::Patch,
            Operation::Delete => Capability::Delete,
        }
    }

    /// Operations whose request data is checked against parameter constraints (Vault includes reads,
    /// whose data is the query string).
    fn checks_parameters(self) -> bool {
        matches!(self, Operation::Read | Operation::Create | Operation::Update | Operation::Patch)
    }
}

/// What the request wants.
#[derive(Debug, Clone, Copy)]
pub struct AclRequest<'a> {
    /// Normalised, no leading `/`; for `List` it ends with `/` (the folder path).
    pub path: &'a str,
    pub operation: Operation,
    /// Request data, checked for read/create/update/patch.
    pub parameters: Option<&'a Map<String, Value>>,
    /// Set by the server for root-protected paths: `sudo` is then required as well.
    pub needs_sudo: bool,
}

impl<'a> AclRequest<'a> {
    /// A request without data that does not need sudo.
    pub fn new(path: &'a str, operation: Operation) -> AclRequest<'a> {
        AclRequest { path, operation, parameters: None, needs_sudo: false }
    }

    #[must_use]
    pub fn with_parameters(mut self, parameters: &'a Map<String, Value>) -> AclRequest<'a> {
        self.parameters = Some(parameters);
        self
    }

    #[must_use]
    pub fn with_sudo(mut self, needs_sudo: bool) -> AclRequest<'a> {
        self.needs_sudo = needs_sudo;
        self
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The capabilities the token holds on the path (empty if none matched; only `Deny` if a deny matched).
    pub capabilities: Capabilities,
    /// Whether the token holds sudo on the path (root always true).
    pub sudo: bool,
    /// For a refusal caused by request parameters (or wrapping constraints): a message naming the cause,
    /// e.g. `parameter "ttl" is denied`. None otherwise.
    pub reason: Option<String>,
}

impl Decision {
    fn refused(capabilities: Capabilities, reason: Option<String>) -> Decision {
        Decision { allowed: false, sudo: capabilities.contains(Capability::Sudo), capabilities, reason }
    }
}

/// The merged constraints of every rule sharing one pattern.
#[derive(Debug, Clone)]
pub(crate) struct Permissions {
    pub(crate) capabilities: Capabilities,
    pub(crate) allowed: ParameterMap,
    pub(crate) denied: ParameterMap,
    pub(crate) required: Vec<String>,
    min_wrapping_ttl: Duration,
    max_wrapping_ttl: Duration,
}

impl Permissions {
    fn is_deny(&self) -> bool {
        self.capabilities.contains(Capability::Deny)
    }

    fn from_rule(rule: &PathRule) -> Permissions {
        Permissions {
            capabilities: rule.capabilities(),
            allowed: rule.allowed_parameters().clone(),
            denied: rule.denied_parameters().clone(),
            required: rule.required_parameters().to_vec(),
            min_wrapping_ttl: rule.min_wrapping_ttl(),
            max_wrapping_ttl: rule.max_wrapping_ttl(),
        }
    }

    /// Vault's merge of two stanzas with the identical path: deny absorbs everything; otherwise
    /// capabilities are OR-ed, the smaller non-zero wrapping TTLs win, parameter lists are concatenated
    /// with an empty list ("any value") winning, and required parameters are united. Every step is
    /// commutative, so the policy order does not matter.
    fn merge(&mut self, other: &Permissions) {
        if self.capabilities.contains(Capability::Deny) {
            return;
        }
        if other.capabilities.contains(Capability::Deny) {
            *self = Permissions::deny();
            return;
        }
        self.capabilities = self.capabilities.union(other.capabilities);
        self.min_wrapping_ttl = smaller_nonzero(self.min_wrapping_ttl, other.min_wrapping_ttl);
        self.max_wrapping_ttl = smaller_nonzero(self.max_wrapping_ttl, other.max_wrapping_ttl);
        merge_parameters(&mut self.allowed, &other.allowed);
        merge_parameters(&mut self.denied, &other.denied);
        for name in &other.required {
            if !self.required.contains(name) {
                self.required.push(name.clone());
            }
        }
    }

    fn deny() -> Permissions {
        Permissions {
            capabilities: Capabilities::deny(),
            allowed: ParameterMap::new(),
            denied: ParameterMap::new(),
            required: Vec::new(),
            min_wrapping_ttl: Duration::ZERO,
            max_wrapping_ttl: Duration::ZERO,
        }
    }
}

fn smaller_nonzero(a: Duration, b: Duration) -> Duration {
    match (a.is_zero(), b.is_zero()) {
        (true, _) => b,
        (_, true) => a,
        _ => a.min(b),
    }
}

fn merge_parameters(into: &mut ParameterMap, from: &ParameterMap) {
    for (key, values) in from {
        match into.get_mut(key) {
            Some(existing) if existing.is_empty() => {}
            Some(existing) if values.is_empty() => existing.clear(),
            Some(existing) => existing.extend(values.iter().cloned()),
            None => {
                into.insert(key.clone(), values.clone());
            }
        }
    }
}

/// A node of the byte trie holding exact and glob (`*`-suffix) patterns.
#[derive(Debug, Clone, Default)]
struct TrieNode {
    /// Sorted by byte.
    children: Vec<(u8, u32)>,
    exact: Option<u32>,
    prefix: Option<u32>,
}

#[derive(Debug, Clone)]
enum Segment {
    /// `+`: any one segment.
    Any,
    Literal(Box<str>),
}

/// A pattern with `+` segments, pre-split, with the fields Vault's priority order compares.
#[derive(Debug, Clone)]
struct SegmentRule {
    /// The pattern without its trailing `*`.
    pattern: Box<str>,
    segments: Vec<Segment>,
    is_prefix: bool,
    first_wildcard: usize,
    wildcards: usize,
    permissions: u32,
}

impl SegmentRule {
    fn new(full: &str, permissions: u32) -> SegmentRule {
        let (pattern, is_prefix) = match full.strip_suffix('*') {
            Some(stripped) => (stripped, true),
            None => (full, false),
        };
        let segments: Vec<Segment> =
            pattern.split('/').map(|s| if s == "+" { Segment::Any } else { Segment::Literal(s.into()) }).collect();
        SegmentRule {
            pattern: pattern.into(),
            wildcards: segments.iter().filter(|s| matches!(s, Segment::Any)).count(),
            segments,
            is_prefix,
            first_wildcard: full.find('+').unwrap_or(full.len()),
            permissions,
        }
    }

    /// Vault's segment matching: `+` takes one whole segment; without a trailing `*` the segment counts
    /// must be equal, with it the last pattern segment is a string prefix of the path segment there.
    fn matches(&self, parts: &[&str]) -> bool {
        if parts.len() < self.segments.len() || (!self.is_prefix && parts.len() != self.segments.len()) {
            return false;
        }
        let last = self.segments.len() - 1;
        self.segments.iter().zip(parts).enumerate().all(|(i, (segment, part))| match segment {
            Segment::Any => true,
            Segment::Literal(literal) => {
                **literal == **part || (self.is_prefix && i == last && part.starts_with(&**literal))
            }
        })
    }
}

impl SegmentRule {
    /// The mount-visibility walk of Vault's `CheckAllowedFromNonExactPaths` (its `bareMount` mode).
    fn covers_mount(&self, parts: &[&str], last_mount_segment: usize, mount_path: &str) -> bool {
        let last = self.segments.len().saturating_sub(1);
        let mut matched: Vec<&str> = Vec::with_capacity(parts.len());
        for (i, segment) in self.segments.iter().enumerate() {
            let Some(&part) = parts.get(i) else { return false };
            match segment {
                Segment::Any => matched.push(part),
                Segment::Literal(literal) if **literal == *part => matched.push(part),
                Segment::Literal(literal) if self.is_prefix && i == last && part.starts_with(&**literal) => {
                    matched.extend_from_slice(&parts[i..]);
                }
                Segment::Literal(_) => {}
            }
            if i == last_mount_segment {
                let mut joined = matched.join("/");
                joined.push('/');
                return joined.starts_with(mount_path);
            }
        }
        false
    }
}

/// Whether a capability set grants anything at all (a deny set grants nothing).
fn grants_something(capabilities: Capabilities) -> bool {
    !capabilities.is_empty() && !capabilities.contains(Capability::Deny)
}

/// A non-exact candidate, ordered by Vault's priority: later first wildcard, then not ending in `*`,
/// then fewer `+` segments, then longer pattern, then lexically larger pattern.
#[derive(Debug, Clone, Copy)]
struct Candidate<'p> {
    first_wildcard: usize,
    is_prefix: bool,
    wildcards: usize,
    pattern: &'p str,
    permissions: u32,
}

impl Candidate<'_> {
    fn priority(&self) -> (usize, bool, Reverse<usize>, usize, &str) {
        (self.first_wildcard, !self.is_prefix, Reverse(self.wildcards), self.pattern.len(), self.pattern)
    }
}

/// What one walk of the trie learns about a path (and, for list requests, that path minus its final `/`).
#[derive(Debug, Default)]
struct TrieHits {
    exact: Option<u32>,
    exact_trimmed: Option<u32>,
    /// (permissions, prefix length) of the longest glob that is a prefix of the path.
    prefix: Option<(u32, usize)>,
    prefix_trimmed: Option<(u32, usize)>,
}

/// The compiled union of a token's policies. Build once per policy set (the server caches it).
#[derive(Debug, Clone)]
pub struct Acl {
    root: bool,
    permissions: Vec<Permissions>,
    trie: Vec<TrieNode>,
    segment_rules: Vec<SegmentRule>,
}

impl Default for Acl {
    /// The ACL of no policies: everything is denied.
    fn default() -> Acl {
        Acl::new(&[])
    }
}

impl Acl {
    /// Merges the given policies. Unknown policy names are simply absent (the server passes the ones it
    /// found). If any policy is named `root` the result is the root ACL. Templated rules are left out
    /// until identity templating exists.
    pub fn new(policies: &[&Policy]) -> Acl {
        if policies.iter().any(|p| normalize_name(p.name()) == ROOT_POLICY) {
            return Acl::root();
        }
        // Keyed by (kind, path as written) — Vault merges only identical patterns, and keeps exact and
        // glob patterns apart even when they share the text before the `*`.
        let mut merged: BTreeMap<(PatternKind, &str), Permissions> = BTreeMap::new();
        for rule in policies.iter().flat_map(|p| p.rules()) {
            if rule.is_templated() {
                continue;
            }
            let incoming = Permissions::from_rule(rule);
            merged
                .entry((rule.kind(), rule.path()))
                .and_modify(|existing| existing.merge(&incoming))
                .or_insert(incoming);
        }

        let mut acl =
            Acl { root: false, permissions: Vec::new(), trie: vec![TrieNode::default()], segment_rules: Vec::new() };
        for ((kind, path), permissions) in merged {
            let index = u32::try_from(acl.permissions.len()).unwrap_or(u32::MAX);
            acl.permissions.push(permissions);
            match kind {
                PatternKind::Exact => acl.trie_node(path.as_bytes()).exact = Some(index),
                PatternKind::Prefix => {
                    let prefix = path.strip_suffix('*').unwrap_or(path);
                    acl.trie_node(prefix.as_bytes()).prefix = Some(index);
                }
                PatternKind::Segment => acl.segment_rules.push(SegmentRule::new(path, index)),
            }
        }
        acl
    }

    /// The root ACL: everything allowed, sudo everywhere.
    pub fn root() -> Acl {
        Acl { root: true, permissions: Vec::new(), trie: vec![TrieNode::default()], segment_rules: Vec::new() }
    }

    pub fn is_root(&self) -> bool {
        self.root
    }

    /// Decides a request that is not response-wrapped. A rule with `min_wrapping_ttl` or
    /// `max_wrapping_ttl` refuses such requests, as Vault refuses them; use [`Acl::check_wrapped`] once
    /// the server supports `X-Vault-Wrap-TTL`.
    pub fn check(&self, request: &AclRequest<'_>) -> Decision {
        self.check_wrapped(request, None)
    }

    /// Decides a request; `wrap_ttl` is the TTL the client asked its response to be wrapped with.
    pub fn check_wrapped(&self, request: &AclRequest<'_>, wrap_ttl: Option<Duration>) -> Decision {
        if self.root {
            return Decision { allowed: true, capabilities: Capabilities::all_grants(), sudo: true, reason: None };
        }
        let Some(permissions) = self.lookup(request.path, request.operation == Operation::List) else {
            return Decision::refused(Capabilities::empty(), None);
        };
        let capabilities = permissions.capabilities;
        if !capabilities.contains(request.operation.capability()) {
            return Decision::refused(capabilities, None);
        }
        if let Err(reason) = check_wrapping(permissions, wrap_ttl) {
            return Decision::refused(capabilities, Some(reason));
        }
        if request.operation.checks_parameters() {
            if let Err(reason) = check_parameters(permissions, request.parameters) {
                return Decision::refused(capabilities, Some(reason));
            }
        }
        let sudo = capabilities.contains(Capability::Sudo);
        if request.needs_sudo && !sudo {
            return Decision::refused(capabilities, None);
        }
        Decision { allowed: true, capabilities, sudo, reason: None }
    }

    /// What `sys/capabilities` returns for a path: sorted names; `["root"]` for root; `["deny"]` when
    /// nothing matched or a deny matched. Like Vault it evaluates the path as a list request, so
    /// `secret/foo/` also finds a rule for `secret/foo`.
    pub fn capabilities(&self, path: &str) -> Vec<String> {
        if self.root {
            return vec![ROOT_POLICY.to_owned()];
        }
        let capabilities = self.lookup(path, true).map(|p| p.capabilities).unwrap_or_default();
        if capabilities.is_empty() || capabilities.contains(Capability::Deny) {
            return vec![Capability::Deny.as_str().to_owned()];
        }
        capabilities.to_strings()
    }

    /// Vault's `hasMountAccess`, which decides whether a mount is shown to a token (for example by
    /// `sys/internal/ui/mounts`): true if the token holds any capability on `mount_path` itself (a mount
    /// path such as `secret/`), or a non-deny rule grants something at a path under it, or a `+` rule
    /// could match paths under it.
    ///
    /// One deliberate difference: Vault also answers true when the only thing covering the mount is a
    /// glob *deny* (and the ACL has no `+` rules) — a quirk that reveals a denied mount; here a deny
    /// never grants visibility.
    pub fn has_mount_access(&self, mount_path: &str) -> bool {
        if self.root {
            return true;
        }
        let path = mount_path.trim_start_matches('/');
        if self.lookup(path, true).is_some_and(|p| grants_something(p.capabilities)) {
            return true;
        }
        if self.any_grant_in_subtree(path) {
            return true;
        }
        // A `+` rule is compared segment by segment with the mount's segments only (everything before
        // the final `/`); mismatching segments are skipped, as in Vault, so only a rule whose leading
        // segments reproduce the mount path counts.
        let parts: Vec<&str> = path.split('/').collect();
        let Some(last_mount_segment) = parts.len().checked_sub(2) else {
            return false;
        };
        self.segment_rules.iter().any(|rule| {
            let granted =
                self.permissions.get(rule.permissions as usize).is_some_and(|p| grants_something(p.capabilities));
            granted && rule.covers_mount(&parts, last_mount_segment, path)
        })
    }

    /// Whether an exact or glob rule whose pattern starts with `prefix` grants anything.
    fn any_grant_in_subtree(&self, prefix: &str) -> bool {
        let mut node = 0usize;
        for &byte in prefix.as_bytes() {
            let Some(n) = self.trie.get(node) else { return false };
            match n.children.binary_search_by_key(&byte, |&(b, _)| b) {
                Ok(i) => node = n.children[i].1 as usize,
                Err(_) => return false,
            }
        }
        let mut pending = vec![node];
        while let Some(index) = pending.pop() {
            let Some(n) = self.trie.get(index) else { continue };
            let granted = [n.exact, n.prefix]
                .into_iter()
                .flatten()
                .filter_map(|p| self.permissions.get(p as usize))
                .any(|p| grants_something(p.capabilities));
            if granted {
                return true;
            }
            pending.extend(n.children.iter().map(|&(_, child)| child as usize));
        }
        false
    }

    fn trie_node(&mut self, bytes: &[u8]) -> &mut TrieNode {
        let mut node = 0usize;
        for &byte in bytes {
            node = match self.trie[node].children.binary_search_by_key(&byte, |&(b, _)| b) {
                Ok(i) => self.trie[node].children[i].1 as usize,
                Err(i) => {
                    let next = self.trie.len();
                    self.trie[node].children.insert(i, (byte, u32::try_from(next).unwrap_or(u32::MAX)));
                    self.trie.push(TrieNode::default());
                    next
                }
            };
        }
        &mut self.trie[node]
    }

    fn walk(&self, path: &str, trimmed_len: usize) -> TrieHits {
        let mut hits = TrieHits::default();
        let mut node = &self.trie[0];
        let mut depth = 0usize;
        let bytes = path.as_bytes();
        loop {
            if let Some(p) = node.prefix {
                hits.prefix = Some((p, depth));
                if depth <= trimmed_len {
                    hits.prefix_trimmed = Some((p, depth));
                }
            }
            if depth == trimmed_len {
                hits.exact_trimmed = node.exact;
            }
            let Some(&byte) = bytes.get(depth) else {
                hits.exact = node.exact;
                return hits;
            };
            match node.children.binary_search_by_key(&byte, |&(b, _)| b) {
                Ok(i) => match self.trie.get(node.children[i].1 as usize) {
                    Some(next) => node = next,
                    None => return hits,
                },
                Err(_) => return hits,
            }
            depth += 1;
        }
    }

    /// Vault's lookup order: exact path; for lists the exact path without its trailing `/`; for lists
    /// the best non-exact match of that trimmed path (so a more specific rule for `foo/private` is not
    /// bypassed by listing `foo/private/` — GHSA-xp3c-3jw3-4vcr); then the best non-exact match.
    fn lookup(&self, path: &str, is_list: bool) -> Option<&Permissions> {
        let path = path.trim_start_matches('/');
        let trimmed = if is_list { path.strip_suffix('/') } else { None };
        let hits = self.walk(path, trimmed.map_or(usize::MAX, str::len));
        if let Some(index) = hits.exact.or(if is_list { hits.exact_trimmed } else { None }) {
            return self.permissions.get(index as usize);
        }
        // A list is judged on the folder path (`a/b/`) as Vault does, and also on the path
        // without its slash (`a/b`), because a deny there (`a/+`) must not be sidestepped by
        // listing. A deny from either side wins (GHSA-xp3c-3jw3-4vcr); otherwise the folder
        // path's rule decides.
        let full = self.best_non_exact(path, hits.prefix).and_then(|i| self.permissions.get(i as usize));
        let trimmed = trimmed
            .and_then(|t| self.best_non_exact(t, hits.prefix_trimmed))
            .and_then(|i| self.permissions.get(i as usize));
        match (full, trimmed) {
            (Some(full), Some(trimmed)) if trimmed.is_deny() && !full.is_deny() => Some(trimmed),
            (full, trimmed) => full.or(trimmed),
        }
    }

    fn best_non_exact(&self, path: &str, prefix: Option<(u32, usize)>) -> Option<u32> {
        let prefix = prefix.and_then(|(permissions, len)| {
            Some(Candidate {
                first_wildcard: len,
                is_prefix: true,
                wildcards: 0,
                pattern: path.get(..len)?,
                permissions,
            })
        });
        if self.segment_rules.is_empty() {
            return prefix.map(|c| c.permissions);
        }
        let parts: Vec<&str> = path.split('/').collect();
        let mut best = prefix;
        for rule in &self.segment_rules {
            if !rule.matches(&parts) {
                continue;
            }
            let candidate = Candidate {
                first_wildcard: rule.first_wildcard,
                is_prefix: rule.is_prefix,
                wildcards: rule.wildcards,
                pattern: &rule.pattern,
                permissions: rule.permissions,
            };
            best = match best {
                Some(current) if current.priority().cmp(&candidate.priority()) != Ordering::Less => Some(current),
                _ => Some(candidate),
            };
        }
        best.map(|c| c.permissions)
    }
}

fn check_wrapping(permissions: &Permissions, wrap_ttl: Option<Duration>) -> Result<(), String> {
    let (min, max) = (permissions.min_wrapping_ttl, permissions.max_wrapping_ttl);
    if !max.is_zero() && wrap_ttl.is_none_or(|ttl| ttl > max) {
        return Err(format!("response wrapping with a TTL of at most {}s is required", max.as_secs_f64()));
    }
    if !min.is_zero() && wrap_ttl.is_none_or(|ttl| ttl < min) {
        return Err(format!("response wrapping with a TTL of at least {}s is required", min.as_secs_f64()));
    }
    // Only reachable through merging: each stanza was checked on parse.
    if !min.is_zero() && !max.is_zero() && max < min {
        return Err("the merged policies' wrapping TTL constraints conflict".to_owned());
    }
    Ok(())
}
