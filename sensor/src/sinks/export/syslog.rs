//! Syslog export: RFC 5424 messages over TCP or TLS (RFC 5425), framed by octet counting
//! (RFC 6587 3.4.1: `LEN SP MSG`), so a payload may hold any character.
//!
//! `<PRI>1 TIMESTAMP HOSTNAME sensor PROCID MSGID [sensor@32473 ...] PAYLOAD`: PRI is the
//! facility (`facility=`, default auth) and the event's severity, TIMESTAMP the event's time
//! (UTC, microseconds), HOSTNAME the node, PROCID the daemon's pid, MSGID the event kind; the
//! structured data carries the ids a receiver filters and deduplicates on (seq, uid, verdict,
//! node, cluster, namespace, pod, policy, rule). 32473 is the private enterprise number RFC
//! 5612 reserves for documentation: the project has none of its own.
//!
//! Delivery: a batch counts as delivered when the receiver host's TCP has acknowledged every
//! byte of it (the socket's send queue is empty and the connection still up), and, on a new
//! connection, once the connection has stayed up for a second after that: a receiver that
//! refuses the sender (a client certificate it does not accept, its session limit, a sender
//! check) ends the connection right after the first data, and that batch then goes again. A
//! connection that breaks loses nothing the sensor knows of: the whole batch goes again on a
//! new one (what the receiver had already read of it comes twice). What the receiver's TCP
//! acknowledged and the receiver itself then never read (it crashed) is lost on its side: TCP
//! syslog has no application-level acknowledgement.

use std::{
    io::{self, Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    os::fd::{AsRawFd as _, RawFd},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use rustls::{ClientConfig, ClientConnection, StreamOwned, pki_types::ServerName};
use sensor_proto::v1 as pb;

use super::{config::Remote, facts, tls::TlsFiles};
use crate::event::time::rfc3339_micros;

/// The SD-ID of the structured data element (RFC 5424 7.2.2).
pub const SD_ID: &str = "sensor@32473";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A batch the receiver acknowledges nothing of for this long counts as failed (sent again
/// on a new connection).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new connection must stay up after its first acknowledged batch before that
/// batch counts as delivered.
const PROVE: Duration = Duration::from_secs(1);

/// A PARAM-VALUE (RFC 5424 6.3.3): `"`, `\` and `]` escaped.
fn sd_value(out: &mut String, v: &str) {
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

fn sd_param(out: &mut String, name: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    sd_value(out, value);
    out.push('"');
}

/// A header field (RFC 5424 6.2): printable US-ASCII without spaces, at most `max`; `-` when
/// empty.
fn header_field(v: &str, max: usize) -> String {
    let s: String = v
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if s.is_empty() { "-".into() } else { s }
}

/// One framed message: `LEN SP MSG`.
pub fn frame(e: &pb::Event, payload: &str, facility: u8, procid: u32, out: &mut Vec<u8>) {
    let pri = u32::from(facility) * 8 + u32::from(facts::level(e).syslog());
    let kind = facts::kind(e);
    let mut sd = String::with_capacity(160);
    sd.push('[');
    sd.push_str(SD_ID);
    if e.seq != 0 {
        sd_param(&mut sd, "seq", &e.seq.to_string());
    }
    sd_param(&mut sd, "uid", &facts::uid(e));
    sd_param(&mut sd, "kind", &kind);
    sd_param(&mut sd, "verdict", &facts::verdict(e));
    sd_param(&mut sd, "node", &e.node);
    sd_param(&mut sd, "cluster", &e.cluster);
    if let Some(pod) = &e.pod {
        sd_param(&mut sd, "namespace", &pod.namespace);
        sd_param(&mut sd, "pod", &pod.name);
    }
    sd_param(&mut sd, "policy", &e.policy);
    sd_param(&mut sd, "rule", &e.rule);
    if let Some(pb::event::Body::Lost(l)) = &e.body {
        sd_param(&mut sd, "count", &l.count.to_string());
        if l.first_seq != 0 {
            sd_param(&mut sd, "first_seq", &l.first_seq.to_string());
            sd_param(&mut sd, "last_seq", &l.last_seq.to_string());
        }
    }
    sd.push(']');
    let time = if e.time_unix_ns > 0 {
        rfc3339_micros(e.time_unix_ns)
    } else {
        "-".into()
    };
    // Octet counting frames the message whatever it holds; the payloads carry no raw line
    // feed or carriage return anyway (JSON escapes them, CEF escapes or replaces every
    // control character), for receivers that split on them despite the framing.
    let msg = format!(
        "<{pri}>1 {time} {} sensor {procid} {} {sd} {payload}",
        header_field(&e.node, 255),
        header_field(&kind, 32),
    );
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg.as_bytes());
}

enum Stream {
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Tcp(s) => s,
            Self::Tls(s) => &s.sock,
        }
    }

    fn fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.write_all(bytes).and_then(|()| s.flush()),
            Self::Tls(s) => s.write_all(bytes).and_then(|()| s.flush()),
        }
    }

    /// What the receiver sent, without waiting: a TLS alert (a refused client certificate,
    /// say) or the end of the connection is an error. A syslog receiver sends nothing else;
    /// whatever it sends is read and dropped.
    fn check_peer(&mut self) -> io::Result<()> {
        self.tcp().set_nonblocking(true)?;
        let result = self.read_pending();
        self.tcp().set_nonblocking(false)?;
        result
    }

    fn read_pending(&mut self) -> io::Result<()> {
        let closed = || {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the receiver closed the connection",
            )
        };
        let mut buf = [0u8; 4096];
        loop {
            let n = match self {
                Self::Tcp(s) => s.read(&mut buf),
                Self::Tls(s) => match s.conn.read_tls(&mut s.sock) {
                    Ok(0) => Ok(0),
                    Ok(n) => {
                        let state = s
                            .conn
                            .process_new_packets()
                            .map_err(|e| io::Error::other(format!("tls: {e}")))?;
                        if state.peer_has_closed() {
                            return Err(closed());
                        }
                        let mut plain = vec![0u8; state.plaintext_bytes_to_read()];
                        s.conn.reader().read_exact(&mut plain)?;
                        Ok(n)
                    }
                    Err(e) => Err(e),
                },
            };
            match n {
                Ok(0) => return Err(closed()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Close with a reset: what is still queued is discarded rather than sent later beside
    /// the copy the next connection carries.
    fn abort(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a socket fd and a linger struct of the size given.
        unsafe {
            libc::setsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
}

/// A syslog receiver and the connection to it (made when needed).
pub struct SyslogClient {
    remote: Remote,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    stream: Option<Stream>,
    /// The connection has stayed up for [`PROVE`] after a batch was acknowledged on it: the
    /// receiver accepted it (a refused client certificate, a session limit or a sender check
    /// ends a connection right after its first data).
    proven: bool,
}

impl SyslogClient {
    pub fn new(remote: &Remote, tls: Option<&TlsFiles>) -> Result<Self, String> {
        let tls = match tls {
            Some(files) => Some((files.rustls_config()?, files.server_name(&remote.host)?)),
            None => None,
        };
        Ok(Self {
            remote: remote.clone(),
            tls,
            stream: None,
            proven: false,
        })
    }

    fn connect(&self) -> io::Result<Stream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in self.remote.host_port().to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(tcp) => {
                    tcp.set_nodelay(true)?;
                    tcp.set_write_timeout(Some(ACK_TIMEOUT))?;
                    tcp.set_read_timeout(Some(ACK_TIMEOUT))?;
                    return Ok(match &self.tls {
                        None => Stream::Tcp(tcp),
                        Some((config, name)) => {
                            let conn = ClientConnection::new(Arc::clone(config), name.clone())
                                .map_err(io::Error::other)?;
                            let mut tls = StreamOwned::new(conn, tcp);
                            // The handshake now, so that a certificate problem is reported
                            // as such rather than as a failed write.
                            while tls.conn.is_handshaking() {
                                tls.conn.complete_io(&mut tls.sock).map_err(|e| {
                                    if e.kind() == io::ErrorKind::WouldBlock {
                                        io::Error::new(
                                            io::ErrorKind::TimedOut,
                                            format!(
                                                "TLS handshake timed out after {ACK_TIMEOUT:?}"
                                            ),
                                        )
                                    } else {
                                        e
                                    }
                                })?;
                            }
                            Stream::Tls(Box::new(tls))
                        }
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Send framed messages and wait until the receiver's TCP has acknowledged all of them
    /// (on a new connection, also until it has stayed up for [`PROVE`]). On an error the
    /// connection is reset: the next call sends everything again on a new one.
    pub fn send(&mut self, frames: &[u8]) -> io::Result<()> {
        let result = self.try_send(frames);
        if result.is_err()
            && let Some(stream) = self.stream.take()
        {
            stream.abort();
        }
        result
    }

    fn try_send(&mut self, frames: &[u8]) -> io::Result<()> {
        // A connection the receiver has closed (or reset) since the last batch: a new one.
        if let Some(s) = &mut self.stream
            && (!matches!(tcp_state(s.fd()), Ok(TCP_ESTABLISHED)) || s.check_peer().is_err())
        {
            self.stream.take().expect("checked above").abort();
        }
        if self.stream.is_none() {
            self.stream = Some(self.connect()?);
            self.proven = false;
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(frames).map_err(timed_out)?;
        wait_acknowledged(stream.fd())?;
        stream.check_peer()?;
        if !self.proven {
            let until = Instant::now() + PROVE;
            while Instant::now() < until {
                thread::sleep(Duration::from_millis(20));
                connection_up(stream.fd())?;
                stream.check_peer()?;
            }
            self.proven = true;
        }
        Ok(())
    }
}

/// A write that hit the socket timeout says so (rather than "Resource temporarily
/// unavailable").
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("write timed out after {ACK_TIMEOUT:?} (the receiver does not read)"),
        )
    } else {
        e
    }
}

const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE_WAIT: u8 = 8;

/// `getsockopt(fd, level, name)` into a `T` (plain data the kernel fills).
fn getsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<T> {
    // SAFETY: T is plain data (tcp_info, int) for which all zeroes is a valid value.
    let mut value: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: a socket fd and a buffer of `len` bytes; the kernel writes at most `len`.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &raw mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

fn tcp_state(fd: RawFd) -> io::Result<u8> {
    getsockopt::<libc::tcp_info>(fd, libc::IPPROTO_TCP, libc::TCP_INFO).map(|i| i.tcpi_state)
}

/// The socket's pending error (a reset, say), if any.
fn socket_error(fd: RawFd) -> io::Result<()> {
    match getsockopt::<libc::c_int>(fd, libc::SOL_SOCKET, libc::SO_ERROR)? {
        0 => Ok(()),
        err => Err(io::Error::from_raw_os_error(err)),
    }
}

/// Bytes written but not yet acknowledged by the peer (unsent ones included).
fn unacknowledged(fd: RawFd) -> io::Result<libc::c_int> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &raw mut n) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n)
}

/// The connection is still up: no pending error (a reset), still established (or the
/// receiver only closed its side).
fn connection_up(fd: RawFd) -> io::Result<()> {
    socket_error(fd)?;
    let state = tcp_state(fd)?;
    if state != TCP_ESTABLISHED && state != TCP_CLOSE_WAIT {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "connection closed before the receiver acknowledged the batch",
        ));
    }
    Ok(())
}

/// Until the send queue is empty while the connection is still up. The queue is read first,
/// the connection's state after: a reset leaves the queue's count as it was (the kernel drops
/// the data, not the count), and a reset between the two reads is seen by the second. The
/// deadline moves while the receiver makes progress: a slow link is not a failure, a stalled
/// one is.
fn wait_acknowledged(fd: RawFd) -> io::Result<()> {
    let mut deadline = Instant::now() + ACK_TIMEOUT;
    let mut pause = Duration::from_micros(50);
    let mut last = libc::c_int::MAX;
    loop {
        let queued = unacknowledged(fd)?;
        connection_up(fd)?;
        if queued == 0 {
            return Ok(());
        }
        if queued < last {
            last = queued;
            deadline = Instant::now() + ACK_TIMEOUT;
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the receiver acknowledged nothing for {ACK_TIMEOUT:?} ({queued} bytes waiting)"
                ),
            ));
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_octet_counted_rfc5424_with_escaped_structured_data() {
        let e = pb::Event {
            seq: 9,
            time_unix_ns: 1_700_000_000_123_456_789,
            node: "node-1".into(),
            cluster: "c1".into(),
            verdict: pb::Verdict::Blocked as i32,
            rule: "a]b\"c".into(),
            body: Some(pb::event::Body::Chmod(pb::Chmod::default())),
            ..Default::default()
        };
        let mut out = Vec::new();
        frame(&e, "{\"x\":1}", 4, 77, &mut out);
        let text = String::from_utf8(out).unwrap();
        let (len, msg) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        assert_eq!(
            msg,
            "<36>1 2023-11-14T22:13:20.123456Z node-1 sensor 77 chmod [sensor@32473 seq=\"9\" \
             uid=\"node-1:9\" kind=\"chmod\" verdict=\"blocked\" node=\"node-1\" cluster=\"c1\" \
             rule=\"a\\]b\\\"c\"] {\"x\":1}"
        );
    }
}
