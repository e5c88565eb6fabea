//! `arcanum policy write|read|list|delete|fmt`: ACL policies under `sys/policies/acl/`.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use hcl::format::Format as _;
use reqwest::Method;
use serde_json::json;

use super::output::print_json;
use super::{Client, ClientArgs, Format};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Upload a policy from a file, or from stdin with `-`.
    Write(WriteArgs),
    /// Print a policy's text.
    Read(NameArgs),
    /// List the policy names.
    List,
    /// Delete a policy.
    Delete(NameArgs),
    /// Rewrite an HCL policy file in canonical formatting (refused if it does not parse).
    Fmt(FmtArgs),
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    /// The policy name (lower-cased, like Vault).
    name: String,
    /// The policy file, or `-` for stdin.
    file: String,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    name: String,
}

#[derive(Debug, Args)]
pub struct FmtArgs {
    /// The HCL policy file to format in place.
    file: PathBuf,
}

pub async fn run(command: PolicyCommand, args: &ClientArgs) -> anyhow::Result<u8> {
    // `fmt` is offline, so the client (which reads the token file) is only built when needed.
    let client = || Client::new(args);
    match command {
        PolicyCommand::Write(write) => {
            let name = write.name.trim().to_lowercase();
            let text = if write.file == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).context("reading the policy from stdin")?;
                text
            } else {
                std::fs::read_to_string(&write.file).with_context(|| format!("reading {}", write.file))?
            };
            client()?
                .request(Method::PUT, &format!("sys/policies/acl/{name}"), Some(json!({ "policy": text })))
                .await
                .with_context(|| format!("uploading policy {name}"))?;
            println!("Success! Uploaded policy: {name}");
            Ok(0)
        }
        PolicyCommand::Read(read) => {
            let name = read.name.trim().to_lowercase();
            let answer = client()?
                .read(&format!("sys/policies/acl/{name}"), &[])
                .await
                .with_context(|| format!("reading policy named {name}"))?;
            let Some(text) = answer.as_ref().and_then(|a| a["data"]["policy"].as_str()).filter(|t| !t.is_empty())
            else {
                eprintln!("No policy named: {name}");
                return Ok(2);
            };
            match args.format {
                Format::Table => println!("{}", text.trim()),
                Format::Json => print_json(&json!({ "policy": text })),
            }
            Ok(0)
        }
        PolicyCommand::List => {
            let answer = client()?.list("sys/policies/acl").await.context("listing policies")?;
            let names = answer.map(|a| a["data"]["keys"].clone()).unwrap_or_else(|| json!([]));
            match args.format {
                Format::Json => print_json(&names),
                Format::Table => {
                    for name in names.as_array().into_iter().flatten().filter_map(|n| n.as_str()) {
                        println!("{name}");
                    }
                }
            }
            Ok(0)
        }
        PolicyCommand::Delete(delete) => {
            let name = delete.name.trim().to_lowercase();
            client()?
                .request(Method::DELETE, &format!("sys/policies/acl/{name}"), None)
                .await
                .with_context(|| format!("deleting {name}"))?;
            println!("Success! Deleted policy: {name}");
            Ok(0)
        }
        PolicyCommand::Fmt(fmt) => format_file(&fmt.file),
    }
}

/// `policy fmt`: the file is only rewritten once it has parsed both as HCL and as a policy,
/// so a typo never costs the user their file.
fn format_file(file: &std::path::Path) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let formatted = match format_policy(&text) {
        Ok(formatted) => formatted,
        Err(message) => {
            eprintln!("Error formatting {}: {message}", file.display());
            return Ok(1);
        }
    };
    if has_comments(&text) {
        eprintln!("Warning: comments in {} were removed by formatting", file.display());
    }
    if formatted != text {
        std::fs::write(file, &formatted).with_context(|| format!("writing {}", file.display()))?;
    }
    println!("Success! Formatted policy: {}", file.display());
    Ok(0)
}

/// The canonical text of a policy, or why it cannot be formatted (naming the line).
fn format_policy(text: &str) -> Result<String, String> {
    let body = hcl::parse(text).map_err(|err| match err {
        hcl::Error::Parse(parse) => format!(
            "invalid HCL on line {}, column {}: {}\n{}",
            parse.location().line(),
            parse.location().column(),
            parse.message(),
            parse.line()
        ),
        other => format!("invalid HCL: {other}"),
    })?;
    arcanum_policy::Policy::parse("fmt", text).map_err(|err| format!("invalid policy: {err}"))?;
    // Compact arrays keep `capabilities = ["read", "list"]` on one line, as `vault policy fmt` does;
    // hcl-rs's default (`to_string`) puts every element on its own line.
    let mut formatter = hcl::format::Formatter::builder().compact_arrays(true).build_vec();
    body.format_string(&mut formatter).map_err(|err| format!("formatting: {err}"))
}

/// Whether `text` has `#`, `//` or `/* */` comments outside string literals; hcl-rs's
/// formatter drops them, so the user is warned.
fn has_comments(text: &str) -> bool {
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        match (in_string, c) {
            (true, '\\') => {
                chars.next();
            }
            (true, '"') | (false, '"') => in_string = !in_string,
            (false, '#') => return true,
            (false, '/') if matches!(chars.peek(), Some('/' | '*')) => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messy_policy_is_formatted_and_broken_one_names_its_line() {
        let messy = "path   \"secret/*\"{\ncapabilities=[\"read\",\"list\"]\n    }\n";
        let formatted = format_policy(messy).unwrap();
        assert_eq!(formatted, "path \"secret/*\" {\n  capabilities = [\"read\", \"list\"]\n}\n");
        assert_eq!(format_policy(&formatted).unwrap(), formatted, "formatting is idempotent");
        let broken = "path \"a\" {\n  capabilities = [\"read\"]\n\npath \"b\" {\n";
        let err = format_policy(broken).unwrap_err();
        assert!(err.contains("line"), "{err}");
        let bad_capability = "path \"a\" {\n  capabilities = [\"reed\"]\n}\n";
        assert!(format_policy(bad_capability).is_err());
    }

    #[test]
    fn comments_are_detected_outside_strings_only() {
        assert!(has_comments("# hello\npath \"a\" {}"));
        assert!(has_comments("path \"a\" {} // x"));
        assert!(!has_comments("path \"a/#/b//c\" {}"));
    }
}
