//! The `sensor.v1` gRPC service: `GetEvents` (journal replay, then live, no gap or duplicate at
//! the seam) and `GetStatus`, plus the standard health and reflection services. Listeners: a
//! unix socket (mode 0600) and, only with TLS, TCP.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use sensor_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::{Request, Response, Status, transport::Server};

use bytes::{Bytes, BytesMut};

use super::codec::{EventsServer, frame};
use crate::{
    event::{
        encode, filter,
        key::{Key, Matcher},
    },
    sinks::{
        hub::{Hub, Item, StreamSlot, Subscription},
        journal::{
            Journal,
            follow::{Follower, Stored, journal_loss},
        },
    },
};

/// Journal records read per blocking batch during replay.
const REPLAY_BATCH: usize = 512;
/// Chunks of messages (each one hub batch or one replay batch) a session may have handed to
/// the gRPC stream that it has not written yet.
const SESSION_CHUNKS: usize = 8;

/// A `since` this far ahead of the daemon's clock is still taken (clocks of client and node
/// differ); further ahead is `OutOfRange`.
const FUTURE_SLACK_NS: i64 = 300 * 1_000_000_000;

#[derive(Clone)]
pub struct Service {
    pub hub: Arc<Hub>,
    pub journal: Arc<Mutex<Journal>>,
    pub status: Arc<super::status::StatusBoard>,
    /// Events a subscriber may have queued before it starts losing them.
    pub queue: usize,
    /// Event streams (`GetEvents` calls, live or replay) open at once at most.
    pub max_streams: usize,
}

fn lock(journal: &Mutex<Journal>) -> std::sync::MutexGuard<'_, Journal> {
    journal
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Service {
    /// Start a `GetEvents` call: checked here (errors are statuses, not stream ends), then
    /// served by a session task of its own.
    pub fn open_events(&self, req: pb::GetEventsRequest) -> Result<mpsc::Receiver<Bytes>, Status> {
        let (filter, start) = check_request(&req)?;
        let Some(slot) = self.hub.open_stream(self.max_streams) else {
            return Err(Status::resource_exhausted(format!(
                "{} event streams are open, the most this daemon serves (sensor run --max-streams)",
                self.max_streams
            )));
        };
        let (follower, floor) =
            replay_start(&lock(&self.journal), start, self.status.hub.origin())?;
        let (tx, rx) = mpsc::channel(SESSION_CHUNKS);
        let session = Session {
            service: self.clone(),
            matcher: Matcher::new(&filter),
            filter,
            limit: (req.limit > 0).then_some(req.limit),
            sent: 0,
            next_seq: 0,
            out: BytesMut::new(),
            tx,
            _slot: slot,
        };
        let follow = req.follow || matches!(start, Start::Live);
        tokio::spawn(session.run(follower, floor, follow));
        Ok(rx)
    }
}

#[tonic::async_trait]
impl pb::sensor_server::Sensor for Service {
    /// Not used: [`EventsServer`] serves `GetEvents` with the pre-encoded codec.
    type GetEventsStream = tokio_stream::Empty<Result<pb::Event, Status>>;

    async fn get_events(
        &self,
        _request: Request<pb::GetEventsRequest>,
    ) -> Result<Response<Self::GetEventsStream>, Status> {
        Err(Status::internal(
            "GetEvents is served by the pre-encoded codec",
        ))
    }

    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let error = self.status.snapshot().journal_error.unwrap_or_default();
        let journal = {
            let j = lock(&self.journal);
            let next_seq = j.next_seq();
            j.range().map_or(
                pb::JournalRange {
                    next_seq,
                    error: error.clone(),
                    ..Default::default()
                },
                |r| pb::JournalRange {
                    first_seq: r.first_seq,
                    last_seq: r.last_seq,
                    first_time_unix_ns: r.first_time_ns,
                    last_time_unix_ns: r.last_time_ns,
                    next_seq,
                    error: error.clone(),
                },
            )
        };
        let counters = self.status.counters();
        let policy = self.status.policy.current();
        Ok(Response::new(pb::GetStatusResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            node: self.status.node.clone(),
            attachments: self.status.attachments.clone(),
            counters: counters.into_iter().collect(),
            journal: Some(journal),
            subscribers: u32::try_from(self.hub.subscribers()).unwrap_or(u32::MAX),
            policy_name: policy.policy().to_owned(),
            policy_source: policy.source().to_owned(),
            policy_text: policy.text().to_owned(),
            scopes: self.status.scopes.clone(),
            policies: crate::policy::states(&policy),
            cluster: self.hub.origin().cluster.clone(),
            exports: self.status.exports.states(),
            pod_posture: self.status.pods().map_or_else(Vec::new, |pods| {
                pods.posture_pods()
                    .into_iter()
                    .map(|(namespace, name, findings)| pb::PodPosture {
                        namespace,
                        name,
                        findings: findings.into_iter().map(str::to_owned).collect(),
                    })
                    .collect()
            }),
        }))
    }
}

/// Where a `GetEvents` call starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    Live,
    /// From this sequence number (at least 1).
    Seq(u64),
    /// From the first record at or after this time (Unix ns, not negative).
    Time(i64),
}

/// The filter and start of a `GetEvents` request, checked: unknown enum values in the filter
/// and a time before 1970 are `InvalidArgument`.
pub fn check_request(req: &pb::GetEventsRequest) -> Result<(pb::Filter, Start), Status> {
    let filter = req.filter.clone().unwrap_or_default();
    filter::validate(&filter).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let start = match req.start {
        None => Start::Live,
        Some(pb::get_events_request::Start::FromSeq(seq)) => Start::Seq(seq.max(1)),
        Some(pb::get_events_request::Start::SinceUnixNs(t)) => {
            if t < 0 {
                return Err(Status::invalid_argument(format!(
                    "since_unix_ns {t}: before 1970"
                )));
            }
            if t > crate::event::time::now_unix_ns().saturating_add(FUTURE_SLACK_NS) {
                return Err(Status::out_of_range(format!(
                    "since_unix_ns {t}: in the future"
                )));
            }
            Start::Time(t)
        }
    };
    Ok((filter, start))
}

/// The replay of a `GetEvents` call from `start`, checked against the journal now (so errors
/// are statuses, not stream ends), and its floor: no record below it belongs to the request
/// (from a sequence number: the ones before it; since a time: the ones already stored that the
/// time reader skips).
pub fn replay_start(
    journal: &Journal,
    start: Start,
    node: &crate::event::proto::Origin,
) -> Result<(Option<Follower>, u64), Status> {
    let follower = match start {
        Start::Live => None,
        Start::Seq(seq) => Some(journal.reader_from_seq(seq).map(|r| {
            let mut follower = Follower::from_reader(r, node);
            follower.skip_to(seq);
            follower
        })),
        Start::Time(t) => Some(
            journal
                .reader_from_time(t)
                .map(|r| Follower::from_reader(r, node)),
        ),
    }
    .transpose()
    .map_err(|e| Status::unavailable(format!("journal: {e}")))?;
    if let Start::Seq(seq) = start
        && seq > journal.next_seq()
    {
        return Err(Status::out_of_range(format!(
            "from_seq {seq}: past the next sequence number, {}",
            journal.next_seq()
        )));
    }
    let floor = match start {
        Start::Seq(seq) => seq,
        Start::Time(_) => journal.next_seq(),
        Start::Live => 0,
    };
    Ok((follower, floor))
}

/// One `GetEvents` call.
struct Session {
    service: Service,
    filter: pb::Filter,
    matcher: Matcher,
    limit: Option<u64>,
    sent: u64,
    /// Every event below this sequence number has been considered (sent or filtered out).
    next_seq: u64,
    /// Framed messages not yet handed to the response body (one chunk).
    out: BytesMut,
    tx: mpsc::Sender<Bytes>,
    /// Its place among the open streams, freed when the session ends.
    _slot: StreamSlot,
}

/// Why a session stopped early.
enum Stop {
    /// The client went away or the limit was reached.
    Done,
}

impl Session {
    async fn run(mut self, follower: Option<Follower>, floor: u64, follow: bool) {
        let _ = self.run_inner(follower, floor, follow).await;
        // What the limit cut short is still sent.
        let _ = self.flush().await;
    }

    async fn run_inner(
        &mut self,
        follower: Option<Follower>,
        floor: u64,
        follow: bool,
    ) -> Result<(), Stop> {
        let Some(follower) = follower else {
            let sub = self.subscribe();
            return self.live(sub).await;
        };
        let mut follower = self.replay(follower).await?;
        if !follow {
            return Ok(());
        }
        // The first pass may have found nothing (a start at the next sequence number, or a
        // time after the last record): the second pass must not fall back to the start.
        self.next_seq = self.next_seq.max(floor);
        follower.skip_to(self.next_seq.max(1));
        // Subscribe first, then read what was journaled in between; live events the second
        // pass already delivered are skipped by sequence number.
        let sub = self.subscribe();
        self.replay(follower).await?;
        self.live(sub).await
    }

    fn subscribe(&self) -> Subscription {
        self.service.hub.subscribe(&self.filter, self.service.queue)
    }

    /// Add one message (`payload`: the event without `seq`) to the chunk; `counts`: not a
    /// loss record (the limit counts events).
    fn push(&mut self, seq: u64, payload: &[u8], counts: bool) -> Result<(), Stop> {
        if counts && self.limit.is_some_and(|l| self.sent >= l) {
            return Err(Stop::Done);
        }
        frame(&mut self.out, seq, payload);
        if counts {
            self.sent += 1;
            if self.limit.is_some_and(|l| self.sent >= l) {
                return Err(Stop::Done);
            }
        }
        Ok(())
    }

    /// Hand the chunk to the stream (waits while the stream has `SESSION_CHUNKS` unsent).
    async fn flush(&mut self) -> Result<(), Stop> {
        if self.out.is_empty() {
            return Ok(());
        }
        let chunk = self.out.split().freeze();
        self.tx.send(chunk).await.map_err(|_| Stop::Done)
    }

    fn push_loss(&mut self, loss: &pb::Event) -> Result<(), Stop> {
        let payload = encode::encode_pb(loss).payload;
        self.push(0, &payload, false)
    }

    /// Send what the journal holds from the follower's cursor on, as stored (no decoding: the
    /// filter reads the key from the bytes); returns the follower, its cursor past the last
    /// record read.
    async fn replay(&mut self, mut follower: Follower) -> Result<Follower, Stop> {
        loop {
            let journal = Arc::clone(&self.service.journal);
            let (back, batch) = tokio::task::spawn_blocking(move || {
                let batch = follower.next_raw_batch(&journal, REPLAY_BATCH);
                (follower, batch)
            })
            .await
            .map_err(|_| Stop::Done)?;
            follower = back;
            let batch = batch.map_err(|_| Stop::Done)?;
            if batch.is_empty() {
                self.next_seq = self.next_seq.max(follower.cursor());
                return Ok(follower);
            }
            for item in batch {
                match item {
                    Stored::Record { seq, payload } => {
                        self.next_seq = seq + 1;
                        match Key::scan(&payload, self.matcher.needs_pod()) {
                            Some(key) if self.matcher.matches(&key) => {
                                let counts = key.kind != pb::EventKind::Lost;
                                self.push(seq, &payload, counts)?;
                            }
                            Some(_) => {}
                            // Not an event: reported as a journal loss, as a reader that
                            // decodes would.
                            None => {
                                let loss = journal_loss(self.service.hub.origin(), seq, seq);
                                self.push_loss(&loss)?;
                            }
                        }
                    }
                    Stored::Lost(loss) => self.push_loss(&loss)?,
                }
            }
            self.flush().await?;
        }
    }

    async fn live(&mut self, sub: Subscription) -> Result<(), Stop> {
        let mut items = VecDeque::new();
        loop {
            // A client that went away ends its session now, not at the next event: an idle
            // node must not keep the places of vanished clients (`--max-streams`).
            let more = tokio::select! {
                more = sub.recv(&mut items) => more,
                () = self.tx.closed() => return Err(Stop::Done),
            };
            if !more {
                break;
            }
            while let Some(item) = items.pop_front() {
                match item {
                    Item::Lost {
                        count,
                        time_unix_ns,
                    } => {
                        let payload =
                            Item::lost_payload(count, time_unix_ns, self.service.hub.origin());
                        self.push(0, &payload, false)?;
                    }
                    Item::Events(batch, selection) => {
                        for i in selection.iter() {
                            let e = &batch.events[i];
                            if e.seq != 0 {
                                if e.seq < self.next_seq {
                                    continue;
                                }
                                self.next_seq = e.seq + 1;
                            }
                            let counts = e.key.kind != pb::EventKind::Lost;
                            self.push(e.seq, &e.payload, counts)?;
                        }
                    }
                }
            }
            self.flush().await?;
        }
        Ok(())
    }
}

/// Where the API listens.
#[derive(Clone, Debug)]
pub struct Listen {
    pub socket: PathBuf,
    pub tcp: Option<TcpTls>,
}

#[derive(Clone, Debug)]
pub struct TcpTls {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With a client CA, clients must present a certificate it signed (mTLS).
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("API socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("API socket {path}: exists and is not a socket; refusing to replace it")]
    NotSocket { path: PathBuf },
    #[error("TLS file {path}: {source}")]
    TlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TCP listener {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Bind the unix socket: parent directory created (0755), a stale socket replaced, the socket
/// made readable and writable by root only (0600).
pub fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, ApiError> {
    let err = |source| ApiError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            std::fs::remove_file(path).map_err(err)?;
        }
        Ok(_) => {
            return Err(ApiError::NotSocket {
                path: path.to_owned(),
            });
        }
        Err(_) => {}
    }
    // Created 0600 from the start: no window in which others could connect.
    // SAFETY: umask only affects this process's file creation; restored right after.
    let old = unsafe { libc::umask(0o177) };
    let listener = tokio::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = listener.map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

fn read_tls(path: &Path) -> Result<Vec<u8>, ApiError> {
    std::fs::read(path).map_err(|source| ApiError::TlsFile {
        path: path.to_owned(),
        source,
    })
}

/// Serve until `shutdown` resolves. Listeners are bound before this returns its future, so a
/// caller can report readiness after calling it.
/// HTTP/2 streams one client connection may have open at once (every call is one).
const STREAMS_PER_CONNECTION: u32 = 64;

/// The server's bounds on every connection: concurrent calls, and keepalive pings so a client
/// that vanished without closing (its host down) is dropped and its streams freed.
fn bounded(builder: Server) -> Server {
    builder
        .max_concurrent_streams(Some(STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
}

pub async fn serve(
    service: Service,
    listen: Listen,
    unix: tokio::net::UnixListener,
    shutdown: tokio::sync::watch::Receiver<bool>,
    readiness: Arc<crate::server::health::Readiness>,
) -> Result<(), ApiError> {
    // Readiness (`sensor.v1.Sensor`) and liveness (`""`) from the daemon's state.
    let health = crate::server::health::HealthService::server(readiness);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sensor_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let unix_server = bounded(Server::builder())
        .add_service(health.clone())
        .add_service(reflection.clone())
        .add_service(EventsServer::new(service.clone()))
        .serve_with_incoming_shutdown(UnixListenerStream::new(unix), wait(shutdown.clone()));
    let Some(tcp) = listen.tcp else {
        return Ok(unix_server.await?);
    };
    let identity = tonic::transport::Identity::from_pem(read_tls(&tcp.cert)?, read_tls(&tcp.key)?);
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tcp.client_ca {
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read_tls(ca)?));
    }
    let listener = tokio::net::TcpListener::bind(tcp.addr)
        .await
        .map_err(|source| ApiError::Tcp {
            addr: tcp.addr,
            source,
        })?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(tcp.addr), mtls = tcp.client_ca.is_some(), "gRPC listening on TCP with TLS");
    let tcp_server = bounded(Server::builder())
        .tls_config(tls)?
        .add_service(health)
        .add_service(reflection)
        .add_service(EventsServer::new(service))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), wait(shutdown));
    let (a, b) = tokio::join!(unix_server, tcp_server);
    a?;
    b?;
    Ok(())
}
