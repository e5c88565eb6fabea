//! Transit's asymmetric keys (ed25519, ECDSA on P-256, P-384 and P-521, RSA 2048 to 4096):
//! key generation, the public keys a read shows, exports, signatures in Vault's encodings
//! (ASN.1 DER or JWS `r || s` for ECDSA, raw 64 bytes for ed25519, PSS or PKCS#1 v1.5 for
//! RSA) and RSA-OAEP encryption.
//!
//! ECDSA signs a digest: the hash of the input, or the input itself when `prehashed`. The
//! RustCrypto signer refuses a digest shorter than half the field, which Go accepts (P-521
//! with Vault's default sha2-256); such digests are left-padded with zeros, which keeps their
//! integer value, so the signature is the one Go's `hashToInt` leads to.

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine;
use ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use ed25519_dalek::{Signer, Verifier};
use hkdf::Hkdf;
use p256::pkcs8::{EncodePublicKey, LineEnding};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::key::{KeyType, Material};
use super::HashAlgorithm;
use arcanum_contract::logical::ApiError;

/// How an ECDSA signature is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marshaling {
    /// DER `SEQUENCE { r, s }`, standard base64 (Vault's default).
    Asn1,
    /// `r || s`, each the field's size, base64url without padding (JOSE).
    Jws,
}

impl Marshaling {
    pub fn parse(name: &str) -> Result<Marshaling, ApiError> {
        match name {
            "" | "asn1" => Ok(Marshaling::Asn1),
            "jws" => Ok(Marshaling::Jws),
            other => Err(ApiError::bad_request(format!("invalid marshaling type {other:?}"))),
        }
    }
}

/// New private key material of a signing type.
pub fn generate(kind: KeyType) -> Result<Material, ApiError> {
    let mut rng = rand::rngs::OsRng;
    Ok(match kind {
        KeyType::Ed25519 => Material::new(ed25519_dalek::SigningKey::generate(&mut rng).to_keypair_bytes().to_vec()),
        KeyType::EcdsaP256 => Material::new(p256::ecdsa::SigningKey::random(&mut rng).to_bytes().to_vec()),
        KeyType::EcdsaP384 => Material::new(p384::ecdsa::SigningKey::random(&mut rng).to_bytes().to_vec()),
        KeyType::EcdsaP521 => Material::new(p521::ecdsa::SigningKey::random(&mut rng).to_bytes().to_vec()),
        KeyType::Rsa2048 => rsa_generate(2048)?,
        KeyType::Rsa3072 => rsa_generate(3072)?,
        KeyType::Rsa4096 => rsa_generate(4096)?,
        _ => return Err(ApiError::internal()),
    })
}

fn ed25519_key(material: &[u8], context: Option<&[u8]>) -> Result<ed25519_dalek::SigningKey, ApiError> {
    match context {
        // Vault derives the seed by HKDF-SHA256 over the stored 64 bytes, info = the context.
        Some(context) => {
            let mut seed = Zeroizing::new([0u8; 32]);
            Hkdf::<Sha256>::new(None, material).expand(context, seed.as_mut()).map_err(|_| ApiError::internal())?;
            Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
        }
        None => {
            let bytes: &[u8; 64] = material.try_into().map_err(|_| ApiError::internal())?;
            ed25519_dalek::SigningKey::from_keypair_bytes(bytes).map_err(|_| ApiError::internal())
        }
    }
}

/// The digest ECDSA signs, left-padded to at least half the field (see the module note).
fn ecdsa_digest(digest: &[u8], field_len: usize) -> Vec<u8> {
    if digest.len() >= field_len / 2 + field_len % 2 {
        return digest.to_vec();
    }
    let mut padded = vec![0u8; field_len - digest.len()];
    padded.extend_from_slice(digest);
    padded
}

/// Bytes of an ECDSA curve's field (and so of its private scalar and of `r` and `s`).
pub(super) fn field_len(kind: KeyType) -> usize {
    match kind {
        KeyType::EcdsaP256 => 32,
        KeyType::EcdsaP384 => 48,
        _ => 66,
    }
}

/// Runs `$body` with `$sk` (signing key), `$vk` (verifying key), `$sig` (the signature type)
/// and `$field` (field bytes) bound for the ECDSA curve of `$kind`.
macro_rules! with_curve {
    ($kind:expr, $material:expr, |$sk:ident, $vk:ident, $curve:ident, $field:ident| $body:expr) => {
        match $kind {
            KeyType::EcdsaP256 => {
                use p256 as $curve;
                let $sk = $curve::ecdsa::SigningKey::from_slice($material).map_err(|_| ApiError::internal())?;
                let $vk = $curve::ecdsa::VerifyingKey::from(&$sk);
                let $field = field_len(KeyType::EcdsaP256);
                $body
            }
            KeyType::EcdsaP384 => {
                use p384 as $curve;
                let $sk = $curve::ecdsa::SigningKey::from_slice($material).map_err(|_| ApiError::internal())?;
                let $vk = $curve::ecdsa::VerifyingKey::from(&$sk);
                let $field = field_len(KeyType::EcdsaP384);
                $body
            }
            KeyType::EcdsaP521 => {
                use p521 as $curve;
                let $sk = $curve::ecdsa::SigningKey::from_slice($material).map_err(|_| ApiError::internal())?;
                let $vk = $curve::ecdsa::VerifyingKey::from(&$sk);
                let $field = field_len(KeyType::EcdsaP521);
                $body
            }
            _ => Err(ApiError::internal()),
        }
    };
}

/// RSA signature padding (`signature_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaPadding {
    Pss,
    Pkcs1v15,
}

/// PSS salt length (`salt_length`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaltLength {
    /// Signing: the longest salt the key allows (as Go's `PSSSaltLengthAuto`); verifying: that
    /// or the hash's length.
    Auto,
    /// The hash's length.
    Hash,
    Bytes(usize),
}

impl SaltLength {
    pub fn parse(text: &str) -> Result<SaltLength, ApiError> {
        match text {
            "" | "auto" => Ok(SaltLength::Auto),
            "hash" => Ok(SaltLength::Hash),
            digits => digits
                .parse()
                .map(SaltLength::Bytes)
                .map_err(|_| ApiError::bad_request(format!("salt length is invalid: {digits:?}"))),
        }
    }
}

/// How a signature is made or checked: the hash (`None` is Vault's `none`), whether the input
/// is already a digest, and the encodings and paddings of the key types that have them.
#[derive(Debug, Clone, Copy)]
pub struct Scheme {
    pub hash: Option<HashAlgorithm>,
    pub prehashed: bool,
    pub marshaling: Marshaling,
    pub padding: RsaPadding,
    pub salt: SaltLength,
}

impl Scheme {
    /// What ECDSA and RSA sign: the input's hash, or the input when it is a digest already.
    fn digest(&self, input: &[u8]) -> Vec<u8> {
        match self.hash {
            Some(hash) if !self.prehashed => hash.digest(input),
            _ => input.to_vec(),
        }
    }
}

/// Signs: ed25519 the raw `input` (with the key derived from `context` when given); ECDSA and
/// RSA the digest. Returns the text after `vault:v<N>:`.
pub fn sign(
    kind: KeyType,
    material: &Material,
    input: &[u8],
    context: Option<&[u8]>,
    scheme: &Scheme,
) -> Result<String, ApiError> {
    if kind == KeyType::Ed25519 {
        let key = ed25519_key(material.bytes(), context)?;
        return Ok(B64.encode(key.sign(input).to_bytes()));
    }
    if kind.is_rsa() {
        return rsa_sign(material, &scheme.digest(input), scheme).map(|signature| B64.encode(signature));
    }
    let digest = scheme.digest(input);
    with_curve!(kind, material.bytes(), |sk, _vk, curve, field| {
        let signature: curve::ecdsa::Signature =
            sk.sign_prehash(&ecdsa_digest(&digest, field)).map_err(|_| ApiError::internal())?;
        Ok(match scheme.marshaling {
            Marshaling::Asn1 => B64.encode(signature.to_der().as_bytes()),
            Marshaling::Jws => B64URL.encode(signature.to_bytes()),
        })
    })
}

/// Verifies `signature` (the text after `vault:v<N>:`). A signature that does not verify is
/// `Ok(false)`; one that cannot be decoded is a 400, as in Vault.
pub fn verify(
    kind: KeyType,
    material: &Material,
    input: &[u8],
    context: Option<&[u8]>,
    scheme: &Scheme,
    signature: &str,
) -> Result<bool, ApiError> {
    let malformed = || ApiError::bad_request("invalid signature: could not decode");
    if kind == KeyType::Ed25519 {
        let key = ed25519_key(material.bytes(), context)?;
        let bytes = B64.decode(signature).map_err(|_| malformed())?;
        let signature = ed25519_dalek::Signature::from_slice(&bytes).map_err(|_| malformed())?;
        return Ok(key.verifying_key().verify(input, &signature).is_ok());
    }
    if kind.is_rsa() {
        let bytes = B64.decode(signature).map_err(|_| malformed())?;
        return rsa_verify(material, &scheme.digest(input), scheme, &bytes);
    }
    let digest = scheme.digest(input);
    with_curve!(kind, material.bytes(), |_sk, vk, curve, field| {
        let signature = match scheme.marshaling {
            Marshaling::Asn1 => {
                let der = B64.decode(signature).map_err(|_| malformed())?;
                curve::ecdsa::Signature::from_der(&der).map_err(|_| malformed())?
            }
            Marshaling::Jws => {
                let raw = B64URL.decode(signature).map_err(|_| malformed())?;
                curve::ecdsa::Signature::from_slice(&raw).map_err(|_| malformed())?
            }
        };
        Ok(vk.verify_prehash(&ecdsa_digest(&digest, field), &signature).is_ok())
    })
}

// --- RSA ---------------------------------------------------------------------------------------
//
// The `rsa` crate is subject to RUSTSEC-2023-0071 (the Marvin attack): its private-key
// operations are not constant-time, which may leak the key to an attacker who can time many
// of them over the network. Mitigations (docs/TRANSIT.md): every private-key operation is
// blinded (`sign_with_rng`, `decrypt_blinded`), and PKCS#1 v1.5 decryption, the padding the
// attack turns into an oracle, is refused; OAEP is the only decryption offered.

/// Runs `$body` with `$digest` bound to the digest type of `$hash`.
macro_rules! with_digest {
    ($hash:expr, |$digest:ident| $body:expr) => {
        match $hash {
            HashAlgorithm::Sha1 => {
                type $digest = sha1::Sha1;
                $body
            }
            HashAlgorithm::Sha2_224 => {
                type $digest = sha2::Sha224;
                $body
            }
            HashAlgorithm::Sha2_256 => {
                type $digest = sha2::Sha256;
                $body
            }
            HashAlgorithm::Sha2_384 => {
                type $digest = sha2::Sha384;
                $body
            }
            HashAlgorithm::Sha2_512 => {
                type $digest = sha2::Sha512;
                $body
            }
            HashAlgorithm::Sha3_224 => {
                type $digest = sha3::Sha3_224;
                $body
            }
            HashAlgorithm::Sha3_256 => {
                type $digest = sha3::Sha3_256;
                $body
            }
            HashAlgorithm::Sha3_384 => {
                type $digest = sha3::Sha3_384;
                $body
            }
            HashAlgorithm::Sha3_512 => {
                type $digest = sha3::Sha3_512;
                $body
            }
        }
    };
}

pub(super) fn rsa_private(material: &Material) -> Result<rsa::RsaPrivateKey, ApiError> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    rsa::RsaPrivateKey::from_pkcs1_der(material.bytes()).map_err(|_| ApiError::internal())
}

/// A new RSA key of `bits`, as PKCS#1 DER. Generation takes a while (seconds for 4096 bits),
/// so it leaves the async worker to the others meanwhile.
fn rsa_generate(bits: usize) -> Result<Material, ApiError> {
    let generate = || rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits).map_err(|_| ApiError::internal());
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let key = if multi_thread { tokio::task::block_in_place(generate)? } else { generate()? };
    rsa_material(&key)
}

/// An RSA key as stored: PKCS#1 DER.
pub(super) fn rsa_material(key: &rsa::RsaPrivateKey) -> Result<Material, ApiError> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let der = key.to_pkcs1_der().map_err(|_| ApiError::internal())?;
    Ok(Material::new(der.as_bytes().to_vec()))
}

/// An ECDSA key's public point, `(x, y)` as field-sized big-endian bytes.
pub(super) fn ec_point(kind: KeyType, material: &Material) -> Result<(Vec<u8>, Vec<u8>), ApiError> {
    with_curve!(kind, material.bytes(), |_sk, vk, _curve, _field| {
        let point = vk.to_encoded_point(false);
        match (point.x(), point.y()) {
            (Some(x), Some(y)) => Ok((x.to_vec(), y.to_vec())),
            _ => Err(ApiError::internal()),
        }
    })
}

fn salt_too_long(longest: usize) -> ApiError {
    ApiError::bad_request(format!("salt length is too long for this key and hash: at most {longest} bytes"))
}

/// The longest PSS salt a key of `modulus_bits` allows with a hash of `hash_len` bytes.
fn max_salt(modulus_bits: usize, hash_len: usize) -> usize {
    (modulus_bits - 1).div_ceil(8).saturating_sub(hash_len + 2)
}

fn rsa_sign(material: &Material, digest: &[u8], scheme: &Scheme) -> Result<Vec<u8>, ApiError> {
    use rsa::traits::PublicKeyParts;
    let key = rsa_private(material)?;
    let mut rng = rand::rngs::OsRng;
    let refused = |_| ApiError::bad_request("failed to sign the input: the digest does not fit this key and hash");
    match (scheme.padding, scheme.hash) {
        (RsaPadding::Pkcs1v15, None) => {
            key.sign_with_rng(&mut rng, rsa::Pkcs1v15Sign::new_unprefixed(), digest).map_err(refused)
        }
        (RsaPadding::Pkcs1v15, Some(hash)) => with_digest!(hash, |D| {
            key.sign_with_rng(&mut rng, rsa::Pkcs1v15Sign::new::<D>(), digest).map_err(refused)
        }),
        (RsaPadding::Pss, None) => Err(ApiError::bad_request("PSS signatures need a hash algorithm")),
        (RsaPadding::Pss, Some(hash)) => {
            let hash_len = hash.digest(b"").len();
            let longest = max_salt(key.n().bits(), hash_len);
            let salt = match scheme.salt {
                SaltLength::Auto => longest,
                SaltLength::Hash => hash_len,
                SaltLength::Bytes(bytes) if bytes > longest => return Err(salt_too_long(longest)),
                SaltLength::Bytes(bytes) => bytes,
            };
            with_digest!(hash, |D| key
                .sign_with_rng(&mut rng, rsa::Pss::new_with_salt::<D>(salt), digest)
                .map_err(refused))
        }
    }
}

fn rsa_verify(material: &Material, digest: &[u8], scheme: &Scheme, signature: &[u8]) -> Result<bool, ApiError> {
    use rsa::traits::PublicKeyParts;
    let key = rsa_private(material)?.to_public_key();
    Ok(match (scheme.padding, scheme.hash) {
        (RsaPadding::Pkcs1v15, None) => key.verify(rsa::Pkcs1v15Sign::new_unprefixed(), digest, signature).is_ok(),
        (RsaPadding::Pkcs1v15, Some(hash)) => {
            with_digest!(hash, |D| key.verify(rsa::Pkcs1v15Sign::new::<D>(), digest, signature).is_ok())
        }
        (RsaPadding::Pss, None) => return Err(ApiError::bad_request("PSS signatures need a hash algorithm")),
        (RsaPadding::Pss, Some(hash)) => {
            let hash_len = hash.digest(b"").len();
            // `auto` accepts the two lengths signers use: the longest (Go, Vault) and the hash's.
            let longest = max_salt(key.n().bits(), hash_len);
            let salts = match scheme.salt {
                SaltLength::Auto => vec![longest, hash_len],
                SaltLength::Hash => vec![hash_len],
                SaltLength::Bytes(bytes) if bytes > longest => return Err(salt_too_long(longest)),
                SaltLength::Bytes(bytes) => vec![bytes],
            };
            salts.into_iter().any(|salt| {
                with_digest!(hash, |D| key.verify(rsa::Pss::new_with_salt::<D>(salt), digest, signature).is_ok())
            })
        }
    })
}

/// RSA-OAEP with SHA-256 (hash and MGF1) and no label, as Vault's Transit.
pub fn rsa_encrypt(material: &Material, plaintext: &[u8]) -> Result<Vec<u8>, ApiError> {
    let key = rsa_private(material)?.to_public_key();
    key.encrypt(&mut rand::rngs::OsRng, rsa::Oaep::new::<sha2::Sha256>(), plaintext)
        .map_err(|_| ApiError::bad_request("failed to RSA encrypt the plaintext: message too long for this key"))
}

/// RSA-OAEP decryption, blinded (see the note on RUSTSEC-2023-0071 above).
pub fn rsa_decrypt(material: &Material, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let key = rsa_private(material)?;
    key.decrypt_blinded(&mut rand::rngs::OsRng, rsa::Oaep::new::<sha2::Sha256>(), ciphertext)
        .map(Zeroizing::new)
        .map_err(|_| ApiError::bad_request("failed to RSA decrypt the ciphertext: decryption error"))
}

/// The public key as a read shows it: ed25519 raw base64, ECDSA PEM (SubjectPublicKeyInfo);
/// and the name Vault gives the key's kind.
pub fn public_key(
    kind: KeyType,
    material: &Material,
    context: Option<&[u8]>,
) -> Result<(String, &'static str), ApiError> {
    if kind == KeyType::Ed25519 {
        let key = ed25519_key(material.bytes(), context)?;
        return Ok((B64.encode(key.verifying_key().to_bytes()), "ed25519"));
    }
    if kind.is_rsa() {
        let public = rsa_private(material)?.to_public_key();
        let pem = rsa::pkcs8::EncodePublicKey::to_public_key_pem(&public, LineEnding::LF)
            .map_err(|_| ApiError::internal())?;
        return Ok((pem, kind.name()));
    }
    let (pem, name) = with_curve!(kind, material.bytes(), |_sk, vk, curve, _field| {
        let point = vk.to_encoded_point(false);
        let public = curve::PublicKey::from_sec1_bytes(point.as_bytes()).map_err(|_| ApiError::internal())?;
        let pem = public.to_public_key_pem(LineEnding::LF).map_err(|_| ApiError::internal())?;
        let name = match kind {
            KeyType::EcdsaP256 => "P-256",
            KeyType::EcdsaP384 => "P-384",
            _ => "P-521",
        };
        Ok::<_, ApiError>((pem, name))
    })?;
    Ok((pem, name))
}

/// The private key as `export/signing-key` gives it: ed25519 base64 of seed and public key,
/// ECDSA PEM (SEC1 `EC PRIVATE KEY` naming its curve, as Go's `MarshalECPrivateKey` writes it).
pub fn export_private(kind: KeyType, material: &Material) -> Result<Zeroizing<String>, ApiError> {
    if kind == KeyType::Ed25519 {
        return Ok(Zeroizing::new(B64.encode(material.bytes())));
    }
    if kind.is_rsa() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        return rsa_private(material)?.to_pkcs1_pem(LineEnding::LF).map_err(|_| ApiError::internal());
    }
    use sec1::der::oid::AssociatedOid;
    let curve = match kind {
        KeyType::EcdsaP256 => p256::NistP256::OID,
        KeyType::EcdsaP384 => p384::NistP384::OID,
        _ => p521::NistP521::OID,
    };
    let public = with_curve!(kind, material.bytes(), |_sk, vk, _curve, _field| {
        Ok::<_, ApiError>(vk.to_encoded_point(false).as_bytes().to_vec())
    })?;
    let der = sec1::der::Encode::to_der(&sec1::EcPrivateKey {
        private_key: material.bytes(),
        parameters: Some(sec1::EcParameters::NamedCurve(curve)),
        public_key: Some(&public),
    })
    .map(Zeroizing::new)
    .map_err(|_| ApiError::internal())?;
    pem_rfc7468::encode_string("EC PRIVATE KEY", pem_rfc7468::LineEnding::LF, &der)
        .map(Zeroizing::new)
        .map_err(|_| ApiError::internal())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheme(hash: HashAlgorithm, marshaling: Marshaling) -> Scheme {
        Scheme { hash: Some(hash), prehashed: false, marshaling, padding: RsaPadding::Pss, salt: SaltLength::Auto }
    }

    #[test]
    fn every_curve_signs_and_verifies_in_both_encodings() {
        for kind in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::EcdsaP521] {
            let key = generate(kind).unwrap();
            // sha1 and sha2-256 are shorter than half of P-521's field: Go signs them, so must we.
            for hash in [HashAlgorithm::Sha1, HashAlgorithm::Sha2_256, HashAlgorithm::Sha2_512] {
                for marshaling in [Marshaling::Asn1, Marshaling::Jws] {
                    let scheme = scheme(hash, marshaling);
                    let signature = sign(kind, &key, b"message", None, &scheme).unwrap();
                    assert!(verify(kind, &key, b"message", None, &scheme, &signature).unwrap());
                    assert!(!verify(kind, &key, b"messagf", None, &scheme, &signature).unwrap());
                }
            }
            let asn1 = scheme(HashAlgorithm::Sha2_256, Marshaling::Asn1);
            let malformed = verify(kind, &key, b"m", None, &asn1, "not base64!").unwrap_err();
            assert_eq!(malformed.status, 400);
            let (pem, _) = public_key(kind, &key, None).unwrap();
            assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
            assert!(export_private(kind, &key).unwrap().starts_with("-----BEGIN EC PRIVATE KEY-----"));
        }
    }

    #[test]
    fn jws_signatures_are_fixed_width_and_url_safe() {
        let key = generate(KeyType::EcdsaP521).unwrap();
        let signature =
            sign(KeyType::EcdsaP521, &key, b"m", None, &scheme(HashAlgorithm::Sha2_512, Marshaling::Jws)).unwrap();
        assert_eq!(B64URL.decode(&signature).unwrap().len(), 132);
        assert!(!signature.contains('=') && !signature.contains('+') && !signature.contains('/'));
    }

    #[test]
    fn derived_ed25519_keys_depend_on_the_context_only() {
        let key = generate(KeyType::Ed25519).unwrap();
        let (a, _) = public_key(KeyType::Ed25519, &key, Some(b"tenant-a")).unwrap();
        assert_eq!(a, public_key(KeyType::Ed25519, &key, Some(b"tenant-a")).unwrap().0);
        assert_ne!(a, public_key(KeyType::Ed25519, &key, Some(b"tenant-b")).unwrap().0);
        assert_ne!(a, public_key(KeyType::Ed25519, &key, None).unwrap().0);
        let any = scheme(HashAlgorithm::Sha2_256, Marshaling::Asn1);
        let signature = sign(KeyType::Ed25519, &key, b"m", Some(b"tenant-a"), &any).unwrap();
        assert!(verify(KeyType::Ed25519, &key, b"m", Some(b"tenant-a"), &any, &signature).unwrap());
        assert!(!verify(KeyType::Ed25519, &key, b"m", Some(b"tenant-b"), &any, &signature).unwrap());
        assert_eq!(B64.decode(&signature).unwrap().len(), 64);
    }

    #[test]
    fn short_digests_are_left_padded_to_half_the_field() {
        assert_eq!(ecdsa_digest(&[1; 32], 32), vec![1; 32]);
        let padded = ecdsa_digest(&[1; 20], 66);
        assert_eq!(padded.len(), 66);
        assert!(padded[..46].iter().all(|b| *b == 0) && padded[46..].iter().all(|b| *b == 1));
    }

    #[test]
    fn rsa_signs_with_both_paddings_and_verifies_either_pss_salt() {
        let key = generate(KeyType::Rsa2048).unwrap();
        let kind = KeyType::Rsa2048;
        for padding in [RsaPadding::Pss, RsaPadding::Pkcs1v15] {
            for hash in [HashAlgorithm::Sha2_256, HashAlgorithm::Sha3_384, HashAlgorithm::Sha1] {
                let scheme = Scheme { padding, ..scheme(hash, Marshaling::Asn1) };
                let signature = sign(kind, &key, b"invoice", None, &scheme).unwrap();
                assert!(verify(kind, &key, b"invoice", None, &scheme, &signature).unwrap(), "{padding:?} {hash:?}");
                assert!(!verify(kind, &key, b"invoicf", None, &scheme, &signature).unwrap());
            }
        }
        // PSS `auto` signs with the longest salt (222 bytes for 2048 bits and SHA-256) and
        // verifies that and the hash-length salt other signers use.
        assert_eq!(max_salt(2048, 32), 222);
        let hash_salt = Scheme { salt: SaltLength::Hash, ..scheme(HashAlgorithm::Sha2_256, Marshaling::Asn1) };
        let auto = scheme(HashAlgorithm::Sha2_256, Marshaling::Asn1);
        let signature = sign(kind, &key, b"m", None, &hash_salt).unwrap();
        assert!(verify(kind, &key, b"m", None, &auto, &signature).unwrap());
        let longest = sign(kind, &key, b"m", None, &auto).unwrap();
        assert!(!verify(kind, &key, b"m", None, &hash_salt, &longest).unwrap());
        // `none`: a prehashed digest signed as it is, without DigestInfo.
        let none = Scheme {
            hash: None,
            prehashed: true,
            padding: RsaPadding::Pkcs1v15,
            ..scheme(HashAlgorithm::Sha2_256, Marshaling::Asn1)
        };
        let signature = sign(kind, &key, &[9; 32], None, &none).unwrap();
        assert!(verify(kind, &key, &[9; 32], None, &none, &signature).unwrap());

        // A salt longer than the key allows is refused, not handed to the crate to allocate.
        let huge = Scheme { salt: SaltLength::Bytes(usize::MAX), ..auto };
        assert_eq!(sign(kind, &key, b"m", None, &huge).unwrap_err().status, 400);
        assert_eq!(verify(kind, &key, b"m", None, &huge, &B64.encode([0u8; 256])).unwrap_err().status, 400);

        let ciphertext = rsa_encrypt(&key, b"secret").unwrap();
        assert_eq!(ciphertext.len(), 256);
        assert_eq!(rsa_decrypt(&key, &ciphertext).unwrap().as_slice(), b"secret");
        assert!(rsa_encrypt(&key, &[0; 200]).is_err(), "OAEP-SHA256 holds at most 190 bytes in 2048 bits");
        assert!(export_private(kind, &key).unwrap().starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert_eq!(public_key(kind, &key, None).unwrap().1, "rsa-2048");
    }
}
