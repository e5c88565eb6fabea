//! The `arcanum` command line, Vault-style: `server`, `operator ...`, `status`, `login`, the
//! generic `read|write|list|delete`, `kv ...`, `policy ...`, `token ...`, `secrets ...`, `auth ...`,
//! `audit ...`, `lease ...`.
//!
//! Vault's CLI takes single-dash long flags (`-dev`, `-key-shares=5`); clap wants two dashes,
//! so [`vault_style_args`] rewrites them before parsing. Exit codes follow Vault: 0 success,
//! 1 error, 2 usage error (and `status` when sealed).

mod audit;
mod client;
mod generic;
mod kv;
mod lease;
mod migrate;
mod mounts;
mod operator;
mod output;
mod policy;
mod server;
mod token;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use client::Client;

#[derive(Debug, Parser)]
#[command(name = "arcanum", version, about = "A Vault-compatible secrets server in one binary")]
struct Cli {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where and how the client commands reach the server.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server address; defaults to $ARCANUM_ADDR, then $VAULT_ADDR, then https://127.0.0.1:8200.
    #[arg(long, global = true)]
    pub address: Option<String>,
    /// CA certificate (PEM) to verify the server; defaults to $ARCANUM_CACERT, then $VAULT_CACERT.
    #[arg(long = "ca-cert", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Skip TLS verification (for testing only); also $VAULT_SKIP_VERIFY.
    #[arg(long = "tls-skip-verify", global = true)]
    pub tls_skip_verify: bool,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Wrap the answer in a single-use token that lives this long (`30s`, `5m`); also
    /// $VAULT_WRAP_TTL.
    #[arg(long = "wrap-ttl", global = true)]
    pub wrap_ttl: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Server(server::ServerArgs),
    /// Operator commands: init, unseal, seal, rekey, rotate.
    Operator {
        #[command(subcommand)]
        command: operator::OperatorCommand,
    },
    /// Print the seal status (exit code 2 when sealed).
    Status,
    /// Authenticate and store the token in ~/.arcanum-token.
    Login(token::LoginArgs),
    /// Read any API path (exit code 2 when nothing is there).
    Read(generic::ReadArgs),
    /// Write `key=value` data to any API path.
    Write(generic::WriteArgs),
    /// List the keys under any API path.
    List(generic::ListArgs),
    /// Delete any API path.
    Delete(generic::DeleteArgs),
    /// Unwrap a wrapped answer (the given wrapping token, else the client's own token).
    Unwrap(generic::UnwrapArgs),
    /// Key/value secrets, v1 or v2 (detected like the vault CLI).
    Kv {
        #[command(subcommand)]
        command: kv::KvCommand,
    },
    /// ACL policies.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Tokens: create, lookup, renew, revoke, capabilities.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Secrets engines: enable, disable, list, tune.
    Secrets {
        #[command(subcommand)]
        command: mounts::SecretsCommand,
    },
    /// Auth methods: enable, disable, list.
    Auth {
        #[command(subcommand)]
        command: mounts::AuthCommand,
    },
    /// Audit devices: enable, disable, list; `verify` checks audit files offline.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Leases on dynamic secrets: lookup, renew, revoke [-prefix] [-force].
    Lease {
        #[command(subcommand)]
        command: lease::LeaseCommand,
    },
}

/// Rewrites Vault's single-dash long flags (`-dev`, `-config=f`) into clap's `--dev`, `--config=f`.
pub fn vault_style_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut past_separator = false;
    args.into_iter()
        .enumerate()
        .map(|(index, arg)| {
            let Some(text) = arg.to_str() else { return arg };
            if text == "--" {
                past_separator = true;
            }
            let single_dash_long = index > 0
                && !past_separator
                && text.starts_with('-')
                && !text.starts_with("--")
                && text.len() > 2
                && text.as_bytes()[1].is_ascii_alphabetic();
            if single_dash_long {
                OsString::from(format!("-{text}"))
            } else {
                arg
            }
        })
        .collect()
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(vault_style_args(std::env::args_os())) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("Error starting the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => server::run(args).await,
            Command::Operator { command } => operator::run(command, &cli.client).await,
            Command::Status => operator::status(&cli.client).await,
            Command::Login(login) => token::login(&cli.client, login).await,
            Command::Read(read) => generic::read(&cli.client, read).await,
            Command::Write(write) => generic::write(&cli.client, write).await,
            Command::List(list) => generic::list(&cli.client, list).await,
            Command::Delete(delete) => generic::delete(&cli.client, delete).await,
            Command::Unwrap(unwrap) => generic::unwrap(&cli.client, unwrap).await,
            Command::Kv { command } => kv::run(command, &cli.client).await,
            Command::Policy { command } => policy::run(command, &cli.client).await,
            Command::Token { command } => token::run(command, &cli.client).await,
            Command::Secrets { command } => mounts::secrets(command, &cli.client).await,
            Command::Auth { command } => mounts::auth(command, &cli.client).await,
            Command::Audit { command } => audit::run(command, &cli.client).await,
            Command::Lease { command } => lease::run(command, &cli.client).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        vault_style_args(args.iter().map(OsString::from)).into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn single_dash_flags_become_long_flags() {
        assert_eq!(
            rewrite(&["arcanum", "server", "-dev", "-config=x.hcl", "--log-level", "debug", "-h"]),
            ["arcanum", "server", "--dev", "--config=x.hcl", "--log-level", "debug", "-h"]
        );
        assert_eq!(
            rewrite(&["arcanum", "operator", "unseal", "--", "-abc"]),
            ["arcanum", "operator", "unseal", "--", "-abc"]
        );
    }

    #[test]
    fn cli_parses_vault_style_commands() {
        let parse = |args: &[&str]| Cli::try_parse_from(vault_style_args(args.iter().map(OsString::from)));
        assert!(parse(&["arcanum", "operator", "init", "-key-shares=3", "-key-threshold=2", "-format=json"]).is_ok());
        assert!(parse(&["arcanum", "status", "-address=http://127.0.0.1:1"]).is_ok());
        assert!(parse(&["arcanum", "operator", "rekey", "-init", "-key-shares", "3", "-key-threshold", "2"]).is_ok());
        assert!(parse(&["arcanum", "server", "-dev", "-dev-listen-address=127.0.0.1:0"]).is_ok());
        let err = parse(&["arcanum", "operator", "init", "-key-shares=lots"]).unwrap_err();
        assert!(err.use_stderr());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn client_commands_parse_vault_style() {
        let parse = |args: &[&str]| Cli::try_parse_from(vault_style_args(args.iter().map(OsString::from)));
        let ok = [
            &["arcanum", "kv", "put", "-mount=secret", "-cas=0", "foo", "a=b", "-"][..],
            &["arcanum", "kv", "get", "-version=2", "-format=json", "secret/foo"],
            &["arcanum", "kv", "delete", "-versions=1,2", "secret/foo"],
            &[
                "arcanum",
                "kv",
                "metadata",
                "put",
                "-max-versions=3",
                "-cas-required",
                "-custom-metadata=a=b",
                "secret/x",
            ],
            &["arcanum", "kv", "metadata", "put", "-cas-required=false", "secret/x"],
            &["arcanum", "token", "create", "-policy=a", "-policy=b", "-ttl=1h", "-renewable=false", "-metadata=k=v"],
            &["arcanum", "token", "revoke", "-mode=orphan", "tok"],
            &["arcanum", "token", "capabilities", "tok", "secret/foo"],
            &["arcanum", "secrets", "enable", "-path=kv1", "-version=1", "-max-lease-ttl=2h", "kv"],
            &["arcanum", "login", "-method=userpass", "-path=up", "username=alice", "password=x"],
            &["arcanum", "write", "-f", "sys/rotate"],
            &["arcanum", "policy", "write", "dev", "-"],
            &["arcanum", "audit", "enable", "-path=a", "-description=d", "file", "file_path=/tmp/a.log", "mode=0600"],
            &["arcanum", "audit", "list", "-detailed"],
            &["arcanum", "audit", "verify", "-checkpoint=3:ab", "a.log.1", "a.log"],
            &["arcanum", "lease", "renew", "-increment=1h", "database/creds/ro/abc"],
            &["arcanum", "lease", "revoke", "-prefix", "database/creds/"],
            &["arcanum", "lease", "revoke", "-force", "-prefix", "database/"],
            &["arcanum", "lease", "lookup", "database/creds/ro/abc"],
        ];
        for args in ok {
            assert!(parse(args).is_ok(), "{args:?}: {:?}", parse(args).err());
        }
        let Ok(Cli { command: Command::Token { command: token::TokenCommand::Create(create) }, .. }) =
            parse(&["arcanum", "token", "create", "-policy=a", "-policy=b"])
        else {
            panic!("token create did not parse");
        };
        assert!(format!("{create:?}").contains(r#"policies: ["a", "b"]"#));
        assert!(parse(&["arcanum", "token", "capabilities", "a", "b", "c"]).is_err());
        assert!(parse(&["arcanum", "kv", "put"]).is_err());
    }
}
