//! `direct-tcpip` channels (`ssh -L`, VS Code's port forwarding): a TCP connection to a port
//! on the VM's loopback, through the manager's tunnel.

use mayfly_proto::mux::{Event, Stream};
use mayfly_server::manager::Activity;
use russh::server::Msg;
use russh::{Channel, ChannelMsg};

/// True for a destination that means "the VM itself" (the tunnel connects to its loopback).
pub fn is_vm_local(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]" | "0.0.0.0" | "ip6-localhost")
}

/// Relays bytes both ways until either side is done.
pub async fn relay(channel: Channel<Msg>, stream: Stream, activity: Activity) {
    let (mut rd, wr) = channel.split();
    let (tx, mut rx) = stream.split();
    let inbound = async {
        loop {
            match rd.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    activity.touch();
                    if tx.send_data(0, &data).await.is_err() {
                        return;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    let _ = tx.send_eof().await;
                }
                None | Some(ChannelMsg::Close) => {
                    tx.reset("the SSH client closed the forwarded connection");
                    return;
                }
                Some(_) => {}
            }
        }
    };
    let outbound = async {
        loop {
            match rx.recv().await {
                Event::Data { data, .. } => {
                    activity.touch();
                    if wr.data_bytes(data).await.is_err() {
                        return;
                    }
                }
                Event::Eof => {
                    let _ = wr.eof().await;
                    break;
                }
                Event::Reset(_) | Event::Ctrl(mayfly_proto::msg::Ctrl::Error { .. }) => return,
                Event::Ctrl(_) => {}
            }
        }
        // Wait for the client to finish its side after our EOF; the channel closes at its Close.
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = inbound => {}
        () = outbound => {}
        () = crate::keep_active(&activity) => {}
    }
    let _ = wr.close().await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_vm_itself() {
        for h in ["localhost", "127.0.0.1", "::1"] {
            assert!(super::is_vm_local(h), "{h}");
        }
        for h in ["example.com", "10.0.0.1", "169.254.169.254", ""] {
            assert!(!super::is_vm_local(h), "{h}");
        }
    }
}
