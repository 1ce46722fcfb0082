//! A throwaway `redis-server` on a free loopback port, started and killed
//! by a test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

use std::io::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` child; killed (and its directory removed) on drop.
pub struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

/// Why a started `redis-server` is not usable.
pub enum NotReady {
    /// It exited, usually because its port was taken.
    Exited,
    /// It is running, but did not answer in time, or another server answers
    /// on its port.
    NoAnswer,
}

impl Server {
    /// Starts a server on a free loopback port, in `dir`, with `extra`
    /// arguments, and waits (bounded) until it answers. A port that another
    /// process takes before the server binds it is given up for a new one.
    pub async fn start(dir: PathBuf, extra: &[&str]) -> Server {
        let mut server = Server {
            child: None,
            port: 0,
            dir,
            extra: extra.iter().map(|&a| a.to_owned()).collect(),
        };
        for _ in 0..10 {
            server.port = free_port();
            server.spawn();
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(_) => server.kill(),
            }
        }
        panic!("redis-server did not start on any of 10 free ports");
    }

    /// Starts the server again on the same port, with the same directory
    /// and arguments, and waits (bounded) until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        // The port was ours a moment ago; give it a few tries in case the
        // old socket lingers, but never accept another server on it.
        for _ in 0..5 {
            self.spawn();
            match self.wait_ready().await {
                Ok(()) => return,
                Err(NotReady::Exited) => {
                    self.kill();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(NotReady::NoAnswer) => break,
            }
        }
        panic!(
            "redis-server did not start again on port {} (another process may have taken it)",
            self.port
        );
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Waits (bounded) until our child answers on its port: the server
    /// that answers must report our child's pid as its `process_id`, so a
    /// foreign listener on the port is never taken for ours.
    async fn wait_ready(&mut self) -> Result<(), NotReady> {
        let url = self.url();
        let child = self.child.as_mut().expect("a started server");
        let pid = child.id();
        for _ in 0..200 {
            if !matches!(child.try_wait(), Ok(None)) {
                return Err(NotReady::Exited);
            }
            // Another process's server may answer here: then ours cannot
            // bind the port, exits, and the next round says so.
            let answer = tokio::time::timeout(Duration::from_secs(1), server_pid(&url)).await;
            if answer == Ok(Some(pid)) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(NotReady::NoAnswer)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `process_id` that the Redis server at `url` reports, if one answers.
pub async fn server_pid(url: &str) -> Option<u32> {
    let client = byok_redis::redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = byok_redis::redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn redis_server_installed() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if byok_testkit::services::services_required() {
            panic!("BYOK_TEST_REQUIRE_SERVICES is set, but redis-server is not installed");
        }
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
            "skipped: redis-server is not installed (set BYOK_TEST_REQUIRE_SERVICES=1 to fail instead)"
        );
        });
    }
    found
}

/// A port that was free a moment ago; [`Server::start`] checks that the
/// server it starts there is the one that answers.
pub fn free_port() -> u16 {
    // Below 55536, so that a cluster node's bus port (+10000) exists too.
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
        let port = listener.local_addr().expect("local address").port();
        if port < 55_536 {
            return port;
        }
    }
}

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("byok-redis-test-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a started server").id()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the process (SIGSTOP) without ending it: its connections stay
    /// open and unanswered.
    pub fn pause(&self) {
        signal(self.pid(), "-STOP");
    }

    /// Continues a paused process (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}
