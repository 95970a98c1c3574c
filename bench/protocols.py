"""Benchmark: latency the reverse proxy adds per ``proxy.protocol``.

Starts one small model server (its own process) that answers the dotted-path
JSON shape, KServe v1 and the Open Inference Protocol (JSON, or Triton's
binary tensor extension when asked), then for each protocol a ``modelmon
serve --proxy.protocol P`` in front of it, and sends the same request
alternately straight to the model server and through the proxy over
keep-alive connections, one at a time.  Prints p50/p90/p99 of both and the
difference per percentile, measured in the same run, and checks that the
exporter recorded every proxied row with its prediction.

    python bench/protocols.py                      # 3,000 requests each way per protocol, 1 row each
    python bench/protocols.py --requests 10000 --rows 32
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from localservers import free_port, wait_port

UPSTREAM = r'''
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import numpy as np

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        extra = b""
        head_len = self.headers.get("Inference-Header-Content-Length")
        doc = json.loads(raw[:int(head_len)] if head_len else raw)
        if self.path.startswith("/v2/"):
            t = doc["inputs"][0]
            n = t["shape"][0]
            pred = [int(i % 2) for i in range(n)]
            proba = [v for i in range(n) for v in (0.3, 0.7)]
            outs = [{"name": "predict", "shape": [n], "datatype": "INT64", "data": pred},
                    {"name": "predict_proba", "shape": [n, 2], "datatype": "FP64", "data": proba}]
            resp = {"model_name": "bench", "model_version": "1", "id": doc.get("id", ""), "outputs": outs}
            hdr = ""
            if (doc.get("parameters") or {}).get("binary_data_output"):
                raws = [np.asarray(pred, "<i8").tobytes(), np.asarray(proba, "<f8").tobytes()]
                for o, r in zip(outs, raws):
                    del o["data"]; o["parameters"] = {"binary_data_size": len(r)}
                extra = b"".join(raws)
            out = json.dumps(resp).encode()
            if extra:
                hdr = "Inference-Header-Content-Length: %d\r\n" % len(out)
            out += extra
        elif self.path.startswith("/v1/models/"):
            n = len(doc["instances"])
            out = json.dumps({"predictions": [[0.3, 0.7]] * n}).encode()
            hdr = ""
        else:
            n = len(doc["instances"])
            out = json.dumps({"predictions": [{"label": i % 2, "score": 0.7} for i in range(n)]}).encode()
            hdr = ""
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
                         % (hdr.encode(), len(out), out))
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''




def requests_for(rows: int) -> dict[str, tuple[str, str, bytes, dict[str, str]]]:
    """mode -> (proxy.protocol, path, body, headers)."""
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(40, 12, rows), rng.normal(50000, 15000, rows)]).astype(np.float32)
    js = {"Content-Type": "application/json"}
    oip = {"inputs": [{"name": "input-0", "shape": [rows, 2], "datatype": "FP32", "data": x.tolist()}]}
    raw = x.astype("<f4").tobytes()
    head = json.dumps({"parameters": {"binary_data_output": True}, "inputs": [
        {"name": "input-0", "shape": [rows, 2], "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return {
        "json": ("json", "/v1/predict",
                 json.dumps({"instances": [{"age": float(a), "income": float(i)} for a, i in x]}).encode(), js),
        "kserve-v1": ("kserve-v1", "/v1/models/bench:predict", json.dumps({"instances": x.tolist()}).encode(), js),
        "oip-v2": ("oip-v2", "/v2/models/bench/infer", json.dumps(oip).encode(), js),
        "oip-v2 binary": ("oip-v2", "/v2/models/bench/infer", head + raw,
                          {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000, help="requests each way per protocol (default 3,000)")
    ap.add_argument("--rows", type=int, default=1, help="rows per request (default 1)")
    args = ap.parse_args()
    warmup = 200
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "upstream.py").write_text(UPSTREAM)
        up_port = free_port()
        rng = np.random.default_rng(0)
        (d / "ref.csv").write_text("age,income\n" + "".join(
            f"{a:.2f},{i:.0f}\n" for a, i in zip(rng.normal(40, 12, 2000), rng.normal(50000, 15000, 2000), strict=True)))
        upstream = subprocess.Popen([sys.executable, str(d / "upstream.py"), str(up_port)],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        results = []
        try:
            wait_port(up_port, upstream)
            for mode, (protocol, path, body, headers) in requests_for(args.rows).items():
                port, proxy_port = free_port(), free_port()
                paths = ('\n  features: {age: "instances[*].age", income: "instances[*].income"}'
                         '\n  prediction: "predictions[*].label"\n  score: "predictions[*].score"') if protocol == "json" else ""
                (d / "bench.yml").write_text(f"""models:
  - name: bench
    features: [{{name: age}}, {{name: income}}]
    reference: {{path: ref.csv}}
proxy:
  listen_address: 127.0.0.1:{proxy_port}
  upstream: http://127.0.0.1:{up_port}
  protocol: {protocol}{paths}
""")
                exporter = subprocess.Popen([sys.executable, "-m", "modelmon", "serve", "--config", str(d / "bench.yml"),
                                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                try:
                    wait_port(proxy_port, exporter)
                    results.append((mode, *measure(args, path, body, headers, up_port, proxy_port, port, warmup)))
                finally:
                    exporter.terminate()
                    exporter.wait(timeout=10)
        finally:
            upstream.terminate()
            upstream.wait(timeout=10)
    load = Path("/proc/loadavg").read_text().split()[:3] if os.path.exists("/proc/loadavg") else ["?"]
    print(f"modelmon proxy.protocol benchmark: {args.requests:,} requests each way per protocol, {args.rows} row(s) "
          f"per request, sequential keep-alive, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average {' '.join(load)}")
    print(f"{'':15s}{'direct p50/p90/p99':>24s}{'proxy p50/p90/p99':>24s}{'added p50/p90/p99':>24s}  (ms)  recorded rows")
    def fmt(v: np.ndarray) -> str:
        return "/".join(f"{x:.3f}" for x in v)

    for mode, dq, pq, recorded, expected in results:
        print(f"{mode:15s}{fmt(dq):>24s}{fmt(pq):>24s}{fmt(pq - dq):>24s}        {recorded:,.0f} of {expected:,}")


def measure(args: argparse.Namespace, path: str, body: bytes, headers: dict[str, str], up_port: int, proxy_port: int,
            port: int, warmup: int) -> tuple[np.ndarray, np.ndarray, float, int]:
    direct = http.client.HTTPConnection("127.0.0.1", up_port, timeout=10)
    via = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)

    def call(conn: http.client.HTTPConnection) -> float:
        t0 = time.perf_counter()
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        dt = time.perf_counter() - t0
        if resp.status != 200:
            raise SystemExit(f"bad response {resp.status}: {data[:200]!r}")
        return dt

    for _ in range(warmup):
        call(direct)
        call(via)
    d_lat = np.empty(args.requests)
    p_lat = np.empty(args.requests)
    for i in range(args.requests):  # alternate, so load changes hit both alike
        d_lat[i] = call(direct)
        p_lat[i] = call(via)
    expected = (args.requests + warmup) * args.rows
    deadline = time.monotonic() + 10
    recorded = 0.0
    while time.monotonic() < deadline:  # the proxy hands events to the pipeline every 100 ms
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        recorded = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith('modelmon_requests_total{model="bench"'))
        failures = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith(("modelmon_proxy_protocol_failures_total", "modelmon_proxy_extraction_failures_total")))
        if recorded >= expected:
            break
        time.sleep(0.2)
    if failures:
        raise SystemExit(f"{failures:.0f} extraction failures:\n{text}")
    q = [50, 90, 99]
    return np.percentile(d_lat, q) * 1000, np.percentile(p_lat, q) * 1000, recorded, expected


if __name__ == "__main__":
    main()
