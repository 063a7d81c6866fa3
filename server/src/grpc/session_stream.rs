//! The agent session's gRPC stream, framed by hand on both directions.
//!
//! Why not tonic's `Streaming`: it keeps its receive buffer as large as the
//! largest message the stream has carried, for as long as the stream lives.
//! A kolla node's full report is about 40 KB, sent on connect and every few
//! minutes, so 10,000 sessions pinned about 400 MB for messages long
//! decoded. Here a message that arrives in pieces is assembled in a buffer
//! of exactly its size, which is freed as soon as it is decoded; a message
//! that arrives whole in one HTTP/2 frame is decoded in place.
//!
//! The gRPC framing is the standard one: a 1-byte compression flag (we take
//! no compressed messages), a 4-byte big-endian length, the protobuf bytes;
//! the answer ends with trailers that carry `grpc-status`.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;
use std::time::Duration;

use http_body::Frame;
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tonic::Status;
use tonic::codegen::{Body, Bytes, http};

const HEADER: usize = 5;

/// How many sessions may assemble a message that came in pieces at once,
/// and how long one may take. When 10,000 agents reconnect together, each
/// sends its 40 KB full report at once; without a bound every session holds
/// a half-assembled report at the same moment. A session that waits for a
/// permit stops reading, and HTTP/2 flow control makes its agent wait.
pub struct Assembly {
    permits: Arc<Semaphore>,
    deadline: Duration,
}

impl Assembly {
    pub fn new(concurrent: usize, deadline: Duration) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(concurrent)),
            deadline,
        })
    }
}

/// The messages an agent sends, read from the request body.
pub struct Inbound {
    body: tonic::body::Body,
    max_message_bytes: usize,
    /// Received and not yet consumed: part of the last DATA frame.
    pending: Bytes,
    header: [u8; HEADER],
    header_len: usize,
    /// The message being assembled across frames, and its full length.
    /// Its buffer is allocated once `permit` is held.
    partial: Option<(Vec<u8>, usize)>,
    assembly: Arc<Assembly>,
    permit: Option<(OwnedSemaphorePermit, Instant)>,
    ended: bool,
}

/// What `pending` gave.
enum Taken {
    Message(Bytes),
    NeedData,
    NeedPermit,
}

impl Inbound {
    pub fn new(body: tonic::body::Body, max_message_bytes: usize, assembly: Arc<Assembly>) -> Self {
        Self {
            body,
            max_message_bytes,
            pending: Bytes::new(),
            header: [0; HEADER],
            header_len: 0,
            partial: None,
            assembly,
            permit: None,
            ended: false,
        }
    }

    /// The next message, or `None` when the agent closed its side cleanly.
    ///
    /// Cancel-safe: everything read is kept in `self`, and the only awaits
    /// are for the next frame and for an assembly permit, so `select!` may
    /// drop this future at any time.
    ///
    /// Boxed, so that a session's task, which waits here all its life, does
    /// not carry room for a whole decoded message in its state.
    pub async fn message<M: Message + Default>(&mut self) -> Result<Option<Box<M>>, Status> {
        loop {
            match self.take_message()? {
                Taken::Message(bytes) => {
                    self.permit = None;
                    return M::decode(bytes).map(|m| Some(Box::new(m))).map_err(|e| {
                        Status::invalid_argument(format!("cannot decode a message: {e}"))
                    });
                }
                Taken::NeedPermit => {
                    let permit = self
                        .assembly
                        .permits
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| Status::unavailable("the server is shutting down"))?;
                    self.permit = Some((permit, Instant::now() + self.assembly.deadline));
                    continue;
                }
                Taken::NeedData => {}
            }
            if self.ended {
                let mid_message = self.header_len > 0 || self.partial.is_some();
                return if mid_message {
                    Err(Status::internal(
                        "the stream ended in the middle of a message",
                    ))
                } else {
                    Ok(None)
                };
            }
            let next = poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx));
            let frame = match self.permit.as_ref().map(|(_, deadline)| *deadline) {
                // A sender that holds a permit must finish its message in time.
                Some(deadline) => match tokio::time::timeout_at(deadline, next).await {
                    Ok(frame) => frame,
                    Err(_) => {
                        // Give the permit and the buffer back at once: the
                        // session ends with this error.
                        self.permit = None;
                        self.partial = None;
                        return Err(Status::deadline_exceeded(format!(
                            "a message was not complete within {}s",
                            self.assembly.deadline.as_secs()
                        )));
                    }
                },
                None => next.await,
            };
            match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.pending = data,
                    Err(_trailers) => self.ended = true,
                },
                // The agent went away (a reset stream reads as cancelled).
                Some(Err(status)) if status.code() == tonic::Code::Cancelled => self.ended = true,
                Some(Err(status)) => return Err(status),
                None => self.ended = true,
            }
        }
    }

    /// Moves what `pending` holds into the header or the message; returns a
    /// whole message's bytes once there is one.
    fn take_message(&mut self) -> Result<Taken, Status> {
        let taken = self.take_message_inner();
        // An empty slice still holds on to the HTTP/2 read buffer it was
        // cut from, and a read buffer that is not uniquely owned cannot be
        // reused: let go of it, or every session keeps two.
        if self.pending.is_empty() {
            self.pending = Bytes::new();
        }
        taken
    }

    fn take_message_inner(&mut self) -> Result<Taken, Status> {
        loop {
            if let Some((buf, len)) = &mut self.partial {
                if buf.capacity() < *len {
                    if self.permit.is_none() {
                        return Ok(Taken::NeedPermit);
                    }
                    buf.reserve_exact(*len);
                }
                let want = (*len - buf.len()).min(self.pending.len());
                buf.extend_from_slice(&self.pending.split_to(want));
                if buf.len() < *len {
                    return Ok(Taken::NeedData);
                }
                let (buf, _) = self.partial.take().expect("checked above");
                return Ok(Taken::Message(Bytes::from(buf)));
            }
            if self.pending.is_empty() {
                return Ok(Taken::NeedData);
            }
            if self.header_len < HEADER {
                let want = (HEADER - self.header_len).min(self.pending.len());
                let got = self.pending.split_to(want);
                self.header[self.header_len..self.header_len + want].copy_from_slice(&got);
                self.header_len += want;
                if self.header_len < HEADER {
                    return Ok(Taken::NeedData);
                }
            }
            self.header_len = 0;
            if self.header[0] != 0 {
                return Err(Status::unimplemented(
                    "compressed messages are not accepted; send them uncompressed",
                ));
            }
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]) as usize;
            if len > self.max_message_bytes {
                return Err(Status::out_of_range(format!(
                    "message too large: {len} bytes, the limit is {} bytes",
                    self.max_message_bytes
                )));
            }
            if self.pending.len() >= len {
                // Whole in this frame: decode in place, no copy.
                return Ok(Taken::Message(self.pending.split_to(len)));
            }
            // Its buffer comes with a permit (see `Assembly`).
            self.partial = Some((Vec::new(), len));
        }
    }
}

/// The server's side of a session: messages from a channel, then trailers.
pub struct Outbound {
    rx: mpsc::Receiver<Result<Box<rollcall_proto::v1::ServerMessage>, Status>>,
    done: bool,
}

impl Outbound {
    /// The HTTP response for a session whose messages come from `rx`.
    pub fn response(
        rx: mpsc::Receiver<Result<Box<rollcall_proto::v1::ServerMessage>, Status>>,
    ) -> http::Response<tonic::body::Body> {
        let mut response =
            http::Response::new(tonic::body::Body::new(Outbound { rx, done: false }));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            tonic::metadata::GRPC_CONTENT_TYPE,
        );
        response
    }
}

/// The trailers that end a stream with `status`.
fn trailers(status: Status) -> http::HeaderMap {
    let mut headers = status.into_http::<()>().into_parts().0.headers;
    headers.remove(http::header::CONTENT_TYPE);
    headers
}

/// One message in gRPC framing.
pub fn frame(msg: &impl Message) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = Vec::with_capacity(HEADER + len);
    buf.push(0);
    buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    msg.encode(&mut buf)
        .expect("a Vec with room for the message takes it");
    Bytes::from(buf)
}

impl Body for Outbound {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(match std::task::ready!(self.rx.poll_recv(cx)) {
            Some(Ok(msg)) => Frame::data(frame(&msg)),
            Some(Err(status)) => {
                self.done = true;
                Frame::trailers(trailers(status))
            }
            None => {
                self.done = true;
                Frame::trailers(trailers(Status::ok("")))
            }
        })))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_proto::v1;

    /// A request body that delivers `chunks` as DATA frames, then ends.
    fn body(chunks: Vec<Bytes>) -> tonic::body::Body {
        let (tx, rx) = mpsc::channel(chunks.len().max(1));
        for c in chunks {
            tx.try_send(Ok(Frame::data(c))).expect("room");
        }
        drop(tx);
        tonic::body::Body::new(ChannelBody(rx))
    }

    struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, Status>>);

    impl Body for ChannelBody {
        type Data = Bytes;
        type Error = Status;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            self.0.poll_recv(cx)
        }
    }

    fn assembly() -> Arc<Assembly> {
        Assembly::new(1, Duration::from_secs(5))
    }

    fn hello(node: &str) -> v1::AgentMessage {
        v1::AgentMessage {
            msg: Some(v1::agent_message::Msg::Hello(v1::Hello {
                node: node.into(),
                hostname: "x".repeat(300),
                ..Default::default()
            })),
        }
    }

    #[tokio::test]
    async fn messages_split_anywhere_across_frames_come_out_whole() {
        let mut wire = Vec::new();
        for n in ["a", "b", "c"] {
            wire.extend_from_slice(&frame(&hello(n)));
        }
        for size in [1, 3, 5, 7, 100, wire.len()] {
            let chunks = wire.chunks(size).map(Bytes::copy_from_slice).collect();
            let mut inbound = Inbound::new(body(chunks), 1 << 20, assembly());
            for n in ["a", "b", "c"] {
                let got = inbound.message::<v1::AgentMessage>().await;
                assert_eq!(
                    *got.expect("ok").expect("one"),
                    hello(n),
                    "chunks of {size}"
                );
            }
            let end = inbound
                .message::<v1::AgentMessage>()
                .await
                .expect("clean end");
            assert!(end.is_none());
        }
    }

    #[tokio::test]
    async fn an_oversized_or_compressed_or_cut_message_is_an_error() {
        let big = frame(&hello("a"));
        let mut inbound = Inbound::new(body(vec![big.clone()]), 10, assembly());
        let err = inbound
            .message::<v1::AgentMessage>()
            .await
            .expect_err("too large");
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        assert!(err.message().contains("too large"), "{}", err.message());

        let mut compressed = big.to_vec();
        compressed[0] = 1;
        let mut inbound = Inbound::new(body(vec![compressed.into()]), 1 << 20, assembly());
        let err = inbound
            .message::<v1::AgentMessage>()
            .await
            .expect_err("compressed");
        assert_eq!(err.code(), tonic::Code::Unimplemented);

        let mut inbound = Inbound::new(body(vec![big.slice(..big.len() - 1)]), 1 << 20, assembly());
        let err = inbound
            .message::<v1::AgentMessage>()
            .await
            .expect_err("cut");
        assert_eq!(err.code(), tonic::Code::Internal);
    }

    #[tokio::test]
    async fn a_sender_that_stalls_mid_message_holds_others_back_only_until_its_deadline() {
        let assembly = Assembly::new(1, Duration::from_millis(300));
        let big = frame(&hello("a"));
        let (stall_tx, stall_rx) = mpsc::channel(4);
        stall_tx
            .try_send(Ok(Frame::data(big.slice(..20))))
            .expect("room");
        let mut stalled = Inbound::new(
            tonic::body::Body::new(ChannelBody(stall_rx)),
            1 << 20,
            assembly.clone(),
        );
        let chunks = big.chunks(7).map(Bytes::copy_from_slice).collect();
        let mut waiting = Inbound::new(body(chunks), 1 << 20, assembly);
        let started = std::time::Instant::now();
        let (stalled, waited) = tokio::join!(
            stalled.message::<v1::AgentMessage>(),
            waiting.message::<v1::AgentMessage>()
        );
        let err = stalled.expect_err("stalled past its deadline");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(*waited.expect("ok").expect("one"), hello("a"));
        assert!(started.elapsed() >= Duration::from_millis(250));
        drop(stall_tx);
    }

    #[tokio::test]
    async fn the_answer_is_framed_messages_then_ok_or_error_trailers() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Box::default())).expect("room");
        tx.try_send(Err(Status::invalid_argument("bad report")))
            .expect("room");
        let mut body = Outbound { rx, done: false };
        let first = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .expect("frame")
            .expect("ok");
        assert_eq!(
            first.into_data().expect("data"),
            frame(&v1::ServerMessage::default())
        );
        let last = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .expect("frame")
            .expect("ok");
        let t = last.into_trailers().expect("trailers");
        assert_eq!(t.get("grpc-status").expect("status"), "3");
        assert!(body.is_end_stream());
        drop(tx);
    }
}
