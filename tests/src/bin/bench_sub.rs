//! `bench-sub`: a light gRPC subscriber for `cargo xtask bench`.
//!
//! ```text
//! bench-sub SOCKET N IDLE_MS [--kind K]
//! ```
//!
//! Streams `GetEvents` live from the daemon's unix socket and reads each message without
//! decoding it into a `sensor.v1.Event` (only the top-level fields `seq`, `time_unix_ns` and the
//! body's field number, and a `lost` body's count), so that ten of them keep up with the daemon
//! on a 2-core machine. With `--kind K` (a `sensor.v1.EventKind` number) the server filters.
//! Stops once N events were received or reported lost, or IDLE_MS after the last message, and
//! prints one JSON line: events, lost, the wall time of the last arrival, and the latency
//! (arrival wall time minus the event's `time_unix_ns`) p50, p99 and max in nanoseconds.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::{Buf as _, Bytes};
use prost::Message as _;
use sensor_proto::v1 as pb;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Requests encoded with prost; responses kept as bytes.
#[derive(Default)]
struct RawCodec;

struct RequestEncoder;
struct RawDecoder;

impl Encoder for RequestEncoder {
    type Item = pb::GetEventsRequest;
    type Error = tonic::Status;
    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = pb::GetEventsRequest;
    type Decode = Bytes;
    type Encoder = RequestEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> Self::Encoder {
        RequestEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut rest = b.get(*at..)?;
    let before = rest.len();
    let v = prost::encoding::decode_varint(&mut rest).ok()?;
    *at += before - rest.len();
    Some(v)
}

/// (time_unix_ns, the lost count when the body is a `lost` record).
fn scan(msg: &[u8]) -> Option<(i64, Option<u64>)> {
    let (mut at, mut time, mut lost) = (0, 0i64, None);
    while at < msg.len() {
        let key = varint(msg, &mut at)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = varint(msg, &mut at)?;
                if field == 3 {
                    time = v as i64;
                }
            }
            1 => at += 8,
            5 => at += 4,
            2 => {
                let len = varint(msg, &mut at)? as usize;
                let body = msg.get(at..at + len)?;
                if field == 25 {
                    let mut i = 0;
                    let mut count = 0;
                    while i < body.len() {
                        let k = varint(body, &mut i)?;
                        let v = varint(body, &mut i)?;
                        if k == 1 << 3 {
                            count = v;
                        }
                    }
                    lost = Some(count);
                }
                at += len;
            }
            _ => return None,
        }
    }
    Some((time, lost))
}

fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

async fn run(socket: PathBuf, n: u64, idle: Duration, kind: Option<i32>) -> Result<String, String> {
    let channel = sensor_tests::grpc_channel(&socket).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| e.to_string())?;
    let request = pb::GetEventsRequest {
        follow: true,
        filter: kind.map(|k| pb::Filter {
            kinds: vec![k],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/sensor.v1.Sensor/GetEvents");
    let mut stream = grpc
        .server_streaming(tonic::Request::new(request), path, RawCodec)
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    // Subscribed: the caller may start the load.
    println!("{{\"subscribed\":true}}");
    let (mut events, mut lost, mut last) = (0u64, 0u64, 0i64);
    let mut latencies = Vec::with_capacity(n.min(4_000_000) as usize);
    while events + lost < n {
        let msg = match tokio::time::timeout(idle, stream.message()).await {
            Ok(Ok(Some(msg))) => msg,
            Ok(Ok(None)) | Err(_) => break,
            Ok(Err(status)) => return Err(status.to_string()),
        };
        let now = wall_ns();
        last = now;
        match scan(&msg) {
            Some((_, Some(count))) => lost += count,
            Some((time, None)) => {
                events += 1;
                latencies.push(now - time);
            }
            None => return Err("undecodable message".into()),
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    Ok(format!(
        "{{\"events\":{events},\"lost\":{lost},\"last_arrival_unix_ns\":{last},\"lat_p50_ns\":{},\"lat_p99_ns\":{},\"lat_max_ns\":{}}}",
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or(0)
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(socket), Some(n), Some(idle)) = (
        args.first().map(PathBuf::from),
        args.get(1).and_then(|s| s.parse().ok()),
        args.get(2).and_then(|s| s.parse().ok()),
    ) else {
        eprintln!("usage: bench-sub SOCKET N IDLE_MS [--kind K]");
        return ExitCode::from(2);
    };
    let kind = match args.get(3).map(String::as_str) {
        Some("--kind") => args.get(4).and_then(|k| k.parse().ok()),
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(run(socket, n, Duration::from_millis(idle), kind)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-sub: {e}");
            ExitCode::FAILURE
        }
    }
}
