//! The DNS interface, Consul's: UDP and TCP on one port, answering from the published views.
//! UDP is served by a few blocking threads (a query is a receive, a lookup and a send; no
//! task per query), TCP by a task per connection; both stop when the server closes.

mod answer;
mod names;
mod wire;

pub use answer::Settings;

use crate::config::HostPort;
use crate::state::AppState;
use answer::{Resolver, Transport};
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};

/// How often a UDP thread looks whether the server is closing while no query arrives.
const UDP_POLL: Duration = Duration::from_millis(100);
/// Most UDP threads; each serves the shared socket.
const MAX_UDP_THREADS: usize = 4;
/// Most TCP connections at once; more are closed at once.
const MAX_TCP_CONNECTIONS: usize = 256;
/// A TCP connection idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The DNS sockets, bound before anything else starts so a taken port fails the start.
pub struct Bound {
    udp: UdpSocket,
    tcp: TcpListener,
    pub local_addr: SocketAddr,
}

/// Why the DNS sockets could not be bound.
#[derive(Debug)]
pub enum BindError {
    Resolve(io::Error),
    Bind(io::Error),
}

/// Binds UDP and TCP on the same port of the first address `addr` resolves to that can be
/// bound; with port 0, a port free for both.
pub async fn bind(addr: &HostPort) -> Result<Bound, BindError> {
    let candidates = tokio::net::lookup_host((addr.host.as_str(), addr.port))
        .await
        .map_err(BindError::Resolve)?;
    let mut failure: Option<io::Error> = None;
    for candidate in candidates {
        match bind_both(candidate) {
            Ok(bound) => return Ok(bound),
            Err(error) if failure.is_none() || error.kind() != io::ErrorKind::AddrNotAvailable => {
                failure = Some(error);
            }
            Err(_) => {}
        }
    }
    Err(BindError::Bind(failure.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "resolves to no address")
    })))
}

fn bind_both(addr: SocketAddr) -> io::Result<Bound> {
    // The UDP port picked for port 0 may be taken for TCP: try another.
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut taken = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr)?;
        let local_addr = udp.local_addr()?;
        match TcpListener::bind(local_addr) {
            Ok(tcp) => {
                return Ok(Bound {
                    udp,
                    tcp,
                    local_addr,
                });
            }
            Err(error) if addr.port() == 0 && error.kind() == io::ErrorKind::AddrInUse => {
                taken = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(taken.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

/// A running DNS interface.
pub struct Dns {
    udp: Vec<std::thread::JoinHandle<()>>,
    tcp: tokio::task::JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

/// Serves DNS on the bound sockets until the server closes (`AppState::closing`).
pub fn serve(bound: Bound, state: AppState, settings: &Settings) -> io::Result<Dns> {
    let resolver = Arc::new(Resolver::new(state.clone(), settings));
    let stop = Arc::new(AtomicBool::new(false));
    bound.udp.set_read_timeout(Some(UDP_POLL))?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_UDP_THREADS);
    let mut udp = Vec::with_capacity(threads);
    for i in 0..threads {
        let socket = bound.udp.try_clone()?;
        let (resolver, stop) = (resolver.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("trellis-dns-{i}"))
            .spawn(move || serve_udp(&socket, &resolver, &stop))?;
        udp.push(thread);
    }
    bound.tcp.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(bound.tcp)?;
    let closing = state.closing();
    let stopping = stop.clone();
    let tcp = tokio::spawn(async move {
        serve_tcp(listener, resolver, closing).await;
        stopping.store(true, Ordering::Relaxed);
    });
    Ok(Dns { udp, tcp, stop })
}

impl Dns {
    /// Stops every listener (they stop by themselves once the server closes) and waits until
    /// they have.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tcp.abort();
        let _ = self.tcp.await;
        let threads = self.udp;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

fn serve_udp(socket: &UdpSocket, resolver: &Resolver, stop: &AtomicBool) {
    // Room for any datagram: an EDNS query may be large, and a truncated one is malformed.
    let mut packet = vec![0u8; 65_536];
    let mut out = Vec::with_capacity(wire::UDP_MIN);
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut packet) {
            Ok((len, from)) => {
                // Nobody can be answered at port 0.
                if from.port() == 0 || !resolver.answer(&packet[..len], Transport::Udp, &mut out) {
                    continue;
                }
                if let Err(error) = socket.send_to(&out, from) {
                    tracing::debug!(%from, %error, "cannot send a DNS answer");
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(error) => {
                tracing::debug!(%error, "DNS receive failed");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

async fn serve_tcp(
    listener: tokio::net::TcpListener,
    resolver: Arc<Resolver>,
    mut closing: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = closing.wait_for(|closing| *closing) => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    continue;
                };
                let (resolver, closing) = (resolver.clone(), closing.clone());
                tokio::spawn(async move {
                    serve_connection(stream, &resolver, closing).await;
                    drop(permit);
                });
            }
            Err(error) => {
                // Out of file descriptors, typically: let some close.
                tracing::debug!(%error, "DNS accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Answers the queries of one TCP connection (RFC 7766: each message after its 16-bit
/// length), until it closes, idles or the server closes.
async fn serve_connection(
    mut stream: tokio::net::TcpStream,
    resolver: &Resolver,
    mut closing: watch::Receiver<bool>,
) {
    let mut packet = Vec::new();
    let mut out = Vec::new();
    loop {
        let read = async {
            let len = stream.read_u16().await?;
            packet.resize(usize::from(len), 0);
            stream.read_exact(&mut packet).await.map(|_| ())
        };
        tokio::select! {
            read = tokio::time::timeout(TCP_IDLE, read) => {
                if !matches!(read, Ok(Ok(()))) {
                    return;
                }
            }
            _ = closing.wait_for(|closing| *closing) => return,
        }
        if !resolver.answer(&packet, Transport::Tcp, &mut out) {
            return;
        }
        let Ok(len) = u16::try_from(out.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&out);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{ServerConfig, ServerError, start};
    use hickory_proto::op::{Message, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};
    use std::net::UdpSocket;

    fn config(http_port: u16) -> ServerConfig {
        ServerConfig {
            http: format!("127.0.0.1:{http_port}").parse().unwrap(),
            dev: true,
            ..ServerConfig::default()
        }
    }

    fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn a_taken_dns_address_asked_for_says_what_to_do() {
        let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let config = ServerConfig {
            dns: Some(crate::DnsListen::At(addr.into())),
            ..config(0)
        };
        let Err(error) = start(config, std::future::pending()).await else {
            panic!("bound a taken DNS port");
        };
        assert!(matches!(error, ServerError::DnsBind { .. }));
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "cannot listen for DNS on {addr}: address already in use"
            )),
            "{message}"
        );
        assert!(message.contains("--dns"), "{message}");
    }

    #[tokio::test]
    async fn the_default_dns_address_taken_leaves_dns_off() {
        // Whatever holds 8600 (this test, another server, a Consul agent), it stays taken.
        let _held = UdpSocket::bind("127.0.0.1:8600");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = start(config(free_port()), async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        assert_eq!(running.dns_addr, None);
        stop.send(()).unwrap();
        running.wait().await.unwrap();
    }

    #[tokio::test]
    async fn dns_answers_until_the_server_stops() {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = start(config(0), async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        let dns = running.dns_addr.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let name = Name::from_ascii("nope.service.consul.").unwrap();
        let mut query = Message::new();
        query
            .set_id(0xABCD)
            .add_query(Query::query(name, RecordType::A));
        client.send_to(&query.to_vec().unwrap(), dns).unwrap();
        let mut answer = [0u8; 512];
        let len = client.recv(&mut answer).unwrap();
        let answer = Message::from_vec(&answer[..len]).unwrap();
        assert_eq!(answer.id(), 0xABCD);
        assert_eq!(answer.response_code(), ResponseCode::NXDomain);
        assert_eq!(answer.name_servers()[0].record_type(), RecordType::SOA);
        stop.send(()).unwrap();
        running.wait().await.unwrap();
        // Stopped: the port is free again.
        UdpSocket::bind(dns).unwrap();
    }
}
