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
//! Delivery: a batch is delivered when the receiver's TCP has acknowledged every byte of it
//! (the socket's send queue is empty: `SIOCOUTQ` is 0 and the connection is still up), not
//! merely when `write(2)` returned; only then does the exporter move its cursor. A connection
//! that breaks loses nothing: the whole batch is sent again on a new one.

use std::{
    io::{self, Write as _},
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
/// A batch not acknowledged within this time counts as failed (sent again on a new
/// connection).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

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
    // Line breaks would end the message for receivers that split on them despite the
    // framing; the payloads (JSON, OCSF, CEF) never contain one.
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
    fn fd(&self) -> RawFd {
        match self {
            Self::Tcp(s) => s.as_raw_fd(),
            Self::Tls(s) => s.sock.as_raw_fd(),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.write_all(bytes).and_then(|()| s.flush()),
            Self::Tls(s) => s.write_all(bytes).and_then(|()| s.flush()),
        }
    }
}

/// A syslog receiver and the connection to it (made when needed).
pub struct SyslogClient {
    remote: Remote,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    stream: Option<Stream>,
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
                                tls.conn.complete_io(&mut tls.sock)?;
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

    /// Send framed messages and wait until the receiver's TCP has acknowledged all of them.
    /// On an error the connection is dropped: the next call sends everything again on a new
    /// one.
    pub fn send(&mut self, frames: &[u8]) -> io::Result<()> {
        let result = self.try_send(frames);
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn try_send(&mut self, frames: &[u8]) -> io::Result<()> {
        // A connection the receiver has closed (or reset) since the last batch: a new one.
        if let Some(s) = &self.stream
            && !matches!(tcp_state(s.fd()), Ok(TCP_ESTABLISHED))
        {
            self.stream = None;
        }
        if self.stream.is_none() {
            self.stream = Some(self.connect()?);
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(frames)?;
        wait_acknowledged(stream.fd())
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

/// Until the send queue is empty while the connection is still up (a reset empties the queue
/// too: that is an error, not an acknowledgement).
fn wait_acknowledged(fd: RawFd) -> io::Result<()> {
    let deadline = Instant::now() + ACK_TIMEOUT;
    let mut pause = Duration::from_micros(50);
    loop {
        socket_error(fd)?;
        let state = tcp_state(fd)?;
        if state != TCP_ESTABLISHED && state != TCP_CLOSE_WAIT {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed before the receiver acknowledged the batch",
            ));
        }
        if unacknowledged(fd)? == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the receiver did not acknowledge the batch within {ACK_TIMEOUT:?}"),
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
