//! Seeds a store with many leases, for the unseal-time figures in `scripts/bench-leases` and
//! `scripts/bench-etcd`: `seed_leases DIR COUNT` (sled in DIR/data) or
//! `seed_leases etcd:URL[,URL...] COUNT` (etcd under `/arcanum/`) initialises a server there,
//! writes COUNT leases through the real expiration manager (expiries spread over a day, so the
//! index has tens of thousands of distinct seconds), and prints the unseal key and root token.

use std::sync::Arc;

use arcanum_contract::backend::LeaseSpec;
use arcanum_contract::mount::MountTableKind;
use arcanum_core::{Core, CoreConfig, SealConfig};
use arcanum_storage::{Backend, EtcdBackend, EtcdOptions, SledBackend};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(count)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: seed_leases DIR|etcd:URL[,URL...] COUNT");
    };
    let count: usize = count.parse()?;
    let backend: Arc<dyn Backend> = match dir.strip_prefix("etcd:") {
        Some(endpoints) => {
            let endpoints = endpoints.split(',').map(String::from).collect();
            Arc::new(EtcdBackend::connect(EtcdOptions::new(endpoints, "/arcanum/")).await?)
        }
        None => Arc::new(SledBackend::open(std::path::Path::new(&dir).join("data").as_path())?),
    };
    let core = Arc::new(Core::new(backend, CoreConfig::default(), arcanum::catalog::catalog()).await?);
    let init = core.initialize(SealConfig::new(1, 1).map_err(|err| anyhow::anyhow!("{err}"))?).await?;
    core.submit_unseal_share(init.shares[0].clone()).await?;
    let unsealed = core.unsealed()?;
    let mount = unsealed
        .mounts
        .get(MountTableKind::Secret, "cubbyhole/")
        .ok_or_else(|| anyhow::anyhow!("no cubbyhole mount"))?;
    let workers = 64;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let unsealed = Arc::clone(&unsealed);
        let entry = mount.entry.clone();
        tasks.spawn(async move {
            for i in (worker..count).step_by(workers) {
                let spec = LeaseSpec { ttl: 86_400 + (i % 86_400) as u64, renewable: true, ..LeaseSpec::default() };
                unsealed.expiration.register("cubbyhole/bench/seed", &entry, None, spec).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    core.shutdown().await;
    println!("unseal_key={}", hex::encode(init.shares[0].as_slice()));
    println!("root_token={}", init.root_token.as_str());
    Ok(())
}
