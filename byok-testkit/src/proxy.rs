//! A loopback TCP proxy that injects network faults between a store and its
//! server.
//!
//! [`FaultProxy`] listens on a free `127.0.0.1` port and forwards every
//! connection to an upstream server. Point a store at the proxy instead of
//! the server, and the proxy can then, at any moment and without touching
//! the server (which other tests may share):
//!
//! * [`cut`](FaultProxy::cut) every open connection (reset, as when a
//!   server crashes or a middlebox drops its state);
//! * [`refuse`](FaultProxy::refuse) new connections (reset at once, as a
//!   server that is down);
//! * [`stall`](FaultProxy::stall): hold every byte, either way, without
//!   closing anything (a frozen server, a black-holed network);
//! * add [`latency`](FaultProxy::set_latency) to every chunk it forwards;
//! * [`resume`](FaultProxy::resume): forward normally again, delivering
//!   what a stall held back.
//!
//! Faults combine: `cut` then `refuse` is a server that went away.
//!
//! ```
//! use std::time::Duration;
//! use byok_testkit::proxy::FaultProxy;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! // An upstream that echoes what it reads.
//! let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let upstream = echo.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok((mut socket, _)) = echo.accept().await {
//!         tokio::spawn(async move {
//!             let (mut r, mut w) = socket.split();
//!             let _ = tokio::io::copy(&mut r, &mut w).await;
//!         });
//!     }
//! });
//!
//! let proxy = FaultProxy::start(upstream).await?;
//! let mut client = tokio::net::TcpStream::connect(proxy.addr()).await?;
//! client.write_all(b"ping").await?;
//! let mut buf = [0; 4];
//! client.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"ping");
//!
//! // A stall holds the bytes; resuming delivers them.
//! proxy.stall();
//! client.write_all(b"pong").await?;
//! let held = tokio::time::timeout(Duration::from_millis(100), client.read(&mut buf)).await;
//! assert!(held.is_err(), "nothing passes while stalled");
//! proxy.resume();
//! client.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"pong");
//!
//! // A cut closes the connection.
//! proxy.cut();
//! assert!(matches!(client.read(&mut buf).await, Ok(0) | Err(_)));
//! assert_eq!(proxy.stats().cut, 1);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the proxy treats traffic at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Mode {
    refusing: bool,
    stalled: bool,
    latency: Duration,
}

/// Counters of a [`FaultProxy`], for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ProxyStats {
    /// Connections accepted and forwarded upstream.
    pub forwarded: u64,
    /// Connections reset on arrival while refusing (or because the
    /// upstream could not be reached).
    pub refused: u64,
    /// Connections closed by [`FaultProxy::cut`].
    pub cut: u64,
}

#[derive(Debug, Default)]
struct Counters {
    forwarded: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Bumped by every cut; each connection ends when it changes.
    generation: watch::Sender<u64>,
    counters: Counters,
}

/// A loopback TCP proxy that can cut, refuse, stall and slow down the
/// connections it forwards. See the [module docs](self).
///
/// Dropping it stops the listener and closes every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("mode", &*self.shared.mode.borrow())
            .finish()
    }
}

impl FaultProxy {
    /// Starts a proxy on a free `127.0.0.1` port, forwarding to `upstream`.
    ///
    /// Must be called within a Tokio runtime with I/O and timers enabled.
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            mode: watch::Sender::new(Mode::default()),
            generation: watch::Sender::new(0),
            counters: Counters::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(FaultProxy {
            addr,
            shared,
            accept,
        })
    }

    /// Starts a proxy in front of the server of a service URL
    /// (`redis://…`, `postgres://…`, `mysql://…`), whose port defaults to
    /// `default_port`; returns it with the same URL pointed at the proxy,
    /// user, password, path and query kept.
    pub async fn in_front_of(url: &str, default_port: u16) -> io::Result<(FaultProxy, String)> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
        let mut parsed = url::Url::parse(url).map_err(|_| invalid("not a URL"))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| invalid("the URL names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed.port().unwrap_or(default_port);
        // IPv4 first: `localhost` may list `::1` first, where a server bound
        // to 127.0.0.1 does not listen.
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .collect();
        addrs.sort_by_key(|a| !a.is_ipv4());
        let upstream = *addrs
            .first()
            .ok_or_else(|| invalid("the URL's host has no address"))?;
        let proxy = FaultProxy::start(upstream).await?;
        parsed
            .set_host(Some("127.0.0.1"))
            .map_err(|_| invalid("the URL takes no host"))?;
        parsed
            .set_port(Some(proxy.addr.port()))
            .map_err(|()| invalid("the URL takes no port"))?;
        Ok((proxy, parsed.into()))
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Resets every open connection, both sides. New connections are
    /// still forwarded unless the proxy also [refuses](Self::refuse) them.
    pub fn cut(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// From now on, resets each new connection as soon as it arrives,
    /// without connecting upstream. Open connections are left alone.
    pub fn refuse(&self) {
        self.shared.mode.send_modify(|m| m.refusing = true);
    }

    /// From now on, forwards nothing either way and closes nothing: bytes
    /// wait in the proxy (and in the sockets' buffers) until
    /// [`resume`](Self::resume). New connections are accepted, and stall
    /// too.
    pub fn stall(&self) {
        self.shared.mode.send_modify(|m| m.stalled = true);
    }

    /// Delays every chunk it forwards by `latency` (zero for none), in
    /// both directions.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.mode.send_modify(|m| m.latency = latency);
    }

    /// Ends every fault: accepts and forwards again, without latency,
    /// delivering what a stall held back.
    pub fn resume(&self) {
        self.shared.mode.send_replace(Mode::default());
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            forwarded: c.forwarded.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            cut: c.cut.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Ends every connection task; their sockets close with them.
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors or similar: try again shortly.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if shared.mode.borrow().refusing {
            reset(client, &shared.counters.refused);
            continue;
        }
        tokio::spawn(connect_upstream(client, Arc::clone(&shared)));
    }
}

/// Closes `socket` with a reset rather than an orderly goodbye, as the
/// kernel does for a connection to a closed port or to a dead process.
fn reset(socket: TcpStream, counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
    let _ = socket.set_zero_linger();
    drop(socket);
}

async fn connect_upstream(client: TcpStream, shared: Arc<Shared>) {
    let generation = shared.generation.subscribe();
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        reset(client, &shared.counters.refused);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    shared.counters.forwarded.fetch_add(1, Ordering::Relaxed);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = forward(client_read, server_write, &shared, generation.clone());
    let down = forward(server_read, client_write, &shared, generation);
    let (up, down) = tokio::join!(up, down);
    if let (Some(a), Some(b)) = (up, down) {
        // Counted before the sockets close, so that whoever sees the
        // connection end also sees it counted.
        shared.counters.cut.fetch_add(1, Ordering::Relaxed);
        // Both halves of both sockets are back: reset the two sockets.
        if let (Ok(client), Ok(server)) = (a.0.reunite(b.1), b.0.reunite(a.1)) {
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
    }
}

/// Copies `from` to `to` under the proxy's mode until either side ends
/// (`None`) or the connection is cut (the halves, to be reset).
async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    mut generation: watch::Receiver<u64>,
) -> Option<(OwnedReadHalf, OwnedWriteHalf)> {
    let mut mode = shared.mode.subscribe();
    let mut buf = vec![0; 16 * 1024];
    let cut = async |generation: &mut watch::Receiver<u64>| {
        // An error means the proxy is gone: that ends the connection too.
        let _ = generation.changed().await;
    };
    loop {
        let n = tokio::select! {
            () = cut(&mut generation) => return Some((from, to)),
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return None;
                }
                Ok(n) => n,
            },
        };
        // Hold the chunk while stalled; then wait out the latency.
        let latency = tokio::select! {
            () = cut(&mut generation) => return Some((from, to)),
            m = mode.wait_for(|m| !m.stalled) => match m {
                Ok(m) => m.latency,
                Err(_) => return Some((from, to)),
            },
        };
        if !latency.is_zero() {
            tokio::select! {
                () = cut(&mut generation) => return Some((from, to)),
                () = tokio::time::sleep(latency) => {}
            }
        }
        tokio::select! {
            () = cut(&mut generation) => return Some((from, to)),
            written = to.write_all(&buf[..n]) => if written.is_err() {
                return None;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;

    /// An upstream that echoes; returns its address.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(client: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        client.write_all(msg).await?;
        let mut buf = vec![0; msg.len()];
        client.read_exact(&mut buf).await?;
        Ok(buf)
    }

    const BOUND: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn refuse_resets_new_connections_until_resumed() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut open, b"a").await.unwrap(), b"a");

        proxy.refuse();
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        let outcome = tokio::time::timeout(BOUND, round_trip(&mut refused, b"b"))
            .await
            .expect("a refused connection ends at once");
        assert!(outcome.is_err(), "{outcome:?}");
        // An open connection is not affected.
        assert_eq!(round_trip(&mut open, b"c").await.unwrap(), b"c");

        proxy.resume();
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"d").await.unwrap(), b"d");
        let stats = proxy.stats();
        assert_eq!((stats.forwarded, stats.refused, stats.cut), (2, 1, 0));
    }

    #[tokio::test]
    async fn cut_closes_open_connections_but_not_later_ones() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut a, b"1").await.unwrap(), b"1");
        assert_eq!(round_trip(&mut b, b"2").await.unwrap(), b"2");
        proxy.cut();
        for c in [&mut a, &mut b] {
            let mut buf = [0; 1];
            let read = tokio::time::timeout(BOUND, c.read(&mut buf))
                .await
                .expect("a cut connection ends at once");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut c, b"3").await.unwrap(), b"3");
        assert_eq!(proxy.stats().cut, 2);
    }

    #[tokio::test]
    async fn stall_holds_bytes_of_open_and_new_connections() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.stall();
        let mut late = TcpStream::connect(proxy.addr()).await.unwrap();
        for c in [&mut open, &mut late] {
            let held = tokio::time::timeout(Duration::from_millis(200), round_trip(c, b"x")).await;
            assert!(held.is_err(), "a byte passed a stall");
        }
        proxy.resume();
        // What was held arrives now, in order, before anything newer.
        for c in [&mut open, &mut late] {
            let mut buf = [0; 1];
            c.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"x");
            assert_eq!(round_trip(c, b"y").await.unwrap(), b"y");
        }
    }

    #[tokio::test]
    async fn latency_delays_without_losing_or_reordering() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.set_latency(Duration::from_millis(50));
        let start = tokio::time::Instant::now();
        let msg: Vec<u8> = (0..=255).collect();
        assert_eq!(round_trip(&mut c, &msg).await.unwrap(), msg);
        // Two hops (there and back) of at least the latency each: the
        // delay is a lower bound, which holds however slow the machine.
        assert!(start.elapsed() >= Duration::from_millis(100));
        proxy.resume();
        assert_eq!(round_trip(&mut c, b"z").await.unwrap(), b"z");
    }

    #[tokio::test]
    async fn service_urls_are_pointed_at_the_proxy() {
        let upstream = echo_server().await;
        let url = format!("postgres://app:pw@localhost:{}/db?x=1", upstream.port());
        let (proxy, through) = FaultProxy::in_front_of(&url, 5432).await.unwrap();
        assert_eq!(
            through,
            format!("postgres://app:pw@127.0.0.1:{}/db?x=1", proxy.addr().port())
        );
        assert_eq!(proxy.upstream().port(), upstream.port());
        assert!(FaultProxy::in_front_of("not a url", 1).await.is_err());
    }
}
