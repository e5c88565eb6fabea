//! Running the server: storage and core from the config, one axum service per listener,
//! TLS through rustls, graceful shutdown, and SIGHUP (audit devices reopen their files, so
//! that logrotate can move them; see [`Core::reopen_audit`]).
//!
//! Shutdown order (SIGTERM or SIGINT):
//! 1. stop accepting connections and let in-flight requests finish (bounded wait);
//! 2. persist the barrier's counters and flush storage ([`Core::shutdown`]);
//! 3. drop the core, and with it every key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arcanum_config::{Listener, TlsVersion};
use arcanum_storage::{Backend, EtcdBackend, EtcdOptions, EtcdTls, HaBackend, InmemBackend, SledBackend};
use zeroize::Zeroizing;

use crate::http;
use arcanum_core::Core;

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the configured storage backend, with a read cache of `cache_entries` where the backend
/// has one (etcd; 0: none). etcd must answer within its request timeout: a server that cannot
/// reach its storage exits with the reason instead of waiting.
pub async fn open_backend(storage: &arcanum_config::Storage, cache_entries: usize) -> anyhow::Result<Arc<dyn Backend>> {
    Ok(open_storage(storage, cache_entries).await?.0)
}

/// [`open_backend`], and the HA side of the same store when the config enables HA.
pub async fn open_storage(
    storage: &arcanum_config::Storage,
    cache_entries: usize,
) -> anyhow::Result<(Arc<dyn Backend>, Option<Arc<dyn HaBackend>>)> {
    let mut ha: Option<Arc<dyn HaBackend>> = None;
    let backend: Arc<dyn Backend> = match storage {
        arcanum_config::Storage::Inmem => Arc::new(InmemBackend::new()),
        arcanum_config::Storage::Sled { path } => {
            Arc::new(SledBackend::open(path).with_context(|| format!("opening sled storage at {}", path.display()))?)
        }
        arcanum_config::Storage::Etcd(etcd) => {
            let mut options = etcd_options(etcd)?;
            options.cache_entries = cache_entries;
            let backend = Arc::new(
                EtcdBackend::connect(options)
                    .await
                    .with_context(|| format!("opening etcd storage at {}", etcd.address.join(",")))?,
            );
            if etcd.ha_enabled {
                backend.share();
                ha = Some(Arc::clone(&backend) as Arc<dyn HaBackend>);
            }
            backend
        }
    };
    Ok((arcanum_metrics::MeteredBackend::wrap(backend), ha))
}

/// The etcd client's settings from `storage "etcd"`, with the TLS files read (an unreadable
/// one is named by its parameter).
pub fn etcd_options(etcd: &arcanum_config::EtcdStorage) -> anyhow::Result<EtcdOptions> {
    let read = |parameter: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("storage.etcd.{parameter}: cannot read {}", path.display()))
    };
    let mut options = EtcdOptions::new(etcd.address.clone(), etcd.path.clone());
    options.request_timeout = etcd.request_timeout;
    options.max_request_bytes = usize::try_from(etcd.max_request_bytes).unwrap_or(usize::MAX);
    options.max_txn_ops = etcd.max_txn_ops as usize;
    if let (Some(user), Some(password)) = (&etcd.username, &etcd.password) {
        options.credentials = Some((user.clone(), Zeroizing::new(password.clone())));
    }
    if etcd.tls_ca_file.is_some() || etcd.tls_cert_file.is_some() || etcd.tls_server_name.is_some() {
        let ca_pem = etcd.tls_ca_file.as_deref().map(|path| read("tls_ca_file", path)).transpose()?;
        let identity = match (&etcd.tls_cert_file, &etcd.tls_key_file) {
            (Some(cert), Some(key)) => Some((read("tls_cert_file", cert)?, Zeroizing::new(read("tls_key_file", key)?))),
            _ => None,
        };
        options.tls = Some(EtcdTls { ca_pem, identity, server_name: etcd.tls_server_name.clone() });
    }
    Ok(options)
}

/// A listener bound to its socket, ready to serve.
#[derive(Debug)]
pub struct BoundListener {
    socket: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    max_request_size: Option<u64>,
    connections: arcanum_config::ConnectionLimits,
    pub local_addr: SocketAddr,
}

impl BoundListener {
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }
}

/// Binds every listener before anything is served, so a bad address fails start-up whole.
pub fn bind(listeners: &[Listener]) -> anyhow::Result<Vec<BoundListener>> {
    listeners
        .iter()
        .map(|listener| {
            let socket = std::net::TcpListener::bind(&listener.address)
                .with_context(|| format!("binding listener address {}", listener.address))?;
            socket.set_nonblocking(true)?;
            let tls = match &listener.tls {
                Some(tls) => Some(Arc::new(tls_config(tls)?)),
                None => None,
            };
            Ok(BoundListener {
                local_addr: socket.local_addr()?,
                socket,
                tls,
                max_request_size: listener.max_request_size,
                connections: listener.connections,
            })
        })
        .collect()
}

fn tls_config(tls: &arcanum_config::Tls) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .with_context(|| format!("reading tls_cert_file {}", tls.cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing tls_cert_file {}", tls.cert_file.display()))?;
    // The key's own parse error could quote key material; report only the file.
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|_| anyhow::anyhow!("tls_key_file {}: no readable PEM private key", tls.key_file.display()))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves every listener until `shutdown` resolves, then shuts down in order.
pub async fn serve(
    core: Arc<Core>,
    listeners: Vec<BoundListener>,
    forwarder: Arc<crate::forward::Forwarder>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let handle = axum_server::Handle::new();
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        // With the peer address, for the audit entries' `remote_address`.
        let app = http::app(Arc::clone(&core), listener.max_request_size, Arc::clone(&forwarder)).per_connection();
        let handle = handle.clone();
        let guard = crate::connections::Guard::new(&listener.connections);
        let header_timeout = listener.connections.read_header_timeout;
        match listener.tls {
            Some(tls) => {
                let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
                let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
                    .handshake_timeout(header_timeout)
                    .acceptor(guard);
                let mut server = axum_server::from_tcp(listener.socket).acceptor(acceptor).handle(handle);
                time_request_heads(server.http_builder(), header_timeout);
                servers.spawn(async move { server.serve(app).await });
            }
            None => {
                let mut server = axum_server::from_tcp(listener.socket).acceptor(guard).handle(handle);
                time_request_heads(server.http_builder(), header_timeout);
                servers.spawn(async move { server.serve(app).await });
            }
        }
    }
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGHUP; audit files will not be reopened");
            None
        }
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                // An active HA node hands over first; its own clients keep being served (now
                // forwarded) until the others know the new active node.
                core.hand_over().await;
                tracing::info!("shutdown requested; draining connections");
                handle.graceful_shutdown(Some(DRAIN_TIMEOUT));
                break;
            }
            Some(result) = servers.join_next() => {
                handle.shutdown();
                core.shutdown().await;
                result.context("listener task")?.context("listener failed")?;
                anyhow::bail!("a listener stopped unexpectedly");
            }
            Some(()) = next_hangup(&mut hangup) => {
                tracing::info!("SIGHUP: reopening audit files");
                core.reopen_audit().await;
            }
        }
    }
    while let Some(result) = servers.join_next().await {
        if let Err(err) = result.context("listener task").and_then(|r| r.context("listener")) {
            tracing::warn!(error = %err, "listener ended with an error during shutdown");
        }
    }
    core.shutdown().await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Request heads must arrive within `timeout` (hyper times them only once it has a timer).
fn time_request_heads(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    timeout: Duration,
) {
    builder.http1().timer(crate::connections::HeadTimer).header_read_timeout(timeout);
}

/// The next SIGHUP; never resolves when SIGHUP cannot be watched.
async fn next_hangup(hangup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
