//! Kubernetes service registration, as Vault's: each node keeps labels on its own pod that say
//! whether it is active, sealed and initialised, and its version, so that a Service can select
//! the active node (`vault-active=true`) and operators can see every node's state.
//!
//! It talks to the API server the way software inside a pod does: `KUBERNETES_SERVICE_HOST`
//! and `_PORT`, the pod's service-account token (read again for every call: kubelet rotates
//! it) and the cluster CA from the service-account directory (`ARCANUM_K8S_SA_DIR` overrides
//! the usual path, for tests). Labels are written with a JSON Patch whenever they change, and
//! again after a failed attempt; the role changes are noticed at once, seal changes within a
//! second.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arcanum_config::KubernetesRegistration;
use arcanum_core::Core;
use serde_json::{json, Value};

const DEFAULT_SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// How often the node looks at its own state.
const EVERY: Duration = Duration::from_secs(1);

/// The labels Vault keeps on its pods, in its order.
type Labels = [(&'static str, String); 5];

/// Where and as whom this node patches its pod.
struct PodLabeler {
    client: reqwest::Client,
    url: String,
    token_path: PathBuf,
}

/// Starts keeping this node's pod labels; fails at once when the pod's environment is missing.
pub fn start(core: Arc<Core>, registration: &KubernetesRegistration) -> anyhow::Result<()> {
    let labeler = PodLabeler::from_environment(registration)?;
    tokio::spawn(keep_labels(core, labeler));
    Ok(())
}

impl PodLabeler {
    fn from_environment(registration: &KubernetesRegistration) -> anyhow::Result<PodLabeler> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").context(
            "service_registration \"kubernetes\" needs KUBERNETES_SERVICE_HOST (set in every pod): is this running in Kubernetes?",
        )?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".to_owned());
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let sa_dir =
            std::env::var_os("ARCANUM_K8S_SA_DIR").map_or_else(|| PathBuf::from(DEFAULT_SA_DIR), PathBuf::from);
        let ca_path = sa_dir.join("ca.crt");
        let ca = std::fs::read(&ca_path).with_context(|| format!("reading the cluster CA {}", ca_path.display()))?;
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        for certificate in reqwest::Certificate::from_pem_bundle(&ca)
            .with_context(|| format!("parsing the cluster CA {}", ca_path.display()))?
        {
            builder = builder.add_root_certificate(certificate);
        }
        let (Some(namespace), Some(pod)) = (&registration.namespace, &registration.pod_name) else {
            anyhow::bail!("service_registration \"kubernetes\" needs namespace and pod_name");
        };
        Ok(PodLabeler {
            client: builder.build()?,
            url: format!("https://{host}:{port}/api/v1/namespaces/{namespace}/pods/{pod}"),
            token_path: sa_dir.join("token"),
        })
    }

    async fn patch(&self, labels: &Labels) -> anyhow::Result<()> {
        let token = std::fs::read_to_string(&self.token_path)
            .with_context(|| format!("reading the service-account token {}", self.token_path.display()))?;
        let ops: Vec<Value> = labels
            .iter()
            .map(|(name, value)| json!({"op": "add", "path": format!("/metadata/labels/{name}"), "value": value}))
            .collect();
        let answer = self
            .client
            .patch(&self.url)
            .bearer_auth(token.trim())
            .header("content-type", "application/json-patch+json")
            .body(Value::Array(ops).to_string())
            .send()
            .await
            .context("patching the pod's labels")?;
        let status = answer.status();
        if !status.is_success() {
            let message =
                answer.json::<Value>().await.ok().and_then(|body| body["message"].as_str().map(str::to_owned));
            anyhow::bail!("the API server answered {status}: {}", message.unwrap_or_default());
        }
        Ok(())
    }
}

/// The labels for this node's state now.
async fn labels(core: &Core) -> Labels {
    let sealed = core.is_sealed();
    let active = !sealed && core.ha().is_none_or(|ha| ha.is_active());
    [
        ("vault-active", active.to_string()),
        ("vault-initialized", core.is_initialized().await.to_string()),
        ("vault-perf-standby", "false".to_owned()),
        ("vault-sealed", sealed.to_string()),
        ("vault-version", env!("CARGO_PKG_VERSION").to_owned()),
    ]
}

async fn keep_labels(core: Arc<Core>, labeler: PodLabeler) {
    let mut leadership = core.ha().map(|ha| ha.watch_leadership());
    let mut applied: Option<Labels> = None;
    loop {
        let now = labels(&core).await;
        if applied.as_ref() != Some(&now) {
            match labeler.patch(&now).await {
                Ok(()) => {
                    tracing::info!(active = %now[0].1, sealed = %now[3].1, "pod labels updated");
                    applied = Some(now);
                }
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "could not update the pod's labels; trying again")
                }
            }
        }
        match &mut leadership {
            Some(leadership) => {
                tokio::select! {
                    () = tokio::time::sleep(EVERY) => {}
                    _ = leadership.changed() => {}
                }
            }
            None => tokio::time::sleep(EVERY).await,
        }
    }
}
