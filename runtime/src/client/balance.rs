//! [`balanced`]: tonic's balanced channel over several replicas, leaving out
//! the ones whose port refuses connections.

use std::time::Duration;

use tokio::net::TcpStream;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use super::ClientError;

/// A channel that spreads calls over `endpoints` (tonic's power-of-two-choices
/// balancer), and keeps only the ones that accept TCP connections in it:
/// every `probe_every`, each endpoint's port is connected to, a replica that
/// refuses (killed, restarting, gone) is taken out, and put back once it
/// accepts again.
///
/// Why: tonic's balancer over a fixed list keeps choosing a dead replica
/// (a failing connection looks unloaded), so even retried calls can land on
/// it attempt after attempt. Taken out, it gets no call, and a retry of a
/// call it failed goes to another replica. Until the first probe finds one,
/// calls wait.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tonic::transport::Endpoint;
///
/// let replicas = ["http://10.0.0.1:50053", "http://10.0.0.2:50053", "http://10.0.0.3:50053"]
///     .map(|url| Endpoint::from_static(url));
/// let channel = keel_rpc::client::balanced(replicas, Duration::from_secs(1))?;
/// // connect_auth_service(channel, &client)?  (any generated client constructor)
/// # let _ = channel;
/// # Ok(())
/// # }
/// ```
pub fn balanced(
    endpoints: impl IntoIterator<Item = Endpoint>,
    probe_every: Duration,
) -> Result<Channel, ClientError> {
    let endpoints: Vec<Endpoint> = endpoints.into_iter().collect();
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(ClientError::NoRuntime(format!(
            "{} endpoints",
            endpoints.len()
        )));
    }
    let (channel, changes) = Channel::balance_channel::<usize>(endpoints.len().max(1));
    tokio::spawn(async move {
        let mut inside = vec![false; endpoints.len()];
        loop {
            // All at once, and the changes sent together: the balancer then
            // takes them in one go, rather than sending the calls that wait
            // for a first replica all to the first one found.
            let probes = endpoints.iter().map(|e| accepts(e, probe_every));
            let accepting = futures_util::future::join_all(probes).await;
            for (index, accepts) in accepting.into_iter().enumerate() {
                let change = match (accepts, inside[index]) {
                    (true, false) => Change::Insert(index, endpoints[index].clone()),
                    (false, true) => Change::Remove(index),
                    _ => continue,
                };
                inside[index] = accepts;
                if changes.send(change).await.is_err() {
                    // Every clone of the channel is gone.
                    return;
                }
            }
            tokio::time::sleep(probe_every).await;
        }
    });
    Ok(channel)
}

/// Whether the endpoint's host and port accept a TCP connection within `timeout`.
async fn accepts(endpoint: &Endpoint, timeout: Duration) -> bool {
    let uri = endpoint.uri();
    let Some(host) = uri.host() else {
        return false;
    };
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect((host, port))).await,
        Ok(Ok(_))
    )
}
