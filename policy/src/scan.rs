//! A lexical pre-check of HCL policy text that bounds how deeply the HCL parser can recurse.
//!
//! The HCL parser descends recursively for every bracket, operator, conditional and template level; a
//! few hundred levels of `!`, `(` or `"${"` overflow a 2 MiB thread stack in a debug build, which aborts
//! the whole server. Policies only ever hold literal values, so anything that would need evaluation
//! (operators, parentheses, function calls, template directives) is refused here with a line and column,
//! and the remaining sources of depth — brackets, interpolations, minus signs — are capped.

/// Brackets (`{`, `[`) open at once. Real policies use four or five (`path {`, `allowed_parameters = {`,
/// `"key" = [`); nested Enterprise `control_group` blocks a few more.
const MAX_BRACKET_DEPTH: usize = 16;
/// `${ ... }` interpolations open at once (kept as raw text, never evaluated).
const MAX_TEMPLATE_DEPTH: usize = 2;
/// Minus signs outside identifiers (negative numbers, or a chain of subtractions) in the whole text.
const MAX_MINUS_SIGNS: usize = 64;

/// Where and why the text was refused; `offset` is a byte offset into the text.
#[derive(Debug)]
pub(crate) struct ScanError {
    pub(crate) offset: usize,
    pub(crate) message: String,
}

#[derive(Debug)]
enum Frame {
    /// Inside `"..."`.
    Quoted,
    /// Inside a heredoc whose closing line is the identifier.
    Heredoc(String),
    /// Inside `${ ... }`; closes at the `}` that brings the bracket depth back to this value.
    Interpolation(usize),
}

fn refuse(offset: usize, message: impl Into<String>) -> Result<(), ScanError> {
    Err(ScanError { offset, message: message.into() })
}

pub(crate) fn prescan(text: &str) -> Result<(), ScanError> {
    let bytes = text.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    let mut depth = 0usize;
    let mut minus_signs = 0usize;
    // Whether the previous byte was part of an identifier (`foo-bar` is one identifier in HCL, so a `-`
    // there is not an operator) or of a number.
    let mut in_identifier = false;
    let mut in_number = false;
    let mut line_start = true;
    let mut i = 0usize;
    while i < bytes.len() {
        let b = bytes[i];
        match stack.last() {
            Some(Frame::Quoted) => {
                match b {
                    b'\\' => i += 1,
                    b'"' => {
                        stack.pop();
                    }
                    b'\n' => return refuse(i, "unterminated string"),
                    _ => {
                        if let Some(skip) = template_start(bytes, i, &mut stack, depth)? {
                            i += skip;
                            continue;
                        }
                    }
                }
                i += 1;
                continue;
            }
            Some(Frame::Heredoc(delimiter)) => {
                if line_start {
                    let end = text.get(i..).and_then(|t| t.find('\n')).map_or(text.len(), |n| i + n);
                    if text.get(i..end).is_some_and(|line| line.trim() == delimiter) {
                        stack.pop();
                        i = end;
                        continue;
                    }
                }
                line_start = b == b'\n';
                if let Some(skip) = template_start(bytes, i, &mut stack, depth)? {
                    i += skip;
                    continue;
                }
                i += 1;
                continue;
            }
            None | Some(Frame::Interpolation(_)) => {}
        }

        let (was_identifier, was_number) = (in_identifier, in_number);
        in_identifier = false;
        in_number = false;
        match b {
            b'\n' => line_start = true,
            b' ' | b'\t' | b'\r' => {}
            b'#' => i = skip_to_line_end(bytes, i),
            b'/' if bytes.get(i + 1) == Some(&b'/') => i = skip_to_line_end(bytes, i),
            b'/' if bytes.get(i + 1) == Some(&b'*') => match text.get(i + 2..).and_then(|t| t.find("*/")) {
                Some(n) => i += n + 3,
                None => return refuse(i, "unterminated comment"),
            },
            b'"' => stack.push(Frame::Quoted),
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_BRACKET_DEPTH {
                    return refuse(i, format!("nesting deeper than {MAX_BRACKET_DEPTH} levels"));
                }
            }
            b'}' if matches!(stack.last(), Some(Frame::Interpolation(d)) if *d == depth) => {
                stack.pop();
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'<' if bytes.get(i + 1) == Some(&b'<') => {
                let (delimiter, body_start) = heredoc_header(text, i)?;
                stack.push(Frame::Heredoc(delimiter));
                line_start = true;
                i = body_start;
                continue;
            }
            b'-' if was_identifier => in_identifier = true,
            b'-' if is_exponent_sign(bytes, i) => in_number = true,
            b'-' => {
                minus_signs += 1;
                if minus_signs > MAX_MINUS_SIGNS {
                    return refuse(i, format!("more than {MAX_MINUS_SIGNS} minus signs"));
                }
            }
            b'+' if is_exponent_sign(bytes, i) => in_number = true,
            b'0'..=b'9' if was_identifier => in_identifier = true,
            b'0'..=b'9' => in_number = true,
            b'.' => in_number = was_number,
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => in_identifier = true,
            b'=' | b':' | b',' => {}
            // Continuation of a multi-byte character: identifiers may be Unicode.
            0x80..=0xff => in_identifier = true,
            _ => {
                let c = text.get(i..).and_then(|t| t.chars().next()).unwrap_or('?');
                return refuse(i, format!("unexpected {c:?}: a policy holds only literal values"));
            }
        }
        i += 1;
    }
    Ok(())
}

/// A `-` or `+` right after the `e` of a number's exponent (`1e-5`).
fn is_exponent_sign(bytes: &[u8], i: usize) -> bool {
    i >= 2
        && matches!(bytes[i - 1], b'e' | b'E')
        && bytes[i - 2].is_ascii_digit()
        && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
}

fn skip_to_line_end(bytes: &[u8], i: usize) -> usize {
    bytes[i..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |n| i + n)
}

/// Inside string or heredoc content: `${` opens an interpolation (returns how many bytes to skip),
/// `$${` / `%%{` are escapes, and `%{` directives are refused.
fn template_start(bytes: &[u8], i: usize, stack: &mut Vec<Frame>, depth: usize) -> Result<Option<usize>, ScanError> {
    let next = bytes.get(i + 1).copied();
    let after = bytes.get(i + 2).copied();
    match (bytes[i], next, after) {
        (b'$', Some(b'$'), Some(b'{')) | (b'%', Some(b'%'), Some(b'{')) => Ok(Some(3)),
        (b'$', Some(b'{'), _) => {
            let open = stack.iter().filter(|f| matches!(f, Frame::Interpolation(_))).count();
            if open >= MAX_TEMPLATE_DEPTH {
                return Err(ScanError { offset: i, message: "interpolations nested too deeply".to_owned() });
            }
            stack.push(Frame::Interpolation(depth));
            Ok(Some(2))
        }
        (b'%', Some(b'{'), _) => {
            Err(ScanError { offset: i, message: "template directives are not supported".to_owned() })
        }
        _ => Ok(None),
    }
}

/// `<<ID` or `<<-ID` followed by the end of the line; returns the identifier and where the body starts.
fn heredoc_header(text: &str, i: usize) -> Result<(String, usize), ScanError> {
    let malformed = || ScanError { offset: i, message: "malformed heredoc".to_owned() };
    let rest = text.get(i + 2..).ok_or_else(malformed)?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let start = text.len() - rest.len();
    let len = rest.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-').count();
    let after = &rest[len..];
    let after = after.strip_prefix('\r').unwrap_or(after);
    match (after.strip_prefix('\n'), text.get(start..start + len)) {
        (Some(body), Some(delimiter)) if len > 0 => Ok((delimiter.to_owned(), text.len() - body.len())),
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> bool {
        prescan(text).is_ok()
    }

    #[test]
    fn policies_pass() {
        assert!(ok(crate::default_policy_text()));
        assert!(ok(r#"
            # comment with !?*( and "quotes
            // another ${
            /* block ( ! */
            path "secret/+/x*" {
              capabilities = ["read", "list"]
              allowed_parameters = { "a-b" = [-1, 1.5e-3, 2E+4, true, null], foo-bar = ["x*", "${var}", "$${lit}", "%%{lit}"] }
              comment = <<-EOT
                anything ! ( * goes "here
                EOT
            }
        "#));
    }

    #[test]
    fn expressions_are_refused() {
        for bad in [
            "a = !true",
            "a = (1)",
            "a = f(1)",
            "a = x ? 1 : 2",
            "a = 1 * 2",
            "a = 1 / 2",
            "a = \"%{if x}y%{endif}\"",
            "a = \"${\"${\"${1}\"}\"}\"",
            "a = \"abc\nb = 1\"",
            "a = <<EOT",
            "a = 1 + 2",
            "a = <1",
            "a = /* never closed",
        ] {
            assert!(!ok(bad), "{bad:?}");
        }
        assert!(!ok(&"{".repeat(MAX_BRACKET_DEPTH + 1)));
        assert!(ok(&format!("a = {}{}", "[".repeat(MAX_BRACKET_DEPTH), "]".repeat(MAX_BRACKET_DEPTH))));
        assert!(!ok(&format!("a = {}1", "- ".repeat(MAX_MINUS_SIGNS + 1))));
        assert!(!ok(&format!("a = 1{}", "-1".repeat(MAX_MINUS_SIGNS + 1))));
        assert!(ok(&format!("a = x{}", "-1".repeat(MAX_MINUS_SIGNS + 1))));
        let error = prescan("a = 1\nb = !x").err().map(|e| e.offset);
        assert_eq!(error, Some(10));
    }
}
