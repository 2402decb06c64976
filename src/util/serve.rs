//! The accept loop both of our HTTP servers share (the simulator and `--metrics-listen`):
//! connections are accepted until a cancellation token fires, each served on a task of its own
//! until it ends or the token fires (then it is dropped, closing the socket).

use std::future::Future;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Accepts connections on `listener` until `stop`; `serve` turns each into the future that
/// serves it (e.g. hyper's `serve_connection`), run on its own task until it ends or `stop`.
/// A failed accept (out of file descriptors, a connection reset before it was taken) is
/// skipped: the server goes on.
pub(crate) async fn accept_until<F, Fut>(
    listener: TcpListener,
    stop: CancellationToken,
    mut serve: F,
) where
    F: FnMut(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let connection = serve(stream);
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}
