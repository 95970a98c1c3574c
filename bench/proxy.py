"""Benchmark: the reverse proxy under load, next to the model server alone and nginx.

Starts, each in its own process on loopback:

* a small aiohttp model server (``POST /v1/predict`` returns a JSON prediction
  for each instance),
* ``modelmon serve`` with the proxy in front of it (feature, prediction and
  score extraction on unless ``--no-extract``),
* a bare pass-through proxy on aiohttp (low-level server and pooled client,
  nothing else): the floor of any proxy built on that library, so what
  modelmon's proxy costs beyond it is its own,
* Debian's ``nginx`` as a reference reverse proxy (one worker, upstream
  keep-alive, temp config),

then drives each with ``wrk`` (16 connections, POST of one JSON instance) in
the same run, in interleaved rounds so that changing load hits all three
alike, and prints throughput, latency p50/p99 and what each proxy adds.  It
also checks that the exporter recorded every proxied request.

    python bench/proxy.py                         # 3 rounds x 10 s per target
    python bench/proxy.py --duration 5 --rounds 1 --no-extract
    python bench/proxy.py --inference-us 1000   # a model that spends 1 ms of CPU per prediction
    python bench/proxy.py --upstream stdlib     # a threading model server (http.server)
    python bench/proxy.py --peers               # also a minimal asyncio+httptools forwarder (pip install httptools uvloop)

Targets: proxy throughput >= 80 % of the model server alone, added latency
p50 <= 1 ms and p99 <= 5 ms.  Note that on a 2-core machine the model
server, the proxy, nginx and wrk share the cores: a Python proxy needs about
as much CPU per request as the Python model server behind it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from localservers import free_port, wait_port

UPSTREAM = r'''
import json, sys, time
from aiohttp import web

WORK = float(sys.argv[2]) / 1e6  # seconds of CPU per request: the model's own inference

async def predict(request):
    doc = await request.json()
    if WORK:
        end = time.perf_counter() + WORK
        while time.perf_counter() < end:
            pass
    preds = [{"label": int(x["age"] > 40), "score": round(min(1.0, x["age"] / 80), 4)} for x in doc["instances"]]
    return web.json_response({"predictions": preds}, headers={"X-Model-Version": "3.1"})

app = web.Application()
app.router.add_post("/v1/predict", predict)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
'''

#: A slower model server: the standard library's threading HTTP server (a thread per connection).
UPSTREAM_STDLIB = r'''
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORK = float(sys.argv[2]) / 1e6

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_POST(self):
        doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if WORK:
            end = time.perf_counter() + WORK
            while time.perf_counter() < end:
                pass
        preds = [{"label": int(x["age"] > 40), "score": round(min(1.0, x["age"] / 80), 4)} for x in doc["instances"]]
        out = json.dumps({"predictions": preds}).encode()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Model-Version: 3.1\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(out), out))
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''

#: The floor of a proxy on aiohttp: its low-level server and pooled client, forwarding method, path,
#: headers and body and nothing else (no framing checks, deadlines, capture, extraction or metrics).
#: What modelmon's proxy costs beyond this is its own; what this costs is the library's.
BARE_PROXY = r'''
import asyncio, sys
import aiohttp
from aiohttp import web

UPSTREAM = sys.argv[2]
DROP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}

async def main():
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=60),
                                    auto_decompress=False, skip_auto_headers=("Accept", "Accept-Encoding",
                                    "User-Agent", "Content-Type"), cookie_jar=aiohttp.DummyCookieJar())

    async def handle(request):
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in DROP}
        async with session.request(request.method, UPSTREAM + request.raw_path, headers=headers, data=body) as r:
            data = await r.read()
            out = {k: v for k, v in r.headers.items() if k.lower() not in DROP}
            return web.Response(body=data, status=r.status, headers=out)

    server = web.Server(handle, access_log=None)
    await asyncio.get_running_loop().create_server(server, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    await asyncio.Event().wait()

asyncio.run(main())
'''

#: A peer, not a product: a minimal forwarder on asyncio protocols and httptools (llhttp's C parser),
#: one upstream connection per client connection, bodies kept for capture.  It has none of the
#: proxy's guarantees (deadlines, caps, streaming, 502s); it shows what a proxy whose per-request
#: path is a C parser plus a few Python callbacks costs on this machine.  Run only when httptools
#: is installed (``--peers``; uvloop too for the second variant).
HTTPTOOLS_PROXY = r'''
import asyncio, sys, collections
import httptools
DROP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"te", b"trailer", b"upgrade", b"proxy-connection"}
UP_HOST, UP_PORT = sys.argv[2].split(":")
captured = collections.deque(maxlen=10000)

class Upstream(asyncio.Protocol):
    def __init__(self, client):
        self.client = client; self.parser = httptools.HttpResponseParser(self); self.headers = []; self.body = []
    def connection_made(self, t): self.t = t
    def data_received(self, data): self.parser.feed_data(data)
    def on_header(self, k, v):
        if k.lower() not in DROP: self.headers.append(b"%s: %s\r\n" % (k, v))
    def on_body(self, b): self.body.append(b)
    def on_message_complete(self):
        body = b"".join(self.body); status = self.parser.get_status_code()
        self.client.respond(status, self.headers, body); self.headers = []; self.body = []
    def connection_lost(self, exc): self.client.upstream_lost()

class Client(asyncio.Protocol):
    def __init__(self):
        self.parser = httptools.HttpRequestParser(self); self.up = None; self.pending = collections.deque(); self.busy = False
    def connection_made(self, t):
        self.t = t
        asyncio.ensure_future(self._connect())
    async def _connect(self):
        loop = asyncio.get_running_loop()
        _, self.up = await loop.create_connection(lambda: Upstream(self), UP_HOST, int(UP_PORT))
        self._next()
    def data_received(self, data):
        try: self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.t.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"); self.t.close()
    def on_message_begin(self): self.url = b""; self.h = []; self.b = []
    def on_url(self, u): self.url += u
    def on_header(self, k, v):
        if k.lower() not in DROP: self.h.append(b"%s: %s\r\n" % (k, v))
    def on_body(self, b): self.b.append(b)
    def on_message_complete(self):
        body = b"".join(self.b)
        head = b"%s %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n" % (
            self.parser.get_method(), self.url, b"".join(self.h), len(body))
        self.pending.append((head + body, body)); self._next()
    def _next(self):
        if self.busy or self.up is None or not self.pending: return
        self.busy = True; msg, self.req_body = self.pending.popleft(); self.up.t.write(msg)
    def respond(self, status, headers, body):
        captured.append((self.req_body, body))
        if self.t.is_closing():
            return
        self.t.write(b"HTTP/1.1 %d OK\r\n%sContent-Length: %d\r\n\r\n%s" % (status, b"".join(headers), len(body), body))
        self.busy = False; self._next()
    def upstream_lost(self): self.t.close()
    def connection_lost(self, exc):
        if self.up: self.up.t.close()

async def main():
    await asyncio.get_running_loop().create_server(Client, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    await asyncio.Event().wait()
if "uvloop" in sys.argv:
    import uvloop
    uvloop.install()
asyncio.run(main())
'''

NGINX = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream model {{ server 127.0.0.1:{up_port}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"instances": [{"age": 42.5, "income": 51000.0}]}'
wrk.headers["Content-Type"] = "application/json"
"""




_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(wrk: str, url: str, script: Path, seconds: float, connections: int) -> dict[str, float]:
    out = subprocess.run([wrk, "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
                         check=False, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_err = re.search(r"Socket errors: (.*)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50": _ms(lat["50"]), "p99": _ms(lat["99"]), "requests": total,
            "non2xx": int(errors.group(1)) if errors else 0, "socket_errors": sock_err.group(1) if sock_err else ""}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children still running (nginx's worker)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per target (default 3)")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--no-extract", action="store_true", help="proxy without feature/prediction extraction")
    ap.add_argument("--no-nginx", action="store_true")
    ap.add_argument("--inference-us", type=float, default=0.0,
                    help="CPU microseconds the model server spends per prediction (default 0: a bare JSON app)")
    ap.add_argument("--upstream", choices=("aiohttp", "stdlib"), default="aiohttp",
                    help="model server: a bare aiohttp app (default), or the standard library's threading server")
    ap.add_argument("--peers", action="store_true",
                    help="also run the asyncio+httptools forwarder (and with uvloop), if those are installed")
    args = ap.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found (apt-get install wrk)")
    nginx = None if args.no_nginx else (
        shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None))

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "upstream.py").write_text(UPSTREAM if args.upstream == "aiohttp" else UPSTREAM_STDLIB)
        (d / "post.lua").write_text(WRK_SCRIPT)
        (d / "bare_proxy.py").write_text(BARE_PROXY)
        up_port, port, proxy_port, nginx_port, bare_port = free_port(), free_port(), free_port(), free_port(), free_port()
        extract = "" if args.no_extract else """
  features: {age: "instances[*].age", income: "instances[*].income"}
  prediction: "predictions[*].label"
  score: "predictions[*].score"
  version_header: X-Model-Version
"""
        rows = ["age,income"] + [f"{30 + (i % 40)}.5,{40000 + 37 * i}" for i in range(2000)]
        (d / "ref.csv").write_text("\n".join(rows) + "\n")
        (d / "bench.yml").write_text(f"""models:
  - name: bench
    features: [{{name: age}}, {{name: income}}]
    reference: {{path: ref.csv}}
proxy:
  listen_address: 127.0.0.1:{proxy_port}
  upstream: http://127.0.0.1:{up_port}{extract}
""")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parent.parent / "exporter"), os.environ.get("PYTHONPATH", "")]))
        procs = [
            subprocess.Popen([sys.executable, str(d / "upstream.py"), str(up_port), str(args.inference_us)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
            subprocess.Popen([sys.executable, "-m", "modelmon", "serve", "--config", str(d / "bench.yml"),
                              f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env),
            subprocess.Popen([sys.executable, str(d / "bare_proxy.py"), str(bare_port), f"http://127.0.0.1:{up_port}"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
        ]
        owners: dict[str, subprocess.Popen | None] = {"model server alone": None, "modelmon proxy": procs[1],
                                                      "bare aiohttp proxy": procs[2]}
        targets = {"model server alone": f"http://127.0.0.1:{up_port}/v1/predict",
                   "modelmon proxy": f"http://127.0.0.1:{proxy_port}/v1/predict",
                   "bare aiohttp proxy": f"http://127.0.0.1:{bare_port}/v1/predict"}
        if args.peers and importlib.util.find_spec("httptools"):
            (d / "httptools_proxy.py").write_text(HTTPTOOLS_PROXY)
            variants = [("asyncio+httptools", [])]
            if importlib.util.find_spec("uvloop"):
                variants.append(("asyncio+httptools+uvloop", ["uvloop"]))
            for name, extra in variants:
                peer_port = free_port()
                proc = subprocess.Popen([sys.executable, str(d / "httptools_proxy.py"), str(peer_port),
                                         f"127.0.0.1:{up_port}", *extra],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_port(peer_port, proc)
                procs.append(proc)
                targets[name] = f"http://127.0.0.1:{peer_port}/v1/predict"
                owners[name] = proc
        if nginx:
            for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
                (d / sub).mkdir()
            (d / "nginx.conf").write_text(NGINX.format(tmp=d, up_port=up_port, port=nginx_port))
            procs.append(subprocess.Popen([nginx, "-p", str(d), "-c", str(d / "nginx.conf")],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
            targets["nginx (reference)"] = f"http://127.0.0.1:{nginx_port}/v1/predict"
            owners["nginx (reference)"] = procs[-1]
        try:
            wait_port(up_port, procs[0])
            wait_port(proxy_port, procs[1])
            wait_port(bare_port, procs[2])
            if nginx:
                wait_port(nginx_port, procs[-1])
            for url in targets.values():  # warm-up: connections, pools, caches
                run_wrk(wrk, url, d / "post.lua", 1, args.connections)
            load_before = loadavg()
            results: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, url in targets.items():
                    watched = [procs[0]] + ([owners[name]] if owners[name] is not None else [])
                    before = [cpu_seconds(p.pid) for p in watched]
                    r = run_wrk(wrk, url, d / "post.lua", args.duration, args.connections)
                    after = [cpu_seconds(p.pid) for p in watched]
                    served = max(1, r["requests"])
                    r["upstream_cpu_us"] = (after[0] - before[0]) / served * 1e6
                    r["proxy_cpu_us"] = (after[1] - before[1]) / served * 1e6 if len(watched) > 1 else 0.0
                    results[name].append(r)
            load_after = loadavg()
            time.sleep(0.5)  # the proxy hands events to the pipeline every 100 ms
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            recorded = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith('modelmon_requests_total{model="bench"'))
            proxied = sum(r["requests"] for r in results["modelmon proxy"])
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()

    def best(name: str) -> dict[str, float]:  # the round with the highest throughput (least disturbed)
        return max(results[name], key=lambda r: r["rps"])

    def median(name: str, key: str) -> float:
        vals = sorted(r[key] for r in results[name])
        return vals[len(vals) // 2]

    print(f"modelmon proxy benchmark: wrk, {args.connections} connections, {args.rounds} x {args.duration:g} s per target, "
          f"extraction {'off' if args.no_extract else 'on'}, {args.upstream} model server, "
          f"model inference {args.inference_us:g} us, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"load average before {load_before}, after {load_after}")
    print(f"{'':26s}{'req/s':>10s}{'p50 ms':>9s}{'p99 ms':>9s}{'errors':>8s}{'model us':>10s}{'proxy us':>10s}"
          "   (median of rounds; CPU per request; per round: req/s)")
    base = {k: median("model server alone", k) for k in ("rps", "p50", "p99")}
    for name in targets:
        errs = sum(r["non2xx"] for r in results[name])
        print(f"{name:26s}{median(name, 'rps'):10.0f}{median(name, 'p50'):9.2f}{median(name, 'p99'):9.2f}{errs:8d}"
              f"{median(name, 'upstream_cpu_us'):10.0f}{median(name, 'proxy_cpu_us'):10.0f}   "
              + " ".join(f"{r['rps']:.0f}" for r in results[name])
              + (f"  socket errors: {results[name][0]['socket_errors']}" if results[name][0]["socket_errors"] else ""))
    for name in targets:
        if name == "model server alone":
            continue
        ratio = median(name, "rps") / base["rps"]
        print(f"{name:26s} throughput {ratio:6.1%} of the model server alone; "
              f"added p50 {median(name, 'p50') - base['p50']:+.2f} ms, p99 {median(name, 'p99') - base['p99']:+.2f} ms")
    print("targets (modelmon proxy): throughput >= 80 %, added p50 <= 1 ms, added p99 <= 5 ms")
    print("CPU per request (us) is what each process spent per request served in that run: with the model server "
          "and the proxy sharing the cores, the proxy's throughput is bounded by cores / (model us + proxy us).")
    print(f"requests recorded by the exporter: {recorded:,.0f} (proxied, warm-up included: >= {proxied:,})")
    print(json.dumps({"results": results, "best": {n: best(n) for n in targets}}, default=str))


if __name__ == "__main__":
    main()
