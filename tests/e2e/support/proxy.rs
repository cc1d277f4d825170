//! A TCP proxy a test can cut: between one process and its database, to play a network
//! partition of that process alone.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards connections from its own port to `target` until [`Proxy::cut`].
pub(crate) struct Proxy {
    /// Where clients connect.
    pub(crate) address: SocketAddr,
    cut: Arc<std::sync::Mutex<CancellationToken>>,
}

impl Proxy {
    /// Starts forwarding to `target`.
    pub(crate) async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let cut = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let state = cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let token = state.lock().unwrap().clone();
                if token.is_cancelled() {
                    // cut: the connection is dropped at once
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        Self { address, cut }
    }

    /// Drops every connection and every new one, until [`Proxy::heal`].
    pub(crate) fn cut(&self) {
        self.cut.lock().unwrap().cancel();
    }

    /// Forwards again.
    pub(crate) fn heal(&self) {
        *self.cut.lock().unwrap() = CancellationToken::new();
    }
}
