#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (committed; re-run only to change them).

    python3 fuzz/make_seeds.py

- fuzz/corpus/decode_job/: what RQ 2.x and RQ 1.x leave in Redis for a failed job, encoded the
  way RQ encodes it (pickle + zlib, base64(zlib(traceback)), RQ's timestamp format), plus the
  corrupt variants the daemon must skip. Written in the seed format that
  fuzz_targets/decode_job.rs reads: b"RQJOB1\\n", then records tag (1 byte), length (u32 LE), bytes.
- fuzz/corpus/parse_config/: config/*.toml as they are, plus broken variants.

Only the standard library: the pickles are the same bytes RQ's DefaultSerializer writes
(pickle.dumps(..., protocol=pickle.HIGHEST_PROTOCOL)) on this Python.
"""

import base64
import json
import pickle
import struct
import zlib
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
REPO = FUZZ.parent
FIELDS = [
    "status",
    "origin",
    "description",
    "data",
    "ended_at",
    "exc_info",
    "retryd_attempts",
    "retryd_policy",
    "retryd_requeued_at",
    "retryd_exhausted",
]
JOB_ID = "5f0c7d7e-1b1a-4a8e-9a57-3c1f6e0d2b11"
ENDED_AT = "2024-05-01T12:00:00.123456Z"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/tasks.py", line 8, in send\n'
    "    conn.send(msg)\n"
    "redis.exceptions.TimeoutError: Timeout reading from socket\n"
)


def record(tag: bytes, value: bytes) -> bytes:
    return tag + struct.pack("<I", len(value)) + value


def seed(job_id=JOB_ID, queue="default", fields=None, results=None, hash_error=None,
         results_error=None) -> bytes:
    """fields: {name: bytes}; results: list of (key, value) or [] for an empty entry."""
    out = b"RQJOB1\n" + record(b"i", job_id.encode()) + record(b"q", queue.encode())
    if hash_error is not None:
        out += record(b"W", hash_error.encode())
    for name, value in (fields or {}).items():
        out += record(str(FIELDS.index(name)).encode(), value)
    if results_error is not None:
        out += record(b"R", results_error.encode())
    elif results == []:
        out += record(b"N", b"")
    else:
        for key, value in results or []:
            out += record(b"r", struct.pack("<I", len(key)) + key + value)
    return out


def rq_data(func="app.tasks.send", protocol=pickle.HIGHEST_PROTOCOL) -> bytes:
    """A job's `data`: zlib(pickle((func_name, instance, args, kwargs)))."""
    return zlib.compress(pickle.dumps((func, None, (42,), {"to": "x"}), protocol=protocol))


def exc_string(traceback: str) -> bytes:
    """RQ 2.x's result `exc_string`: base64(zlib(traceback))."""
    return base64.b64encode(zlib.compress(traceback.encode()))


def rq2_result(traceback=TRACEBACK):
    return [
        (b"created_at", ENDED_AT.encode()),
        (b"type", b"2"),
        (b"worker_name", b"worker-1"),
        (b"exc_string", exc_string(traceback)),
    ]


RQ2 = {
    "status": b"failed",
    "origin": b"default",
    "description": b"app.tasks.send(42, to='x')",
    "data": rq_data(),
    "ended_at": ENDED_AT.encode(),
}
RQ1 = {
    "status": b"failed",
    "origin": b"emails",
    "description": b"app.workers.mail.deliver('a@b.c')",
    "data": rq_data("app.workers.mail.deliver", protocol=4),
    "ended_at": b"2021-02-03T04:05:06.000007Z",
    "exc_info": zlib.compress(TRACEBACK.encode()),
}

JOBS = {
    # Real jobs.
    "rq2-failed": seed(fields=RQ2, results=rq2_result()),
    "rq1-legacy-exc-info": seed(queue="emails", fields=RQ1),
    "rq1-plain-exc-info": seed(fields={**RQ1, "exc_info": b"Traceback...\nValueError: bad"}),
    "rq2-retried-once": seed(fields={**RQ2, "retryd_attempts": b"1",
                                     "retryd_policy": b"transient-network",
                                     "retryd_requeued_at": b"2024-05-01T12:01:00.000000Z"},
                             results=rq2_result()),
    "rq2-exhausted": seed(fields={**RQ2, "retryd_attempts": b"3", "retryd_exhausted": b"1"},
                          results=rq2_result()),
    "rq2-json-serializer": seed(fields={
        **RQ2,
        "data": zlib.compress(json.dumps(["app.tasks.send", None, [42], {"to": "x"}]).encode()),
    }, results=rq2_result("KeyError: 'x'\n")),
    "rq2-protocol0-no-origin": seed(fields={
        **{k: v for k, v in RQ2.items() if k != "origin"},
        "data": zlib.compress(pickle.dumps(("app.tasks.send", None, (), {}), protocol=0)),
    }, results=[]),
    # Orphan: the registry holds the id, the hash is gone.
    "orphan": seed(fields={}),
    # Corrupt jobs.
    "corrupt-wrongtype": seed(hash_error="WRONGTYPE Operation against a key holding the wrong "
                                         "kind of value"),
    "corrupt-bad-zlib-data": seed(fields={**RQ2, "data": b"x\x9c\xde\xad\xbe\xef"},
                                  results=rq2_result()),
    "corrupt-bad-zlib-exc-info": seed(fields={**RQ1, "exc_info": b"x\x9cnot zlib at all"}),
    "corrupt-non-utf8-description": seed(fields={**RQ2, "description": b"caf\xe9 \xff"},
                                         results=rq2_result()),
    "corrupt-missing-ended-at": seed(fields={k: v for k, v in RQ2.items() if k != "ended_at"}),
    "corrupt-bad-timestamp": seed(fields={**RQ2, "ended_at": b"2024-13-45 25:61:00"}),
    "corrupt-bad-attempts": seed(fields={**RQ2, "retryd_attempts": b"-1"}),
    "corrupt-exc-string-not-base64": seed(fields=RQ2, results=[(b"exc_string", b"!!notb64")]),
    "corrupt-exc-string-not-utf8": seed(
        fields=RQ2,
        results=[(b"exc_string", base64.b64encode(zlib.compress(b"\xff\xfe trace")))]),
    "corrupt-results-error": seed(fields=RQ2, results_error="WRONGTYPE results"),
    "corrupt-truncated-pickle": seed(fields={**RQ2, "data": zlib.compress(b"\x80\x05\x95\x26\x00")},
                                     results=rq2_result()),
}

CONFIGS = {
    "empty": "",
    "bad-duration": '[supervisor]\nscan_interval = "15 parsecs"\n',
    "unknown-key": '[redis]\nurl = "redis://127.0.0.1:6379/0"\nkey_prefx = "rq"\n',
    "wrong-type": "[supervisor]\nbatch_size = \"many\"\nqueues = 3\n",
    "bad-regex": '[[policy]]\nname = "p"\nerror_pattern = "(unclosed"\naction = "retry"\n',
    "public-listen-no-token": '[http]\nlisten = "0.0.0.0:9732"\n',
    "bad-listen": '[http]\nlisten = "localhost:port"\n',
    "unterminated": '[logging]\nlevel = "info\nformat = "json"\n',
    "unicode-before-error": '# é ü ✓ 🦀\n[policy.x]\nname = "ünïcode"\nmax_attempts = -3\n',
    "duplicate-key": '[redis]\nurl = "redis://a"\nurl = "redis://b"\n',
    "policy-without-name": '[[policy]]\naction = "purge"\npurge_after = "7d"\n',
    "bad-backoff": ('[[policy]]\nname = "b"\naction = "retry"\n'
                    'backoff = { strategy = "exponential", initial = "1m", multiplier = -2.0, '
                    'jitter = 7 }\n'),
    "tokens": ('[http]\nlisten = "0.0.0.0:9732"\nauth_token_file = "/run/token"\n'
               '[[http.tokens]]\nname = "ops"\nrole = "operate"\ntoken_file = "/run/empty"\n'
               '[[http.tokens]]\nname = "ops"\nrole = "admin"\ntoken = "x"\ntoken_file = "/f"\n'),
    "sentinel-and-tls": ('[redis]\nurl = "rediss://u:p@mymaster/0"\ntls_cert_file = "/c.pem"\n'
                         '[redis.sentinel]\nmaster_name = ""\naddresses = ["h:notaport"]\n'),
}


def main() -> None:
    jobs = FUZZ / "corpus" / "decode_job"
    configs = FUZZ / "corpus" / "parse_config"
    for d in (jobs, configs):
        d.mkdir(parents=True, exist_ok=True)
    for name, data in JOBS.items():
        (jobs / name).write_bytes(data)
    for path in sorted((REPO / "config").glob("*.toml")):
        (configs / f"repo-{path.stem}.toml").write_bytes(path.read_bytes())
    for name, text in CONFIGS.items():
        (configs / f"broken-{name}.toml").write_text(text)
    print(f"{len(JOBS)} job seeds, {len(list(configs.iterdir()))} config seeds")


if __name__ == "__main__":
    main()
