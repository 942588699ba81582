"""Flow-run API load: CLIENTS threads, each for SECONDS, create a flow run of FLOW_ID and read it back, over plain HTTP.

Usage: python ha_load.py API_URL FLOW_ID SECONDS CLIENTS. Prints JSON: operations (create + read, both 2xx), failed
requests, requests, seconds, operations per second and the median and 95th percentile of an operation in ms.
"""
from __future__ import annotations

import http.client
import json
import statistics
import sys
import threading
import time
from urllib.parse import urlsplit


def main() -> None:
    url, flow_id, seconds, clients = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    parts = urlsplit(url)
    base = parts.path.rstrip("/")
    body = json.dumps({"flow_id": flow_id, "name": "ha-load"}).encode()
    lock = threading.Lock()
    ops, failed, requests, latencies = [0], [0], [0], []

    def call(method, path, data=None):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.request(method, base + path, body=data, headers={"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    start = time.monotonic()
    end = start + seconds

    def client():
        while time.monotonic() < end:
            began = time.monotonic()
            sent, ok = 1, False
            try:
                status, raw = call("POST", "/flow_runs/", body)
                if status in (200, 201):
                    sent += 1
                    status, _ = call("GET", f"/flow_runs/{json.loads(raw)['id']}")
                    ok = status == 200
            except OSError:
                pass
            with lock:
                requests[0] += sent
                if ok:
                    ops[0] += 1
                    latencies.append((time.monotonic() - began) * 1000)
                else:
                    failed[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    lat = sorted(latencies)
    print(json.dumps({
        "operations": ops[0], "failed": failed[0], "requests": requests[0], "seconds": round(elapsed, 2),
        "ops_per_s": round(ops[0] / elapsed, 2),
        "p50_ms": round(statistics.median(lat), 1) if lat else None,
        "p95_ms": round(lat[int(len(lat) * 0.95) - 1], 1) if lat else None,
    }))


if __name__ == "__main__":
    main()
