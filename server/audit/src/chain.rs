//! The tamper-evident line format, shared by the file device (which writes it) and
//! `arcanum audit verify` (which checks it).
//!
//! One entry is one line:
//!
//! ```text
//! PREFIX{"seq":7,"prev_hash":"<64 hex>",<Vault's entry fields>,"hash":"<64 hex>"}\n
//! ```
//!
//! - `seq` counts the device's lines from 0 and keeps counting across rotated files;
//! - `prev_hash` is the `hash` of the line before it (the previous file's last line after a
//!   rotation), or, for the device's very first line, the device's genesis anchor;
//! - `hash` is the lowercase hex SHA-256 of the line's bytes up to (not including)
//!   `,"hash":`, followed by `}` — that is, of the line exactly as it would read without its
//!   own `hash` field, prefix included and newline excluded.
//!
//! The hash is computed over the bytes as written, so checking a line never depends on how a
//! JSON library would re-serialise it. The three extra keys are ordinary top-level JSON
//! fields: a JSON-lines consumer that knows only Vault's format still sees every Vault field.
//! The chain is unkeyed on purpose (anyone can verify it offline); docs/AUDIT.md says what
//! that does and does not prove.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where a chain line's own JSON object starts.
pub const SEQ_MARKER: &str = "{\"seq\":";
/// What separates the hashed part of a line from its hash.
pub const HASH_MARKER: &str = ",\"hash\":\"";
/// Hex characters in a SHA-256.
const HASH_HEX_LEN: usize = 64;
/// The most a line adds to its entry's fields, prefix aside: the chain fields with the
/// longest sequence number, the closing brace and the newline.
pub const LINE_OVERHEAD: usize =
    SEQ_MARKER.len() + 20 + ",\"prev_hash\":\"\"".len() + HASH_MARKER.len() + 2 * HASH_HEX_LEN + 4;

/// Where the next line of a device goes in its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// `seq` of the next line.
    pub next_seq: u64,
    /// `hash` of the last line written (the genesis anchor before the first one).
    pub last_hash: String,
}

impl ChainHead {
    /// The head of a device that has written nothing yet.
    pub fn genesis(device_uuid: &str) -> ChainHead {
        ChainHead { next_seq: 0, last_hash: genesis_anchor(device_uuid) }
    }

    /// `seq` of the last line written, if any.
    pub fn last_seq(&self) -> Option<u64> {
        self.next_seq.checked_sub(1)
    }
}

/// The `prev_hash` of a device's first line: binds the start of its log to that device.
pub fn genesis_anchor(device_uuid: &str) -> String {
    hex_sha256(format!("arcanum-audit-genesis\n{device_uuid}").as_bytes())
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Turns one entry (`fields`: a compact JSON object, not empty) into a chained line
/// (newline included) and returns it with its hash. `prefix` goes in front, as Vault's
/// `prefix` option does.
pub fn seal_line(prefix: &str, head: &ChainHead, fields: &str) -> (Vec<u8>, String) {
    let mut line = Vec::new();
    let hash = seal_line_into(&mut line, prefix, head, fields);
    (line, hash)
}

/// [`seal_line`], appending the line to `out` (a batch being built) without a copy of its own.
pub fn seal_line_into(out: &mut Vec<u8>, prefix: &str, head: &ChainHead, fields: &str) -> String {
    // `fields` is `{...}`: keep what is between the braces.
    let inner = fields.strip_prefix('{').and_then(|f| f.strip_suffix('}')).unwrap_or("");
    out.reserve(prefix.len() + fields.len() + LINE_OVERHEAD);
    let start = out.len();
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(SEQ_MARKER.as_bytes());
    out.extend_from_slice(itoa::Buffer::new().format(head.next_seq).as_bytes());
    out.extend_from_slice(b",\"prev_hash\":\"");
    out.extend_from_slice(head.last_hash.as_bytes());
    out.push(b'"');
    if !inner.is_empty() {
        out.push(b',');
        out.extend_from_slice(inner.as_bytes());
    }
    out.push(b'}');
    let hash = hex_sha256(&out[start..]);
    out.pop();
    out.extend_from_slice(HASH_MARKER.as_bytes());
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(b"\"}\n");
    hash
}

/// A line that carries chain fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLine {
    pub seq: u64,
    pub prev_hash: String,
    /// The hash the line states.
    pub hash: String,
    /// Whether the stated hash is the hash of the line's content.
    pub content_matches: bool,
}

/// Why a line is not a well-formed chain line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineDefect {
    /// No chain fields at all: not written by an Arcanum device.
    Foreign,
    /// Starts like a chain line but its hash field or its end is missing.
    Incomplete,
    /// Has the shape of a chain line but its fields do not parse.
    Malformed,
}

/// Parses one line (without its newline).
pub fn parse_line(line: &[u8]) -> Result<ChainLine, LineDefect> {
    let Some(start) = find(line, SEQ_MARKER.as_bytes()) else {
        return Err(LineDefect::Foreign);
    };
    let Some(marker) = rfind(line, HASH_MARKER.as_bytes()) else {
        return Err(LineDefect::Incomplete);
    };
    let stated = &line[marker + HASH_MARKER.len()..];
    let Some(stated) = stated.strip_suffix(b"\"}") else {
        return Err(LineDefect::Incomplete);
    };
    if stated.len() != HASH_HEX_LEN || !stated.iter().all(|b| b.is_ascii_hexdigit()) {
        return Err(LineDefect::Incomplete);
    }
    let mut unhashed = Vec::with_capacity(marker + 1);
    unhashed.extend_from_slice(&line[..marker]);
    unhashed.push(b'}');
    let computed = hex_sha256(&unhashed);
    let stated = String::from_utf8_lossy(stated).into_owned();
    let content_matches = computed == stated;
    // The chain fields are read from the JSON object itself, so an edit that breaks the
    // JSON is still caught (as a hash mismatch when the hash no longer matches).
    let object = serde_json::from_slice::<serde_json::Value>(&unhashed[start..]).ok();
    let seq = object.as_ref().and_then(|o| o.get("seq")).and_then(serde_json::Value::as_u64);
    let prev = object.as_ref().and_then(|o| o.get("prev_hash")).and_then(serde_json::Value::as_str);
    match (seq, prev) {
        (Some(seq), Some(prev)) => Ok(ChainLine { seq, prev_hash: prev.to_owned(), hash: stated, content_matches }),
        // Unparseable but hashed: report it as content that no longer matches its hash.
        _ if !content_matches => {
            Ok(ChainLine { seq: u64::MAX, prev_hash: String::new(), hash: stated, content_matches: false })
        }
        _ => Err(LineDefect::Malformed),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_lines_parse_and_link() {
        let head = ChainHead::genesis("device-1");
        let (line, hash) = seal_line("", &head, r#"{"time":"t","type":"request"}"#);
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(text.ends_with("\"}\n"));
        let value: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(value["type"], "request");
        assert_eq!(value["seq"], 0);
        assert_eq!(value["hash"], hash.as_str());
        let parsed = parse_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(
            parsed,
            ChainLine { seq: 0, prev_hash: head.last_hash.clone(), hash: hash.clone(), content_matches: true }
        );

        let next = ChainHead { next_seq: 1, last_hash: hash.clone() };
        let (line2, _) = seal_line("audit: ", &next, r#"{"type":"response"}"#);
        let parsed2 = parse_line(&line2[..line2.len() - 1]).unwrap();
        assert_eq!(parsed2.prev_hash, hash);
        assert!(parsed2.content_matches);
    }

    #[test]
    fn defects_are_classified() {
        let head = ChainHead::genesis("d");
        let (line, _) = seal_line("", &head, r#"{"type":"request","request":{"path":"secret/a"}}"#);
        let line = &line[..line.len() - 1];
        let mut edited = line.to_vec();
        let at = find(&edited, b"secret/a").unwrap();
        edited[at] = b'S';
        assert!(!parse_line(&edited).unwrap().content_matches);
        // An edit that breaks the JSON is still an edit.
        let mut broken = line.to_vec();
        let quote = find(&broken, b"\"request\"").unwrap();
        broken[quote] = b'x';
        assert!(!parse_line(&broken).unwrap().content_matches);
        assert_eq!(parse_line(&line[..line.len() - 10]), Err(LineDefect::Incomplete));
        assert_eq!(parse_line(br#"{"type":"request"}"#), Err(LineDefect::Foreign));
        assert_eq!(parse_line(b""), Err(LineDefect::Foreign));
    }
}
