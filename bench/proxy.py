"""Benchmark: latency the reverse proxy adds in front of a model server.

Starts a trivial JSON model server (its own process) and ``modelmon serve``
with the proxy in front of it (its own process, feature and prediction
extraction on), then sends the same small JSON request alternately straight to
the model server and through the proxy over keep-alive connections, one at a
time.  Prints p50/p90/p99 of both and the added latency (proxy minus direct,
per percentile), and checks that the exporter recorded every proxied request.

    python bench/proxy.py                  # 10,000 requests each way
    python bench/proxy.py --requests 50000 --no-extract

Target (issue 4): p99 added latency under 2 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

UPSTREAM = r'''
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_POST(self):
        doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        x = doc["instances"][0]
        out = json.dumps({"predictions": [{"label": int(x["age"] > 40), "score": 0.7}]}).encode()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out))
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stdout.read().decode() if proc.stdout else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000, help="requests each way (default 10,000)")
    ap.add_argument("--no-extract", action="store_true", help="proxy without feature/prediction extraction")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "upstream.py").write_text(UPSTREAM)
        up_port, port, proxy_port = free_port(), free_port(), free_port()
        extract = "" if args.no_extract else """
  features: {age: "instances[*].age", income: "instances[*].income"}
  prediction: "predictions[*].label"
  score: "predictions[*].score"
"""
        rng = np.random.default_rng(0)
        (d / "ref.csv").write_text("age,income\n" + "".join(
            f"{a:.2f},{i:.0f}\n" for a, i in zip(rng.normal(40, 12, 2000), rng.normal(50000, 15000, 2000))))
        (d / "bench.yml").write_text(f"""models:
  - name: bench
    features: [{{name: age}}, {{name: income}}]
    reference: {{path: ref.csv}}
proxy:
  listen_address: 127.0.0.1:{proxy_port}
  upstream: http://127.0.0.1:{up_port}{extract}
""")
        procs = [
            subprocess.Popen([sys.executable, str(d / "upstream.py"), str(up_port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
            subprocess.Popen([sys.executable, "-m", "modelmon", "serve", "--config", str(d / "bench.yml"),
                              f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
        ]
        try:
            wait_port(up_port, procs[0])
            wait_port(proxy_port, procs[1])
            body = json.dumps({"instances": [{"age": 42.5, "income": 51000.0}]}).encode()
            headers = {"Content-Type": "application/json"}
            direct = http.client.HTTPConnection("127.0.0.1", up_port, timeout=10)
            via = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)

            def call(conn: http.client.HTTPConnection) -> float:
                t0 = time.perf_counter()
                conn.request("POST", "/v1/predict", body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                dt = time.perf_counter() - t0
                if resp.status != 200 or b"predictions" not in data:
                    raise SystemExit(f"bad response {resp.status}: {data[:200]!r}")
                return dt

            for _ in range(300):  # warm-up: connections, pools, caches
                call(direct)
                call(via)
            d_lat = np.empty(args.requests)
            p_lat = np.empty(args.requests)
            for i in range(args.requests):  # alternate, so load changes hit both alike
                d_lat[i] = call(direct)
                p_lat[i] = call(via)
            time.sleep(0.5)  # the proxy hands events to the pipeline every 100 ms
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/metrics")
            text = c.getresponse().read().decode()
            recorded = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith('modelmon_requests_total{model="bench"'))
            q = [50, 90, 99]
            dq = np.percentile(d_lat, q) * 1000
            pq = np.percentile(p_lat, q) * 1000
            print(f"modelmon proxy benchmark: {args.requests:,} requests each way, sequential keep-alive, "
                  f"extraction {'off' if args.no_extract else 'on'}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
            print(f"{'':18s}{'p50':>9s}{'p90':>9s}{'p99':>9s}   (ms)")
            print(f"{'direct':18s}" + "".join(f"{v:9.3f}" for v in dq))
            print(f"{'through proxy':18s}" + "".join(f"{v:9.3f}" for v in pq))
            print(f"{'added by proxy':18s}" + "".join(f"{v:9.3f}" for v in pq - dq) + "   (target: p99 < 2 ms)")
            print(f"requests recorded by the exporter: {recorded:,.0f} (proxied {args.requests + 300:,})")
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=10)


if __name__ == "__main__":
    main()
