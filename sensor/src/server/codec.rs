//! `GetEvents` without re-encoding: a tonic codec whose messages are events already encoded
//! (the journal's payload, shared by every subscriber), with the sequence number spliced in
//! front (field 1 comes first in the canonical encoding: the bytes on the wire are the ones
//! prost would write for the decoded event, so every `sensor.v1` client reads them as before).
//! [`EventsServer`] serves `/sensor.v1.Sensor/GetEvents` with this codec and hands every other
//! method to the generated server.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
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

/// The stream of one `GetEvents` call: the session task sends chunks of messages.
pub struct ChunkStream {
    rx: mpsc::Receiver<Vec<Message>>,
    current: std::vec::IntoIter<Message>,
}

impl ChunkStream {
    pub fn new(rx: mpsc::Receiver<Vec<Message>>) -> Self {
        Self {
            rx,
            current: Vec::new().into_iter(),
        }
    }
}

impl tokio_stream::Stream for ChunkStream {
    type Item = Result<Message, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(m) = self.current.next() {
                return Poll::Ready(Some(Ok(m)));
            }
            match ready!(self.rx.poll_recv(cx)) {
                Some(chunk) => self.current = chunk.into_iter(),
                None => return Poll::Ready(None),
            }
        }
    }
}

struct GetEvents(api::Service);

impl ServerStreamingService<pb::GetEventsRequest> for GetEvents {
    type Response = Message;
    type ResponseStream = ChunkStream;
    type Future = BoxFuture<tonic::Response<ChunkStream>, Status>;

    fn call(&mut self, request: tonic::Request<pb::GetEventsRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            service
                .open_events(request.into_inner())
                .map(tonic::Response::new)
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
        let method = GetEvents(self.service.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(EventsCodec);
            Ok(grpc.server_streaming(method, req).await)
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
    async fn the_stream_yields_every_message_of_every_chunk_in_order() {
        use tokio_stream::StreamExt as _;
        let (tx, rx) = mpsc::channel(4);
        let m = |seq| Message {
            seq,
            payload: Bytes::new(),
        };
        tx.send(vec![m(1), m(2)]).await.unwrap();
        tx.send(vec![]).await.unwrap();
        tx.send(vec![m(3)]).await.unwrap();
        drop(tx);
        let seqs: Vec<u64> = ChunkStream::new(rx).map(|r| r.unwrap().seq).collect().await;
        assert_eq!(seqs, [1, 2, 3]);
    }
}
