//! Real etcd members for tests: one, or a cluster of three, on free loopback ports with their own
//! temporary data directories, started from Debian's `etcd` binary (or `$ETCD_BIN`) and killed
//! when dropped. Never a shared daemon.
//!
//! Helpers panic with context instead of returning errors: they only ever run inside tests.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a cluster may take to elect a leader and answer.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// One member: its URLs, its process while running, and how to start it again.
#[derive(Debug)]
pub struct EtcdMember {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Members started together as one cluster.
#[derive(Debug)]
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    initial_cluster: String,
    // Last, so that the members are killed before their directories go.
    dir: tempfile::TempDir,
}

/// Ports handed to etcd come from below Linux's ephemeral range (32768 and up). A port the kernel
/// picks with `bind(0)` is free only until the next outgoing connection or `bind(0)` takes it, and
/// the tests running beside this one make thousands of both; below that range only explicit binds
/// compete.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Where the next search for a free port starts: spread over the range by the process id and the
/// clock so that test processes started together do not walk the same ports.
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

pub fn free_port() -> u16 {
    let span = u32::from(PORTS.end - PORTS.start);
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let _ = NEXT_PORT.compare_exchange(0, seed % span + 1, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..span {
        let offset = NEXT_PORT.fetch_add(1, Ordering::SeqCst) % span;
        let port = PORTS.start + u16::try_from(offset).expect("offset within the range");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {PORTS:?}")
}

/// How many times a cluster is started afresh when a member found its port taken.
const START_ATTEMPTS: usize = 3;

fn etcd_binary() -> String {
    std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned())
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster answers a read. A member that could not
    /// bind its port (another process took it between the check and etcd's bind) makes the whole
    /// cluster start again on fresh ports.
    pub async fn start(size: usize) -> EtcdCluster {
        let mut attempt = 1;
        loop {
            let mut cluster = EtcdCluster::launch(size);
            match cluster.wait_until_ready().await {
                Ok(()) => return cluster,
                Err(()) if attempt < START_ATTEMPTS => attempt += 1,
                Err(()) => panic!("etcd members found their ports taken {START_ATTEMPTS} times\n{}", cluster.logs()),
            }
        }
    }

    fn launch(size: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("temporary directory for etcd");
        let mut members = Vec::with_capacity(size);
        for i in 0..size {
            let name = format!("m{i}");
            members.push(EtcdMember {
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(format!("{name}.etcd")),
                log: dir.path().join(format!("{name}.log")),
                name,
                child: None,
            });
        }
        let initial_cluster =
            members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",");
        let mut cluster = EtcdCluster { members, initial_cluster, dir };
        for i in 0..size {
            cluster.start_member(i);
        }
        cluster
    }

    /// Waits until the cluster has a leader and answers a linearizable read through every
    /// running member; `Err` as soon as a member has exited because its address was in use.
    async fn wait_until_ready(&mut self) -> Result<(), ()> {
        let started = Instant::now();
        for i in 0..self.members.len() {
            while self.members[i].child.is_some() {
                if self.exited_on_a_taken_port(i) {
                    return Err(());
                }
                match read_through(&self.members[i].client_url).await {
                    Ok(()) => break,
                    Err(err) if started.elapsed() > READY_WITHIN => {
                        panic!(
                            "etcd member {} not ready within {READY_WITHIN:?}: {err}\n{}",
                            self.members[i].name,
                            self.logs()
                        )
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        Ok(())
    }

    fn exited_on_a_taken_port(&mut self, i: usize) -> bool {
        let member = &mut self.members[i];
        let exited = member.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
        exited && std::fs::read_to_string(&member.log).is_ok_and(|log| log.contains("address already in use"))
    }

    /// The client URLs of every member, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Starts member `i` (again: a restarted member keeps its data directory and rejoins).
    pub fn start_member(&mut self, i: usize) {
        let token = format!("arcanum-test-{}", self.dir.path().display());
        let member = &mut self.members[i];
        assert!(member.child.is_none(), "etcd member {} is already running", member.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .unwrap_or_else(|err| panic!("opening {}: {err}", member.log.display()));
        let state = if member.data_dir.exists() { "existing" } else { "new" };
        let child = Command::new(etcd_binary())
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &member.client_url, "--advertise-client-urls", &member.client_url])
            .args(["--listen-peer-urls", &member.peer_url, "--initial-advertise-peer-urls", &member.peer_url])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", &token])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "could not start etcd ({}): {err}. Install Debian's etcd-server package \
                     (scripts/test does) or set ETCD_BIN",
                    etcd_binary()
                )
            });
        member.child = Some(child);
    }

    /// SIGKILLs member `i` and waits for it to be gone.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the cluster has a leader and answers a linearizable read through every
    /// running member.
    pub async fn wait_ready(&mut self) {
        if self.wait_until_ready().await.is_err() {
            panic!("a restarted etcd member found its port taken\n{}", self.logs());
        }
    }

    /// The index in [`EtcdCluster::members`] of the current leader.
    pub async fn leader_index(&self) -> usize {
        let mut client = etcd_client::Client::connect(self.endpoints(), None).await.expect("etcd client");
        let leader = client.status().await.expect("etcd status").leader();
        let members = client.member_list().await.expect("etcd members");
        let name = members.members().iter().find(|m| m.id() == leader).map(|m| m.name().to_owned()).expect("a leader");
        self.members.iter().position(|m| m.name == name).expect("the leader is one of ours")
    }

    /// Every key under `prefix` with its value, read around any backend (to check what etcd
    /// holds, such as that it holds no plaintext).
    pub async fn dump(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let mut client = etcd_client::Client::connect(self.endpoints(), None).await.expect("etcd client");
        let mut pairs = Vec::new();
        let end = crate::etcd::prefix_end(prefix);
        let mut start = prefix.as_bytes().to_vec();
        loop {
            // Pages of 100, so that large values stay under the client's 4 MiB response limit.
            let options = etcd_client::GetOptions::new().with_range(end.clone()).with_limit(100);
            let response = client.get(start.clone(), Some(options)).await.expect("etcd range");
            for kv in response.kvs() {
                pairs.push((String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec()));
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return pairs,
            }
        }
    }

    /// The tail of every member's log, for a failure message.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!("--- {} ---\n{}", m.name, tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }
}

/// One linearizable read through `url` (it needs a leader), within a second.
async fn read_through(url: &str) -> Result<(), String> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(1))
        .with_require_leader(true);
    let attempt = async {
        let mut client = etcd_client::Client::connect([url], Some(options)).await.map_err(|err| err.to_string())?;
        client.get("readiness-probe", None).await.map_err(|err| err.to_string())?;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt).await.map_err(|_| "no answer".to_owned())?
}
