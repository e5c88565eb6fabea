//! Offline checking of audit logs (`arcanum audit verify FILE...`): no server, no keys.
//!
//! The files are read in the order given (oldest first, e.g. `audit.log.2 audit.log.1
//! audit.log`) as one chain. The first line that breaks it is reported with its file, its
//! line number and the reason; reading stops there, except that a jump in `seq` is told
//! apart by looking for the missing line further on (found: reordered; not found: removed).
//!
//! What a clean result proves is in docs/AUDIT.md: in short, every line is unchanged and in
//! place relative to its neighbours, from the first line given to the last — but lines cut
//! off after the last one, or a whole log rewritten by someone who recomputes the hashes,
//! are caught only with an anchor or a checkpoint recorded elsewhere.

use std::fmt;
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};

use super::chain::{self, LineDefect};

/// What the chain is checked against besides itself.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The `prev_hash` the first line must carry: the device's genesis anchor from
    /// `sys/audit`, or the hash of the last line of an older file that is no longer kept.
    pub anchor: Option<String>,
    /// `(seq, hash)` pairs recorded earlier (from `sys/audit`'s `chain`): the line with that
    /// `seq` must be present and carry that hash.
    pub checkpoints: Vec<(u64, String)>,
}

/// Why a line breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The line's content does not match its own hash.
    Edited,
    /// `seq` jumps forward and the missing lines appear nowhere later.
    Removed { expected: u64, found: u64 },
    /// `seq` is not the next one, and the expected line appears elsewhere (or this one is
    /// a repeat of an earlier `seq`).
    Reordered { expected: u64, found: u64 },
    /// The line is cut short: no final newline, or no `hash` field at its end.
    Truncated,
    /// A line without chain fields (not written by an Arcanum audit device).
    Foreign,
    /// Right `seq` but `prev_hash` is not the previous line's hash: the previous line was
    /// replaced by one with a recomputed hash, or lines were spliced in from another chain.
    Relinked,
    /// The first line does not start where `--anchor` says.
    AnchorMismatch,
    /// The line with a checkpoint's `seq` carries another hash.
    CheckpointMismatch { seq: u64 },
    /// The log ends before a checkpoint's `seq`: trailing lines or files are missing.
    CheckpointNotReached { seq: u64 },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Edited => write!(f, "edited: the line's content does not match its hash"),
            Reason::Removed { expected, found } => write!(
                f,
                "removed: {} line(s) missing before this one (expected seq {expected}, found {found})",
                found - expected
            ),
            Reason::Reordered { expected, found } => {
                write!(f, "reordered: expected seq {expected}, found seq {found}")
            }
            Reason::Truncated => write!(f, "truncated: the line is incomplete"),
            Reason::Foreign => write!(f, "foreign line inserted: it carries no chain fields"),
            Reason::Relinked => write!(
                f,
                "chain broken: prev_hash is not the previous line's hash \
                 (the previous line was replaced, or lines from another log were spliced in)"
            ),
            Reason::AnchorMismatch => write!(f, "anchor mismatch: the first line does not start at the given anchor"),
            Reason::CheckpointMismatch { seq } => {
                write!(f, "checkpoint mismatch: the line with seq {seq} is not the one recorded")
            }
            Reason::CheckpointNotReached { seq } => {
                write!(f, "truncated at the end: the log stops before checkpoint seq {seq}")
            }
        }
    }
}

/// The first broken line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub file: PathBuf,
    /// 1-based line number within `file`.
    pub line: u64,
    pub reason: Reason,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// What an intact chain covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub lines: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// `prev_hash` of the first line.
    pub anchor: Option<String>,
    /// `hash` of the last line: record it to check later runs with `--checkpoint`.
    pub head: Option<String>,
}

/// The result of [`verify_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Intact(Summary),
    Broken(Break),
}

struct RawLine {
    file: usize,
    number: u64,
    bytes: Vec<u8>,
    complete: bool,
}

/// The lines of several files in order, each with its file and line number.
struct Lines<'a> {
    paths: &'a [PathBuf],
    file: usize,
    reader: Option<BufReader<File>>,
    number: u64,
}

impl Lines<'_> {
    fn next(&mut self) -> std::io::Result<Option<RawLine>> {
        loop {
            if self.reader.is_none() {
                let Some(path) = self.paths.get(self.file) else { return Ok(None) };
                let file = File::open(path)
                    .map_err(|err| std::io::Error::new(err.kind(), format!("{}: {err}", path.display())))?;
                self.reader = Some(BufReader::with_capacity(1 << 16, file));
                self.number = 0;
            }
            let Some(reader) = self.reader.as_mut() else { continue };
            let mut bytes = Vec::new();
            if reader.read_until(b'\n', &mut bytes)? == 0 {
                self.reader = None;
                self.file += 1;
                continue;
            }
            self.number += 1;
            let complete = bytes.last() == Some(&b'\n');
            if complete {
                bytes.pop();
            }
            return Ok(Some(RawLine { file: self.file, number: self.number, bytes, complete }));
        }
    }
}

/// Checks the chain across `paths`, in order.
pub fn verify_files(paths: &[PathBuf], options: &VerifyOptions) -> std::io::Result<Outcome> {
    let mut lines = Lines { paths, file: 0, reader: None, number: 0 };
    let mut summary = Summary::default();
    let mut last: Option<(u64, String)> = None;
    let mut last_position: Option<(usize, u64)> = None;
    let broken = |line: &RawLine, reason: Reason| {
        Ok(Outcome::Broken(Break { file: paths[line.file].clone(), line: line.number, reason }))
    };
    while let Some(line) = lines.next()? {
        last_position = Some((line.file, line.number));
        let parsed = match chain::parse_line(&line.bytes) {
            Ok(parsed) => parsed,
            Err(LineDefect::Incomplete) => return broken(&line, Reason::Truncated),
            Err(LineDefect::Foreign | LineDefect::Malformed) if !line.complete => {
                return broken(&line, Reason::Truncated)
            }
            Err(LineDefect::Foreign | LineDefect::Malformed) => return broken(&line, Reason::Foreign),
        };
        if !parsed.content_matches {
            return broken(&line, Reason::Edited);
        }
        if !line.complete {
            return broken(&line, Reason::Truncated);
        }
        match &last {
            None => {
                if options.anchor.as_ref().is_some_and(|anchor| *anchor != parsed.prev_hash) {
                    return broken(&line, Reason::AnchorMismatch);
                }
                summary.first_seq = Some(parsed.seq);
                summary.anchor = Some(parsed.prev_hash.clone());
            }
            Some((seq, hash)) => {
                let expected = seq.saturating_add(1);
                if parsed.seq == expected {
                    if parsed.prev_hash != *hash {
                        return broken(&line, Reason::Relinked);
                    }
                } else if parsed.seq < expected {
                    return broken(&line, Reason::Reordered { expected, found: parsed.seq });
                } else {
                    let found = parsed.seq;
                    let reason = if appears_later(&mut lines, expected)? {
                        Reason::Reordered { expected, found }
                    } else {
                        Reason::Removed { expected, found }
                    };
                    return broken(&line, reason);
                }
            }
        }
        if let Some((_, hash)) = options.checkpoints.iter().find(|(seq, _)| *seq == parsed.seq) {
            if *hash != parsed.hash {
                return broken(&line, Reason::CheckpointMismatch { seq: parsed.seq });
            }
        }
        summary.lines += 1;
        summary.last_seq = Some(parsed.seq);
        summary.head = Some(parsed.hash.clone());
        last = Some((parsed.seq, parsed.hash));
    }
    let reached = summary.last_seq;
    if let Some((seq, _)) = options.checkpoints.iter().filter(|(seq, _)| reached.is_none_or(|r| *seq > r)).min() {
        let (file, line) = last_position.unwrap_or((paths.len().saturating_sub(1), 0));
        return Ok(Outcome::Broken(Break {
            file: paths.get(file).cloned().unwrap_or_default(),
            line,
            reason: Reason::CheckpointNotReached { seq: *seq },
        }));
    }
    Ok(Outcome::Intact(summary))
}

/// Whether a line with `seq` comes later (consumes the rest of the input).
fn appears_later(lines: &mut Lines<'_>, seq: u64) -> std::io::Result<bool> {
    while let Some(line) = lines.next()? {
        if chain::parse_line(&line.bytes).is_ok_and(|parsed| parsed.content_matches && parsed.seq == seq) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Convenience for one file.
pub fn verify_file(path: &Path) -> std::io::Result<Outcome> {
    verify_files(&[path.to_path_buf()], &VerifyOptions::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{seal_line, ChainHead};

    /// `n` chained lines starting at genesis; returns them and the head after them.
    fn lines(n: u64, head: ChainHead) -> (Vec<Vec<u8>>, ChainHead) {
        let mut head = head;
        let mut out = Vec::new();
        for i in 0..n {
            let (line, hash) = seal_line("", &head, &format!("{{\"type\":\"request\",\"n\":{i}}}"));
            out.push(line);
            head = ChainHead { next_seq: head.next_seq + 1, last_hash: hash };
        }
        (out, head)
    }

    fn check(content: &[Vec<u8>]) -> Outcome {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, content.concat()).unwrap();
        verify_files(&[path], &VerifyOptions::default()).unwrap()
    }

    fn broken_at(outcome: Outcome) -> (u64, Reason) {
        match outcome {
            Outcome::Broken(b) => (b.line, b.reason),
            Outcome::Intact(s) => panic!("intact: {s:?}"),
        }
    }

    #[test]
    fn table_of_tampering() {
        let (good, _) = lines(6, ChainHead::genesis("d"));
        assert!(matches!(check(&good), Outcome::Intact(Summary { lines: 6, first_seq: Some(0), .. })));

        let mut edited = good.clone();
        let at = edited[2].iter().position(|b| *b == b'r').unwrap();
        edited[2][at] = b'R';
        assert_eq!(broken_at(check(&edited)), (3, Reason::Edited));

        let mut removed = good.clone();
        removed.remove(2);
        assert_eq!(broken_at(check(&removed)), (3, Reason::Removed { expected: 2, found: 3 }));

        let mut swapped = good.clone();
        swapped.swap(2, 3);
        assert_eq!(broken_at(check(&swapped)), (3, Reason::Reordered { expected: 2, found: 3 }));

        let mut truncated = good.clone();
        let last = truncated.last_mut().unwrap();
        last.truncate(last.len() - 5);
        assert_eq!(broken_at(check(&truncated)), (6, Reason::Truncated));

        let mut foreign = good.clone();
        foreign.push(b"{\"type\":\"request\",\"request\":{\"path\":\"secret/x\"}}\n".to_vec());
        assert_eq!(broken_at(check(&foreign)), (7, Reason::Foreign));

        let mut duplicated = good.clone();
        duplicated.push(good[5].clone());
        assert_eq!(broken_at(check(&duplicated)), (7, Reason::Reordered { expected: 6, found: 5 }));

        // A line replaced by a well-formed one with a recomputed hash: caught at the next line.
        let mut replaced = good.clone();
        let head = ChainHead { next_seq: 2, last_hash: chain::parse_line(&good[1][..good[1].len() - 1]).unwrap().hash };
        replaced[2] = seal_line("", &head, "{\"type\":\"request\",\"forged\":true}").0;
        assert_eq!(broken_at(check(&replaced)), (4, Reason::Relinked));
    }

    #[test]
    fn chain_continues_across_files_and_checks_anchor_and_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let genesis = ChainHead::genesis("d");
        let (first, head) = lines(3, genesis.clone());
        let (second, end) = lines(2, head);
        let old = dir.path().join("a.log.1");
        let new = dir.path().join("a.log");
        std::fs::write(&old, first.concat()).unwrap();
        std::fs::write(&new, second.concat()).unwrap();
        let both = [old.clone(), new.clone()];
        let intact = verify_files(&both, &VerifyOptions::default()).unwrap();
        assert_eq!(
            intact,
            Outcome::Intact(Summary {
                lines: 5,
                first_seq: Some(0),
                last_seq: Some(4),
                anchor: Some(genesis.last_hash.clone()),
                head: Some(end.last_hash.clone()),
            })
        );
        let reversed = verify_files(&[new.clone(), old.clone()], &VerifyOptions::default()).unwrap();
        assert!(matches!(reversed, Outcome::Broken(Break { line: 1, reason: Reason::Reordered { .. }, .. })));
        let anchored = VerifyOptions { anchor: Some("0".repeat(64)), checkpoints: vec![] };
        assert!(matches!(
            verify_files(&both, &anchored).unwrap(),
            Outcome::Broken(Break { reason: Reason::AnchorMismatch, .. })
        ));
        let checkpoint = VerifyOptions { anchor: None, checkpoints: vec![(4, end.last_hash.clone())] };
        assert!(matches!(verify_files(&both, &checkpoint).unwrap(), Outcome::Intact(_)));
        // The newest file lost: only a checkpoint shows it.
        assert!(matches!(
            verify_files(std::slice::from_ref(&old), &VerifyOptions::default()).unwrap(),
            Outcome::Intact(_)
        ));
        assert!(matches!(
            verify_files(&[old], &checkpoint).unwrap(),
            Outcome::Broken(Break { reason: Reason::CheckpointNotReached { seq: 4 }, .. })
        ));
    }
}
