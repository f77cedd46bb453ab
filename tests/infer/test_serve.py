"""The HTTP service, started for real (`vitkit serve` in a subprocess on 127.0.0.1) and spoken to over HTTP."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.infer import CLASS_NAMES, image_bytes, save_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, data: bytes | None = None, content_type: str | None = None, method: str | None = None):
    req = urllib.request.Request(url, data=data, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.headers.get("content-type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("content-type", ""), err.read()


def _multipart(field: str, filename: str | None, payload: bytes, mime: str = "image/png") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
    body = (
        f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {mime}\r\n\r\n".encode()
        + payload + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass(frozen=True)
class Served:
    base: str
    log: Path
    body_timeout_s: float


BODY_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    ckpt = save_tiny_checkpoint(folder / "tiny.safetensors")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [
        sys.executable, "-m", "vitkit", "serve", str(ckpt), "--port", str(port),
        "--max-batch", "8", "--max-wait-ms", "300", "--max-bytes", "200000", "--max-pixels", "250000",
        "--topk", "3", "--body-timeout", str(BODY_TIMEOUT_S), "--log-level", "info",
    ]
    log = folder / "server.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {log.read_text()}")
        try:
            if _request(base + "/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("server did not come up within 90 s")
    yield Served(base, log, BODY_TIMEOUT_S)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server(served):
    return served.base


def test_healthz(server):
    status, ctype, body = _request(server + "/healthz")
    info = json.loads(body)
    assert status == 200 and ctype.startswith("application/json")
    assert info["status"] == "ok" and info["num_classes"] == 10 and info["precision"] == "fp32"


def test_predict_raw_and_multipart(server):
    status, _, body = _request(server + "/predict", image_bytes(fmt="PNG"), "image/png")
    assert status == 200, body
    preds = json.loads(body)["predictions"]
    assert len(preds) == 3 and all(p["label"] in CLASS_NAMES for p in preds)
    assert preds[0]["prob"] >= preds[1]["prob"] >= preds[2]["prob"] > 0

    payload, ctype = _multipart("file", "x.jpg", image_bytes(fmt="JPEG"), "image/jpeg")
    status, _, body = _request(server + "/predict?topk=5", payload, ctype)
    assert status == 200, body
    assert len(json.loads(body)["predictions"]) == 5


def test_concurrent_requests_are_micro_batched(server):
    def _batch_stats() -> tuple[int, int, float]:
        text = _request(server + "/metrics")[2].decode()
        ones = int(re.search(r'vitkit_batch_size_bucket\{le="1.0"\} (\d+)', text).group(1))  # prometheus_client's "1.0"
        count = int(re.search(r"vitkit_batch_size_count (\d+)", text).group(1))
        total = float(re.search(r"vitkit_batch_size_sum (\S+)", text).group(1))
        return ones, count, total

    ones0, count0, total0 = _batch_stats()
    payload = image_bytes(size=(32, 32), color=(10, 200, 10))
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: _request(server + "/predict", payload, "image/png"), range(8)))
    assert [r[0] for r in results] == [200] * 8
    answers = {json.dumps(json.loads(r[2])["predictions"]) for r in results}
    assert len(answers) == 1  # same image, same answer whichever batch it ran in
    ones, count, total = _batch_stats()
    assert total - total0 == 8  # every image went through the model exactly once
    assert count - count0 < 8  # ... in fewer model calls than requests
    assert (count - count0) - (ones - ones0) >= 1  # at least one batch held more than one image


@pytest.mark.parametrize(
    "data, ctype, status, needle",
    [
        (b"this is not an image", "image/jpeg", 400, "not a usable image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "image/jpeg", 400, "not a usable image"),
        (b"hello", "text/plain", 415, "unsupported content type"),
        (b"", "image/png", 400, "empty request body"),
        (b"x" * 300_000, "image/png", 413, "exceeds the limit"),
        (image_bytes(size=(600, 600)), "image/png", 400, "exceeds the limit"),  # 360k pixels > 250k
    ],
    ids=["garbage", "truncated-jpeg", "text-plain", "empty", "too-large-body", "too-many-pixels"],
)
def test_bad_payloads_get_4xx_json(server, data, ctype, status, needle):
    got, resp_type, body = _request(server + "/predict", data, ctype)
    assert got == status, body
    assert resp_type.startswith("application/json")
    assert needle in json.loads(body)["error"]


def test_bad_multipart_and_params(server):
    payload, ctype = _multipart("note", None, b"just a field")
    status, _, body = _request(server + "/predict", payload, ctype)
    assert status == 400 and "no file part" in json.loads(body)["error"]
    status, _, body = _request(server + "/predict", b"--nope\r\n", "multipart/form-data; boundary=abc")
    assert 400 <= status < 500 and "error" in json.loads(body)
    status, _, body = _request(server + "/predict", method="GET")
    assert status == 405 and "error" in json.loads(body)


def test_metrics_prometheus_format(server):
    status, ctype, body = _request(server + "/metrics")
    text = body.decode()
    assert status == 200 and ctype.startswith("text/plain")
    assert "# TYPE vitkit_request_latency_seconds histogram" in text
    assert re.search(r'vitkit_requests_total\{code="200",path="/predict"\} [1-9]', text)  # labels sorted by name
    assert "code=\"500\"" not in text  # no bad request above turned into a server error
    assert _request(server + "/healthz")[0] == 200  # and the server is still alive


def _predict_count(server: str, code: int) -> int:
    text = _request(server + "/metrics")[2].decode()
    found = re.search(rf'vitkit_requests_total\{{code="{code}",path="/predict"\}} (\S+)', text)
    return int(float(found.group(1))) if found else 0


@pytest.mark.parametrize("query", ["topk=0", "topk=%C2%B2", "topk=11", "topk=-1", "topk=abc", "topk=", "topk=1e3"],
                         ids=["zero", "superscript-two", "above-classes", "negative", "word", "empty", "float"])
def test_bad_query_parameter_is_422_and_counted(server, query):
    before = _predict_count(server, 422)
    status, ctype, body = _request(f"{server}/predict?{query}", image_bytes(), "image/png")
    assert status == 422, body
    assert ctype.startswith("application/json") and "query parameter topk" in json.loads(body)["error"]
    assert _predict_count(server, 422) == before + 1


def _raw_exchange(base: str, head: str, body: bytes, read_timeout: float) -> tuple[bytes, float, bool]:
    """Send ``head`` + ``body`` on a fresh socket and read until the server closes it or ``read_timeout`` passes:
    (everything received, seconds until the first byte, whether the server closed the connection)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        sock.sendall(head.encode() + body)
        t0, received, first, closed = time.monotonic(), b"", None, False
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                first = first if first is not None else time.monotonic() - t0
                received += chunk
        except TimeoutError:
            pass
    return received, first if first is not None else float("inf"), closed


def test_stalled_upload_gets_408_within_the_body_timeout_and_the_connection_closes(served):
    head = ("POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            "Content-Length: 1000\r\n\r\n")
    received, first_byte_s, closed = _raw_exchange(served.base, head, b"\x89PNG\r\n\x1a\n", 3 * served.body_timeout_s)
    assert received.startswith(b"HTTP/1.1 408"), received
    assert b"not received within" in received
    assert served.body_timeout_s - 0.5 <= first_byte_s <= served.body_timeout_s + 2
    assert closed  # the connection is not left open for the rest of a body that never comes


def test_client_that_disconnects_mid_body_is_one_info_line(served):
    marker = f"/predict?probe={uuid.uuid4().hex}"
    host, port = served.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST {marker} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                     "Content-Length: 5000\r\n\r\n".encode() + b"\x89PNG\r\n")
        time.sleep(0.3)
    deadline = time.time() + 10
    while time.time() < deadline and "disconnected before its request body" not in served.log.read_text():
        time.sleep(0.1)
    text = served.log.read_text()
    assert "disconnected before its request body arrived; POST /predict dropped" in text
    assert "Traceback" not in text and "ERROR" not in text and "ClientDisconnect" not in text
    assert _request(served.base + "/healthz")[0] == 200


def test_serve_flags_set_the_service_limits_and_others_keep_its_defaults():
    import argparse

    from vitkit.cli import infer as cli_infer
    from vitkit.infer.serve import ServeConfig

    parser = argparse.ArgumentParser()
    cli_infer.add_parser(parser.add_subparsers())
    args = parser.parse_args(["serve", "model.safetensors", "--body-timeout", "2.5", "--large-decodes", "3"])
    given = {name: getattr(args, name) for name in cli_infer.SERVE_LIMITS if getattr(args, name) is not None}
    assert given == {"body_timeout_s": 2.5, "large_decodes": 3}
    config = ServeConfig(**given)
    assert (config.body_timeout_s, config.large_decode_threads, config.max_pixels) == (2.5, 3, 25_000_000)
