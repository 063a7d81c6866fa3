//! A TCP relay between one replica and PostgreSQL, which a test can cut
//! two ways: silently ([`Relay::blackhole`]: the sockets stay open, nothing
//! is forwarded any more, new connections are accepted and then hear
//! nothing — a PostgreSQL that stopped answering, a connection that
//! silently died) or loudly ([`Relay::reset`]: every connection, open or
//! new, is ended with a TCP RST). [`Relay::heal`] forwards again; bytes
//! held during a blackhole are delivered then, none are lost.
//!
//! On loopback the kernel acknowledges what the relay does not read, so a
//! blackhole here is stronger than a cable pulled: TCP keepalives and the
//! user timeout never fire, and only the replica's own deadlines help.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the relay does with its connections now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Forward,
    /// Keep every socket, forward nothing, answer nothing.
    Blackhole,
    /// End every connection with RST, and each new one at once.
    Reset,
}

pub struct Relay {
    pub port: u16,
    mode: watch::Sender<Mode>,
}

impl Relay {
    /// Listens on 127.0.0.1 and carries every connection to `upstream`
    /// until `stop`.
    pub async fn start(upstream: SocketAddr, stop: CancellationToken) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (mode, modes) = watch::channel(Mode::Forward);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                tokio::spawn(carry(client, upstream, modes.clone(), stop.clone()));
            }
        });
        Ok(Relay { port, mode })
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    pub fn blackhole(&self) {
        self.mode.send_replace(Mode::Blackhole);
    }

    pub fn reset(&self) {
        self.mode.send_replace(Mode::Reset);
    }

    pub fn heal(&self) {
        self.mode.send_replace(Mode::Forward);
    }
}

/// How one direction of a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// EOF or an error on a socket: close both sides normally.
    Closed,
    /// The relay was told to reset its connections.
    Reset,
}

/// Waits until the mode lets bytes through; `End` when it never will.
async fn until_forward(modes: &mut watch::Receiver<Mode>) -> Result<(), End> {
    loop {
        match *modes.borrow_and_update() {
            Mode::Forward => return Ok(()),
            Mode::Reset => return Err(End::Reset),
            Mode::Blackhole => {}
        }
        if modes.changed().await.is_err() {
            return Err(End::Closed);
        }
    }
}

async fn carry(
    client: TcpStream,
    upstream: SocketAddr,
    mut modes: watch::Receiver<Mode>,
    stop: CancellationToken,
) {
    // A new connection during a blackhole is held unanswered, as a
    // PostgreSQL that stopped answering would leave it.
    let waited = tokio::select! {
        w = until_forward(&mut modes) => w,
        _ = stop.cancelled() => Err(End::Closed),
    };
    match waited {
        Ok(()) => {}
        Err(End::Reset) => return reset(client),
        Err(End::Closed) => return,
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let end = tokio::select! {
        e = pump(&mut client_rx, &mut server_tx, modes.clone()) => e,
        e = pump(&mut server_rx, &mut client_tx, modes.clone()) => e,
        _ = stop.cancelled() => End::Closed,
    };
    if end == End::Reset {
        for (rx, tx) in [(client_rx, client_tx), (server_rx, server_tx)] {
            if let Ok(stream) = rx.reunite(tx) {
                reset(stream);
            }
        }
    }
}

/// Closes with RST rather than FIN: SO_LINGER 0, then drop.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Copies `from` to `to` while the mode says forward; while blackholed it
/// neither reads nor writes (a chunk read just before is held, not lost).
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    mut modes: watch::Receiver<Mode>,
) -> End {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Err(end) = until_forward(&mut modes).await {
            return end;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return End::Closed,
                Ok(n) => n,
            },
            // Blackholed or reset meanwhile: look again before reading.
            _ = modes.changed() => continue,
        };
        if let Err(end) = until_forward(&mut modes).await {
            return end;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return End::Closed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, what: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(what).await?;
        let mut got = vec![0u8; what.len()];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    #[tokio::test]
    async fn a_blackhole_holds_bytes_silently_and_a_heal_delivers_them() {
        let stop = CancellationToken::new();
        let relay = Relay::start(echo_server().await, stop.clone())
            .await
            .expect("relay");
        let mut s = TcpStream::connect(("127.0.0.1", relay.port))
            .await
            .expect("connect");
        assert_eq!(round_trip(&mut s, b"one").await.expect("echo"), b"one");
        relay.blackhole();
        let silent = tokio::time::timeout(Duration::from_millis(300), round_trip(&mut s, b"two"));
        assert!(silent.await.is_err(), "nothing comes back while blackholed");
        // A new connection is accepted and then hears nothing.
        let mut late = TcpStream::connect(("127.0.0.1", relay.port))
            .await
            .expect("accepted while blackholed");
        late.write_all(b"three").await.expect("write");
        let mut got = [0u8; 5];
        let silent = tokio::time::timeout(Duration::from_millis(300), late.read_exact(&mut got));
        assert!(silent.await.is_err(), "a new connection hears nothing");
        relay.heal();
        let mut two = [0u8; 3];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut two))
            .await
            .expect("delivered after the heal")
            .expect("read");
        assert_eq!(&two, b"two");
        tokio::time::timeout(Duration::from_secs(5), late.read_exact(&mut got))
            .await
            .expect("the held connection goes through after the heal")
            .expect("read");
        assert_eq!(&got, b"three");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_reset_ends_open_and_new_connections_with_rst() {
        let stop = CancellationToken::new();
        let relay = Relay::start(echo_server().await, stop.clone())
            .await
            .expect("relay");
        let mut s = TcpStream::connect(("127.0.0.1", relay.port))
            .await
            .expect("connect");
        assert_eq!(round_trip(&mut s, b"one").await.expect("echo"), b"one");
        relay.reset();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the reset arrives");
        let err = read.expect_err("an RST is an error, not an EOF");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        let mut late = TcpStream::connect(("127.0.0.1", relay.port))
            .await
            .expect("accepted");
        let read = tokio::time::timeout(Duration::from_secs(5), late.read(&mut buf))
            .await
            .expect("the reset arrives");
        assert_eq!(
            read.expect_err("reset").kind(),
            std::io::ErrorKind::ConnectionReset
        );
        relay.heal();
        let mut again = TcpStream::connect(("127.0.0.1", relay.port))
            .await
            .expect("connect");
        assert_eq!(round_trip(&mut again, b"ok").await.expect("echo"), b"ok");
        stop.cancel();
    }
}
