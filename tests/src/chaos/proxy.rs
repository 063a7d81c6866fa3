//! A TCP proxy per agent between the agent and the server. TLS passes
//! through untouched (the agent verifies the server's certificate for
//! 127.0.0.1 as usual); what the server sends is shown to [`Faults`], which
//! may have it dropped with the connection cut (a request lost on the way),
//! or have the agent stopped before it arrives.
//!
//! One listener per node, so the proxy knows whose connection it carries.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::cloud::Procs;
use super::faults::{Faults, Verdict};

pub struct Proxy {
    pub port: u16,
    /// Bumped to cut every open connection of the node.
    cut: watch::Sender<u64>,
}

impl Proxy {
    /// Listens on 127.0.0.1 and forwards every connection to `upstream`.
    pub async fn start(
        node: String,
        upstream: u16,
        faults: Arc<Faults>,
        procs: Arc<Procs>,
        stop: CancellationToken,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (cut, cuts) = watch::channel(0u64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((agent, _)) = accepted else { continue };
                let link = Link {
                    node: node.clone(),
                    faults: faults.clone(),
                    procs: procs.clone(),
                };
                tokio::spawn(link.carry(agent, upstream, cuts.clone(), stop.clone()));
            }
        });
        Ok(Proxy { port, cut })
    }

    /// Cuts the node's open connections (both sides see them closed).
    pub fn cut(&self) {
        self.cut.send_modify(|g| *g += 1);
    }
}

struct Link {
    node: String,
    faults: Arc<Faults>,
    procs: Arc<Procs>,
}

impl Link {
    async fn carry(
        self,
        agent: TcpStream,
        upstream: u16,
        mut cuts: watch::Receiver<u64>,
        stop: CancellationToken,
    ) {
        // A server that is down refuses the connection: so does the proxy.
        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
            return;
        };
        let _ = agent.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (mut agent_rx, mut agent_tx) = agent.into_split();
        let (mut server_rx, mut server_tx) = server.into_split();
        cuts.mark_unchanged();
        let up = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match agent_rx.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if server_tx.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        let down = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match server_rx.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                match self.faults.on_downstream(&self.node, n) {
                    Verdict::Forward => {}
                    Verdict::Drop => {
                        self.procs.event(format_args!(
                            "lost {n} bytes on their way to {} and cut its connection",
                            self.node
                        ));
                        return;
                    }
                    Verdict::StopAgent { held, kill } => {
                        self.procs.stop_agent(&self.node, held, kill);
                    }
                    Verdict::KillServerAfter => {
                        let _ = agent_tx.write_all(&buf[..n]).await;
                        // Let the bytes leave before the server goes.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        if self.procs.kill_server() {
                            self.procs.event(format_args!(
                                "kill -9 the server right after it sent {} {n} bytes",
                                self.node
                            ));
                        }
                        return;
                    }
                }
                if agent_tx.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        // Whichever side ends (or a cut), both sockets close when dropped.
        tokio::select! {
            _ = up => {}
            _ = down => {}
            _ = cuts.changed() => {}
            _ = stop.cancelled() => {}
        }
    }
}
