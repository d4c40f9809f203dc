"""Parse the syslog messages an rsyslog receiver of the tests wrote, one per line.

Usage: python syslog_check.py [--cef] FILE

The tests' rsyslog writes each message it received exactly as it came (`%rawmsg%` and a
newline; control characters escaped by rsyslog as `#NNN`, so a message never spans lines).
Each line is parsed with the PyPI package `syslog-rfc5424-parser` (an RFC 5424 grammar) and
printed as one JSON line: {"pri", "facility", "severity" (numbers), "version", "timestamp",
"hostname", "appname", "procid", "msgid", "sd": {sd-id: {param: value}}, "msg", "bom"}. The
parser keeps the escapes of SD parameter values (RFC 5424 6.3.3: `\\"`, `\\\\`, `\\]`); they
are undone here. `msg` is without its leading BOM (`bom` says whether there was one).

With `--cef`, each msg is also parsed with the PyPI package `pycef` and added as "cef": the
header fields (CEFVersion, DeviceVendor, DeviceProduct, DeviceVersion, DeviceEventClassID,
Name, Severity) and the extension keys; pycef names a custom field after its label
(`cs6Label=cluster cs6=x` becomes "cluster": "x") and keeps the escapes of values, which are
undone here (`\\=`, `\\\\`, `\\n`, `\\r`, and `\\|` in the header). A CEF line whose header does
not give all seven fields to pycef (it does not split a header with `=` or `\\` in it) or
whose severity is not 0..10 fails.

Any line that does not parse: `FILE:LINE: why: the line` on stderr, exit 1.
"""

import json
import re
import sys

import pycef
from syslog_rfc5424_parser import ParseError, SyslogMessage

BOM = "\ufeff"


def unescape_sd(value):
    return re.sub(r'\\(["\\\]])', r"\1", value)


def unescape_cef_extension(value):
    def one(m):
        c = m.group(1)
        return {"n": "\n", "r": "\r"}.get(c, c)

    return re.sub(r"\\([=\\nr])", one, value)


def unescape_cef_header(value):
    return re.sub(r"\\([|\\])", r"\1", value)


HEADER = ["CEFVersion", "DeviceVendor", "DeviceProduct", "DeviceVersion",
          "DeviceEventClassID", "Name", "Severity"]


def parse_cef(msg):
    """pycef's reading of a CEF line, unescaped; raises ValueError."""
    parsed = pycef.parse(msg)
    if not parsed:
        raise ValueError("pycef: not a CEF line")
    missing = [h for h in HEADER if h not in parsed]
    if missing:
        raise ValueError(f"pycef: header fields missing: {missing}")
    if not re.fullmatch(r"(10|[0-9])", parsed["Severity"]):
        raise ValueError(f"CEF severity {parsed['Severity']!r} not 0..10")
    out = {}
    for key, value in parsed.items():
        if key in ("DeviceName", "DeviceSeverity"):
            continue  # pycef's duplicates of Name and Severity
        out[key] = unescape_cef_header(value) if key in HEADER else unescape_cef_extension(value)
    return out


def parse_line(line, cef):
    m = SyslogMessage.parse(line)
    pri = int(m.facility) * 8 + int(m.severity)
    msg = m.msg if m.msg is not None else ""
    bom = msg.startswith(BOM)
    if bom:
        msg = msg[len(BOM):]
    out = {
        "pri": pri,
        "facility": int(m.facility),
        "severity": int(m.severity),
        "version": m.version,
        "timestamp": m.timestamp,
        "hostname": m.hostname,
        "appname": m.appname,
        "procid": m.procid,
        "msgid": m.msgid,
        "sd": {sd_id: {k: unescape_sd(v) for k, v in params.items()} for sd_id, params in m.sd.items()},
        "msg": msg,
        "bom": bom,
    }
    if cef:
        out["cef"] = parse_cef(msg)
    return out


def main():
    args = sys.argv[1:]
    cef = "--cef" in args
    args = [a for a in args if a != "--cef"]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    path = args[0]
    failed = False
    with open(path, encoding="utf-8", newline="\n") as f:
        for lineno, line in enumerate(f, 1):
            if not line.endswith("\n"):
                print(f"{path}:{lineno}: no newline at the end (a message cut?): {line!r}", file=sys.stderr)
                failed = True
                break
            line = line[:-1]
            try:
                print(json.dumps(parse_line(line, cef), sort_keys=True))
            except ParseError as e:
                print(f"{path}:{lineno}: not RFC 5424 ({e.description}): {line!r}", file=sys.stderr)
                failed = True
            except ValueError as e:
                print(f"{path}:{lineno}: {e}: {line!r}", file=sys.stderr)
                failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
