"""Benchmark: events per second through POST /api/v1/events, and the exporter's memory.

Starts ``modelmon serve`` in its own process (so its RSS is its own) with one
classification model of 20 numerical features and a reference, then posts
pre-encoded JSON batches of 100 and of 1000 events over keep-alive connections
(every event has a unique id, so the label join buffer fills up to its cap as
in production).  Prints events/s per batch size and the exporter's RSS before,
during and after the run, then one scrape's duration with full windows.

    python bench/ingest.py                      # 1M events in batches of 1000, 200k in batches of 100
    python bench/ingest.py --events 2000000 --clients 1   # one connection: client and exporter take turns
    python bench/ingest.py --outliers both      # per-event outlier scoring on, then off (same run)

Next to the end-to-end figure it prints, measured in the same run on the same
bodies, what the decoders alone achieve: the standard library's ``json.loads``
and the exporter's own msgspec typed decoder (structure and field types checked
in C), so a figure from a loaded machine can still be judged, and the CPU the
exporter and this benchmark's own clients spent per 1000 events (bodies are
encoded before each timed segment, so the clients only send and read).  Last, the p99 of
``/metrics`` while 1000 idle and 200 slowloris connections are open.

Targets: >= 50,000 events/s with batches of 1000 x 20 features and >= 40 % of
the typed decoder's own rate; memory flat after the windows and the join
buffer have filled; /metrics p99 under a second with the idle and slowloris
connections open.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from localservers import free_port
from modelmon.anomaly import fit_outlier_model


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuShare:
    """CPU seconds the exporter and this benchmark's clients spent in the timed segments."""

    def __init__(self, pid: int):
        self.pid = pid
        self.server = self.client = self.wall = 0.0
        self._s0 = self._c0 = self._t0 = 0.0

    def start(self) -> None:
        self._s0, self._c0, self._t0 = cpu_seconds(self.pid), time.process_time(), time.perf_counter()

    def stop(self) -> None:
        self.wall += time.perf_counter() - self._t0
        self.client += time.process_time() - self._c0
        self.server += cpu_seconds(self.pid) - self._s0


def write_config(d: Path, n_features: int, outliers: bool = True) -> Path:
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(n_features)]
    ref = rng.normal(0, 1, (5000, n_features))
    lines = [",".join(names)] + [",".join(f"{v:.5f}" for v in row) for row in ref]
    (d / "ref.csv").write_text("\n".join(lines) + "\n")
    feats = "\n".join(f"      - {{name: {n}, type: numerical}}" for n in names)
    cfg = d / "bench.yml"
    cfg.write_text(f"""models:
  - name: bench
    task: classification
    features:
{feats}
    reference: {{path: ref.csv}}
    outliers: {{enabled: {str(outliers).lower()}}}
""")
    return cfg


def make_template(batch: int, n_features: int, seed: int) -> bytes:
    """One JSON array of ``batch`` events; ids start with a fixed 10-character marker replaced per request."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(0, 1, (batch, n_features)), 4)
    events = [{
        "model": "bench", "version": "1.0", "id": f"@@@@@@@@@@-{i:05d}",
        "features": {f"f{j}": float(x[i, j]) for j in range(n_features)},
        "prediction": int(x[i, 0] > 0), "score": float(abs(x[i, 1]) % 1), "latency_seconds": 0.05,
    } for i in range(batch)]
    return json.dumps(events, separators=(",", ":")).encode()


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"exporter exited: {proc.stdout.read().decode() if proc.stdout else ''}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/-/ready")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("exporter did not become ready")


@functools.cache
def templates_for(batch: int, n_features: int) -> tuple[bytes, ...]:
    return tuple(make_template(batch, n_features, seed) for seed in range(4))


#: Bodies of a phase are encoded before its clock starts when they fit in this many bytes.
PREENCODE_BYTES = 64 * 1024 * 1024


def run_phase(port: int, batch: int, total: int, clients: int, n_features: int, counter: list[int],
              pid: int, checkpoints: list[tuple[int, float]], cpu: CpuShare | None = None) -> float:
    templates = templates_for(batch, n_features)
    requests_needed = total // batch
    lock = threading.Lock()
    next_req = [0]
    errors: list[str] = []

    def encode(i: int) -> bytes:  # unique ids per request: the 10-character marker becomes the request number
        return templates[i % len(templates)].replace(b"@@@@@@@@@@", b"%010d" % (counter[0] + i), batch)

    bodies = [encode(i) for i in range(requests_needed)] if requests_needed * len(templates[0]) <= PREENCODE_BYTES else None

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                i = next_req[0]
                if i >= requests_needed:
                    break
                next_req[0] += 1
            body = bodies[i] if bodies is not None else encode(i)
            conn.request("POST", "/api/v1/events", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200 or json.loads(data)["accepted"] != batch:
                errors.append(f"{resp.status} {data[:200]!r}")
                break
            done = (i + 1) * batch
            if (counter[0] + done) % 200_000 == 0:
                checkpoints.append((counter[0] + done, rss_mib(pid)))
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    if cpu is not None:
        cpu.start()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if cpu is not None:
        cpu.stop()
    if errors:
        raise SystemExit(f"ingestion failed: {errors[0]}")
    counter[0] += requests_needed * batch
    return requests_needed * batch / elapsed


class DecoderRates:
    """Events/s of json.loads alone and of the exporter's typed decoder alone on bodies of 1000 events,
    measured in short slices between the end-to-end segments so that all three see the same machine load."""

    def __init__(self, n_features: int):
        from modelmon.config import load_config
        from modelmon.ingest import EventValidator, decode_items

        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(write_config(Path(tmp), n_features))
        validator = EventValidator(cfg.models)
        self.bodies = [make_template(1000, n_features, seed).replace(b"@@@@@@@@@@", b"%010d" % seed, 1000)
                       for seed in range(4)]
        assert validator.decode_typed(decode_items(self.bodies[0])) is not None
        self.fns = {"json": json.loads, "typed": lambda b: validator.decode_typed(decode_items(b))}
        self.events = {k: 0 for k in self.fns}
        self.seconds = {k: 0.0 for k in self.fns}

    def slice(self, seconds: float = 0.3) -> None:
        for name, fn in self.fns.items():
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                fn(self.bodies[n % len(self.bodies)])
                n += 1
            self.seconds[name] += time.perf_counter() - t0
            self.events[name] += n * 1000

    def rate(self, name: str) -> float:
        return self.events[name] / self.seconds[name]


class InProcessStages:
    """The exporter's own work on the same bodies in this process, without HTTP, split into stages.

    An exporter built from the same config (its socket is bound, never served), warmed up until its
    windows hold events, then fed batch after batch: the typed decode, the columns built from the
    structs, freeing the structs, and the pipeline (windows, drift counters, outlier scores, the
    label join buffer).  The decode here runs between the pipeline's work, as in the exporter, so it
    is dearer than in the tight loop of :class:`DecoderRates`; that gap and the freeing are the part
    of the budget the decoder itself takes.
    """

    STAGES = ("decode", "columns", "free", "pipeline")

    def __init__(self, n_features: int, warm_batches: int = 150):
        from modelmon.app import Exporter
        from modelmon.config import load_config
        from modelmon.ingest import EventValidator, ItemValidator, decode_items

        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(write_config(Path(tmp), n_features))
            self.exporter = Exporter(cfg)
        self.model = cfg.models[0]
        self.validator = EventValidator(cfg.models)
        self.item_validator, self.decode_items = ItemValidator, decode_items
        self.templates = templates_for(1000, n_features)
        self.n = 0
        self.seconds = dict.fromkeys(self.STAGES, 0.0)
        self.batches = 0
        for _ in range(warm_batches):
            self._one(timed=False)

    def _one(self, timed: bool = True) -> None:
        body = self.templates[self.n % len(self.templates)].replace(b"@@@@@@@@@@", b"X%09d" % self.n, 1000)
        self.n += 1
        clock = time.process_time
        t0 = clock()
        typed = self.validator.decode_typed(self.decode_items(body))
        t1 = clock()
        v = self.item_validator(self.model, "api")
        v.add_typed(typed, time.time())
        batch = v.batch()
        t2 = clock()
        del typed, v
        t3 = clock()
        self.exporter.pipeline.submit(batch)
        t4 = clock()
        if timed:
            for name, dt in zip(self.STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                self.seconds[name] += dt
            self.batches += 1

    def slice(self, batches: int = 20) -> None:
        for _ in range(batches):
            self._one()

    def ms(self, name: str) -> float:
        """CPU milliseconds per 1000 events of one stage."""
        return self.seconds[name] * 1e3 / max(1, self.batches)

    def close(self) -> None:
        self.exporter.stop()


def scrape_p99_under_idle_and_slowloris(port: int, idle: int = 1000, slow: int = 200,
                                        scrapes: int = 200) -> tuple[float, float, int]:
    """(p50, p99) seconds of /metrics while ``idle`` + ``slow`` connections are open, and how many stayed open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, idle + slow + 256)), hard))
    socks = []
    for i in range(idle + slow):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i >= idle:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        socks.append(s)
    stop = threading.Event()

    def drip() -> None:  # a byte per slowloris socket every second, as the attack does
        while not stop.wait(1.0):
            for s in socks[idle:]:
                try:
                    s.send(b"a")
                except OSError:
                    pass

    t = threading.Thread(target=drip, daemon=True)
    t.start()
    times = []
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(scrapes):
            t0 = time.perf_counter()
            c.request("GET", "/metrics")
            r = c.getresponse()
            r.read()
            times.append(time.perf_counter() - t0)
            if r.status != 200:
                raise SystemExit(f"/metrics answered {r.status} under idle and slowloris connections")
        c.close()
    finally:
        stop.set()
        t.join()
        still = 0
        for s in socks:
            s.setblocking(False)
            try:
                still += s.recv(1) != b""
            except BlockingIOError:
                still += 1
            except OSError:
                pass
            s.close()
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99) - 1], still


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="events in batches of 1000 (default 1M)")
    ap.add_argument("--small-events", type=int, default=200_000, help="events in batches of 100 (default 200k)")
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--clients", type=int, default=2,
                    help="concurrent keep-alive connections (default 2: one posts while the exporter works on the other)")
    ap.add_argument("--outliers", choices=("on", "off", "both"), default="on",
                    help="per-event outlier scoring (models[].outliers.enabled); both: one exporter each, in turn")
    ap.add_argument("--repeat", type=int, default=1,
                    help="with --outliers both: alternate on/off this many times and report medians (a busy machine)")
    args = ap.parse_args()
    results: dict[str, list[float]] = {"on": [], "off": []}
    modes = ("on", "off") if args.outliers == "both" else (args.outliers,)
    for k in range(max(1, args.repeat) if len(modes) == 2 else 1):
        for mode in (modes if k % 2 == 0 else modes[::-1]):
            print(f"--- outlier scoring {mode}")
            results[mode].append(run_exporter(args, outliers=mode == "on"))
    if len(modes) == 2:
        on, off = float(np.median(results["on"])), float(np.median(results["off"]))
        print(f"batches of 1000, outlier scoring on: {on:,.0f} events/s, off: {off:,.0f} events/s "
              f"({(on / off - 1) * 100:+.1f} %; medians of {len(results['on'])} runs each, alternating); "
              f"load {Path('/proc/loadavg').read_text().split()[0]}")
    if "on" in modes:
        print(f"outlier scoring alone, in process: {scoring_seconds(args.features) * 1e6:.0f} us per batch of 1000 "
              f"({args.features} features)")


def scoring_seconds(n_features: int, reps: int = 200) -> float:
    """CPU time of scoring one batch of 1000 events, the part of ingestion scoring adds."""
    rng = np.random.default_rng(0)
    model = fit_outlier_model({f"f{i}": rng.normal(0, 1, 5000) for i in range(n_features)})
    x = rng.normal(0, 1, (n_features, 1000))
    t0 = time.process_time()
    for _ in range(reps):
        model.outlying(model.score(x))
    return (time.process_time() - t0) / reps


def run_exporter(args: argparse.Namespace, outliers: bool) -> float:
    """One exporter process through both phases; returns the batches-of-1000 rate."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_config(Path(tmp), args.features, outliers)
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelmon", "serve", "--config", str(cfg), f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_ready(port, proc)
            time.sleep(0.5)
            rss0 = rss_mib(proc.pid)
            counter = [0]
            checkpoints: list[tuple[int, float]] = []
            print(f"modelmon ingest benchmark: {args.features} numerical features, {args.clients} client connection(s), "
                  f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
            print(f"exporter RSS at start:                  {rss0:8.1f} MiB")
            small = run_phase(port, 100, args.small_events, args.clients, args.features, counter, proc.pid, [])
            print(f"batches of  100: {args.small_events:>9,} events  {small:>9,.0f} events/s")
            rss1 = rss_mib(proc.pid)
            decoders = DecoderRates(args.features)
            stages = InProcessStages(args.features)
            cpu = CpuShare(proc.pid)
            segment = 50_000
            big_seconds = 0.0
            for done in range(0, args.events, segment):
                n = min(segment, args.events - done)
                big_seconds += n / run_phase(port, 1000, n, args.clients, args.features, counter, proc.pid,
                                             checkpoints, cpu)
                decoders.slice()
                stages.slice()
            stages.close()
            big = args.events / big_seconds
            print(f"batches of 1000: {args.events:>9,} events  {big:>9,.0f} events/s   (target >= 50,000)")
            loads_rate, typed_rate = decoders.rate("json"), decoders.rate("typed")
            print(f"  same bodies, json.loads alone:           {loads_rate:>9,.0f} events/s   (in slices between the segments)")
            print(f"  same bodies, msgspec typed decoder alone: {typed_rate:>9,.0f} events/s"
                  f"   end to end = {100 * big / typed_rate:.0f} % of it (target >= 40 %)")
            per = 1000 / args.events  # ms per 1000 events
            print(f"  CPU per 1000 events: exporter {cpu.server * 1e3 * per:.1f} ms, this benchmark's clients "
                  f"{cpu.client * 1e3 * per:.1f} ms, wall {cpu.wall * 1e3 * per:.1f} ms "
                  f"(clients {100 * cpu.client / (cpu.server + cpu.client):.0f} % of the CPU both used)")
            tight = 1e6 / typed_rate  # ms per 1000 events
            total = sum(stages.ms(name) for name in stages.STAGES)
            print(f"  the exporter's work in this process, no HTTP (CPU ms per 1000 events, {stages.batches} batches "
                  "between the segments): " + ", ".join(f"{name} {stages.ms(name):.2f}" for name in stages.STAGES)
                  + f"; sum {total:.2f} ms = {1e6 / total:,.0f} events/s")
            print(f"  the 40 % target leaves {tight * 2.5:.2f} ms per 1000 events for everything; the typed decoder "
                  f"takes {tight:.2f} ms in its tight loop, {stages.ms('decode'):.2f} ms + {stages.ms('free'):.2f} ms "
                  "to free its structs between the pipeline's work")
            rss2 = rss_mib(proc.pid)
            print(f"exporter RSS before the 1000-batches:   {rss1:8.1f} MiB  (after {args.small_events:,} events)")
            for n, r in checkpoints:
                print(f"exporter RSS after {n:>9,} events:    {r:8.1f} MiB")
            print(f"exporter RSS after all {counter[0]:>9,} events: {rss2:8.1f} MiB")
            t0 = time.perf_counter()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("GET", "/metrics")
            text = c.getresponse().read().decode()
            scrape = time.perf_counter() - t0
            accepted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith('modelmon_events_accepted_total{model="bench"'))
            print(f"first scrape with full windows (drift of {args.features} features x 2 windows): {scrape * 1000:.0f} ms")
            print(f"events accepted per /metrics: {accepted:,.0f} (sent {counter[0]:,})")
            p50, p99, still = scrape_p99_under_idle_and_slowloris(port)
            print(f"/metrics with 1000 idle + 200 slowloris connections open: p50 {p50 * 1000:.0f} ms, "
                  f"p99 {p99 * 1000:.0f} ms ({still} of 1200 still open at the end; the exporter closes them "
                  f"at the 10 s request-head deadline)")
            load = Path("/proc/loadavg").read_text().split()[0]
            print(f"exporter RSS at the end: {rss_mib(proc.pid):.1f} MiB;  load average: {load}")
            outlying = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith('modelmon_outlier_events_total{model="bench"'))
            print(f"outlying events counted: {outlying:,.0f}")
            return big
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
