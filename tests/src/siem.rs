//! Real receivers for the network SIEM exports (`syslog://`, `syslog+tls://`, `otlp://`,
//! `otlp+tls://`): a test CA made with the `openssl` CLI, a private `rsyslogd` with plain, TLS
//! and mutual-TLS inputs, and an OTLP logs receiver built from the official protos
//! (`tests/validators/otlp_receiver.py`). What they received is read back through independent
//! parsers (`tests/validators/syslog_check.py`: `syslog-rfc5424-parser` and `pycef`).
//!
//! Safety (docs/testing.md): everything listens on 127.0.0.1 only; rsyslogd runs with its own
//! configuration and work directory in a scratch directory (no `imuxsock`, no `imklog`: the
//! host's `/dev/log` and logs are never touched, and no DNS lookups); every process is our own
//! child, ended by pid on drop.

use std::{
    collections::BTreeMap,
    fs::File,
    io::Write as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use sensor_harness::{Lines, end_child, read_lines};
use serde_json::Value;

use crate::{TempDir, poll, python_tool, sh};

/// `tests/validators/NAME`.
pub fn validator(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("validators")
        .join(name)
}

/// A port on 127.0.0.1 that nothing listens on (bound once, then closed).
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// Whether a socket listens on 127.0.0.1:`port` (or the wildcard address), per /proc/net/tcp.
pub fn listening(port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let want = [
        format!("0100007F:{port:04X}"),
        format!("00000000:{port:04X}"),
    ];
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && want.iter().any(|w| w == f[1]) && f[3] == "0A"
    })
}

/// The complete lines of `path` (a last line without its newline is still being written);
/// empty when there is no file yet.
fn complete_text(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    match text.rfind('\n') {
        Some(end) => text[..=end].to_owned(),
        None => String::new(),
    }
}

/// A CA, a server certificate for `127.0.0.1` (IP SAN) and `localhost`, and a client
/// certificate (CN and DNS SAN [`TestCa::CLIENT_NAME`]), all ECDSA P-256, made with the
/// `openssl` CLI into a scratch directory (removed on drop).
pub struct TestCa {
    pub dir: TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestCa {
    /// The client certificate's name (rsyslog's mutual-TLS input permits only this peer).
    pub const CLIENT_NAME: &'static str = "sensor-test-client";

    pub fn new() -> Self {
        let dir = TempDir::new();
        let d = dir.0.clone();
        let openssl = |args: &[&str]| {
            sh(Command::new("openssl").current_dir(&d).args(args));
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509", "-new"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "30",
                    "-subj",
                    "/CN=sensor-test-ca",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        let leaf = |name: &str, cn: &str, ext: &str| {
            std::fs::write(d.join(format!("{name}.ext")), ext)
                .expect("writing an openssl ext file");
            openssl(
                &[
                    &["req", "-new"][..],
                    &ec,
                    &[
                        "-keyout",
                        &format!("{name}.key"),
                        "-out",
                        &format!("{name}.csr"),
                        "-subj",
                        &format!("/CN={cn}"),
                    ],
                ]
                .concat(),
            );
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ]);
        };
        leaf(
            "server",
            "localhost",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        );
        leaf(
            "client",
            Self::CLIENT_NAME,
            &format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=clientAuth\nsubjectAltName=DNS:{}\n",
                Self::CLIENT_NAME
            ),
        );
        Self {
            ca: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
            dir,
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A path as `&str` (the test paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// An input of the test rsyslogd: each writes what it receives to a file of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SyslogInput {
    /// Plain TCP.
    Plain,
    /// TLS (gtls stream driver, mode 1), any client (`anon`).
    Tls,
    /// TLS that requires a client certificate of the [`TestCa`] named
    /// [`TestCa::CLIENT_NAME`] (`x509/name`).
    MutualTls,
}

impl SyslogInput {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Tls => "tls",
            Self::MutualTls => "mtls",
        }
    }
}

/// A real `rsyslogd -n` of the test's own: its configuration, work directory, pid file, port
/// files, output files and stderr in a scratch directory. Inputs are `imtcp` on 127.0.0.1 with
/// octet-counted framing (RFC 6587, rsyslog's default alongside LF framing); each input's
/// messages are written by `omfile` with the template `%rawmsg%\n` (the message exactly as
/// received; rsyslog escapes control characters as `#NNN`, and a trailing LF is kept, escaped,
/// instead of dropped, so a message never spans lines and nothing the sender added is hidden),
/// messages up to 64 KiB. Ended by pid on drop (the directory is removed).
pub struct Rsyslog {
    dir: TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ports: BTreeMap<SyslogInput, u16>,
    child: Option<Child>,
    starts: u32,
}

impl Rsyslog {
    pub const BIN: &'static str = "/usr/sbin/rsyslogd";

    /// Start with the given inputs (each kind at most once), ports chosen by rsyslog
    /// (`port="0"` and `listenPortFileName`), and wait until each listens.
    pub fn start(ca: &TestCa, inputs: &[SyslogInput]) -> Self {
        let mut ports = BTreeMap::new();
        for &i in inputs {
            assert!(ports.insert(i, 0).is_none(), "input {i:?} given twice");
        }
        let mut me = Self {
            dir: TempDir::new(),
            ca: ca.ca.clone(),
            cert: ca.server_cert.clone(),
            key: ca.server_key.clone(),
            ports,
            child: None,
            starts: 0,
        };
        std::fs::create_dir_all(me.dir.0.join("work")).expect("rsyslog work dir");
        me.spawn();
        me
    }

    /// The port of an input.
    pub fn port(&self, input: SyslogInput) -> u16 {
        *self
            .ports
            .get(&input)
            .unwrap_or_else(|| panic!("rsyslog has no {input:?} input"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The file an input's messages go to.
    pub fn output(&self, input: SyslogInput) -> PathBuf {
        self.dir.0.join(format!("{}.log", input.name()))
    }

    /// What rsyslogd wrote on stderr (its own errors and warnings), over every start.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("stderr.log")).unwrap_or_default()
    }

    fn config(&self) -> String {
        let d = &self.dir.0;
        let p = |name: &str| d.join(name).display().to_string();
        let mut c = format!(
            "global(workDirectory=\"{work}\" maxMessageSize=\"64k\" net.enableDNS=\"off\"\n\
             \x20      parser.escapeControlCharactersOnReceive=\"on\"\n\
             \x20      parser.dropTrailingLFOnReception=\"off\"\n\
             \x20      defaultNetstreamDriverCAFile=\"{ca}\"\n\
             \x20      defaultNetstreamDriverCertFile=\"{cert}\"\n\
             \x20      defaultNetstreamDriverKeyFile=\"{key}\")\n\
             main_queue(queue.type=\"Direct\")\n\
             module(load=\"imtcp\" maxSessions=\"64\")\n\
             template(name=\"sensor_raw\" type=\"string\" string=\"%rawmsg%\\n\")\n",
            work = p("work"),
            ca = self.ca.display(),
            cert = self.cert.display(),
            key = self.key.display(),
        );
        for (&input, &port) in &self.ports {
            let name = input.name();
            let driver = match input {
                SyslogInput::Plain => "streamDriver.name=\"ptcp\"".to_owned(),
                SyslogInput::Tls => "streamDriver.name=\"gtls\" streamDriver.mode=\"1\" \
                                     streamDriver.authMode=\"anon\""
                    .to_owned(),
                SyslogInput::MutualTls => format!(
                    "streamDriver.name=\"gtls\" streamDriver.mode=\"1\" \
                     streamDriver.authMode=\"x509/name\" permittedPeer=[\"{}\"]",
                    TestCa::CLIENT_NAME
                ),
            };
            // Port 0 on the first start: rsyslog picks a free port and writes it to the port
            // file (no race with another process); a restart binds the same ports again.
            let port_file = if port == 0 {
                format!(" listenPortFileName=\"{}\"", p(&format!("{name}.port")))
            } else {
                String::new()
            };
            c.push_str(&format!(
                "ruleset(name=\"{name}\" queue.type=\"Direct\") {{\n\
                 \x20 action(type=\"omfile\" file=\"{out}\" template=\"sensor_raw\")\n}}\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\"{port_file} \
                 ruleset=\"{name}\" {driver})\n",
                out = self.output(input).display(),
            ));
        }
        c
    }

    fn spawn(&mut self) {
        let d = self.dir.0.clone();
        let conf = d.join("rsyslog.conf");
        std::fs::write(&conf, self.config()).expect("writing rsyslog.conf");
        let pid_file = d.join("rsyslogd.pid");
        let _ = std::fs::remove_file(&pid_file);
        for input in self.ports.keys() {
            let _ = std::fs::remove_file(d.join(format!("{}.port", input.name())));
        }
        let mut stderr = File::options()
            .create(true)
            .append(true)
            .open(d.join("stderr.log"))
            .expect("rsyslog stderr file");
        self.starts += 1;
        let _ = writeln!(stderr, "--- start {}", self.starts);
        let child = Command::new(Self::BIN)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} ({e}): run `cargo xtask setup` (Debian rsyslog, rsyslog-gnutls)",
                    Self::BIN
                )
            });
        self.child = Some(child);
        let inputs: Vec<SyslogInput> = self.ports.keys().copied().collect();
        for input in inputs {
            let port_file = d.join(format!("{}.port", input.name()));
            let port = if self.ports[&input] == 0 {
                self.wait_ready(&format!("{} (port file)", port_file.display()), || {
                    std::fs::read_to_string(&port_file)
                        .ok()
                        .and_then(|s| s.trim().parse::<u16>().ok())
                        .filter(|&p| p != 0)
                })
            } else {
                self.ports[&input]
            };
            self.wait_ready(&format!("{input:?} input listening on {port}"), || {
                listening(port).then_some(())
            });
            self.ports.insert(input, port);
        }
    }

    /// Wait (10 s) for `probe`, failing with rsyslogd's stderr when it exits or time runs out.
    fn wait_ready<T>(&mut self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let mut exited = None;
        let found = poll(Duration::from_secs(10), Duration::from_millis(20), || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                exited = Some(status);
                return Some(None);
            }
            probe().map(Some)
        });
        match found {
            Some(Some(v)) => v,
            _ => panic!(
                "rsyslogd did not get ready ({what}; exit: {exited:?}); stderr:\n{}\nconfig:\n{}",
                self.stderr_text(),
                self.config()
            ),
        }
    }

    /// SIGKILL (by pid) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            end_child(&mut c);
        }
    }

    /// Start again on the same ports (after [`Rsyslog::kill`], or kill it first).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The complete lines an input wrote so far, raw.
    pub fn raw_lines(&self, input: SyslogInput) -> Vec<String> {
        complete_text(&self.output(input))
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Every message an input received so far, parsed by `syslog_check.py` (fails on a line
    /// that is not RFC 5424).
    pub fn messages(&self, input: SyslogInput) -> Vec<Value> {
        self.check(input, false)
    }

    /// As [`Rsyslog::messages`], each msg also parsed as CEF (`"cef"`).
    pub fn cef_messages(&self, input: SyslogInput) -> Vec<Value> {
        self.check(input, true)
    }

    fn check(&self, input: SyslogInput, cef: bool) -> Vec<Value> {
        // A snapshot of the complete lines: rsyslogd may be writing the next one.
        let snapshot = self.dir.0.join(format!("{}.check", input.name()));
        std::fs::write(&snapshot, complete_text(&self.output(input))).expect("writing snapshot");
        parse_syslog_file(&snapshot, cef)
    }

    /// Poll an input's parsed messages until `pred` holds (at most `timeout`).
    pub fn wait_messages(
        &self,
        input: SyslogInput,
        cef: bool,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let mut last = Vec::new();
        poll(timeout, Duration::from_millis(200), || {
            last = self.check(input, cef);
            pred(&last).then(|| last.clone())
        })
        .unwrap_or_else(|| {
            panic!(
                "rsyslog {input:?}: waited {timeout:?} for {what}; have {} messages; rsyslogd \
                 stderr:\n{}",
                last.len(),
                self.stderr_text()
            )
        })
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run `syslog_check.py [--cef] FILE`: one parsed message per line; panics with the
/// validator's complaint when a line does not parse.
pub fn parse_syslog_file(file: &Path, cef: bool) -> Vec<Value> {
    let out = Command::new(python_tool("python"))
        .arg(validator("syslog_check.py"))
        .args(cef.then_some("--cef"))
        .arg(file)
        .output()
        .expect("running syslog_check.py");
    assert!(
        out.status.success(),
        "syslog_check.py {}: a message did not parse ({}):\n{}",
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("syslog_check.py prints JSON"))
        .collect()
}

/// How an [`OtlpReceiver`] is started.
#[derive(Default, Clone)]
pub struct OtlpOptions {
    /// Serve TLS with the CA's server certificate.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Require a client certificate chaining to this CA (needs `tls`).
    pub client_ca: Option<PathBuf>,
    /// Refuse (UNAUTHENTICATED) requests without this metadata: (name, value).
    pub require_header: Option<(String, String)>,
}

impl OtlpOptions {
    /// TLS with `ca`'s server certificate.
    pub fn tls(ca: &TestCa) -> Self {
        Self {
            tls: Some((ca.server_cert.clone(), ca.server_key.clone())),
            ..Self::default()
        }
    }

    /// TLS, and a client certificate of `ca` required.
    pub fn mutual_tls(ca: &TestCa) -> Self {
        Self {
            client_ca: Some(ca.ca.clone()),
            ..Self::tls(ca)
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.require_header = Some((name.to_owned(), value.to_owned()));
        self
    }
}

/// `tests/validators/otlp_receiver.py` on 127.0.0.1: an OTLP/gRPC logs receiver made of the
/// official protos; each LogRecord it accepted is a JSON line in its output file (written and
/// fsynced before it answers). Killed by pid on drop.
pub struct OtlpReceiver {
    dir: TempDir,
    options: OtlpOptions,
    port: u16,
    child: Option<Child>,
    stderr: Lines,
}

impl OtlpReceiver {
    /// Start on a port of its choosing.
    pub fn start(options: OtlpOptions) -> Self {
        Self::start_on(0, options)
    }

    /// Start on `port` (0: any).
    pub fn start_on(port: u16, options: OtlpOptions) -> Self {
        let mut me = Self {
            dir: TempDir::new(),
            options,
            port,
            child: None,
            stderr: Lines::default(),
        };
        me.spawn();
        me
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The file the records go to (kept across restarts).
    pub fn output(&self) -> PathBuf {
        self.dir.0.join("records.jsonl")
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(python_tool("python"));
        cmd.arg(validator("otlp_receiver.py"))
            .arg(self.port.to_string())
            .arg("--out")
            .arg(self.output());
        if let Some((cert, key)) = &self.options.tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        if let Some(ca) = &self.options.client_ca {
            cmd.arg("--client-ca").arg(ca);
        }
        if let Some((name, value)) = &self.options.require_header {
            cmd.arg("--require-header").arg(format!("{name}={value}"));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting otlp_receiver.py");
        let (tx, rx) = mpsc::channel();
        read_lines(child.stdout.take().expect("stdout"), move |line, _| {
            let _ = tx.send(line.to_owned());
        });
        // Keep the earlier starts' stderr: a failure after a restart shows both.
        let earlier = self.stderr.text();
        self.stderr = Lines::collect(child.stderr.take().expect("stderr"), |_| {});
        let line = rx.recv_timeout(Duration::from_secs(20));
        let port = line
            .as_deref()
            .ok()
            .and_then(|l| l.strip_prefix("listening "))
            .and_then(|p| p.trim().parse::<u16>().ok());
        let Some(port) = port else {
            let status = child.try_wait().ok().flatten();
            end_child(&mut child);
            thread::sleep(Duration::from_millis(100));
            panic!(
                "otlp_receiver.py did not start (first line {line:?}, exit {status:?}); \
                 stderr:\n{earlier}\n{}",
                self.stderr.text()
            );
        };
        assert!(
            self.port == 0 || self.port == port,
            "receiver bound {port}, asked for {}",
            self.port
        );
        self.port = port;
        self.child = Some(child);
    }

    /// SIGKILL (by pid) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            end_child(&mut c);
        }
    }

    /// Start again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Every record received so far (complete lines of the output file).
    pub fn records(&self) -> Vec<Value> {
        complete_text(&self.output())
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("receiver line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Poll the records until `pred` holds (at most `timeout`).
    pub fn wait_records(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let mut have = 0;
        poll(timeout, Duration::from_millis(100), || {
            let records = self.records();
            have = records.len();
            pred(&records).then_some(records)
        })
        .unwrap_or_else(|| {
            panic!(
                "OTLP receiver: waited {timeout:?} for {what}; have {have} records; stderr:\n{}",
                self.stderr_text()
            )
        })
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How the sequence numbers a destination received must relate to the journal's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A run without crashes: each once, in order.
    ExactlyOnce,
    /// Across a crash (of the daemon or the receiver): none missing; repeats only of one batch
    /// in flight at the crash, so within one range of at most [`MAX_BATCH`] numbers.
    AtLeastOnce,
}

/// An exporter batch holds at most this many records.
pub const MAX_BATCH: u64 = 1024;

/// Check the sequence numbers `got` (in the order they arrived) against `expected` (the
/// journal's, in order): every expected one arrived, nothing else did, and repeats are as
/// `delivery` allows. Panics with a summary naming `what`.
pub fn assert_delivery(what: &str, got: &[u64], expected: &[u64], delivery: Delivery) {
    assert!(!expected.is_empty(), "{what}: nothing expected");
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for &s in got {
        *count.entry(s).or_default() += 1;
    }
    let expected_set: std::collections::BTreeSet<u64> = expected.iter().copied().collect();
    let missing: Vec<u64> = expected
        .iter()
        .copied()
        .filter(|s| !count.contains_key(s))
        .collect();
    let unknown: Vec<u64> = count
        .keys()
        .copied()
        .filter(|s| !expected_set.contains(s))
        .collect();
    let repeated: Vec<u64> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    let summary = format!(
        "{what}: {} received, {} expected ({}..={}); missing {} (first {:?}), not in the \
         journal {} (first {:?}), repeated {} (first {:?}, last {:?})",
        got.len(),
        expected.len(),
        expected[0],
        expected[expected.len() - 1],
        missing.len(),
        missing.first(),
        unknown.len(),
        unknown.first(),
        repeated.len(),
        repeated.first(),
        repeated.last()
    );
    assert!(missing.is_empty() && unknown.is_empty(), "{summary}");
    match delivery {
        Delivery::ExactlyOnce => {
            assert!(repeated.is_empty(), "{summary}");
            assert_eq!(got, expected, "{what}: not in journal order");
        }
        Delivery::AtLeastOnce => {
            if let (Some(&first), Some(&last)) = (repeated.first(), repeated.last()) {
                assert!(
                    last - first < MAX_BATCH,
                    "{summary}: repeats span more than one batch"
                );
                assert!(
                    repeated.iter().all(|s| count[s] == 2),
                    "{summary}: a record came more than twice"
                );
            }
        }
    }
}
