//! Transit's signing keys (ed25519 and ECDSA on P-256, P-384 and P-521): key generation, the
//! public keys a read shows, exports, and signatures in Vault's encodings (ASN.1 DER or JWS
//! `r || s` for ECDSA, raw 64 bytes for ed25519).
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

/// Runs `$body` with `$sk` (signing key), `$vk` (verifying key), `$sig` (the signature type)
/// and `$field` (field bytes) bound for the ECDSA curve of `$kind`.
macro_rules! with_curve {
    ($kind:expr, $material:expr, |$sk:ident, $vk:ident, $curve:ident, $field:ident| $body:expr) => {
        match $kind {
            KeyType::EcdsaP256 => {
                use p256 as $curve;
                let $sk = $curve::ecdsa::SigningKey::from_slice($material).map_err(|_| ApiError::internal())?;
                let $vk = $curve::ecdsa::VerifyingKey::from(&$sk);
                let $field = 32usize;
                $body
            }
            KeyType::EcdsaP384 => {
                use p384 as $curve;
                let $sk = $curve::ecdsa::SigningKey::from_slice($material).map_err(|_| ApiError::internal())?;
                let $vk = $curve::ecdsa::VerifyingKey::from(&$sk);
                let $field = 48usize;
                $body
            }
            KeyType::EcdsaP521 => {
                use p521 as $curve;
                let $sk = $curve::ecdsa::SigningKey::from_slice($material).map_err(|_| ApiError::internal())?;
                let $vk = $curve::ecdsa::VerifyingKey::from(&$sk);
                let $field = 66usize;
                $body
            }
            _ => Err(ApiError::internal()),
        }
    };
}

/// Signs: ed25519 the raw `input` (with the key derived from `context` when given); ECDSA
/// the `digest`. Returns the text after `vault:v<N>:`.
pub fn sign(
    kind: KeyType,
    material: &Material,
    input: &[u8],
    digest: &[u8],
    context: Option<&[u8]>,
    marshaling: Marshaling,
) -> Result<String, ApiError> {
    if kind == KeyType::Ed25519 {
        let key = ed25519_key(material.bytes(), context)?;
        return Ok(B64.encode(key.sign(input).to_bytes()));
    }
    with_curve!(kind, material.bytes(), |sk, _vk, curve, field| {
        let signature: curve::ecdsa::Signature =
            sk.sign_prehash(&ecdsa_digest(digest, field)).map_err(|_| ApiError::internal())?;
        Ok(match marshaling {
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
    digest: &[u8],
    context: Option<&[u8]>,
    marshaling: Marshaling,
    signature: &str,
) -> Result<bool, ApiError> {
    let malformed = || ApiError::bad_request("invalid signature: could not decode");
    if kind == KeyType::Ed25519 {
        let key = ed25519_key(material.bytes(), context)?;
        let bytes = B64.decode(signature).map_err(|_| malformed())?;
        let signature = ed25519_dalek::Signature::from_slice(&bytes).map_err(|_| malformed())?;
        return Ok(key.verifying_key().verify(input, &signature).is_ok());
    }
    with_curve!(kind, material.bytes(), |_sk, vk, curve, field| {
        let signature = match marshaling {
            Marshaling::Asn1 => {
                let der = B64.decode(signature).map_err(|_| malformed())?;
                curve::ecdsa::Signature::from_der(&der).map_err(|_| malformed())?
            }
            Marshaling::Jws => {
                let raw = B64URL.decode(signature).map_err(|_| malformed())?;
                curve::ecdsa::Signature::from_slice(&raw).map_err(|_| malformed())?
            }
        };
        Ok(vk.verify_prehash(&ecdsa_digest(digest, field), &signature).is_ok())
    })
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
    use crate::transit::HashAlgorithm;

    #[test]
    fn every_curve_signs_and_verifies_in_both_encodings() {
        for kind in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::EcdsaP521] {
            let key = generate(kind).unwrap();
            // sha1 and sha2-256 are shorter than half of P-521's field: Go signs them, so must we.
            for hash in [HashAlgorithm::Sha1, HashAlgorithm::Sha2_256, HashAlgorithm::Sha2_512] {
                let digest = hash.digest(b"message");
                for marshaling in [Marshaling::Asn1, Marshaling::Jws] {
                    let signature = sign(kind, &key, b"message", &digest, None, marshaling).unwrap();
                    assert!(verify(kind, &key, b"message", &digest, None, marshaling, &signature).unwrap());
                    let other = hash.digest(b"messagf");
                    assert!(!verify(kind, &key, b"messagf", &other, None, marshaling, &signature).unwrap());
                }
            }
            let malformed = verify(kind, &key, b"m", &[0; 32], None, Marshaling::Asn1, "not base64!").unwrap_err();
            assert_eq!(malformed.status, 400);
            let (pem, _) = public_key(kind, &key, None).unwrap();
            assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
            assert!(export_private(kind, &key).unwrap().starts_with("-----BEGIN EC PRIVATE KEY-----"));
        }
    }

    #[test]
    fn jws_signatures_are_fixed_width_and_url_safe() {
        let key = generate(KeyType::EcdsaP521).unwrap();
        let signature = sign(KeyType::EcdsaP521, &key, b"m", &[7; 64], None, Marshaling::Jws).unwrap();
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
        let signature = sign(KeyType::Ed25519, &key, b"m", b"", Some(b"tenant-a"), Marshaling::Asn1).unwrap();
        assert!(verify(KeyType::Ed25519, &key, b"m", b"", Some(b"tenant-a"), Marshaling::Asn1, &signature).unwrap());
        assert!(!verify(KeyType::Ed25519, &key, b"m", b"", Some(b"tenant-b"), Marshaling::Asn1, &signature).unwrap());
        assert_eq!(B64.decode(&signature).unwrap().len(), 64);
    }

    #[test]
    fn short_digests_are_left_padded_to_half_the_field() {
        assert_eq!(ecdsa_digest(&[1; 32], 32), vec![1; 32]);
        let padded = ecdsa_digest(&[1; 20], 66);
        assert_eq!(padded.len(), 66);
        assert!(padded[..46].iter().all(|b| *b == 0) && padded[46..].iter().all(|b| *b == 1));
    }
}
