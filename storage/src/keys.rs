//! Key validation and the List algorithm shared by every backend, so that their semantics cannot drift apart.

use crate::{Op, StorageError};

pub(crate) fn validate_key(key: &str) -> Result<(), StorageError> {
    if key.is_empty() {
        return Err(StorageError::InvalidKey("key is empty".to_owned()));
    }
    reject_nul(key, "key")
}

/// Unlike keys, the empty prefix is valid: it lists the root.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), StorageError> {
    reject_nul(prefix, "list prefix")
}

pub(crate) fn validate_ops(ops: &[Op]) -> Result<(), StorageError> {
    ops.iter().try_for_each(|op| validate_key(op.key()))
}

fn reject_nul(s: &str, what: &str) -> Result<(), StorageError> {
    // The key is not echoed: keys can embed identifiers that should not end up in logs or responses.
    match s.find('\0') {
        Some(offset) => Err(StorageError::InvalidKey(format!("{what} contains a NUL byte at offset {offset}"))),
        None => Ok(()),
    }
}

/// Vault's List over a sorted key space.
///
/// `scan_from(start)` must yield the stored keys that are `>= start`, in ascending byte order. Each folder costs one
/// fresh seek past all of its descendants instead of a walk over them, so listing a mount root stays cheap however
/// many records sit below it. Output is sorted and free of duplicates because keys arrive sorted and truncating
/// sorted keys after their first '/' keeps them sorted.
pub(crate) fn list_children<K, I>(
    prefix: &str,
    mut scan_from: impl FnMut(&str) -> I,
) -> Result<Vec<String>, StorageError>
where
    K: AsRef<str>,
    I: Iterator<Item = Result<K, StorageError>>,
{
    let mut children = Vec::new();
    let mut start = prefix.to_owned();
    'seek: loop {
        for key in scan_from(&start) {
            let key = key?;
            let Some(rest) = key.as_ref().strip_prefix(prefix) else {
                break 'seek;
            };
            match rest.find('/') {
                Some(slash) => {
                    children.push(rest[..=slash].to_owned());
                    start = key_after_folder(prefix, &rest[..slash]);
                    continue 'seek;
                }
                // The prefix itself is not one of its own children.
                None if rest.is_empty() => {}
                None => children.push(rest.to_owned()),
            }
        }
        break;
    }
    debug_assert!(children.windows(2).all(|w| w[0] < w[1]));
    Ok(children)
}

/// The smallest string greater than every key under `prefix + name + "/"`: '0' is the byte right after '/'.
fn key_after_folder(prefix: &str, name: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + name.len() + 1);
    s.push_str(prefix);
    s.push_str(name);
    s.push('0');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn list(keys: &[&str], prefix: &str) -> Vec<String> {
        let set: BTreeSet<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        list_children(prefix, |start| set.range(start.to_owned()..).map(|k| Ok::<_, StorageError>(k.as_str())))
            .expect("in-memory listing cannot fail")
    }

    #[test]
    fn lists_immediate_children_once() {
        let keys = ["a", "b/c", "b/d/e", "b.x", "b0", "b", "c/"];
        assert_eq!(list(&keys, ""), ["a", "b", "b.x", "b/", "b0", "c/"]);
        assert_eq!(list(&keys, "b/"), ["c", "d/"]);
        assert_eq!(list(&keys, "c/"), Vec::<String>::new());
        assert_eq!(list(&keys, "zzz/"), Vec::<String>::new());
        assert_eq!(list(&[], ""), Vec::<String>::new());
    }

    #[test]
    fn raw_prefix_is_not_a_folder_boundary() {
        let keys = ["foo", "foo/bar", "foo/baz/q", "foobar/x", "food", "fo", "fop"];
        assert_eq!(list(&keys, "foo"), ["/", "bar/", "d"]);
        assert_eq!(list(&keys, "fo"), ["o", "o/", "obar/", "od", "p"]);
    }

    #[test]
    fn validation() {
        assert!(matches!(validate_key(""), Err(StorageError::InvalidKey(_))));
        assert!(matches!(validate_key("a\0b"), Err(StorageError::InvalidKey(_))));
        assert!(validate_key("a/b/ключ").is_ok());
        assert!(validate_prefix("").is_ok());
        assert!(matches!(validate_prefix("\0"), Err(StorageError::InvalidKey(_))));
        let ops = vec![Op::Put { key: "ok".into(), value: vec![] }, Op::Delete { key: String::new() }];
        assert!(matches!(validate_ops(&ops), Err(StorageError::InvalidKey(_))));
    }
}
