//! The password policies of `sys/policies/password`: stored behind the barrier as their HCL text, and
//! the system-view lookup through which secret engines generate passwords from a named policy (an
//! engine reaches them through [`StorageView::password_policies`](crate::storage::StorageView), the
//! one store outside its own prefix it may read; only `sys/` writes them).

use std::sync::Arc;

use arcanum_policy::PasswordPolicy;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::logical::ApiError;
use crate::storage::{LogicalStorage, StorageView};

/// Where the policies live (Vault's own key prefix for them).
const PREFIX: &str = "sys/password_policy/";

#[derive(Serialize, Deserialize)]
struct StoredPolicy {
    policy: String,
}

/// The stored password policies. Cheap to make: a view on the barrier.
#[derive(Debug, Clone)]
pub struct PasswordPolicies {
    view: StorageView,
}

impl PasswordPolicies {
    pub fn new(storage: Arc<dyn LogicalStorage>) -> PasswordPolicies {
        PasswordPolicies { view: StorageView::new(storage, PREFIX) }
    }

    /// Validates `text` as Vault does on write (a 400 naming the problem) and stores it.
    pub async fn put(&self, name: &str, text: &str) -> Result<(), ApiError> {
        check_name(name)?;
        if text.trim().is_empty() {
            return Err(ApiError::bad_request("missing policy"));
        }
        PasswordPolicy::parse(text).map_err(|err| ApiError::bad_request(err.to_string()))?;
        self.view.put_json(name, &StoredPolicy { policy: text.to_owned() }).await
    }

    /// The policy text as written.
    pub async fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        check_name(name)?;
        Ok(self.view.get_json::<StoredPolicy>(name).await?.map(|stored| stored.policy))
    }

    /// The parsed policy; a stored text that no longer parses is a server error, not the caller's.
    pub async fn get(&self, name: &str) -> Result<Option<PasswordPolicy>, ApiError> {
        let Some(text) = self.text(name).await? else { return Ok(None) };
        PasswordPolicy::parse(&text).map(Some).map_err(|err| {
            tracing::error!(policy = name, error = %err, "a stored password policy no longer parses");
            ApiError::new(500, "stored password policy configuration failed to parse")
        })
    }

    /// A password from the named policy; `None` when there is no such policy.
    pub async fn generate(&self, name: &str) -> Result<Option<Zeroizing<String>>, ApiError> {
        Ok(self.get(name).await?.map(|policy| Zeroizing::new(policy.generate(&mut OsRng))))
    }

    /// Deleting a policy that does not exist succeeds, as in Vault.
    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        check_name(name)?;
        self.view.delete(name).await
    }

    /// Every policy name, `/` included, sorted.
    pub async fn names(&self) -> Result<Vec<String>, ApiError> {
        let mut names = self.view.list_recursive("").await?;
        names.sort();
        Ok(names)
    }
}

/// Names are Vault's `.+`: any text, case kept, `/` allowed; but never a storage path trick.
fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request("missing policy name"));
    }
    if name.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") {
        return Err(ApiError::bad_request(format!("invalid password policy name {name:?}")));
    }
    Ok(())
}
