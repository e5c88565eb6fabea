//! Transit's cryptographic operations: encrypt, decrypt, rewrap, data keys, random bytes,
//! hashes, HMACs and their verification, singly and in `batch_input`, with Vault's fields,
//! result shapes and status codes (a failed batch item carries its own `error`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use super::asymmetric::{Marshaling, RsaPadding, SaltLength, Scheme};
use super::{fields, key_not_found, HashAlgorithm, KeyPolicy, KeySpec, KeyType, Transit};
use arcanum_contract::backend::BackendRequest;
use arcanum_contract::logical::{ApiError, LogicalResponse, Response};

/// The most `random/` hands out in one call (Vault's limit).
const MAX_RANDOM_BYTES: u64 = 128 * 1024;

/// The items of a request: `batch_input`, or the top-level fields as a single item.
struct Items {
    items: Vec<Map<String, Value>>,
    batch: bool,
}

fn items(req: &BackendRequest<'_>) -> Result<Items, ApiError> {
    match req.field("batch_input") {
        None => Ok(Items { items: vec![req.data.clone()], batch: false }),
        Some(Value::Array(list)) => {
            if list.is_empty() {
                return Err(ApiError::bad_request("missing batch input to process"));
            }
            let items = list
                .iter()
                .map(|item| match item {
                    Value::Object(map) => Ok(map.clone()),
                    _ => Err(ApiError::bad_request("failed to parse batch input: each item must be an object")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Items { items, batch: true })
        }
        Some(_) => Err(ApiError::bad_request("failed to parse batch input: batch_input must be a list")),
    }
}

fn field<'a>(item: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    item.get(name).filter(|value| !value.is_null())
}

fn text(item: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    fields::string(field(item, name), name)
}

/// A base64 field, decoded; absent is empty.
pub(super) fn base64_field(item: &Map<String, Value>, name: &str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let encoded = Zeroizing::new(text(item, name)?);
    B64.decode(encoded.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| ApiError::bad_request(format!("failed to base64-decode {name}")))
}

/// `input`, base64-decoded, with Vault's message for text that is not base64.
fn input_field(item: &Map<String, Value>) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let encoded = Zeroizing::new(text(item, "input")?);
    B64.decode(encoded.as_bytes())
        .map(Zeroizing::new)
        .map_err(|err| ApiError::bad_request(format!("unable to decode input as base64: {err}")))
}

fn item_version(item: &Map<String, Value>, top: &Map<String, Value>) -> Result<u32, ApiError> {
    let value = field(item, "key_version").or_else(|| field(top, "key_version"));
    super::version_field(value, "key_version").map(|v| v.unwrap_or(0))
}

fn reference(item: &Map<String, Value>) -> Value {
    json!(field(item, "reference").and_then(Value::as_str).unwrap_or(""))
}

/// How a batch answers when items fail.
#[derive(Clone, Copy, PartialEq)]
enum Batch {
    /// encrypt and decrypt: a failed item fails the whole reply (400, or 500 for internal
    /// failures only), unless `partial_failure_response_code` says otherwise. A decrypt item
    /// that failed still carries an empty `plaintext`, as Vault's does.
    FailOnItemError { blank_on_error: Option<&'static str> },
    /// rewrap, hmac and verify: always 200, errors only inside the items.
    AlwaysOk,
}

/// Runs `each` over every item and shapes Vault's answer: the single item's data (or its
/// error as a plain 400), or `batch_results` with an `error` on each failed item.
fn respond(
    req: &BackendRequest<'_>,
    items: &Items,
    batch: Batch,
    mut each: impl FnMut(&Map<String, Value>) -> Result<Map<String, Value>, ApiError>,
) -> Result<Response, ApiError> {
    if !items.batch {
        return Ok(Response::data(each(&items.items[0])?));
    }
    let mut results = Vec::with_capacity(items.items.len());
    let (mut user_errors, mut internal_errors, mut successes) = (0, 0, 0);
    for item in &items.items {
        let mut result = match each(item) {
            Ok(data) => {
                successes += 1;
                data
            }
            Err(err) => {
                if err.status >= 500 {
                    internal_errors += 1;
                } else {
                    user_errors += 1;
                }
                let mut failed = Map::from_iter([("error".into(), json!(err.errors.join("; ")))]);
                if let Batch::FailOnItemError { blank_on_error: Some(name) } = batch {
                    failed.insert(name.into(), json!(""));
                }
                failed
            }
        };
        result.insert("reference".into(), reference(item));
        results.push(Value::Object(result));
    }
    let mut status = 0;
    if matches!(batch, Batch::FailOnItemError { .. }) && user_errors + internal_errors > 0 {
        let partial =
            fields::non_negative(req.field("partial_failure_response_code"), "partial_failure_response_code")?;
        status = match partial {
            Some(code) if successes > 0 && (1..600).contains(&code) => code as u16,
            _ if user_errors > 0 => 400,
            _ => 500,
        };
    }
    let data = Map::from_iter([("batch_results".into(), Value::Array(results))]);
    Ok(Response::Logical(Box::new(LogicalResponse { status, data: Some(data), ..Default::default() })))
}

pub(super) async fn encrypt(transit: &Transit, req: &BackendRequest<'_>, name: &str) -> Result<Response, ApiError> {
    check_padding_scheme(req)?;
    let items = items(req)?;
    if !items.batch && field(&items.items[0], "plaintext").is_none() {
        return Err(ApiError::bad_request("missing plaintext to encrypt"));
    }
    let policy = match transit.load(req.storage, name).await? {
        Some(policy) => policy,
        None => upsert(transit, req, name, &items).await?,
    };
    respond(req, &items, Batch::FailOnItemError { blank_on_error: None }, |item| {
        if field(item, "plaintext").is_none() {
            return Err(ApiError::bad_request("missing plaintext to encrypt"));
        }
        let plaintext = base64_field(item, "plaintext")?;
        let context = base64_field(item, "context")?;
        let nonce = base64_field(item, "nonce")?;
        let associated_data = base64_field(item, "associated_data")?;
        let version = policy.encryption_version(item_version(item, req.data)?)?;
        let ciphertext = policy.encrypt(version, &plaintext, &context, &nonce, &associated_data)?;
        Ok(Map::from_iter([("ciphertext".into(), json!(ciphertext)), ("key_version".into(), json!(version))]))
    })
}

/// Creates the key a first encryption names, as Vault does for callers with `create`.
async fn upsert(
    transit: &Transit,
    req: &BackendRequest<'_>,
    name: &str,
    items: &Items,
) -> Result<std::sync::Arc<KeyPolicy>, ApiError> {
    let config = transit.config(req.storage).await?;
    let disabled = config.get("disable_upsert").and_then(Value::as_bool).unwrap_or(false);
    // The router asked for `create` only when the existence check found no key; a key
    // deleted since then is not silently made again under an `update` grant.
    if !req.create || disabled {
        return Err(key_not_found());
    }
    let with_context = items.items.iter().filter(|item| field(item, "context").is_some()).count();
    if with_context != 0 && with_context != items.items.len() {
        return Err(ApiError::bad_request("context should be set either in all the request blocks or in none"));
    }
    let kind = match req.field("type") {
        None => KeyType::Aes256Gcm96,
        Some(value) => KeyType::parse(&fields::string(Some(value), "type")?)?,
    };
    if !kind.supports_encryption() {
        return Err(ApiError::bad_request(format!("key type {} not supported for this operation", kind.name())));
    }
    let mut spec = KeySpec::new(kind);
    spec.derived = with_context != 0;
    spec.convergent_encryption =
        fields::boolean(req.field("convergent_encryption"), "convergent_encryption")?.unwrap_or(false);
    if spec.convergent_encryption && !spec.derived {
        return Err(ApiError::bad_request(
            "convergent encryption requires derivation to be enabled, so context is required",
        ));
    }
    let (policy, _) = transit.create(req.storage, name, &spec).await?;
    Ok(policy)
}

/// `padding_scheme` for RSA keys: OAEP only (see docs/TRANSIT.md on RUSTSEC-2023-0071).
fn check_padding_scheme(req: &BackendRequest<'_>) -> Result<(), ApiError> {
    match fields::string(req.field("padding_scheme"), "padding_scheme")?.as_str() {
        "" | "oaep" => Ok(()),
        "pkcs1v15" => Err(ApiError::bad_request(
            "padding_scheme pkcs1v15 is not offered: PKCS#1 v1.5 decryption is the oracle of the Marvin \
             attack (RUSTSEC-2023-0071); use oaep",
        )),
        other => Err(ApiError::bad_request(format!("padding_scheme argument invalid: {other}"))),
    }
}

pub(super) async fn decrypt(transit: &Transit, req: &BackendRequest<'_>, name: &str) -> Result<Response, ApiError> {
    check_padding_scheme(req)?;
    let items = items(req)?;
    if !items.batch && field(&items.items[0], "ciphertext").is_none() {
        return Err(ApiError::bad_request("missing ciphertext to decrypt"));
    }
    let policy = transit.require(req.storage, name).await?;
    respond(req, &items, Batch::FailOnItemError { blank_on_error: Some("plaintext") }, |item| {
        let ciphertext = text(item, "ciphertext")?;
        if ciphertext.is_empty() {
            return Err(ApiError::bad_request("missing ciphertext to decrypt"));
        }
        let context = base64_field(item, "context")?;
        let nonce = base64_field(item, "nonce")?;
        let associated_data = base64_field(item, "associated_data")?;
        let (plaintext, _) = policy.decrypt(&ciphertext, &context, &nonce, &associated_data)?;
        Ok(Map::from_iter([("plaintext".into(), json!(B64.encode(&*plaintext)))]))
    })
}

pub(super) async fn rewrap(transit: &Transit, req: &BackendRequest<'_>, name: &str) -> Result<Response, ApiError> {
    let items = items(req)?;
    if !items.batch && field(&items.items[0], "ciphertext").is_none() {
        return Err(ApiError::bad_request("missing ciphertext to decrypt"));
    }
    let policy = transit.require(req.storage, name).await?;
    respond(req, &items, Batch::AlwaysOk, |item| {
        let ciphertext = text(item, "ciphertext")?;
        if ciphertext.is_empty() {
            return Err(ApiError::bad_request("missing ciphertext to decrypt"));
        }
        let context = base64_field(item, "context")?;
        let nonce = base64_field(item, "nonce")?;
        let (plaintext, _) = policy.decrypt(&ciphertext, &context, &nonce, &[])?;
        let version = policy.encryption_version(item_version(item, req.data)?)?;
        let ciphertext = policy.encrypt(version, &plaintext, &context, &nonce, &[])?;
        Ok(Map::from_iter([("ciphertext".into(), json!(ciphertext)), ("key_version".into(), json!(version))]))
    })
}

pub(super) async fn datakey(
    transit: &Transit,
    req: &BackendRequest<'_>,
    kind: &str,
    name: &str,
) -> Result<Response, ApiError> {
    let with_plaintext = match kind {
        "plaintext" => true,
        "wrapped" => false,
        _ => return Err(ApiError::bad_request("Invalid path, must be 'plaintext' or 'wrapped'")),
    };
    let bits = fields::non_negative(req.field("bits"), "bits")?.unwrap_or(256);
    if ![128, 256, 512].contains(&bits) {
        return Err(ApiError::bad_request("invalid bit length"));
    }
    let policy = transit.require(req.storage, name).await?;
    let context = base64_field(req.data, "context")?;
    let nonce = base64_field(req.data, "nonce")?;
    let version = policy.encryption_version(item_version(req.data, req.data)?)?;
    let mut data_key = Zeroizing::new(vec![0u8; bits as usize / 8]);
    rand::rngs::OsRng.fill_bytes(&mut data_key);
    let ciphertext = policy.encrypt(version, &data_key, &context, &nonce, &[])?;
    let mut data = Map::from_iter([("ciphertext".into(), json!(ciphertext)), ("key_version".into(), json!(version))]);
    if with_plaintext {
        data.insert("plaintext".into(), json!(B64.encode(&*data_key)));
    }
    Ok(Response::data(data))
}

pub(super) fn random(req: &BackendRequest<'_>, url: &[&str]) -> Result<Response, ApiError> {
    let is_source = |s: &str| matches!(s, "platform" | "seal" | "all");
    let body_bytes = || fields::non_negative(req.field("bytes"), "bytes").map(|b| b.unwrap_or(32));
    let parse_bytes = |s: &str| {
        s.parse::<u64>().map_err(|_| ApiError::bad_request(format!("error parsing url-set byte count: {s:?}")))
    };
    // As Vault's: one URL segment is a source if it names one, else a byte count.
    let (source, bytes) = match url {
        [] => (fields::string(req.field("source"), "source")?, body_bytes()?),
        [one] if is_source(one) => ((*one).to_owned(), body_bytes()?),
        [one] => (fields::string(req.field("source"), "source")?, parse_bytes(one)?),
        [source, bytes] => ((*source).to_owned(), parse_bytes(bytes)?),
        _ => return Err(ApiError::unsupported_operation()),
    };
    // There is no seal with its own entropy source (no HSM), so every source is the platform's.
    if !source.is_empty() && !is_source(&source) {
        return Err(ApiError::bad_request(format!(
            "unsupported entropy source {source:?}; must be \"platform\" or \"seal\", or \"all\""
        )));
    }
    if bytes < 1 {
        return Err(ApiError::bad_request("\"bytes\" cannot be less than 1"));
    }
    if bytes > MAX_RANDOM_BYTES {
        return Err(ApiError::bad_request(format!("\"bytes\" should be less than {MAX_RANDOM_BYTES}")));
    }
    let format = encoding(req.data, "base64")?;
    let mut random = Zeroizing::new(vec![0u8; bytes as usize]);
    rand::rngs::OsRng.fill_bytes(&mut random);
    Ok(Response::data(Map::from_iter([("random_bytes".into(), json!(format.encode(&random)))])))
}

#[derive(Clone, Copy)]
enum Encoding {
    Hex,
    Base64,
}

impl Encoding {
    fn encode(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Hex => hex::encode(bytes),
            Encoding::Base64 => B64.encode(bytes),
        }
    }
}

fn encoding(data: &Map<String, Value>, default: &str) -> Result<Encoding, ApiError> {
    let format = text(data, "format")?;
    match if format.is_empty() { default } else { format.as_str() } {
        "hex" => Ok(Encoding::Hex),
        "base64" => Ok(Encoding::Base64),
        other => {
            Err(ApiError::bad_request(format!("unsupported encoding format {other}; must be \"hex\" or \"base64\"")))
        }
    }
}

/// The hash algorithm's name: the URL's (which wins), else the body's `hash_algorithm`
/// (`sign` and `verify` name it so, and hvac sends that), else `algorithm` (`hmac`, `hash`).
fn algorithm_name(req: &BackendRequest<'_>, url: Option<&str>) -> Result<String, ApiError> {
    Ok(match url {
        Some(name) => name.to_owned(),
        None => match fields::string(req.field("hash_algorithm"), "hash_algorithm")? {
            named if named.is_empty() => fields::string(req.field("algorithm"), "algorithm")?,
            named => named,
        },
    })
}

/// The hash algorithm `hash`, `hmac` and HMAC verification use.
fn algorithm(req: &BackendRequest<'_>, url: Option<&str>) -> Result<HashAlgorithm, ApiError> {
    HashAlgorithm::parse(&algorithm_name(req, url)?)
}

pub(super) fn hash(req: &BackendRequest<'_>, url: Option<&str>) -> Result<Response, ApiError> {
    if req.field("input").is_none() {
        return Err(ApiError::bad_request("input missing"));
    }
    let input = input_field(req.data)?;
    let format = encoding(req.data, "hex")?;
    let algorithm = algorithm(req, url)?;
    Ok(Response::data(Map::from_iter([("sum".into(), json!(format.encode(&algorithm.digest(&input))))])))
}

pub(super) async fn hmac(
    transit: &Transit,
    req: &BackendRequest<'_>,
    name: &str,
    url: Option<&str>,
) -> Result<Response, ApiError> {
    let algorithm = algorithm(req, url)?;
    let items = items(req)?;
    if !items.batch && field(&items.items[0], "input").is_none() {
        return Err(ApiError::bad_request("missing input for HMAC"));
    }
    let policy = transit.require(req.storage, name).await?;
    let version = policy.hmac_version(item_version(req.data, req.data)?)?;
    respond(req, &items, Batch::AlwaysOk, |item| {
        if field(item, "input").is_none() {
            return Err(ApiError::bad_request("missing input for HMAC"));
        }
        let input = input_field(item)?;
        Ok(Map::from_iter([("hmac".into(), json!(policy.hmac(version, algorithm, &input)?))]))
    })
}

pub(super) async fn verify(
    transit: &Transit,
    req: &BackendRequest<'_>,
    name: &str,
    url: Option<&str>,
) -> Result<Response, ApiError> {
    let items = items(req)?;
    let with_hmac = items.items.iter().filter(|item| field(item, "hmac").is_some()).count();
    let with_signature = items.items.iter().filter(|item| field(item, "signature").is_some()).count();
    if with_hmac > 0 && with_signature > 0 {
        return Err(ApiError::bad_request("provide one of 'signature' or 'hmac', not both"));
    }
    if with_hmac + with_signature == 0 {
        return Err(ApiError::bad_request("neither a 'signature' nor an 'hmac' were given to verify"));
    }
    if with_signature > 0 {
        return verify_signatures(transit, req, name, url, &items).await;
    }
    let algorithm = algorithm(req, url)?;
    let policy = transit.require(req.storage, name).await?;
    respond(req, &items, Batch::AlwaysOk, |item| {
        if field(item, "input").is_none() {
            return Err(ApiError::bad_request("missing input"));
        }
        let input = input_field(item)?;
        let expected = text(item, "hmac")?;
        if expected.is_empty() {
            return Err(ApiError::bad_request("missing hmac"));
        }
        let valid = policy.verify_hmac(algorithm, &input, &expected)?;
        // Vault's HMAC batch items leave `valid` out when it is false.
        Ok(if valid || !items.batch { Map::from_iter([("valid".into(), json!(valid))]) } else { Map::new() })
    })
}

/// What a signature hashes and how it is laid out, from the URL and the body.
fn signature_scheme(req: &BackendRequest<'_>, url: Option<&str>, policy: &KeyPolicy) -> Result<Scheme, ApiError> {
    let named = algorithm_name(req, url)?;
    let hash = if named.is_empty() { Some(HashAlgorithm::Sha2_256) } else { HashAlgorithm::parse_for_signing(&named)? };
    let prehashed = fields::boolean(req.field("prehashed"), "prehashed")?.unwrap_or(false);
    let marshaling = Marshaling::parse(&fields::string(req.field("marshaling_algorithm"), "marshaling_algorithm")?)?;
    let ecdsa = matches!(policy.kind, KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::EcdsaP521);
    if marshaling == Marshaling::Jws && !ecdsa {
        return Err(ApiError::bad_request("marshaling type jws is only supported for ECDSA keys"));
    }
    let padding = match fields::string(req.field("signature_algorithm"), "signature_algorithm")?.as_str() {
        "" | "pss" => RsaPadding::Pss,
        "pkcs1v15" => RsaPadding::Pkcs1v15,
        other => return Err(ApiError::bad_request(format!("unsupported rsa signature algorithm {other}"))),
    };
    let salt = match req.field("salt_length") {
        None => SaltLength::Auto,
        Some(Value::Number(n)) => SaltLength::parse(&n.to_string())?,
        Some(value) => SaltLength::parse(&fields::string(Some(value), "salt_length")?)?,
    };
    if hash.is_none() && !(policy.kind.is_rsa() && padding == RsaPadding::Pkcs1v15 && prehashed) {
        return Err(ApiError::bad_request(
            "hash algorithm none is only valid for prehashed input to RSA PKCS#1 v1.5 signatures",
        ));
    }
    Ok(Scheme { hash, prehashed, marshaling, padding, salt })
}

/// The signing key `name`, refused when missing or when its type cannot sign.
async fn signing_key(
    transit: &Transit,
    req: &BackendRequest<'_>,
    name: &str,
    verb: &str,
) -> Result<std::sync::Arc<KeyPolicy>, ApiError> {
    let policy =
        transit.load(req.storage, name).await?.ok_or_else(|| ApiError::bad_request("signing key not found"))?;
    if !policy.kind.supports_signing() {
        return Err(ApiError::bad_request(format!("key type {} does not support {verb}", policy.kind.name())));
    }
    Ok(policy)
}

/// An item's `context`, or the request's when the item has none.
fn context_of(item: &Map<String, Value>, top: &Map<String, Value>) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    if field(item, "context").is_some() {
        base64_field(item, "context")
    } else {
        base64_field(top, "context")
    }
}

pub(super) async fn sign(
    transit: &Transit,
    req: &BackendRequest<'_>,
    name: &str,
    url: Option<&str>,
) -> Result<Response, ApiError> {
    let items = items(req)?;
    let policy = signing_key(transit, req, name, "signing").await?;
    let scheme = signature_scheme(req, url, &policy)?;
    let version = policy.encryption_version(item_version(req.data, req.data)?)?;
    respond(req, &items, Batch::AlwaysOk, |item| {
        let input = input_field(item)?;
        let context = context_of(item, req.data)?;
        let signature = policy.sign(version, &input, &context, &scheme)?;
        let mut result =
            Map::from_iter([("signature".into(), json!(signature)), ("key_version".into(), json!(version))]);
        if policy.derived {
            // Vault names it `public_key` in a single answer and `publickey` in batch items.
            let field_name = if items.batch { "publickey" } else { "public_key" };
            result.insert(field_name.into(), json!(policy.public_key(version, &context)?.0));
        }
        Ok(result)
    })
}

async fn verify_signatures(
    transit: &Transit,
    req: &BackendRequest<'_>,
    name: &str,
    url: Option<&str>,
    items: &Items,
) -> Result<Response, ApiError> {
    let policy = signing_key(transit, req, name, "verification").await?;
    let scheme = signature_scheme(req, url, &policy)?;
    respond(req, items, Batch::AlwaysOk, |item| {
        let input = input_field(item)?;
        let context = context_of(item, req.data)?;
        let signature = text(item, "signature")?;
        if signature.is_empty() {
            return Err(ApiError::bad_request("missing signature"));
        }
        let valid = policy.verify_signature(&input, &context, &scheme, &signature)?;
        Ok(Map::from_iter([("valid".into(), json!(valid))]))
    })
}
