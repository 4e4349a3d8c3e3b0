#!/usr/bin/env python3
# HTTP connection figures of a hub binary: RSS with 5,000 idle keep-alive connections and their
# closing at http.idle_timeout; 200 clients sending their headers a byte a second and their cut at
# http.header_read_timeout. Usage: scripts/http-figures.py target/release/scorehub
# (needs an open-file limit above 5,000; loopback only).
import asyncio, os, subprocess, sys, time, re, tempfile, urllib.request, json

BIN = sys.argv[1]
IDLE_M = 'scorehub_http_closed_total{reason="idle_timeout"}'
HEAD_M = 'scorehub_http_closed_total{reason="header_timeout"}'
SECRET = "8f2a6c1e9b3d47f0a5c8e1b2d3f4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c"

def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])

def start(env):
    d = tempfile.mkdtemp()
    e = {k: v for k, v in os.environ.items() if not k.startswith("SCOREHUB_")}
    e.update({"SCOREHUB_HTTP__LISTEN": "127.0.0.1:0", "SCOREHUB_STORAGE__DIR": d,
              "SCOREHUB_AUTH__SECRET": SECRET, "NO_COLOR": "1"})
    e.update(env)
    p = subprocess.Popen([BIN, "serve"], env=e, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in p.stderr:
        m = re.search(r"listening addr=([0-9.:]+)", line)
        if m:
            return p, m.group(1)

def metric(addr, name):
    t = urllib.request.urlopen(f"http://{addr}/metrics").read().decode()
    for l in t.splitlines():
        if l.startswith(name):
            return l

async def kept_alive(host, port):
    r, w = await asyncio.open_connection(host, port)
    w.write(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    n = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
    await r.readexactly(n)
    return r, w

async def idle(n, idle_timeout):
    p, addr = start({"SCOREHUB_HTTP__IDLE_TIMEOUT": idle_timeout, "SCOREHUB_HTTP__MAX_CONNECTIONS": "6000"})
    host, port = addr.split(":")
    time.sleep(0.3)
    before = rss(p.pid)
    conns = []
    t0 = time.monotonic()
    for i in range(0, n, 100):
        conns += await asyncio.gather(*[kept_alive(host, port) for _ in range(100)])
    opened = time.monotonic() - t0
    after = rss(p.pid)
    print(f"idle: {n} keep-alive connections opened in {opened:.1f}s; RSS {before} KiB -> {after} KiB "
          f"= {(after-before)*1024//n} B/connection; {metric(addr, 'scorehub_http_connections')}")
    code = urllib.request.urlopen(f"http://{addr}/readyz").status
    print(f"idle: /readyz {code} with them open")
    async def closed(r):
        await r.read()
        return time.monotonic() - t0
    times = await asyncio.gather(*[closed(r) for r, _ in conns])
    print(f"idle: all {n} closed by the hub {min(times):.1f}..{max(times):.1f}s after the first was opened "
          f"(idle_timeout {idle_timeout}); RSS now {rss(p.pid)} KiB; {metric(addr, IDLE_M)}")
    p.terminate(); p.wait()

async def slowloris(n, header_timeout):
    p, addr = start({"SCOREHUB_HTTP__HEADER_READ_TIMEOUT": header_timeout})
    host, port = addr.split(":")
    head = b"GET /healthz HTTP/1.1\r\nHost: hub\r\nUser-Agent: slowloris\r\n\r\n"
    async def one():
        r, w = await asyncio.open_connection(host, port)
        t0 = time.monotonic()
        sent = 0
        reader = asyncio.ensure_future(r.read())
        while not reader.done():
            if sent < len(head):
                try:
                    w.write(head[sent:sent+1]); await w.drain(); sent += 1
                except Exception:
                    pass
            await asyncio.wait([reader], timeout=1.0)
            if time.monotonic() - t0 > 60:
                return None
        return sent, time.monotonic() - t0
    res = await asyncio.gather(*[one() for _ in range(n)])
    held = [x for x in res if x]
    print(f"slowloris: {n} clients one byte a second; {len(held)} cut, after {min(s for s,_ in held)}..{max(s for s,_ in held)} bytes, "
          f"{min(t for _,t in held):.2f}..{max(t for _,t in held):.2f}s after connecting (header_read_timeout {header_timeout}); "
          f"RSS {rss(p.pid)} KiB; {metric(addr, HEAD_M)}")
    p.terminate(); p.wait()

asyncio.run(idle(5000, "20s"))
asyncio.run(slowloris(200, "2s"))
