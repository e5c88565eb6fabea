//! Plaintext key backups in Vault's format, so a key moves between Vault and Arcanum:
//! `backup/:name` answers base64 of Vault's `KeyData` JSON (`policy` and `archived_keys`), and
//! `restore(/:name)` takes one, whichever server wrote it.
//!
//! Vault writes key types as numbers, durations in nanoseconds, ECDSA keys as decimal
//! integers (`ec_d`, `ec_x`, `ec_y`) and RSA keys as Go's `rsa.PrivateKey` (`N`, `E`, `D`,
//! `Primes`, `Precomputed`); the big integers are read and written as raw JSON numbers so no
//! digit is lost. Every version below `min_decryption_version` sits only in the archive, as in
//! Vault.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use super::key::{KeyPolicy, KeyType, KeyVersion, Material, VersionStamp};
use arcanum_contract::clock::rfc3339;
use arcanum_contract::logical::ApiError;

/// Vault's numbers for key types (`keysutil.KeyType`).
const TYPE_CODES: [(u32, KeyType); 11] = [
    (0, KeyType::Aes256Gcm96),
    (1, KeyType::EcdsaP256),
    (2, KeyType::Ed25519),
    (3, KeyType::Rsa2048),
    (4, KeyType::Rsa4096),
    (5, KeyType::ChaCha20Poly1305),
    (6, KeyType::EcdsaP384),
    (7, KeyType::EcdsaP521),
    (8, KeyType::Aes128Gcm96),
    (9, KeyType::Rsa3072),
    (11, KeyType::Hmac),
];

/// Vault's `Kdf_hkdf_sha256`; 0 is the legacy HMAC-SHA256 counter KDF.
const KDF_HKDF_SHA256: u32 = 1;

#[derive(Serialize, Deserialize)]
struct KeyData {
    policy: Policy,
    archived_keys: Option<Archive>,
}

#[derive(Serialize, Deserialize, Default)]
struct Archive {
    keys: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Policy {
    name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    key_size: usize,
    keys: BTreeMap<String, Entry>,
    derived: bool,
    #[serde(default)]
    kdf: u32,
    convergent_encryption: bool,
    exportable: bool,
    min_decryption_version: u32,
    min_encryption_version: u32,
    latest_version: u32,
    #[serde(default)]
    archive_version: u32,
    #[serde(default)]
    archive_min_version: u32,
    #[serde(default)]
    min_available_version: u32,
    deletion_allowed: bool,
    #[serde(default)]
    convergent_version: i64,
    #[serde(rename = "type")]
    kind: u32,
    backup_info: Option<VersionStamp>,
    restore_info: Option<VersionStamp>,
    allow_plaintext_backup: bool,
    #[serde(default)]
    version_template: String,
    #[serde(default)]
    storage_prefix: String,
    /// Nanoseconds.
    #[serde(default)]
    auto_rotate_period: u64,
    #[serde(rename = "Imported", default)]
    imported: bool,
    #[serde(rename = "AllowImportedKeyRotation", default)]
    allow_imported_key_rotation: bool,
}

#[derive(Serialize, Deserialize, Default)]
struct Entry {
    key: Option<String>,
    hmac_key: Option<String>,
    /// RFC 3339.
    #[serde(default = "zero_time")]
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ec_x: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ec_y: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ec_d: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rsa_key: Option<RsaPrivate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rsa_public_key: Option<RsaPublic>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    public_key: String,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    convergent_version: i64,
    #[serde(default)]
    creation_time: i64,
}

/// Go's JSON for `rsa.PrivateKey` (the embedded public key flattened into it).
#[derive(Serialize, Deserialize)]
#[allow(non_snake_case)]
struct RsaPrivate {
    N: Box<RawValue>,
    E: u64,
    D: Box<RawValue>,
    Primes: Vec<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    Precomputed: Option<Precomputed>,
}

#[derive(Serialize, Deserialize)]
#[allow(non_snake_case)]
struct Precomputed {
    Dp: Option<Box<RawValue>>,
    Dq: Option<Box<RawValue>>,
    Qinv: Option<Box<RawValue>>,
    #[serde(default)]
    CRTValues: Vec<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
#[allow(non_snake_case)]
struct RsaPublic {
    N: Box<RawValue>,
    E: u64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

fn zero_time() -> String {
    "0001-01-01T00:00:00Z".into()
}

fn corrupt(what: &str) -> ApiError {
    ApiError::bad_request(format!("invalid backup: {what}"))
}

/// A big integer as a raw JSON number.
fn big_number(value: &rsa::BigUint) -> Result<Box<RawValue>, ApiError> {
    RawValue::from_string(value.to_str_radix(10)).map_err(|_| ApiError::internal())
}

fn parse_big(raw: &RawValue, what: &str) -> Result<rsa::BigUint, ApiError> {
    rsa::BigUint::parse_bytes(raw.get().trim().as_bytes(), 10).ok_or_else(|| corrupt(what))
}

/// `bytes` as an unsigned big-endian integer, written as a JSON number.
fn bytes_number(bytes: &[u8]) -> Result<Box<RawValue>, ApiError> {
    big_number(&rsa::BigUint::from_bytes_be(bytes))
}

/// The field-sized big-endian bytes of a decimal integer.
fn number_bytes(raw: &RawValue, len: usize, what: &str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let bytes = Zeroizing::new(parse_big(raw, what)?.to_bytes_be());
    if bytes.len() > len {
        return Err(corrupt(what));
    }
    let mut padded = Zeroizing::new(vec![0u8; len - bytes.len()]);
    padded.extend_from_slice(&bytes);
    Ok(padded)
}

/// Vault's entry for one version.
fn entry(policy: &KeyPolicy, version: &KeyVersion) -> Result<Entry, ApiError> {
    let kind = policy.kind;
    let mut entry = Entry {
        hmac_key: Some(B64.encode(version.hmac_key.bytes())),
        time: rfc3339(version.creation_time),
        creation_time: version.creation_time,
        convergent_version: i64::from(version.convergent_version),
        ..Entry::default()
    };
    match kind {
        KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::EcdsaP521 => {
            let (x, y) = super::asymmetric::ec_point(kind, &version.key)?;
            entry.ec_d = Some(bytes_number(version.key.bytes())?);
            entry.ec_x = Some(bytes_number(&x)?);
            entry.ec_y = Some(bytes_number(&y)?);
            entry.public_key = super::asymmetric::public_key(kind, &version.key, None)?.0;
        }
        kind if kind.is_rsa() => {
            use rsa::traits::{PrivateKeyParts, PublicKeyParts};
            let key = super::asymmetric::rsa_private(&version.key)?;
            let number = |value: Option<&rsa::BigUint>| value.map(big_number).transpose();
            let qinv = key.crt_coefficient();
            let e: u64 = key.e().to_str_radix(10).parse().map_err(|_| ApiError::internal())?;
            entry.rsa_key = Some(RsaPrivate {
                N: big_number(key.n())?,
                E: e,
                D: big_number(key.d())?,
                Primes: key.primes().iter().map(big_number).collect::<Result<_, _>>()?,
                Precomputed: Some(Precomputed {
                    Dp: number(key.dp())?,
                    Dq: number(key.dq())?,
                    Qinv: number(qinv.as_ref())?,
                    CRTValues: Vec::new(),
                }),
            });
            entry.rsa_public_key = Some(RsaPublic { N: big_number(key.n())?, E: e });
        }
        KeyType::Ed25519 => {
            entry.key = Some(B64.encode(version.key.bytes()));
            entry.public_key = super::asymmetric::public_key(kind, &version.key, None)?.0;
        }
        _ => entry.key = Some(B64.encode(version.key.bytes())),
    }
    if kind == KeyType::Hmac {
        // Vault keeps an hmac key's material in both fields.
        entry.hmac_key = entry.key.clone();
    }
    Ok(entry)
}

/// `backup/:name`: base64 of Vault's `KeyData` JSON for `policy` (its `backup_info` set).
pub fn backup(policy: &KeyPolicy) -> Result<Zeroizing<String>, ApiError> {
    let code = TYPE_CODES
        .iter()
        .find(|(_, kind)| *kind == policy.kind)
        .map(|(code, _)| *code)
        .ok_or_else(ApiError::internal)?;
    let mut keys = BTreeMap::new();
    let mut archive = Archive::default();
    // Vault's archive: version v at index v - min_available_version (index 0 empty when that is 0).
    for version in policy.min_available_version..=policy.latest_version {
        match policy.versions.get(&version) {
            Some(stored) => {
                if version >= policy.min_decryption_version {
                    keys.insert(version.to_string(), entry(policy, stored)?);
                }
                archive.keys.push(entry(policy, stored)?);
            }
            None => archive.keys.push(Entry { time: zero_time(), ..Entry::default() }),
        }
    }
    let data = KeyData {
        policy: Policy {
            name: policy.name.clone(),
            key_size: policy.key_size,
            keys,
            derived: policy.derived,
            kdf: if policy.derived { KDF_HKDF_SHA256 } else { 0 },
            convergent_encryption: policy.convergent_encryption,
            exportable: policy.exportable,
            min_decryption_version: policy.min_decryption_version,
            min_encryption_version: policy.min_encryption_version,
            latest_version: policy.latest_version,
            archive_version: policy.latest_version,
            archive_min_version: policy.min_available_version,
            min_available_version: policy.min_available_version,
            deletion_allowed: policy.deletion_allowed,
            convergent_version: if policy.convergent_encryption { -1 } else { 0 },
            kind: code,
            backup_info: policy.backup_info.clone(),
            restore_info: policy.restore_info.clone(),
            allow_plaintext_backup: policy.allow_plaintext_backup,
            version_template: String::new(),
            storage_prefix: String::new(),
            auto_rotate_period: policy.auto_rotate_period.saturating_mul(1_000_000_000),
            imported: false,
            allow_imported_key_rotation: false,
        },
        archived_keys: Some(archive),
    };
    let json = Zeroizing::new(serde_json::to_vec(&data).map_err(|_| ApiError::internal())?);
    Ok(Zeroizing::new(B64.encode(&*json)))
}

/// The key material of one backed-up version, as this server stores it.
fn material(kind: KeyType, entry: &Entry, version: u32) -> Result<Material, ApiError> {
    let what = |field: &str| format!("version {version} has no usable {field}");
    let base64 = |field: &Option<String>, name: &str| -> Result<Material, ApiError> {
        let text = field.as_deref().ok_or_else(|| corrupt(&what(name)))?;
        B64.decode(text).map(Material::new).map_err(|_| corrupt(&what(name)))
    };
    let material = match kind {
        KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::EcdsaP521 => {
            let d = entry.ec_d.as_deref().ok_or_else(|| corrupt(&what("ec_d")))?;
            Material::new(number_bytes(d, super::asymmetric::field_len(kind), "ec_d")?.to_vec())
        }
        kind if kind.is_rsa() => {
            let key = entry.rsa_key.as_ref().ok_or_else(|| corrupt(&what("rsa_key")))?;
            let primes =
                key.Primes.iter().map(|prime| parse_big(prime, "rsa_key.Primes")).collect::<Result<Vec<_>, _>>()?;
            let private = rsa::RsaPrivateKey::from_components(
                parse_big(&key.N, "rsa_key.N")?,
                rsa::BigUint::from(key.E),
                parse_big(&key.D, "rsa_key.D")?,
                primes,
            )
            .map_err(|_| corrupt("rsa_key does not make an RSA key"))?;
            private.validate().map_err(|_| corrupt("rsa_key does not make a valid RSA key"))?;
            super::asymmetric::rsa_material(&private)?
        }
        _ => base64(&entry.key, "key")?,
    };
    let expected = match kind {
        KeyType::Aes128Gcm96 => Some(16),
        KeyType::Aes256Gcm96 | KeyType::ChaCha20Poly1305 => Some(32),
        KeyType::Ed25519 => Some(64),
        _ => None,
    };
    if expected.is_some_and(|len| material.bytes().len() != len) {
        return Err(corrupt(&what("key of the right length")));
    }
    Ok(material)
}

/// Reads a backup (Vault's or ours) into a key named `name` (the backup's own name when empty).
pub fn restore(encoded: &str, name: &str, now: i64) -> Result<KeyPolicy, ApiError> {
    let json = Zeroizing::new(B64.decode(encoded.trim()).map_err(|_| corrupt("not base64"))?);
    let data: KeyData = serde_json::from_slice(&json).map_err(|err| corrupt(&format!("not a key backup ({err})")))?;
    let policy = data.policy;
    let kind = TYPE_CODES.iter().find(|(code, _)| *code == policy.kind).map(|(_, kind)| *kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "key type {} cannot be restored here (managed keys, CMAC and post-quantum keys are not offered; \
             an OpenBao hmac key has type 10)",
            policy.kind
        ))
    })?;
    if policy.derived && policy.kdf != KDF_HKDF_SHA256 {
        return Err(ApiError::bad_request("keys derived with the legacy HMAC-SHA256 counter KDF cannot be restored"));
    }
    if policy.latest_version == 0 {
        return Err(corrupt("latest version of 0 is less than 1"));
    }
    let archive = data.archived_keys.unwrap_or_default();
    let min_available = policy.min_available_version;
    let mut versions = BTreeMap::new();
    for version in min_available.max(1)..=policy.latest_version {
        let index = (version - policy.archive_min_version.min(version)) as usize;
        let entry = policy.keys.get(&version.to_string()).or_else(|| archive.keys.get(index));
        let Some(entry) = entry else {
            return Err(corrupt(&format!("version {version} is missing")));
        };
        let key = material(kind, entry, version)?;
        let hmac_key = match (kind, entry.hmac_key.as_deref()) {
            (KeyType::Hmac, _) => key.clone(),
            (_, Some(text)) if !text.is_empty() => {
                Material::new(B64.decode(text).map_err(|_| corrupt("hmac_key is not base64"))?)
            }
            // As Vault does for keys from before HMAC keys existed.
            _ => Material::random(32),
        };
        // Vault's rule: the entry's scheme, else the policy's, else 1.
        let convergent_version =
            match (policy.convergent_encryption, entry.convergent_version, policy.convergent_version) {
                (false, _, _) => 0,
                (true, v, _) if v > 0 => v,
                (true, _, p) if p > 0 => p,
                (true, _, _) => 1,
            };
        let creation_time = if entry.creation_time != 0 { entry.creation_time } else { now };
        versions.insert(
            version,
            KeyVersion {
                key,
                hmac_key,
                creation_time,
                convergent_version: u8::try_from(convergent_version).unwrap_or(3),
            },
        );
    }
    let name = if name.is_empty() { policy.name.clone() } else { name.to_owned() };
    Ok(KeyPolicy {
        name,
        kind,
        derived: policy.derived,
        convergent_encryption: policy.convergent_encryption,
        exportable: policy.exportable,
        allow_plaintext_backup: policy.allow_plaintext_backup,
        deletion_allowed: policy.deletion_allowed,
        min_decryption_version: policy.min_decryption_version.max(1),
        min_encryption_version: policy.min_encryption_version,
        min_available_version: min_available,
        latest_version: policy.latest_version,
        auto_rotate_period: policy.auto_rotate_period / 1_000_000_000,
        key_size: if kind == KeyType::Hmac {
            policy.key_size.max(versions.values().next().map_or(32, |v| v.key.bytes().len()))
        } else {
            0
        },
        versions,
        backup_info: policy.backup_info,
        restore_info: Some(VersionStamp { time: rfc3339(now), version: policy.latest_version }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transit::asymmetric::{Marshaling, RsaPadding, SaltLength, Scheme};
    use crate::transit::{HashAlgorithm, KeySpec};

    /// A backup laid out as Vault's `KeyData` (field by field as Go's `encoding/json` writes
    /// `keysutil.Policy`, including the untagged fields and the empty archive slot 0), for an
    /// aes256-gcm96 key whose bytes are 0..32: the key the ciphertext vectors in key.rs use.
    const VAULT_BACKUP_JSON: &str = r#"{"policy":{"name":"from-vault","keys":{"1":{"key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","hmac_key":"MjM0NTY3ODk6Ozw9Pj9AQUJDREVGR0hJSktMTU5PUFE=","time":"2024-01-02T03:04:05.123456789Z","creation_time":1704164645}},"derived":false,"kdf":0,"convergent_encryption":false,"exportable":true,"min_decryption_version":1,"min_encryption_version":0,"latest_version":1,"archive_version":1,"archive_min_version":0,"min_available_version":0,"deletion_allowed":false,"convergent_version":0,"type":0,"backup_info":{"time":"2024-01-03T00:00:00Z","version":1},"restore_info":null,"allow_plaintext_backup":true,"version_template":"","storage_prefix":"","auto_rotate_period":86400000000000,"Imported":false,"AllowImportedKeyRotation":false,"ParameterSet":"","HybridConfig":{"PQCKeyType":0,"ECKeyType":0}},"archived_keys":{"keys":[{"key":null,"hmac_key":null,"time":"0001-01-01T00:00:00Z","creation_time":0},{"key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","hmac_key":"MjM0NTY3ODk6Ozw9Pj9AQUJDREVGR0hJSktMTU5PUFE=","time":"2024-01-02T03:04:05.123456789Z","creation_time":1704164645}]}}
"#;

    #[test]
    fn a_backup_in_vaults_layout_restores_and_opens_vaults_ciphertexts() {
        let restored = restore(&B64.encode(VAULT_BACKUP_JSON), "", 1_800_000_000).unwrap();
        assert_eq!((restored.name.as_str(), restored.kind), ("from-vault", KeyType::Aes256Gcm96));
        assert_eq!(restored.auto_rotate_period, 86_400, "Vault writes the period in nanoseconds");
        assert_eq!(restored.restore_info.as_ref().map(|info| info.version), Some(1));
        let vector = "vault:v1:ZGVmZ2hpamtsbW5vPHO7RgicP/1VQj2atRIE3SStfh6M+LiuDk5fr36mIT6Kwd4=";
        assert_eq!(restored.decrypt(vector, b"", b"", b"").unwrap().0.as_slice(), b"the quick brown fox");
        // The URL's name wins over the backup's.
        assert_eq!(restore(&B64.encode(VAULT_BACKUP_JSON), "renamed", 1).unwrap().name, "renamed");
    }

    #[test]
    fn every_key_type_survives_a_backup_and_a_restore() {
        let message = b"backed up";
        for kind in KeyType::ALL {
            let mut spec = KeySpec::new(kind);
            spec.exportable = true;
            spec.allow_plaintext_backup = true;
            let mut policy = KeyPolicy::create("k", &spec, 1_700_000_000).unwrap();
            policy.rotate(1_700_000_100).unwrap();
            policy.min_decryption_version = 2;
            let encoded = backup(&policy).unwrap();
            // (Big integers: read through the backup's own types, as serde_json's `Value` caps numbers.)
            let data: KeyData = serde_json::from_slice(&B64.decode(encoded.as_bytes()).unwrap()).unwrap();
            // Vault's layout: version 1 only in the archive, slot 0 empty, the type as a number.
            assert_eq!(data.policy.keys.keys().collect::<Vec<_>>(), ["2"], "{kind:?}");
            let archive = data.archived_keys.unwrap().keys;
            assert_eq!(archive.len(), 3);
            assert!(archive[0].key.is_none() && archive[0].ec_d.is_none() && archive[0].rsa_key.is_none());
            assert!(TYPE_CODES.contains(&(data.policy.kind, kind)));

            let restored = restore(&encoded, "", 1_800_000_000).unwrap();
            assert_eq!(restored.kind, kind);
            assert_eq!(restored.versions.len(), 2);
            for (version, original) in &policy.versions {
                assert_eq!(restored.versions[version].key, original.key, "{kind:?} v{version}");
            }
            let scheme = Scheme {
                hash: Some(HashAlgorithm::Sha2_256),
                prehashed: false,
                marshaling: Marshaling::Asn1,
                padding: RsaPadding::Pss,
                salt: SaltLength::Auto,
            };
            if kind.supports_encryption() {
                let ciphertext = policy.encrypt(2, message, b"", b"", b"").unwrap();
                assert_eq!(restored.decrypt(&ciphertext, b"", b"", b"").unwrap().0.as_slice(), message);
            } else if kind.supports_signing() {
                let signature = policy.sign(2, message, b"", &scheme).unwrap();
                assert!(restored.verify_signature(message, b"", &scheme, &signature).unwrap(), "{kind:?}");
            } else {
                let mac = policy.hmac(2, HashAlgorithm::Sha2_256, message).unwrap();
                assert!(restored.verify_hmac(HashAlgorithm::Sha2_256, message, &mac).unwrap());
            }
        }
    }

    #[test]
    fn broken_backups_are_refused_by_what_is_wrong() {
        for (backup, expected) in [
            ("%%%".to_owned(), "not base64"),
            (B64.encode("{}"), "not a key backup"),
            (B64.encode(VAULT_BACKUP_JSON.replace(r#""type":0"#, r#""type":10"#)), "key type 10 cannot be restored"),
            (
                B64.encode(VAULT_BACKUP_JSON.replace("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "AAEC")),
                "right length",
            ),
        ] {
            let refused = restore(&backup, "", 1).unwrap_err();
            assert!(refused.errors[0].contains(expected), "{expected}: {refused}");
        }
    }
}
