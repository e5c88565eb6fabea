//! The policy store: ACL policies behind the barrier, parsed once and cached, and the
//! compiled ACL of each distinct policy set.
//!
//! `root` and `response-wrapping` are built in and never stored; `default` is written at first
//! unseal, may be changed, and may not be deleted.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arcanum_policy::{normalize_name, Acl, Policy, DEFAULT_POLICY, ROOT_POLICY};
use serde::{Deserialize, Serialize};

use arcanum_contract::logical::ApiError;
use arcanum_contract::storage::StorageView;

use crate::wrapping::{RESPONSE_WRAPPING_POLICY, RESPONSE_WRAPPING_POLICY_TEXT};

#[derive(Debug, Serialize, Deserialize)]
struct StoredPolicy {
    name: String,
    policy: String,
}

/// Policies and the ACLs compiled from them.
#[derive(Debug)]
pub struct PolicyStore {
    view: StorageView,
    policies: RwLock<HashMap<String, Arc<Policy>>>,
    /// Keyed by the sorted policy names of a token; cleared whenever a policy changes.
    acls: RwLock<HashMap<Vec<String>, Arc<Acl>>>,
    /// The policy of wrapping tokens (see [`crate::wrapping`]).
    response_wrapping: Arc<Policy>,
}

impl PolicyStore {
    /// Loads every stored policy; writes `default` if it is missing.
    pub async fn load(view: StorageView) -> Result<PolicyStore, ApiError> {
        let response_wrapping = Policy::parse(RESPONSE_WRAPPING_POLICY, RESPONSE_WRAPPING_POLICY_TEXT)
            .map_err(|err| ApiError::new(500, format!("the built-in response-wrapping policy: {err}")))?;
        let store = PolicyStore {
            view,
            policies: RwLock::default(),
            acls: RwLock::default(),
            response_wrapping: Arc::new(response_wrapping),
        };
        for name in store.view.list("").await? {
            let Some(stored) = store.view.get_json::<StoredPolicy>(&name).await? else { continue };
            match Policy::parse(&stored.name, &stored.policy) {
                Ok(policy) => {
                    write(&store.policies).insert(stored.name, Arc::new(policy));
                }
                Err(err) => tracing::error!(policy = %stored.name, error = %err, "stored policy no longer parses"),
            }
        }
        if !read(&store.policies).contains_key(DEFAULT_POLICY) {
            store.put(DEFAULT_POLICY, arcanum_policy::default_policy_text()).await?;
        }
        Ok(store)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Policy>> {
        read(&self.policies).get(&normalize_name(name)).cloned()
    }

    /// Every policy name, `root` included, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = read(&self.policies).keys().cloned().collect();
        names.push(ROOT_POLICY.into());
        names.sort();
        names
    }

    pub fn exists(&self, name: &str) -> bool {
        let name = normalize_name(name);
        name == ROOT_POLICY || read(&self.policies).contains_key(&name)
    }

    /// Parses and stores a policy; nothing is stored when it does not parse.
    pub async fn put(&self, name: &str, text: &str) -> Result<(), ApiError> {
        let name = normalize_name(name);
        validate_name(&name)?;
        if name == ROOT_POLICY || name == RESPONSE_WRAPPING_POLICY {
            return Err(ApiError::bad_request(format!("cannot update {name:?} policy")));
        }
        if text.trim().is_empty() {
            return Err(ApiError::bad_request("'policy' parameter not supplied or empty"));
        }
        let policy = Policy::parse(&name, text)
            .map_err(|err| ApiError::bad_request(format!("failed to parse policy: {err}")))?;
        self.view.put_json(&name, &StoredPolicy { name: name.clone(), policy: text.to_owned() }).await?;
        write(&self.policies).insert(name, Arc::new(policy));
        write(&self.acls).clear();
        Ok(())
    }

    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        let name = normalize_name(name);
        match name.as_str() {
            ROOT_POLICY | RESPONSE_WRAPPING_POLICY => {
                return Err(ApiError::bad_request(format!("cannot delete {name:?} policy")))
            }
            DEFAULT_POLICY => return Err(ApiError::bad_request("cannot delete \"default\" policy")),
            _ => {}
        }
        self.view.delete(&name).await?;
        write(&self.policies).remove(&name);
        write(&self.acls).clear();
        Ok(())
    }

    /// The ACL for a set of policy names; names without a policy grant nothing.
    pub fn acl(&self, names: &[String]) -> Arc<Acl> {
        // A token's policies are stored sorted and normalised: they are the key as they are.
        // (`normal` is `normalize_name(n) == n` without allocating, for ASCII names.)
        let normal = |n: &String| n.is_ascii() && !n.bytes().any(|b| b.is_ascii_uppercase()) && n.trim() == n;
        if names.windows(2).all(|pair| pair[0] < pair[1]) && names.iter().all(normal) {
            if let Some(acl) = read(&self.acls).get(names) {
                return Arc::clone(acl);
            }
        }
        let mut key: Vec<String> = names.iter().map(|n| normalize_name(n)).collect();
        key.sort();
        key.dedup();
        if let Some(acl) = read(&self.acls).get(&key) {
            return Arc::clone(acl);
        }
        let acl = if key.iter().any(|n| n == ROOT_POLICY) {
            Arc::new(Acl::root())
        } else {
            let policies = read(&self.policies);
            let found: Vec<&Policy> = key
                .iter()
                .filter_map(
                    |n| if n == RESPONSE_WRAPPING_POLICY { Some(&self.response_wrapping) } else { policies.get(n) },
                )
                .map(|p| p.as_ref())
                .collect();
            Arc::new(Acl::new(&found))
        };
        write(&self.acls).insert(key, Arc::clone(&acl));
        acl
    }
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.contains(['/', '\0']) || name.chars().any(char::is_control) || name.len() > 128 {
        return Err(ApiError::bad_request(format!(
            "invalid policy name {:?}",
            name.chars().take(40).collect::<String>()
        )));
    }
    Ok(())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arcanum_contract::storage::MemoryStorage;

    /// A token's stored list (sorted, normalised) and any spelling of the same set share one
    /// compiled ACL, and a list that is not in stored form still finds it.
    #[tokio::test]
    async fn every_spelling_of_a_policy_set_finds_the_same_acl() {
        let store = PolicyStore::load(StorageView::new(MemoryStorage::new(), "sys/policy/")).await.unwrap();
        store.put("app", r#"path "secret/*" { capabilities = ["read"] }"#).await.unwrap();
        let stored = vec!["app".to_owned(), "default".to_owned()];
        let first = store.acl(&stored);
        for spelling in [vec!["default", "app"], vec![" App ", "default", "app"], vec!["APP", "Default"]] {
            let names: Vec<String> = spelling.iter().map(|n| (*n).to_owned()).collect();
            assert!(Arc::ptr_eq(&store.acl(&names), &first), "{spelling:?}");
        }
        assert!(Arc::ptr_eq(&store.acl(&stored), &first));
        assert!(!Arc::ptr_eq(&store.acl(&["default".to_owned()]), &first));
    }
}
