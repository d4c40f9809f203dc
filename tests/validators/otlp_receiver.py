"""An OTLP logs receiver for the export tests, built on the official protos.

Usage: python otlp_receiver.py PORT --out FILE [--tls-cert PEM --tls-key PEM [--client-ca PEM]]
                               [--require-header NAME=VALUE ...]

Serves `opentelemetry.proto.collector.logs.v1.LogsService/Export` (the stubs of the PyPI package
`opentelemetry-proto`, served by `grpcio`) on 127.0.0.1:PORT (0: any free port), over h2c, or
over TLS with `--tls-cert`/`--tls-key`; `--client-ca` then requires a client certificate that
chains to that CA. With `--require-header`, a request without that metadata (name compared
case-insensitively, value exactly) fails with UNAUTHENTICATED and nothing is written.

For each accepted request, one JSON line per LogRecord is appended to FILE:
{"resource": {attr: value}, "scope": name, "attributes": {attr: value}, "body": ...,
"severity_number", "severity_text", "time_unix_nano", "observed_time_unix_nano",
"event_name"}; AnyValue becomes JSON (ints stay ints, arrays lists, kvlists objects, bytes
hex). The file is flushed and fsynced before the response is sent: a record in the file is one
the exporter may count as delivered, and a receiver killed before it answered left nothing of
that request behind. Prints `listening PORT` on stdout once bound. Ends on SIGTERM or SIGINT.
"""

import argparse
import json
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc


def any_value(v):
    """An AnyValue as JSON."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attrs(v.kvlist_value.values)
    if kind == "bytes_value":
        return v.bytes_value.hex()
    raise ValueError(f"unknown AnyValue kind {kind}")


def attrs(kvs):
    out = {}
    for kv in kvs:
        if kv.key in out:
            raise ValueError(f"attribute {kv.key} twice")
        out[kv.key] = any_value(kv.value)
    return out


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, out, required):
        self.out = out
        self.required = required
        self.lock = threading.Lock()

    def Export(self, request, context):
        if self.required:
            metadata = [(k.lower(), v) for k, v in context.invocation_metadata()]
            for name, value in self.required:
                if (name.lower(), value) not in metadata:
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, f"missing header {name}")
        lines = []
        try:
            for rl in request.resource_logs:
                resource = attrs(rl.resource.attributes)
                for sl in rl.scope_logs:
                    for r in sl.log_records:
                        lines.append(json.dumps({
                            "resource": resource,
                            "scope": sl.scope.name,
                            "attributes": attrs(r.attributes),
                            "body": any_value(r.body),
                            "severity_number": r.severity_number,
                            "severity_text": r.severity_text,
                            "time_unix_nano": r.time_unix_nano,
                            "observed_time_unix_nano": r.observed_time_unix_nano,
                            "event_name": r.event_name,
                        }, sort_keys=True))
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        with self.lock:
            if lines:
                self.out.write("".join(line + "\n" for line in lines))
                self.out.flush()
                os.fsync(self.out.fileno())
        return logs_service_pb2.ExportLogsServiceResponse()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--client-ca")
    ap.add_argument("--require-header", action="append", default=[])
    args = ap.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    if args.client_ca and not args.tls_cert:
        ap.error("--client-ca needs --tls-cert")
    required = []
    for h in args.require_header:
        name, sep, value = h.partition("=")
        if not sep or not name:
            ap.error(f"--require-header {h!r}: expected NAME=VALUE")
        required.append((name, value))

    out = open(args.out, "a", encoding="utf-8")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        # One listener of ours only: a port still held by another process is an error.
        options=[("grpc.so_reuseport", 0)],
    )
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(out, required), server)
    address = f"127.0.0.1:{args.port}"
    if args.tls_cert:
        with open(args.tls_cert, "rb") as f:
            cert = f.read()
        with open(args.tls_key, "rb") as f:
            key = f.read()
        client_ca = None
        if args.client_ca:
            with open(args.client_ca, "rb") as f:
                client_ca = f.read()
        creds = grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
        )
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        print(f"cannot bind {address}", file=sys.stderr, flush=True)
        sys.exit(1)
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(f"listening {port}", flush=True)
    while not done.wait(0.5):
        pass
    server.stop(grace=1).wait()
    out.close()


if __name__ == "__main__":
    main()
