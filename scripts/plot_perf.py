#!/usr/bin/env python3
"""Plots the hot-game load-test figures against the number of fans.

Reads the loadtest JSON reports in docs/perf/ (`loadtest --json-out`, as
scripts/loadtest-figures.sh writes them), takes the hot-game runs (one game,
every fan follows it, so each event is one delivery per fan) and draws, against
the number of fans:

  (a) latency p50 / p99 / p99.9: from the frame's `ts` (the hub's ingest time,
      whole milliseconds) to receipt, and from just before the event was posted
      to receipt (`send->recv`, the generator's monotonic clock), with the
      goals of issue 4 as dotted lines;
  (b) hub CPU per delivery in microseconds, 1e6 / (deliveries per hub
      CPU-second), with the goals (2 us = 500k/CPU-s for the hot game,
      1 us = 1M/CPU-s where frames share writes) and the many-games run at
      10k fans, if present, as one extra point.

Runs whose window had both cores busy are shaded: the hub and the generator
share the two cores, so there the latency includes queueing on both sides.

Only the Python standard library: the SVG is written by hand. A PNG is made
beside it when `rsvg-convert` (Debian: librsvg2-bin) is installed.

    scripts/plot_perf.py                      # docs/perf/*.json -> docs/perf/fans.svg (+ .png)
    scripts/plot_perf.py --in DIR --out F.svg # other reports / output
    scripts/plot_perf.py --no-png
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
from html import escape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Goals of issue 4 (10k fans, 20 events/s on one game; 2-core machine).
GOAL_LATENCY_MS = {"p50": 2.0, "p99": 10.0, "p999": 40.0}
GOAL_US_HOT = 1e6 / 500_000  # >= 500k deliveries per hub CPU-second
GOAL_US_SHARED = 1e6 / 1_000_000  # >= 1M where a fan's frames share a write

# One process may open 20,000 files on this machine: the generator caps itself
# at 19,000 fans, so "20k" is measured as 19k.
FD_LIMIT = 20_000

PCTS = [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")]
COLORS = {"p50": "#1f77b4", "p99": "#d95f02", "p999": "#7b3294"}
CPU_COLOR = "#1b7837"
MANY_COLOR = "#b2182b"


# ---------------------------------------------------------------- data


def load(directory: str):
    """The hot-game runs by fan count, plus the many-games run (or None)."""
    hot: dict[int, dict] = {}
    many = None
    files = sorted(glob.glob(os.path.join(directory, "*.json")))
    if not files:
        sys.exit(f"plot_perf: no *.json reports in {directory}")
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                r = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            print(f"plot_perf: skipping {path}: {e}", file=sys.stderr)
            continue
        if not isinstance(r, dict) or r.get("idle") or not r.get("deliveries"):
            continue
        r["_file"] = os.path.basename(path)
        stalled = (r.get("stalled") or {}).get("asked", 0)
        # The curve is the issue's: 20 events/s on one game, every fan reading.
        if r.get("scenario") == "hot-game" and r.get("target_rate") == 20 and not stalled:
            fans = int(r["fans"])
            if fans in hot:
                print(
                    f"plot_perf: two hot-game runs at {fans} fans ({hot[fans]['_file']}, "
                    f"{r['_file']}); using {r['_file']}",
                    file=sys.stderr,
                )
            hot[fans] = r
        elif r.get("scenario") == "many-games":
            many = r
    if not hot:
        sys.exit(f"plot_perf: no hot-game reports in {directory}")
    return dict(sorted(hot.items())), many


def us_per_delivery(r: dict) -> float | None:
    d = r.get("deliveries_per_hub_cpu_s")
    return 1e6 / d if d else None


def saturated(r: dict) -> bool:
    m = r.get("machine") or {}
    cores = m.get("cores") or 0
    return bool(cores) and (m.get("busy_cores") or 0) >= 0.95 * cores


def pct(h: dict | None, key: str, scale: float = 1.0) -> float | None:
    if not h or not h.get("count"):
        return None
    v = h.get(key)
    return None if v is None else v * scale


# ---------------------------------------------------------------- svg


class Svg:
    def __init__(self, width: int, height: int):
        self.w, self.h = width, height
        self.parts: list[str] = []

    def add(self, s: str) -> None:
        self.parts.append(s)

    def line(self, x1, y1, x2, y2, color="#000", width=1.0, dash=None, opacity=1.0):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        o = f' stroke-opacity="{opacity}"' if opacity != 1.0 else ""
        self.add(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            f'stroke="{color}" stroke-width="{width}"{d}{o}/>'
        )

    def polyline(self, pts, color, width=2.0, dash=None):
        if len(pts) < 2:
            return
        d = f' stroke-dasharray="{dash}"' if dash else ""
        p = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        self.add(
            f'<polyline points="{p}" fill="none" stroke="{color}" stroke-width="{width}" '
            f'stroke-linejoin="round"{d}/>'
        )

    def circle(self, x, y, r, color, fill=None):
        self.add(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" stroke="{color}" stroke-width="1.5" '
            f'fill="{fill or color}"/>'
        )

    def diamond(self, x, y, r, color):
        self.add(
            f'<polygon points="{x:.1f},{y - r:.1f} {x + r:.1f},{y:.1f} {x:.1f},{y + r:.1f} '
            f'{x - r:.1f},{y:.1f}" fill="{color}" stroke="{color}"/>'
        )

    def rect(self, x, y, w, h, fill, stroke="none", opacity=1.0):
        self.add(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{fill}" '
            f'stroke="{stroke}" fill-opacity="{opacity}"/>'
        )

    def text(self, x, y, s, size=12, anchor="start", color="#222", weight="normal",
             rotate=None, italic=False):
        t = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate is not None else ""
        st = ' font-style="italic"' if italic else ""
        self.add(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{color}" font-weight="{weight}"{st}{t}>{escape(s)}</text>'
        )

    def render(self) -> str:
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
            f'viewBox="0 0 {self.w} {self.h}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">\n'
            f'<rect width="{self.w}" height="{self.h}" fill="#fff"/>\n'
        )
        return head + "\n".join(self.parts) + "\n</svg>\n"


class Panel:
    """A plot area with a log x axis (fans) and a log or linear y axis."""

    def __init__(self, svg: Svg, x, y, w, h, xmin, xmax, ymin, ymax, ylog):
        self.svg, self.x, self.y, self.w, self.h = svg, x, y, w, h
        self.xmin, self.xmax, self.ymin, self.ymax, self.ylog = xmin, xmax, ymin, ymax, ylog

    def px(self, v: float) -> float:
        f = (math.log10(v) - math.log10(self.xmin)) / (math.log10(self.xmax) - math.log10(self.xmin))
        return self.x + f * self.w

    def py(self, v: float) -> float:
        if self.ylog:
            v = max(v, self.ymin)
            f = (math.log10(v) - math.log10(self.ymin)) / (math.log10(self.ymax) - math.log10(self.ymin))
        else:
            f = (v - self.ymin) / (self.ymax - self.ymin)
        return self.y + self.h - f * self.h

    def frame(self, title, ylabel, xticks, yticks, ylabels, minor_y=()):
        s = self.svg
        for v in minor_y:
            s.line(self.x, self.py(v), self.x + self.w, self.py(v), "#eee")
        for v in yticks:
            s.line(self.x, self.py(v), self.x + self.w, self.py(v), "#ddd")
        for v in xticks:
            s.line(self.px(v), self.y, self.px(v), self.y + self.h, "#ddd")
        s.rect(self.x, self.y, self.w, self.h, "none", stroke="#444")
        for v, lab in zip(yticks, ylabels):
            s.line(self.x - 5, self.py(v), self.x, self.py(v), "#444")
            s.text(self.x - 8, self.py(v) + 4, lab, size=11, anchor="end")
        for v in xticks:
            s.line(self.px(v), self.y + self.h, self.px(v), self.y + self.h + 5, "#444")
            s.text(self.px(v), self.y + self.h + 18, fans_label(v), size=11, anchor="middle")
        s.text(self.x + self.w / 2, self.y - 12, title, size=14, anchor="middle", weight="bold")
        s.text(self.x - 46, self.y + self.h / 2, ylabel, size=12, anchor="middle", rotate=-90)
        s.text(self.x + self.w / 2, self.y + self.h + 36,
               "fans on one game (log scale)", size=12, anchor="middle")

    def shade_from(self, x0: float, lines: list[str], at: float):
        """Shades x >= x0; the label's first line sits at y value `at`."""
        x = self.px(x0)
        self.svg.rect(x, self.y, self.x + self.w - x, self.h, "#f2e6c9", opacity=0.6)
        for i, line in enumerate(lines):
            self.svg.text(x + 5, self.py(at) + 13 * i, line, size=10, color="#8a6d1f",
                          italic=True)

    def fd_limit(self, bottom: bool = False):
        x = self.px(FD_LIMIT)
        self.svg.line(x, self.y, x, self.y + self.h, "#999", width=1.2, dash="2 3")
        y = self.y + self.h - 6 if bottom else self.y + 12
        self.svg.text(x - 3, y, "fd limit 20,000", size=9, anchor="end", color="#777")


def fans_label(v: float) -> str:
    return f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"


def log_ticks(lo: float, hi: float):
    """Decades and 2/5 multiples between lo and hi (inclusive)."""
    major, minor = [], []
    e = math.floor(math.log10(lo))
    while 10**e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10**e
            if lo * 0.9999 <= v <= hi * 1.0001:
                (major if m == 1 else minor).append(v)
        e += 1
    return major, minor


def num_label(v: float) -> str:
    return f"{v:g}" if v >= 1 else f"{v:.3g}"


def legend(svg: Svg, x, y, rows, width):
    """rows: (kind, color, dash, label); kind is 'line', 'dot' or 'diamond'."""
    h = 16 * len(rows) + 8
    svg.rect(x, y, width, h, "#fff", stroke="#bbb", opacity=0.92)
    for i, (kind, color, dash, label) in enumerate(rows):
        cy = y + 12 + 16 * i
        if kind == "diamond":
            svg.diamond(x + 18, cy, 5, color)
        else:
            svg.line(x + 6, cy, x + 30, cy, color, width=2 if kind != "goal" else 1.3, dash=dash)
            if kind == "dot":
                svg.circle(x + 18, cy, 3, color)
        svg.text(x + 36, cy + 4, label, size=10.5)


# ---------------------------------------------------------------- plot


def load_floor(directory: str) -> float | None:
    """µs per loopback write measured by `write-floor`, from write-floor.txt."""
    try:
        with open(os.path.join(directory, "write-floor.txt"), encoding="utf-8") as f:
            m = re.search(r"([0-9.]+) µs per write", f.read())
    except OSError:
        return None
    return float(m.group(1)) if m else None


def plot(hot: dict[int, dict], many: dict | None, source: str, floor_us: float | None) -> str:
    fans = list(hot)
    svg = Svg(1160, 565)
    top, height, pw = 92, 370, 430
    xmin = min(fans) / 1.35
    xmax = max(max(fans), FD_LIMIT) * 1.25
    xticks = fans
    first_sat = next((f for f in fans if saturated(hot[f])), None)

    svg.text(svg.w / 2, 26,
             "scorehub hot game (one game, 20 events/s): latency and hub CPU per delivery against fans",
             size=16, anchor="middle", weight="bold")
    svg.text(svg.w / 2, 46,
             "hub and load generator on one 2-core VM, loopback; one process holds at most 19,000 "
             "fans (fd limit 20,000), so the 20k point is 19k",
             size=11.5, anchor="middle", color="#555")

    # (a) latency, log y
    vals = []
    for r in hot.values():
        for key, _ in PCTS:
            for v in (pct(r.get("latency_ms"), key), pct(r.get("send_latency_us"), key, 1e-3)):
                if v:
                    vals.append(v)
    vals += list(GOAL_LATENCY_MS.values())
    lo = 10 ** math.floor(math.log10(min(vals)))
    hi = 10 ** math.ceil(math.log10(max(vals)))
    a = Panel(svg, 90, top, pw, height, xmin, xmax, lo, hi, ylog=True)
    major, minor = log_ticks(lo, hi)
    shade_x = None
    if first_sat is not None:
        below = [f for f in fans if f < first_sat]
        shade_x = math.sqrt(first_sat * max(below)) if below else xmin
        a.shade_from(shade_x, ["both cores busy:", "includes the", "generator's queueing"],
                     at=math.sqrt(lo * hi) * 0.9)
    a.frame("(a) latency to the fan", "latency, ms (log scale)", xticks,
            major + minor, [num_label(v) for v in major + minor])
    a.fd_limit()
    for key, name in PCTS:
        c = COLORS[key]
        g = GOAL_LATENCY_MS[key]
        svg.line(a.x, a.py(g), a.x + a.w, a.py(g), c, width=1.2, dash="2 4", opacity=0.9)
        svg.text(a.x + a.w - 4, a.py(g) - 4, f"{name} goal {g:g} ms", size=9.5, anchor="end", color=c)
        ts = [(a.px(f), a.py(v)) for f in fans if (v := pct(hot[f].get("latency_ms"), key))]
        sr = [(a.px(f), a.py(v)) for f in fans if (v := pct(hot[f].get("send_latency_us"), key, 1e-3))]
        svg.polyline(sr, c, width=1.6, dash="6 4")
        svg.polyline(ts, c, width=2.2)
        for x, y in ts:
            svg.circle(x, y, 3.5, c)
    legend(svg, a.x + 8, a.y + 8, [
        ("dot", COLORS["p50"], None, "p50"),
        ("dot", COLORS["p99"], None, "p99"),
        ("dot", COLORS["p999"], None, "p99.9"),
        ("line", "#555", None, "solid: frame ts → receipt"),
        ("line", "#555", "6 4", "dashed: post sent → receipt"),
        ("goal", "#555", "2 4", "dotted: goal at 10k fans"),
    ], 178)

    # (b) CPU per delivery, linear y from 0
    pts = [(f, us_per_delivery(hot[f])) for f in fans]
    pts = [(f, v) for f, v in pts if v]
    many_us = us_per_delivery(many) if many else None
    top_v = max([v for _, v in pts] + ([many_us] if many_us else []) + [GOAL_US_HOT])
    step = 1 if top_v <= 8 else 2
    ymax = step * math.ceil(top_v * 1.18 / step)
    b = Panel(svg, 90 + pw + 150, top, pw, height, xmin, xmax, 0, ymax, ylog=False)
    yt = [i * step for i in range(int(ymax / step) + 1)]
    if shade_x is not None:
        b.shade_from(shade_x, ["both cores busy:", "frames queue, so", "writes start to batch"],
                     at=ymax * 0.72)
    b.frame("(b) hub CPU per delivery", "µs of hub CPU (user + kernel) per delivery", xticks,
            yt, [f"{v:g}" for v in yt])
    b.fd_limit(bottom=True)
    for g, lab in ((GOAL_US_HOT, "goal hot game: 2 µs (500k/CPU-s)"),
                   (GOAL_US_SHARED, "goal shared writes: 1 µs (1M/CPU-s)")):
        svg.line(b.x, b.py(g), b.x + b.w, b.py(g), "#444", width=1.2, dash="2 4")
        svg.text(b.x + 6, b.py(g) - 4, lab, size=9.5, color="#444")
    if floor_us is not None:
        svg.line(b.x, b.py(floor_us), b.x + b.w, b.py(floor_us), "#8c510a", width=1.4, dash="6 3")
        svg.text(b.x + b.w * 0.30, b.py(floor_us) + 14,
                 f"floor: one loopback writev alone, {floor_us:.2f} µs (write-floor)",
                 size=9.5, color="#8c510a")
    svg.polyline([(b.px(f), b.py(v)) for f, v in pts], CPU_COLOR, width=2.2)
    for f, v in pts:
        x, y = b.px(f), b.py(v)
        svg.circle(x, y, 3.5, CPU_COLOR)
        svg.text(x + 7, y - 8, f"{v:.2f}", size=10.5, color=CPU_COLOR, weight="bold")
        cores = hot[f].get("hub_cores")
        if cores is not None:
            svg.text(x, y + 17, f"hub {cores:.2f} cores", size=9, anchor="middle", color="#666")
    rows = [("dot", CPU_COLOR, None, "hot game, 20 events/s")]
    if many_us:
        x, y = b.px(many["fans"]), b.py(many_us)
        svg.diamond(x, y, 6, MANY_COLOR)
        svg.text(x + 9, y + 4, f"{many_us:.2f}", size=10.5, color=MANY_COLOR, weight="bold")
        rows.append(("diamond", MANY_COLOR, None,
                     f"many games, {many['fans'] // 1000}k fans × {many.get('subs_per_fan')} of {many.get('games')} games, "
                     f"{many.get('events_accepted_per_s', 0):.0f} ev/s"))
    legend(svg, b.x + 8, b.y + 8, rows, 330 if many_us else 170)

    svg.text(svg.w / 2, svg.h - 26,
             "µs per delivery = 1e6 / (deliveries per hub CPU-second); hub CPU = utime + stime "
             "from /proc/<pid>/stat over the 10 s window",
             size=10.5, anchor="middle", color="#555")
    svg.text(svg.w / 2, svg.h - 10, f"data: {source} (scripts/plot_perf.py)",
             size=10.5, anchor="middle", color="#555")
    return svg.render()


def table(hot: dict[int, dict], many: dict | None) -> str:
    out = [f"{'fans':>6} {'deliv/s':>9} {'deliv/CPU-s':>11} {'µs/deliv':>8} {'hub cores':>9} "
           f"{'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'busy':>5}  file"]
    rows = list(hot.items()) + ([(many["fans"], many)] if many else [])
    for f, r in rows:
        lat = r.get("latency_ms") or {}
        out.append(
            f"{f:>6} {r['deliveries_per_s']:>9.0f} {r['deliveries_per_hub_cpu_s']:>11.0f} "
            f"{us_per_delivery(r):>8.2f} {r['hub_cores']:>9.2f} {lat.get('p50', 0):>7.2f} "
            f"{lat.get('p99', 0):>7.2f} {lat.get('p999', 0):>8.2f} "
            f"{'yes' if saturated(r) else 'no':>5}  {r['_file']}"
        )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--in", dest="indir", default=os.path.join(ROOT, "docs", "perf"),
                    help="directory of loadtest JSON reports (default: docs/perf)")
    ap.add_argument("--out", default=None, help="SVG to write (default: <in>/fans.svg)")
    ap.add_argument("--no-png", action="store_true", help="do not make a PNG beside the SVG")
    args = ap.parse_args()

    hot, many = load(args.indir)
    out = args.out or os.path.join(args.indir, "fans.svg")
    try:
        source = os.path.relpath(args.indir, ROOT)
    except ValueError:
        source = args.indir
    if source.startswith(".."):
        source = args.indir
    with open(out, "w", encoding="utf-8") as f:
        f.write(plot(hot, many, source.rstrip("/") + "/*.json", load_floor(args.indir)))
    print(table(hot, many))
    print(f"wrote {out}")

    if not args.no_png:
        rsvg = shutil.which("rsvg-convert")
        png = os.path.splitext(out)[0] + ".png"
        if rsvg:
            subprocess.run([rsvg, "--zoom", "1.5", "--format", "png", "--output", png, out],
                           check=True)
            print(f"wrote {png}")
        else:
            print("no rsvg-convert (apt-get install librsvg2-bin): SVG only", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
