//! `GetEvents` without re-encoding: its messages are events already encoded (the journal's
//! payload, shared by every subscriber), with the sequence number spliced in front (field 1
//! comes first in the canonical encoding: the bytes on the wire are the ones prost would write
//! for the decoded event, so every `sensor.v1` client reads them as before).
//!
//! [`EventsServer`] serves `/sensor.v1.Sensor/GetEvents` and hands every other method to the
//! generated server. tonic handles the call with [`EventsCodec`] (it decodes the request and
//! answers errors); the response body is [`ChunkBody`]: the session frames the messages of a
//! whole batch into one buffer (a copy from the shared batch, no per-message reference count
//! or encoder call), then the body ends with `grpc-status: 0`, as tonic's own would.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, ready},
};

use bytes::{BufMut as _, Bytes, BytesMut};
use http_body::Frame;
use prost::Message as _;
use sensor_proto::v1::{self as pb, sensor_server::SensorServer};
use tokio::sync::mpsc;
use tonic::{
    Status,
    body::Body,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::{Body as HttpBody, BoxFuture, Service, StdError, http},
    server::{NamedService, ServerStreamingService},
};

use super::api;
use crate::event::encode;

/// One `sensor.v1.Event` on its way out: `payload` is its encoding without `seq`.
#[derive(Clone, Debug)]
pub struct Message {
    /// 0: none (loss records of this subscriber; an event whose journal append failed).
    pub seq: u64,
    pub payload: Bytes,
}

impl Message {
    /// Write the whole message, as a client receives it.
    pub fn write(&self, dst: &mut impl bytes::BufMut) {
        encode::put_seq(dst, self.seq);
        dst.put_slice(&self.payload);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(encode::seq_len(self.seq) + self.payload.len());
        self.write(&mut out);
        out
    }
}

/// Encodes [`Message`]s (a copy into the frame buffer), decodes requests with prost.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventsCodec;

#[derive(Debug)]
pub struct MessageEncoder;

#[derive(Debug)]
pub struct RequestDecoder;

impl Encoder for MessageEncoder {
    type Item = Message;
    type Error = Status;

    fn encode(&mut self, item: Message, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(encode::seq_len(item.seq) + item.payload.len());
        item.write(dst);
        Ok(())
    }
}

impl Decoder for RequestDecoder {
    type Item = pb::GetEventsRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        pb::GetEventsRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding the request: {e}")))
    }
}

impl Codec for EventsCodec {
    type Encode = Message;
    type Decode = pb::GetEventsRequest;
    type Encoder = MessageEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> MessageEncoder {
        MessageEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

/// Frame one gRPC message (`0`, its length as u32 big-endian, the message) into `out`.
pub fn frame(out: &mut BytesMut, seq: u64, payload: &[u8]) {
    let len = encode::seq_len(seq) + payload.len();
    out.reserve(5 + len);
    out.put_u8(0);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    encode::put_seq(out, seq);
    out.put_slice(payload);
}

/// The response body of one `GetEvents` call: buffers of framed messages from the session
/// task, then the trailers `grpc-status: 0` once the session has ended.
pub struct ChunkBody {
    rx: mpsc::Receiver<Bytes>,
    done: bool,
}

impl ChunkBody {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        Self { rx, done: false }
    }
}

impl HttpBody for ChunkBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match ready!(self.rx.poll_recv(cx)) {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            None => {
                self.done = true;
                let mut trailers = http::HeaderMap::new();
                trailers.insert(Status::GRPC_STATUS, http::HeaderValue::from_static("0"));
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// The call as tonic sees it: the session's receiver goes to `slot` (the body is swapped in
/// afterwards), tonic gets an empty stream.
struct GetEvents {
    service: api::Service,
    slot: Arc<Mutex<Option<mpsc::Receiver<Bytes>>>>,
}

type Unused = tokio_stream::Empty<Result<Message, Status>>;

impl ServerStreamingService<pb::GetEventsRequest> for GetEvents {
    type Response = Message;
    type ResponseStream = Unused;
    type Future = BoxFuture<tonic::Response<Unused>, Status>;

    fn call(&mut self, request: tonic::Request<pb::GetEventsRequest>) -> Self::Future {
        let service = self.service.clone();
        let slot = Arc::clone(&self.slot);
        Box::pin(async move {
            let rx = service.open_events(request.into_inner())?;
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(rx);
            Ok(tonic::Response::new(tokio_stream::empty()))
        })
    }
}

/// `sensor.v1.Sensor`: `GetEvents` with [`EventsCodec`], the rest by the generated server.
#[derive(Clone)]
pub struct EventsServer {
    service: api::Service,
    generated: SensorServer<api::Service>,
}

impl EventsServer {
    pub fn new(service: api::Service) -> Self {
        Self {
            generated: SensorServer::new(service.clone()),
            service,
        }
    }
}

impl NamedService for EventsServer {
    const NAME: &'static str = <SensorServer<api::Service> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for EventsServer
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != "/sensor.v1.Sensor/GetEvents" {
            return self.generated.call(req);
        }
        let slot = Arc::new(Mutex::new(None));
        let method = GetEvents {
            service: self.service.clone(),
            slot: Arc::clone(&slot),
        };
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(EventsCodec);
            let response = grpc.server_streaming(method, req).await;
            // Started: the session's framed messages are the body. Refused: tonic's answer.
            let rx = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            Ok(match rx {
                Some(rx) => response.map(|_| Body::new(ChunkBody::new(rx))),
                None => response,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_the_prost_encoding_of_the_event_with_its_seq() {
        let event = pb::Event {
            ktime_ns: 5,
            time_unix_ns: 1_700_000_000_000_000_000,
            node: "node-1".into(),
            verdict: pb::Verdict::Blocked as i32,
            body: Some(pb::event::Body::Connect(pb::Connect {
                dst_addr: "169.254.169.254".into(),
                dst_port: 80,
                ..Default::default()
            })),
            ..Default::default()
        };
        let payload = Bytes::from(event.encode_to_vec());
        for seq in [0, 1, 127, 128, 300, u64::MAX - 1] {
            let wire = Message {
                seq,
                payload: payload.clone(),
            }
            .to_bytes();
            let expected = pb::Event {
                seq,
                ..event.clone()
            };
            assert_eq!(wire, expected.encode_to_vec(), "seq {seq}: byte for byte");
            assert_eq!(pb::Event::decode(wire.as_slice()).unwrap(), expected);
        }
    }

    #[tokio::test]
    async fn the_body_is_the_framed_messages_then_a_grpc_status_0() {
        use http_body_util::BodyExt as _;
        let event = |seq| pb::Event {
            seq,
            node: "n".into(),
            body: Some(pb::event::Body::Exit(pb::Exit { code: None })),
            ..Default::default()
        };
        let payload = pb::Event { seq: 0, ..event(0) }.encode_to_vec();
        let (tx, rx) = mpsc::channel(4);
        let mut chunk = BytesMut::new();
        frame(&mut chunk, 1, &payload);
        frame(&mut chunk, 300, &payload);
        tx.send(chunk.freeze()).await.unwrap();
        let mut chunk = BytesMut::new();
        frame(&mut chunk, 0, &payload);
        tx.send(chunk.freeze()).await.unwrap();
        drop(tx);
        let collected = ChunkBody::new(rx).collect().await.unwrap();
        assert_eq!(
            collected.trailers().and_then(|t| t.get("grpc-status")),
            Some(&http::HeaderValue::from_static("0"))
        );
        let mut data = collected.to_bytes();
        let mut got = Vec::new();
        while !data.is_empty() {
            assert_eq!(data[0], 0, "not compressed");
            let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
            got.push(pb::Event::decode(&data[5..5 + len]).unwrap());
            data = data.slice(5 + len..);
        }
        assert_eq!(got, [event(1), event(300), event(0)]);
    }
}
