//! The raw baselines: a plain tonic echo service (`echo.proto`, unary and
//! bidirectional stream) and a plain TCP ping-pong, servers and clients.
//! They do the least a request/reply over gRPC, or over TCP, can do, so
//! the actogrid figures are compared with the cost of the transport itself.

use std::pin::Pin;

use anyhow::Context as _;
use futures::Stream;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

/// The code generated from `proto/actogrid/bench/v1/echo.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub(crate) mod proto {
    tonic::include_proto!("actogrid.bench.v1");
}

use proto::Msg;
use proto::echo_client::EchoClient;
use proto::echo_server::{Echo, EchoServer};

/// Sends every message back.
#[derive(Debug, Default)]
struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    type StreamStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

    async fn unary(&self, request: Request<Msg>) -> Result<Response<Msg>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn stream(
        &self,
        request: Request<Streaming<Msg>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        Ok(Response::new(Box::pin(request.into_inner())))
    }
}

/// Serves the echo service on `listener` until `stop` completes.
pub(crate) async fn serve_echo(
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(EchoServer::new(EchoService))
        .serve_with_incoming_shutdown(incoming, stop)
        .await
        .context("the echo server failed")
}

/// A client of the echo service at `address` (`host:port`), connected.
pub(crate) async fn echo_client(address: &str) -> anyhow::Result<EchoClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{address}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to the echo server at {address}"))?;
    Ok(EchoClient::new(channel))
}

/// One empty unary call.
pub(crate) async fn unary(client: &mut EchoClient<Channel>) -> anyhow::Result<()> {
    client.unary(Msg::default()).await?;
    Ok(())
}

/// Serves TCP ping-pong on `listener`: every connection gets back each
/// chunk it sends, as soon as it is read.
pub(crate) async fn serve_tcp(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
}

/// A TCP ping-pong client: writes `size` bytes and reads them back.
#[derive(Debug)]
pub(crate) struct PingPong {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl PingPong {
    /// Connects to the ping-pong server at `address`, with `size`-byte
    /// messages (1 to 64).
    pub(crate) async fn connect(address: &str, size: usize) -> anyhow::Result<PingPong> {
        anyhow::ensure!(
            (1..=64).contains(&size),
            "ping-pong messages are 1 to 64 bytes"
        );
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("cannot connect to the TCP server at {address}"))?;
        stream.set_nodelay(true)?;
        Ok(PingPong {
            stream,
            buf: vec![7u8; size],
        })
    }

    /// One round trip.
    pub(crate) async fn round_trip(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(&self.buf).await?;
        self.stream.read_exact(&mut self.buf).await?;
        Ok(())
    }
}
