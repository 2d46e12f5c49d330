#!/usr/bin/env python3
"""Regenerate the seed corpora under tests/fuzz/corpus/ (run from the repo root).

Spec vectors for the codec, topic/filter pairs, ACL and configuration files
from conf/ and docs/, password lines, telemetry payloads. Existing seed files
of the same name are overwritten; others are left alone.
"""
import os
import re
import struct

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


# ---- MQTT packets ---------------------------------------------------------------

def rl(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def pkt(first, body, remlen=None):
    return bytes([first]) + (remlen if remlen is not None else rl(len(body))) + body


def s(x):
    if isinstance(x, str):
        x = x.encode()
    return struct.pack(">H", len(x)) + x


def connect(flags=0x02, keep=60, cid="dev-1", will=None, user=None, pw=None,
            name="MQTT", level=4):
    body = s(name) + bytes([level, flags]) + struct.pack(">H", keep) + s(cid)
    if will:
        body += s(will[0]) + s(will[1])
    if user is not None:
        body += s(user)
    if pw is not None:
        body += s(pw)
    return pkt(0x10, body)


def publish(topic, payload=b"", qos=0, pid=1, dup=False, retain=False):
    body = s(topic) + (struct.pack(">H", pid) if qos else b"") + payload
    return pkt(0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0), body)


def subscribe(pid, entries, first=0x82):
    return pkt(first, struct.pack(">H", pid) + b"".join(s(f) + bytes([q]) for f, q in entries))


def unsubscribe(pid, filters, first=0xA2):
    return pkt(first, struct.pack(">H", pid) + b"".join(s(f) for f in filters))


frames = {
    "connect-min": connect(),
    "connect-empty-id": connect(cid=""),
    "connect-full": connect(flags=0x02 | 0x04 | (1 << 3) | 0x20 | 0x40 | 0x80,
                            will=("status/dev-1", b"offline"), user="alice", pw=b"\x00\xffsecret"),
    "connect-user-only": connect(flags=0x82, user="bob"),
    "bad-connect-mqisdp": connect(name="MQIsdp", level=3),
    "bad-connect-level5": connect(level=5),
    "bad-connect-reserved": connect(flags=0x03),
    "bad-connect-pw-no-user": connect(flags=0x42, pw=b"x"),
    "bad-connect-will-qos3": connect(flags=0x02 | 0x04 | (3 << 3), will=("a", b"b")),
    "bad-connect-will-wild": connect(flags=0x06, will=("a/#", b"b")),
    "bad-connect-utf8": connect(cid=b"\xc0\x80"),
    "bad-connect-trailing": connect()[:1] + bytes([connect()[1] + 1]) + connect()[2:] + b"\x00",
    "connect-nonminimal-len": b"\x10" + bytes([len(connect()) - 2 | 0x80, 0x00]) + connect()[2:],
    "connack-ok": pkt(0x20, b"\x00\x00"),
    "connack-session": pkt(0x20, b"\x01\x00"),
    "bad-connack-session-rc": pkt(0x20, b"\x01\x05"),
    "bad-connack-rc6": pkt(0x20, b"\x00\x06"),
    "publish-qos0": publish("sensors/t1", b"21.5"),
    "publish-qos1-retain": publish("a/b/c", b"{\"v\":1}", qos=1, pid=7, retain=True),
    "publish-qos2-dup": publish("$SYS/x", b"\x00\x01", qos=2, pid=0xFFFF, dup=True),
    "publish-empty": publish("t"),
    "publish-utf8": publish("caf\u00e9/\U0001F600", b"x"),
    "publish-200": publish("big/" + "x" * 20, b"p" * 180),
    "bad-publish-qos3": pkt(0x36, s("a") + b"\x00\x01"),
    "bad-publish-dup-qos0": pkt(0x38, s("a")),
    "bad-publish-wild": publish("a/+", b"x"),
    "bad-publish-pid0": publish("a", b"x", qos=1, pid=0),
    "bad-publish-empty-topic": publish("", b"x"),
    "bad-publish-surrogate": pkt(0x30, s(b"\xed\xa0\x80")),
    "puback": pkt(0x40, b"\x00\x01"),
    "pubrec": pkt(0x50, b"\x12\x34"),
    "pubrel": pkt(0x62, b"\x00\x02"),
    "pubcomp": pkt(0x70, b"\xff\xff"),
    "bad-pubrel-flags": pkt(0x60, b"\x00\x02"),
    "bad-puback-len3": pkt(0x40, b"\x00\x01\x00"),
    "bad-puback-pid0": pkt(0x40, b"\x00\x00"),
    "subscribe-one": subscribe(1, [("a/#", 1)]),
    "subscribe-many": subscribe(10, [("+/t/#", 0), ("x", 2), ("$SYS/#", 1), ("/", 0)]),
    "bad-subscribe-qos3": subscribe(1, [("a", 3)]),
    "bad-subscribe-reserved": subscribe(1, [("a", 0x41)]),
    "bad-subscribe-empty": pkt(0x82, b"\x00\x01"),
    "bad-subscribe-flags": subscribe(1, [("a", 0)], first=0x80),
    "bad-subscribe-filter": subscribe(1, [("a/#/b", 0)]),
    "suback": pkt(0x90, b"\x00\x01\x00\x01\x02\x80"),
    "bad-suback-code": pkt(0x90, b"\x00\x01\x03"),
    "unsubscribe": unsubscribe(3, ["a/+", "#"]),
    "bad-unsubscribe-empty": pkt(0xA2, b"\x00\x03"),
    "unsuback": pkt(0xB0, b"\x00\x03"),
    "pingreq": b"\xc0\x00",
    "pingresp": b"\xd0\x00",
    "disconnect": b"\xe0\x00",
    "bad-pingreq-body": b"\xc0\x01\x00",
    "bad-type0": b"\x00\x00",
    "bad-type15": b"\xf0\x00",
    "bad-remlen-5bytes": b"\x30\xff\xff\xff\xff\x01",
    "remlen-max-truncated": b"\x30\xff\xff\xff\x7f\x00\x01a",
    "truncated-publish": publish("a/b", b"payload")[:-3],
    "stream-session": connect() + subscribe(1, [("a/#", 1)]) + publish("a/b", b"1", qos=1, pid=2)
                      + pkt(0x40, b"\x00\x02") + b"\xc0\x00" + b"\xe0\x00",
    "stream-then-garbage": b"\xd0\x00" + pkt(0x20, b"\x00\x00") + b"\xf3\x01",
}
for k, v in frames.items():
    put("fuzz_frame", k, v)

# ---- topics ---------------------------------------------------------------------

topics = [
    ("a/b", "a/b"), ("a/+", "a/b"), ("a/#", "a"), ("#", "$SYS/x"), ("+/x", "$SYS/x"),
    ("$SYS/#", "$SYS/broker/load"), ("+", "/"), ("/+", "/"), ("+/+", "/"), ("a//b", "a//b"),
    ("a/+/c", "a//c"), ("#", "a/b/c/d"), ("a/b/#", "a/b"), ("a/b/#", "a"), ("+/#", "x"),
    ("sport/tennis/+", "sport/tennis/player1/ranking"), ("sport/+", "sport/"),
    ("caf\u00e9/+", "caf\u00e9/\U0001F600"), ("a/#/b", "a/x/b"), ("a+/b", "a+/b"),
    ("a", "a/#"),
]
for i, (f, t) in enumerate(topics):
    put("fuzz_topic", "pair-%02d" % i, f + "\n" + t)
put("fuzz_topic", "tree-many", "a/#\na/b\n+/b\na/c\n#\n$SYS/x\na/+/c\na/b/c\n/\n/\n+/+\nx/\n")
put("fuzz_topic", "tree-dups", "a/b\na/b\na/b\na/b\na/+\na/c\n")
put("fuzz_topic", "bad-utf8", b"a/\xc0\x80\na/\xed\xa0\x80\n\xf4\x90\x80\x80\n\xe0\xa0\x80")
put("fuzz_topic", "deep", "/".join(["+"] * 40) + "\n" + "/".join(["x"] * 40))

# ---- ACL files -------------------------------------------------------------------

put("fuzz_acl", "conf-acl.conf", read("conf/acl.conf"))
doc = read("docs/acl.md").decode()
for i, b in enumerate(re.findall(r"```[a-z]*\n(.*?)```", doc, re.S)):
    if re.search(r"^\s*(company|anonymous|platform)\b", b, re.M):
        put("fuzz_acl", "doc-%d" % i, b)
put("fuzz_acl", "subst", "company acme\n  devices\n    readwrite %d/%c/+\n    deny read %d/%%/x\n"
    "  user u1\n    read %u/#\n    write +/%c\nplatform\n  user ops\n    read +/%c/#\n"
    "anonymous\n  deny %c/#\n  readwrite #\n")
put("fuzz_acl", "crlf", "company acme\r\n  devices\r\n    read a/#\r\n")
put("fuzz_acl", "dollar", "anonymous\n  read $SYS/#\n  deny +/x\n  readwrite #\n")
put("fuzz_acl", "bad-keyword", "company acme\n  devices\n    reed a\n")
put("fuzz_acl", "bad-filter", "anonymous\n  read a/#/b\n")
put("fuzz_acl", "bad-reopen", "company a\ncompany a\n")
put("fuzz_acl", "bad-subst", "anonymous\n  read %d/x\n")

# ---- configuration -----------------------------------------------------------------

for name in ("dev.conf", "gatemq.conf"):
    put("fuzz_config", name, read("conf/" + name))
tel = read("docs/telemetry.md").decode()
blocks = re.findall(r"```[a-z]*\n(.*?)```", tel, re.S)
for i, b in enumerate(blocks):
    if "telemetry_topic" in b:
        put("fuzz_config", "doc-telemetry-%d" % i, "listener 1883\n" + b)
put("fuzz_config", "tls", "listener 8883 127.0.0.1\n  certfile server.crt\n  keyfile /k.key\n"
    "  cafile ca.crt\n  require_certificate true\n  company_ca acme acme-ca.crt\n"
    "listener 1883\n  allow_anonymous true\ncertificate_company san_uri\n"
    "certificate_company_uri_prefix urn:gatemq:\n")
put("fuzz_config", "limits", "listener 1\nmax_packet_size 268435460\nmax_connect_size 0\n"
    "connect_timeout 0.5\nlockout_time 10\nlockout_max_time 5\nlog_level debug\n")
put("fuzz_config", "bad-dup-listener", "listener 1883\nlistener 1883\n")
put("fuzz_config", "bad-no-listener", "log_level info # comment\n")
put("fuzz_config", "sink", "listener 1883\npersistence_file db\ntelemetry_topic telemetry/#\n"
    "sink influxdb http://127.0.0.1:8086 gatemq\nsink_batch_size 1\n"
    "company_offline_notify_after acme 30\npresence_topic presence\n")

# ---- passwords ------------------------------------------------------------------------

H = ("$7$101$c2FsdHNhbHRzYWx0$" +
     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==")
put("fuzz_passwd", "hash-101", H)
put("fuzz_passwd", "hash-12000", H.replace("$101$", "$12000$"))
put("fuzz_passwd", "bad-type6", H.replace("$7$", "$6$"))
put("fuzz_passwd", "bad-iter0", H.replace("$101$", "$0$"))
put("fuzz_passwd", "bad-iter-big", H.replace("$101$", "$1000001$"))
put("fuzz_passwd", "bad-b64-pad", H[:-2] + "A=")
put("fuzz_passwd", "bad-salt-len", H.replace("c2FsdHNhbHRzYWx0", "c2FsdA=="))
put("fuzz_passwd", "file", "# users\nalice:" + H + "\n  bob : " + H.replace("$101$", "$12000$")
    + "  \r\n\ncarol:" + H + "\n")
put("fuzz_passwd", "bad-dup", "a:" + H + "\na:" + H + "\n")
put("fuzz_passwd", "bad-no-colon", "alice\n")
put("fuzz_passwd", "bad-name", "#x:" + H + "\n:" + H + "\n")
# mosquitto.passwd and hash-mosquitto were written once by mosquitto_passwd
# (users alice/bob, throwaway passwords) and are kept as they are.

# ---- telemetry ---------------------------------------------------------------------------

tp = {
    "json-doc": '{"ts": 1733300000123, "temp": 21.5, "state": "run"}',
    "json-nested": '{"a":{"b":1,"c":[1,2,[3]]},"ok":true,"n":null,"s":"x\\ny\\"z"}',
    "json-rfc3339": '{"ts":"2024-12-04T08:13:20.123+01:00","v":1e-7}',
    "json-leap": '{"ts":"2016-12-31T23:59:60Z","v":-0.0}',
    "json-ts-frac": '{"ts":1733300000.5,"v":1}',
    "json-ts-ns": '{"ts":1733300000123456789,"v":1}',
    "bad-json-ts-neg": '{"ts":-1,"v":1}',
    "bad-json-dupkey": '{"a_b":1,"a":{"b":2}}',
    "bad-json-array": '[1,2]',
    "bad-json-nul": '{"a":"\\u0000"}',
    "bad-json-trailing": '{"a":1,}',
    "bad-json-deep": '{"a":' * 20 + '1' + '}' * 20,
    "bad-json-time-key": '{"time":1}',
    "line-doc": 'weather,site=north temp=21.5,ok=true,count=3i,state="run" 1733300000123456789',
    "line-escapes": 'm\\ x,t\\,k=v\\=1 f\\ 1=1u,s="a\\"b\\\\" 0\r\n',
    "line-company-tag": 'm,company=evil,device=x,topic=y v=1',
    "bad-line-two": 'm v=1\nm v=2',
    "bad-line-comment": '# m v=1',
    "bad-line-string": 'm s="abc',
    "bad-line-ts-frac": 'm v=1 1.5',
    "line-bools": 'm a=t,b=F,c=True,d=false,e=-1.5e3,f=.5 253402300799999000000',
    "bad-utf8": b'm v="\xff"',
}
for k, v in tp.items():
    put("fuzz_telemetry", k, v)
