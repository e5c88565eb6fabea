//! `arcanum lease lookup|renew|revoke` (Vault's CLI shape): `revoke -prefix` revokes every
//! lease under a prefix, `-force` drops them even when the backend cannot revoke.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use super::output::print_secret;
use super::{Client, ClientArgs};

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Show a lease: issue and expiry time, TTL, renewability, and a pending revocation.
    Lookup(LookupArgs),
    /// Extend a lease: `lease renew [-increment=1h] LEASE_ID`.
    Renew(RenewArgs),
    /// Revoke a lease, or with `-prefix` every lease under a prefix.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    lease_id: String,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    /// Requested extension (a duration such as 1h, or seconds); 0 asks for the lease's TTL.
    #[arg(long, default_value = "0")]
    increment: String,
    lease_id: String,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Treat the argument as a prefix (needs sudo).
    #[arg(long)]
    prefix: bool,
    /// Drop the leases even if the backend fails to revoke them (implies -prefix; needs sudo).
    #[arg(long)]
    force: bool,
    /// Queue the revocation and return at once.
    #[arg(long)]
    sync: Option<bool>,
    lease_id: String,
}

pub async fn run(command: LeaseCommand, args: &ClientArgs) -> anyhow::Result<u8> {
    let client = Client::new(args)?;
    match command {
        LeaseCommand::Lookup(lookup) => {
            let answer = client
                .request(Method::PUT, "sys/leases/lookup", Some(json!({ "lease_id": lookup.lease_id })))
                .await
                .with_context(|| format!("looking up lease {}", lookup.lease_id))?;
            print_secret(args.format, &answer);
            Ok(0)
        }
        LeaseCommand::Renew(renew) => {
            let answer = client
                .request(
                    Method::PUT,
                    "sys/leases/renew",
                    Some(json!({ "lease_id": renew.lease_id, "increment": renew.increment })),
                )
                .await
                .with_context(|| format!("renewing lease {}", renew.lease_id))?;
            print_secret(args.format, &answer);
            Ok(0)
        }
        LeaseCommand::Revoke(revoke) => {
            let id = revoke.lease_id.trim_start_matches('/');
            if revoke.force {
                client
                    .request(Method::PUT, &format!("sys/leases/revoke-force/{id}"), None)
                    .await
                    .with_context(|| format!("force-revoking leases under {id}"))?;
                println!("Success! Force revoked any leases with prefix: {id}");
            } else if revoke.prefix {
                client
                    .request(Method::PUT, &format!("sys/leases/revoke-prefix/{id}"), None)
                    .await
                    .with_context(|| format!("revoking leases under {id}"))?;
                println!("Success! Revoked any leases with prefix: {id}");
            } else {
                let body = json!({ "lease_id": id, "sync": revoke.sync.unwrap_or(true) });
                client
                    .request(Method::PUT, "sys/leases/revoke", Some(body))
                    .await
                    .with_context(|| format!("revoking lease {id}"))?;
                println!("Success! Revoked lease: {id}");
            }
            Ok(0)
        }
    }
}
