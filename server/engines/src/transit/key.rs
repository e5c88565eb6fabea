//! A Transit key: its type, its versions of key material and its policy (minimum versions,
//! export, deletion), and the cryptography done with one version, laid out on the wire exactly
//! as Vault lays it out (`vault:v<N>:<base64>`), so ciphertexts move between the two.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::asymmetric::{self, Scheme};
use super::hashing::HashAlgorithm;
use arcanum_contract::logical::ApiError;

/// Length of the nonce every AEAD here uses (96 bits, as Vault's).
const NONCE_LEN: usize = 12;

/// Vault's message for a ciphertext or signature below `min_decryption_version`.
pub const TOO_OLD: &str = "ciphertext or signature version is disallowed by policy (too old)";

/// The convergent-encryption scheme new versions of a convergent key use (Vault's v3: the
/// nonce comes from an HMAC key derived alongside the encryption key).
const CONVERGENT_VERSION: u8 = 3;

/// Key material: zeroised on drop, never shown by `Debug`, stored as base64 behind the barrier.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Material(Zeroizing<Vec<u8>>);

impl Material {
    pub fn new(bytes: Vec<u8>) -> Material {
        Material(Zeroizing::new(bytes))
    }

    pub fn random(len: usize) -> Material {
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Material(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Material(<{} bytes redacted>)", self.0.len())
    }
}

impl Serialize for Material {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&Zeroizing::new(B64.encode(self.bytes())))
    }
}

impl<'de> Deserialize<'de> for Material {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Material, D::Error> {
        let text = Zeroizing::new(String::deserialize(deserializer)?);
        B64.decode(text.as_bytes()).map(Material::new).map_err(serde::de::Error::custom)
    }
}

/// The key types Vault's Transit offers, by their API names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    #[serde(rename = "aes128-gcm96")]
    Aes128Gcm96,
    #[serde(rename = "aes256-gcm96")]
    Aes256Gcm96,
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
    #[serde(rename = "ed25519")]
    Ed25519,
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    #[serde(rename = "ecdsa-p521")]
    EcdsaP521,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
    #[serde(rename = "hmac")]
    Hmac,
}

impl KeyType {
    pub const ALL: [KeyType; 11] = [
        KeyType::Aes128Gcm96,
        KeyType::Aes256Gcm96,
        KeyType::ChaCha20Poly1305,
        KeyType::Ed25519,
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::EcdsaP521,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
        KeyType::Hmac,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KeyType::Aes128Gcm96 => "aes128-gcm96",
            KeyType::Aes256Gcm96 => "aes256-gcm96",
            KeyType::ChaCha20Poly1305 => "chacha20-poly1305",
            KeyType::Ed25519 => "ed25519",
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::EcdsaP521 => "ecdsa-p521",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
            KeyType::Hmac => "hmac",
        }
    }

    pub fn parse(name: &str) -> Result<KeyType, ApiError> {
        KeyType::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| ApiError::bad_request(format!("unknown key type {name}")))
    }

    /// The AEAD types: they encrypt, decrypt and derive.
    pub fn is_symmetric(self) -> bool {
        matches!(self, KeyType::Aes128Gcm96 | KeyType::Aes256Gcm96 | KeyType::ChaCha20Poly1305)
    }

    pub fn supports_encryption(self) -> bool {
        self.is_symmetric() || self.is_rsa()
    }

    pub fn supports_signing(self) -> bool {
        matches!(self, KeyType::Ed25519 | KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::EcdsaP521) || self.is_rsa()
    }

    pub fn supports_derivation(self) -> bool {
        self.is_symmetric() || self == KeyType::Ed25519
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096)
    }

    /// Bytes of the AEAD key.
    fn aead_key_len(self) -> usize {
        if self == KeyType::Aes128Gcm96 {
            16
        } else {
            32
        }
    }
}

/// One version of a key's material.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyVersion {
    /// The AEAD key, or the HMAC key of an `hmac` key.
    pub key: Material,
    /// The key `hmac/` uses for this version of a non-`hmac` key.
    pub hmac_key: Material,
    /// Unix seconds.
    pub creation_time: i64,
    /// The convergent scheme (1-3) this version encrypts with; 0 for other keys.
    #[serde(default)]
    pub convergent_version: u8,
}

/// A named key and all of its live versions, as stored at `policy/<name>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyPolicy {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: KeyType,
    pub derived: bool,
    pub convergent_encryption: bool,
    pub exportable: bool,
    pub allow_plaintext_backup: bool,
    pub deletion_allowed: bool,
    pub min_decryption_version: u32,
    pub min_encryption_version: u32,
    pub min_available_version: u32,
    pub latest_version: u32,
    /// Seconds; 0 turns automatic rotation off.
    pub auto_rotate_period: u64,
    /// Bytes of an `hmac` key's material.
    #[serde(default)]
    pub key_size: usize,
    pub versions: BTreeMap<u32, KeyVersion>,
    /// When the last plaintext backup was taken, and of which latest version.
    #[serde(default)]
    pub backup_info: Option<VersionStamp>,
    /// When this key was restored from a backup, and its latest version then.
    #[serde(default)]
    pub restore_info: Option<VersionStamp>,
}

/// Vault's `backup_info` and `restore_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionStamp {
    /// RFC 3339.
    pub time: String,
    pub version: u32,
}

/// What a new key is asked to be.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub kind: KeyType,
    pub derived: bool,
    pub convergent_encryption: bool,
    pub exportable: bool,
    pub allow_plaintext_backup: bool,
    pub auto_rotate_period: u64,
    pub key_size: usize,
}

impl KeySpec {
    pub fn new(kind: KeyType) -> KeySpec {
        KeySpec {
            kind,
            derived: false,
            convergent_encryption: false,
            exportable: false,
            allow_plaintext_backup: false,
            auto_rotate_period: 0,
            key_size: 0,
        }
    }
}

/// The shortest automatic rotation period Vault accepts.
pub const MIN_AUTO_ROTATE_SECS: u64 = 3600;

/// Checks an `auto_rotate_period` the way Vault does (0, or at least an hour).
pub fn check_auto_rotate_period(secs: u64) -> Result<(), ApiError> {
    if secs != 0 && secs < MIN_AUTO_ROTATE_SECS {
        return Err(ApiError::bad_request("auto rotate period must be 0 to disable or at least an hour"));
    }
    Ok(())
}

impl KeyPolicy {
    /// A new key with version 1.
    pub fn create(name: &str, spec: &KeySpec, now: i64) -> Result<KeyPolicy, ApiError> {
        if spec.convergent_encryption && !spec.derived {
            return Err(ApiError::bad_request("convergent encryption requires derivation to be enabled"));
        }
        if spec.derived && !spec.kind.supports_derivation() {
            return Err(ApiError::bad_request(format!(
                "key derivation and convergent encryption not supported for keys of type {}",
                spec.kind.name()
            )));
        }
        if spec.convergent_encryption && !spec.kind.is_symmetric() {
            return Err(ApiError::bad_request(format!(
                "convergent encryption not supported for keys of type {}",
                spec.kind.name()
            )));
        }
        check_auto_rotate_period(spec.auto_rotate_period)?;
        let key_size = match spec.kind {
            KeyType::Hmac if spec.key_size == 0 => 32,
            KeyType::Hmac if !(32..=512).contains(&spec.key_size) => {
                return Err(ApiError::bad_request(format!("invalid key_size {}", spec.key_size)));
            }
            KeyType::Hmac => spec.key_size,
            kind if spec.key_size != 0 => {
                return Err(ApiError::bad_request(format!("key_size is not valid for algorithm {}", kind.name())));
            }
            _ => 0,
        };
        let mut policy = KeyPolicy {
            name: name.to_owned(),
            kind: spec.kind,
            derived: spec.derived,
            convergent_encryption: spec.convergent_encryption,
            exportable: spec.exportable,
            allow_plaintext_backup: spec.allow_plaintext_backup,
            deletion_allowed: false,
            min_decryption_version: 1,
            min_encryption_version: 0,
            min_available_version: 0,
            latest_version: 0,
            auto_rotate_period: spec.auto_rotate_period,
            key_size,
            versions: BTreeMap::new(),
            backup_info: None,
            restore_info: None,
        };
        policy.rotate(now)?;
        Ok(policy)
    }

    /// Adds a new latest version.
    pub fn rotate(&mut self, now: i64) -> Result<(), ApiError> {
        let key = match self.kind {
            KeyType::Hmac => Material::random(self.key_size),
            kind if kind.is_symmetric() => Material::random(kind.aead_key_len()),
            kind => asymmetric::generate(kind)?,
        };
        let version = KeyVersion {
            key,
            hmac_key: Material::random(32),
            creation_time: now,
            convergent_version: if self.convergent_encryption { CONVERGENT_VERSION } else { 0 },
        };
        self.latest_version = self
            .latest_version
            .checked_add(1)
            .ok_or_else(|| ApiError::bad_request("the key has reached the highest version number"))?;
        self.versions.insert(self.latest_version, version);
        Ok(())
    }

    /// Whether `auto_rotate_period` has passed since the latest version was made.
    pub fn rotation_due(&self, now: i64) -> bool {
        let Some(latest) = self.versions.get(&self.latest_version) else { return false };
        self.auto_rotate_period != 0 && now.saturating_sub(latest.creation_time) >= self.auto_rotate_period as i64
    }

    /// Drops every version below `min_available_version`.
    pub fn trim(&mut self, min_available_version: u32) {
        self.min_available_version = min_available_version;
        self.versions.retain(|version, _| *version >= min_available_version);
    }

    fn version(&self, version: u32) -> Result<&KeyVersion, ApiError> {
        self.versions.get(&version).ok_or_else(|| ApiError::bad_request("invalid key version"))
    }

    /// The version an encryption (or signature, HMAC) uses: `requested`, 0 meaning latest.
    pub fn encryption_version(&self, requested: u32) -> Result<u32, ApiError> {
        match requested {
            0 => Ok(self.latest_version),
            v if v > self.latest_version => {
                Err(ApiError::bad_request("requested version for encryption is higher than the latest key version"))
            }
            v if v < self.min_encryption_version => Err(ApiError::bad_request(
                "requested version for encryption is less than the minimum encryption key version",
            )),
            v => Ok(v),
        }
    }

    /// The AEAD key (and, for convergent v3, the nonce HMAC key) of `version` for `context`.
    fn aead_keys(&self, version: u32, context: &[u8]) -> Result<(Material, Option<Material>), ApiError> {
        let entry = self.version(version)?;
        let key_len = self.kind.aead_key_len();
        if !self.derived {
            return Ok((entry.key.clone(), None));
        }
        if context.is_empty() {
            return Err(missing_context());
        }
        let extra = if entry.convergent_version >= 3 { 32 } else { 0 };
        let mut derived = Zeroizing::new(vec![0u8; key_len + extra]);
        Hkdf::<Sha256>::new(None, entry.key.bytes()).expand(context, &mut derived).map_err(|_| ApiError::internal())?;
        let nonce_key = (extra > 0).then(|| Material::new(derived[key_len..].to_vec()));
        Ok((Material::new(derived[..key_len].to_vec()), nonce_key))
    }

    /// Encrypts with `version`; returns `vault:v<N>:<base64(nonce | ciphertext | tag)>`.
    pub fn encrypt(
        &self,
        version: u32,
        plaintext: &[u8],
        context: &[u8],
        nonce: &[u8],
        associated_data: &[u8],
    ) -> Result<String, ApiError> {
        if self.kind.is_rsa() {
            check_nonce(false, 0, nonce)?;
            if !associated_data.is_empty() {
                return Err(non_aead(self.kind));
            }
            let ciphertext = asymmetric::rsa_encrypt(&self.version(version)?.key, plaintext)?;
            return Ok(format!("vault:v{version}:{}", B64.encode(ciphertext)));
        }
        if !self.kind.is_symmetric() {
            return Err(ApiError::bad_request(format!(
                "message encryption not supported for key type {}",
                self.kind.name()
            )));
        }
        let entry = self.version(version)?;
        let convergent = self.convergent_encryption && entry.convergent_version > 0;
        check_nonce(convergent, entry.convergent_version, nonce)?;
        let (key, nonce_key) = self.aead_keys(version, context)?;
        let nonce: Vec<u8> = match (convergent, entry.convergent_version) {
            (false, _) => {
                let mut random = vec![0u8; NONCE_LEN];
                rand::rngs::OsRng.fill_bytes(&mut random);
                random
            }
            (true, 1) if nonce.len() != NONCE_LEN => {
                return Err(ApiError::bad_request("invalid convergent nonce supplied"));
            }
            (true, 1) => nonce.to_vec(),
            // v2 keys the nonce HMAC with the context itself; v3 with a derived key.
            (true, 2) => arcanum_crypto::hmac_sha256(context, plaintext)[..NONCE_LEN].to_vec(),
            (true, _) => {
                let nonce_key = nonce_key.ok_or_else(ApiError::internal)?;
                arcanum_crypto::hmac_sha256(nonce_key.bytes(), plaintext)[..NONCE_LEN].to_vec()
            }
        };
        let sealed = aead_seal(self.kind, &key, &nonce, plaintext, associated_data)?;
        // Convergent v1 leaves the caller's nonce out; the caller sends it again to decrypt.
        let body = if convergent && entry.convergent_version == 1 { sealed } else { [nonce, sealed].concat() };
        Ok(format!("vault:v{version}:{}", B64.encode(body)))
    }

    /// Decrypts a `vault:v<N>:...` ciphertext; returns the plaintext and its key version.
    pub fn decrypt(
        &self,
        ciphertext: &str,
        context: &[u8],
        nonce: &[u8],
        associated_data: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, u32), ApiError> {
        if !self.kind.is_symmetric() && !self.kind.is_rsa() {
            return Err(ApiError::bad_request(format!(
                "message decryption not supported for key type {}",
                self.kind.name()
            )));
        }
        let (version, body) = self.parse_versioned(ciphertext, "ciphertext")?;
        if self.kind.is_rsa() {
            check_nonce(false, 0, nonce)?;
            if !associated_data.is_empty() {
                return Err(non_aead(self.kind));
            }
            let decoded =
                B64.decode(body).map_err(|_| ApiError::bad_request("invalid ciphertext: could not decode base64"))?;
            return Ok((asymmetric::rsa_decrypt(&self.version(version)?.key, &decoded)?, version));
        }
        let entry = self.version(version)?;
        let convergent = self.convergent_encryption && entry.convergent_version > 0;
        check_nonce(convergent, entry.convergent_version, nonce)?;
        let decoded =
            B64.decode(body).map_err(|_| ApiError::bad_request("invalid ciphertext: could not decode base64"))?;
        let (key, _) = self.aead_keys(version, context)?;
        let (nonce, sealed) = if convergent && entry.convergent_version == 1 {
            if nonce.len() != NONCE_LEN {
                return Err(ApiError::bad_request("invalid convergent nonce supplied"));
            }
            (nonce, decoded.as_slice())
        } else {
            if decoded.len() < NONCE_LEN {
                return Err(ApiError::bad_request("invalid ciphertext length"));
            }
            decoded.split_at(NONCE_LEN)
        };
        let plaintext = aead_open(self.kind, &key, nonce, sealed, associated_data)?;
        Ok((plaintext, version))
    }

    /// Splits `vault:v<N>:<rest>` and checks N against the policy's versions.
    pub fn parse_versioned<'a>(&self, value: &'a str, what: &str) -> Result<(u32, &'a str), ApiError> {
        let rest =
            value.strip_prefix("vault:v").ok_or_else(|| ApiError::bad_request(format!("invalid {what}: no prefix")))?;
        let (version, body) = rest
            .split_once(':')
            .ok_or_else(|| ApiError::bad_request(format!("invalid {what}: wrong number of fields")))?;
        let version: u32 = version
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid {what}: version number could not be decoded")))?;
        // Vault counts a `v0` as version 1.
        let version = version.max(1);
        if version > self.latest_version {
            return Err(ApiError::bad_request(format!("invalid {what}: version is too new")));
        }
        if self.min_decryption_version > 0 && version < self.min_decryption_version {
            return Err(ApiError::bad_request(TOO_OLD));
        }
        Ok((version, body))
    }

    /// The version `hmac/` uses: `requested`, 0 meaning latest.
    pub fn hmac_version(&self, requested: u32) -> Result<u32, ApiError> {
        let version = if requested == 0 { self.latest_version } else { requested };
        if version > self.latest_version {
            return Err(ApiError::bad_request(format!(
                "key version does not exist; latest key version is {}",
                self.latest_version
            )));
        }
        if version < self.min_encryption_version {
            return Err(ApiError::bad_request("cannot generate HMAC: version is too old (disallowed by policy)"));
        }
        Ok(version)
    }

    /// `vault:v<N>:<base64(HMAC)>` of `input` with `version`'s HMAC key.
    pub fn hmac(&self, version: u32, algorithm: HashAlgorithm, input: &[u8]) -> Result<String, ApiError> {
        let key = self.hmac_key(version)?;
        let mac = algorithm.hmac(key.bytes(), input);
        Ok(format!("vault:v{version}:{}", B64.encode(mac)))
    }

    /// Whether `expected` (`vault:v<N>:...`) is the HMAC of `input`, compared in constant time.
    pub fn verify_hmac(&self, algorithm: HashAlgorithm, input: &[u8], expected: &str) -> Result<bool, ApiError> {
        let rest = expected
            .strip_prefix("vault:v")
            .ok_or_else(|| ApiError::bad_request("invalid HMAC to verify: no prefix"))?;
        let (version, mac) =
            rest.split_once(':').ok_or_else(|| ApiError::bad_request("invalid HMAC: wrong number of fields"))?;
        let version: u32 =
            version.parse().map_err(|_| ApiError::bad_request("invalid HMAC: version number could not be decoded"))?;
        let version = version.max(1);
        B64.decode(mac)
            .map_err(|err| ApiError::bad_request(format!("unable to decode verification HMAC as base64: {err}")))?;
        if version > self.latest_version {
            return Err(ApiError::bad_request("invalid HMAC: version is too new"));
        }
        if self.min_decryption_version > 0 && version < self.min_decryption_version {
            return Err(ApiError::bad_request("cannot verify HMAC: version is too old (disallowed by policy)"));
        }
        let computed = self.hmac(version, algorithm, input)?;
        let canonical = format!("vault:v{version}:{mac}");
        Ok(arcanum_crypto::constant_time_eq(computed.as_bytes(), canonical.as_bytes()))
    }

    /// Signs with `version`: ed25519 the raw input, ECDSA the digest. Returns
    /// `vault:v<N>:<signature>`.
    pub fn sign(&self, version: u32, input: &[u8], context: &[u8], scheme: &Scheme) -> Result<String, ApiError> {
        let entry = self.version(version)?;
        let signature = asymmetric::sign(self.kind, &entry.key, input, self.derivation(context)?, scheme)?;
        Ok(format!("vault:v{version}:{signature}"))
    }

    /// Whether `signature` (`vault:v<N>:...`) is valid for `input`/`digest`.
    pub fn verify_signature(
        &self,
        input: &[u8],
        context: &[u8],
        scheme: &Scheme,
        signature: &str,
    ) -> Result<bool, ApiError> {
        let (version, body) = self.parse_versioned(signature, "signature")?;
        let entry = self.version(version)?;
        asymmetric::verify(self.kind, &entry.key, input, self.derivation(context)?, scheme, body)
    }

    /// The context a derived signing key needs (refused when missing), `None` for others.
    fn derivation<'a>(&self, context: &'a [u8]) -> Result<Option<&'a [u8]>, ApiError> {
        if !self.derived {
            return Ok(None);
        }
        if context.is_empty() {
            return Err(missing_context());
        }
        Ok(Some(context))
    }

    /// `version`'s public key and its kind's name; an empty key for a derived key read
    /// without a context, as in Vault.
    pub fn public_key(&self, version: u32, context: &[u8]) -> Result<(String, &'static str), ApiError> {
        let entry = self.version(version)?;
        if self.derived && context.is_empty() {
            return Ok((String::new(), "ed25519"));
        }
        asymmetric::public_key(self.kind, &entry.key, self.derivation(context)?)
    }

    /// `version`'s private signing key as `export/signing-key` gives it.
    pub fn export_signing_key(&self, version: u32) -> Result<Zeroizing<String>, ApiError> {
        asymmetric::export_private(self.kind, &self.version(version)?.key)
    }

    /// `version`'s AEAD key (or its HMAC key) in base64, for `export/`.
    pub fn export_material(&self, version: u32, hmac: bool) -> Result<String, ApiError> {
        let material = if hmac { self.hmac_key(version)? } else { &self.version(version)?.key };
        Ok(B64.encode(material.bytes()))
    }

    fn hmac_key(&self, version: u32) -> Result<&Material, ApiError> {
        let entry = self.version(version)?;
        Ok(if self.kind == KeyType::Hmac { &entry.key } else { &entry.hmac_key })
    }
}

fn non_aead(kind: KeyType) -> ApiError {
    ApiError::bad_request(format!("associated_data provided for non-AEAD cipher suite {}", kind.name()))
}

fn missing_context() -> ApiError {
    ApiError::bad_request(
        "missing 'context' for key derivation; the key was created using a derived key, which means \
         additional, per-request information must be included in order to perform operations with the key",
    )
}

/// A caller's nonce is only for convergent keys of scheme 1, which do not store it.
fn check_nonce(convergent: bool, scheme: u8, nonce: &[u8]) -> Result<(), ApiError> {
    match (convergent, scheme) {
        _ if nonce.is_empty() => Ok(()),
        (false, _) => Err(ApiError::bad_request("provided nonce not allowed for this key")),
        (true, 1) => Ok(()),
        (true, _) => Err(ApiError::bad_request("nonce provided when not allowed")),
    }
}

/// Seals (or opens) `msg` with cipher `C`; `None` when the key has the wrong length.
fn with_cipher<C: KeyInit + Aead>(
    key: &[u8],
    nonce: &[u8],
    payload: Payload<'_, '_>,
    seal: bool,
) -> Option<Result<Vec<u8>, aes_gcm::aead::Error>> {
    let cipher = C::new_from_slice(key).ok()?;
    let nonce = aes_gcm::aead::generic_array::GenericArray::from_slice(nonce);
    Some(if seal { cipher.encrypt(nonce, payload) } else { cipher.decrypt(nonce, payload) })
}

/// The AEAD of `kind` in one direction; the outer error is ours (a key of the wrong size),
/// the inner one the cipher's (authentication failed).
fn aead(
    kind: KeyType,
    key: &Material,
    nonce: &[u8],
    msg: &[u8],
    aad: &[u8],
    seal: bool,
) -> Result<Result<Vec<u8>, aes_gcm::aead::Error>, ApiError> {
    let payload = Payload { msg, aad };
    let outcome = match kind {
        KeyType::Aes128Gcm96 => with_cipher::<Aes128Gcm>(key.bytes(), nonce, payload, seal),
        KeyType::Aes256Gcm96 => with_cipher::<Aes256Gcm>(key.bytes(), nonce, payload, seal),
        KeyType::ChaCha20Poly1305 => with_cipher::<ChaCha20Poly1305>(key.bytes(), nonce, payload, seal),
        _ => None,
    };
    outcome.ok_or_else(ApiError::internal)
}

fn aead_seal(kind: KeyType, key: &Material, nonce: &[u8], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, ApiError> {
    aead(kind, key, nonce, plaintext, aad, true)?.map_err(|_| ApiError::internal())
}

fn aead_open(
    kind: KeyType,
    key: &Material,
    nonce: &[u8],
    sealed: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let opened = aead(kind, key, nonce, sealed, aad, false)?;
    // Go's messages for the two ciphers, which clients may match on.
    let refusal = match kind {
        KeyType::ChaCha20Poly1305 => "chacha20poly1305: message authentication failed",
        _ => "cipher: message authentication failed",
    };
    opened.map(Zeroizing::new).map_err(|_| ApiError::bad_request(refusal))
}

#[cfg(test)]
mod tests {
    //! The vectors below were made outside this code base, with Python's `cryptography`
    //! package, by laying out each ciphertext as Vault documents it: `vault:v<N>:` and the
    //! standard base64 of nonce (12 bytes) | ciphertext | tag; derived keys by HKDF-SHA256 of
    //! the version key with no salt and the context as info; convergent (scheme 3) nonces as
    //! the first 12 bytes of HMAC-SHA256 under the 32 bytes HKDF yields after the key.
    //! Key bytes 0..32 (0..16 for AES-128), nonce bytes 100..112, plaintext below.

    use super::*;

    const PLAINTEXT: &[u8] = b"the quick brown fox";

    fn fixed(kind: KeyType, derived: bool, convergent: bool) -> KeyPolicy {
        let mut spec = KeySpec::new(kind);
        spec.derived = derived;
        spec.convergent_encryption = convergent;
        let mut policy = KeyPolicy::create("k", &spec, 1_700_000_000).unwrap();
        let version = policy.versions.get_mut(&1).unwrap();
        version.key = Material::new((0..kind.aead_key_len() as u8).collect());
        version.hmac_key = Material::new((50..82).collect());
        policy
    }

    fn open(policy: &KeyPolicy, ciphertext: &str, context: &[u8], aad: &[u8]) -> Vec<u8> {
        policy.decrypt(ciphertext, context, &[], aad).unwrap().0.to_vec()
    }

    #[test]
    fn ciphertexts_laid_out_as_vault_documents_decrypt() {
        let aes = fixed(KeyType::Aes256Gcm96, false, false);
        let vector = "vault:v1:ZGVmZ2hpamtsbW5vPHO7RgicP/1VQj2atRIE3SStfh6M+LiuDk5fr36mIT6Kwd4=";
        assert_eq!(open(&aes, vector, b"", b""), PLAINTEXT);
        // Vault reads `v0` as version 1.
        assert_eq!(open(&aes, &vector.replace("v1:", "v0:"), b"", b""), PLAINTEXT);
        let with_aad = "vault:v1:ZGVmZ2hpamtsbW5vPHO7RgicP/1VQj2atRIE3SStfsGctVuQ7/joZnST4AXnrvs=";
        assert_eq!(open(&aes, with_aad, b"", b"row-17"), PLAINTEXT);
        let wrong_aad = aes.decrypt(with_aad, b"", &[], b"row-18").unwrap_err();
        assert_eq!(wrong_aad.errors, ["cipher: message authentication failed"]);

        let chacha = fixed(KeyType::ChaCha20Poly1305, false, false);
        let vector = "vault:v1:ZGVmZ2hpamtsbW5vQHne6unQHzGQ/ncNnf62sxap6ozdHauGy+KvKYWnSwrMadI=";
        assert_eq!(open(&chacha, vector, b"", b""), PLAINTEXT);

        let derived = fixed(KeyType::Aes256Gcm96, true, false);
        let vector = "vault:v1:ZGVmZ2hpamtsbW5vRlfa/SsB7YR3kfMQyJxgBMmgLhYhCt+dyqbN5Uu8gMR9Qo8=";
        assert_eq!(open(&derived, vector, b"tenant-42", b""), PLAINTEXT);
        assert!(derived.decrypt(vector, b"tenant-43", &[], b"").is_err());
        let missing = derived.decrypt(vector, b"", &[], b"").unwrap_err();
        assert!(missing.errors[0].starts_with("missing 'context' for key derivation"), "{missing}");
    }

    #[test]
    fn an_aes128_vector_decrypts_under_its_version() {
        let mut aes = fixed(KeyType::Aes128Gcm96, false, false);
        aes.rotate(1_700_000_100).unwrap();
        // Version 2 gets the vector's key; version 1 the random one rotation made.
        let fixed_key = aes.versions[&1].clone();
        let random_key = aes.versions[&2].clone();
        aes.versions.insert(1, random_key);
        aes.versions.insert(2, fixed_key);
        let vector = "vault:v2:ZGVmZ2hpamtsbW5vbgorhap30ZnwHjVi6b1FzFbnAMYUuyagTPeJTdssgh97wFs=";
        assert_eq!(open(&aes, vector, b"", b""), PLAINTEXT);
        // The same bytes under version 1 (another key) do not authenticate.
        assert!(aes.decrypt(&vector.replace("v2:", "v1:"), b"", &[], b"").is_err());
    }

    #[test]
    fn convergent_encryption_reproduces_the_vector_byte_for_byte() {
        let policy = fixed(KeyType::Aes256Gcm96, true, true);
        let expected = "vault:v1:XPGCvFblWEglzxlwBjsI6XkDssNEuLao+DEv8rKANxSioFh6QHFiPjrPLr04TFc=";
        assert_eq!(policy.encrypt(1, PLAINTEXT, b"tenant-42", &[], &[]).unwrap(), expected);
        assert_eq!(open(&policy, expected, b"tenant-42", b""), PLAINTEXT);
        // Same plaintext and context, same ciphertext; another context, another one.
        assert_ne!(policy.encrypt(1, PLAINTEXT, b"tenant-41", &[], &[]).unwrap(), expected);
        let nonce = policy.encrypt(1, PLAINTEXT, b"tenant-42", &[7; 12], &[]).unwrap_err();
        assert_eq!(nonce.errors, ["nonce provided when not allowed"]);
    }

    #[test]
    fn hmacs_match_the_vector_and_verify_in_constant_time() {
        let policy = fixed(KeyType::Aes256Gcm96, false, false);
        let expected = "vault:v1:u8myYjJSW7xqnw+kr7Zg2PZPagD3C2SODLyeDdlYGcg=";
        assert_eq!(policy.hmac(1, HashAlgorithm::Sha2_256, PLAINTEXT).unwrap(), expected);
        assert!(policy.verify_hmac(HashAlgorithm::Sha2_256, PLAINTEXT, expected).unwrap());
        assert!(!policy.verify_hmac(HashAlgorithm::Sha2_256, b"other", expected).unwrap());
        assert_eq!(
            policy.verify_hmac(HashAlgorithm::Sha2_256, PLAINTEXT, "u8my").unwrap_err().errors,
            ["invalid HMAC to verify: no prefix"]
        );
    }

    #[test]
    fn fresh_encryptions_round_trip_and_version_rules_hold() {
        for kind in [KeyType::Aes128Gcm96, KeyType::Aes256Gcm96, KeyType::ChaCha20Poly1305] {
            let mut policy = KeyPolicy::create("k", &KeySpec::new(kind), 1).unwrap();
            let first = policy.encrypt(1, PLAINTEXT, b"", &[], &[]).unwrap();
            // Random nonces: the same plaintext never gives the same ciphertext twice.
            assert_ne!(first, policy.encrypt(1, PLAINTEXT, b"", &[], &[]).unwrap());
            policy.rotate(2).unwrap();
            let second = policy.encrypt(policy.encryption_version(0).unwrap(), PLAINTEXT, b"", &[], &[]).unwrap();
            assert!(second.starts_with("vault:v2:"), "{second}");
            assert_eq!(policy.decrypt(&first, b"", &[], b"").unwrap().1, 1);
            policy.min_decryption_version = 2;
            assert_eq!(policy.decrypt(&first, b"", &[], b"").unwrap_err().errors, [TOO_OLD]);
            let too_new = policy.decrypt(&first.replace("v1:", "v3:"), b"", &[], b"").unwrap_err();
            assert_eq!(too_new.errors, ["invalid ciphertext: version is too new"]);
            assert_eq!(policy.decrypt("v1:abc", b"", &[], b"").unwrap_err().errors, ["invalid ciphertext: no prefix"]);
            assert!(policy.encryption_version(3).is_err());
            policy.min_encryption_version = 2;
            assert!(policy.encryption_version(1).is_err());
            let nonce = policy.encrypt(2, PLAINTEXT, b"", &[1; 12], &[]).unwrap_err();
            assert_eq!(nonce.errors, ["provided nonce not allowed for this key"]);
        }
    }

    #[test]
    fn key_material_never_shows_in_debug_output() {
        let policy = fixed(KeyType::Aes256Gcm96, false, false);
        let shown = format!("{policy:?}");
        assert!(shown.contains("redacted"), "{shown}");
        assert!(!shown.contains("0, 1, 2, 3"), "{shown}");
        assert!(!shown.contains(&B64.encode((0..32u8).collect::<Vec<_>>())), "{shown}");
    }

    #[test]
    fn creation_refuses_what_vault_refuses() {
        let mut spec = KeySpec::new(KeyType::Aes256Gcm96);
        spec.convergent_encryption = true;
        assert!(KeyPolicy::create("k", &spec, 1).is_err());
        let mut spec = KeySpec::new(KeyType::Hmac);
        spec.key_size = 16;
        assert_eq!(KeyPolicy::create("k", &spec, 1).unwrap_err().errors, ["invalid key_size 16"]);
        spec.key_size = 64;
        assert_eq!(KeyPolicy::create("k", &spec, 1).unwrap().versions[&1].key.bytes().len(), 64);
        let mut spec = KeySpec::new(KeyType::Aes256Gcm96);
        spec.auto_rotate_period = 60;
        assert!(KeyPolicy::create("k", &spec, 1).is_err());
    }
}
