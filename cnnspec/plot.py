"""The training curve as a standalone SVG picture (no plotting library): loss and, for classification,
accuracy against epochs, train and validation, with every batch's value as a point.

Scales are chosen so that a picture does not lie: the loss axis starts at 0 (a linear scale) unless the
values span two or more decades, then it is logarithmic with a tick per decade; accuracy always runs from
0 to 100 %. Tick values are round numbers (1, 2, 2.5 or 5 times a power of ten). Margins are sized from the
longest tick label, so no label is clipped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

FONT = 12                       # px; the SVG's font size
CHAR = 0.62 * FONT              # px; the width of a character of a sans-serif font at FONT, generously
WIDTH = 760
PANEL = 250                     # px; the height of one panel's plot area
MAX_POINTS = 800                # per-batch points drawn; more are averaged in groups of consecutive batches
COLORS = {"train": "#1f77b4", "batch": "#7fb2dc", "val": "#d62728"}


@dataclass
class TrainingHistory:
    """What `cnnspec train` records. batches: (x in epochs, loss, accuracy or None) for every batch, x being
    the fraction of training done after it (batch 2 of 4 in epoch 1 is 0.5). epochs: one dict per epoch with
    "epoch", "loss" and optionally "accuracy", "val_loss", "val_accuracy"."""

    batches: list[tuple[float, float, float | None]] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)


def nice_step(span: float, ticks: int = 5) -> float:
    """A round step (1, 2, 2.5 or 5 x 10^k) that cuts `span` into about `ticks` intervals."""
    if not span > 0 or not math.isfinite(span):
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * power >= raw * 0.999:
            return m * power
    return 10 * power


def linear_ticks(lo: float, hi: float, ticks: int = 5) -> list[float]:
    """Round tick values from a multiple of the step at or below lo to one at or above hi."""
    step = nice_step(hi - lo, ticks)
    start, stop = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [_round(k * step, step) for k in range(start, max(stop, start + 1) + 1)]


def _round(value: float, step: float) -> float:
    return round(value, max(0, -math.floor(math.log10(step)) + 2))


def tick_labels(ticks: list[float]) -> list[str]:
    """Tick values as people write them, all with the same decimals: 0, 0.25, 0.5; 0, 500, 1000; 2e+06."""
    big = max(abs(t) for t in ticks)
    if big >= 1e5 or 0 < big < 1e-3:
        return ["0" if t == 0 else f"{t:.3g}" for t in ticks]
    for d in range(0, 8):
        if all(abs(round(t, d) - t) <= 1e-9 * max(big, 1e-12) for t in ticks):
            return [f"{t:.{d}f}" for t in ticks]
    return [f"{t:.3g}" for t in ticks]


def decade_label(value: float) -> str:
    """A power of ten: 0.001, 0.1, 1, 100, 10000 written out; smaller and larger as 1e-05, 1e+06."""
    return f"{value:g}" if 1e-3 <= value < 1e5 else f"{value:.0e}"


@dataclass
class _Scale:
    lo: float
    hi: float
    log: bool
    ticks: list[float]
    labels: list[str]
    note: str = ""

    def frac(self, v: float) -> float:
        if self.log:
            v = max(v, self.lo)
            return (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        return (v - self.lo) / (self.hi - self.lo)


def loss_scale(values: list[float]) -> _Scale:
    """Linear from 0 (or from a negative minimum), or logarithmic when the positive values span two decades
    or more and none is negative; on a log scale a loss of exactly 0 is drawn on the bottom edge."""
    finite = [v for v in values if math.isfinite(v)]
    positive = [v for v in finite if v > 0]
    if positive and min(finite) >= 0 and max(positive) / min(positive) >= 100:
        a, b = math.floor(math.log10(min(positive))), math.ceil(math.log10(max(positive)))
        every = max(1, math.ceil((b - a) / 8))  # at most ~8 labelled decades
        a -= a % every
        ticks = [10.0 ** k for k in range(a, b + 1, every)]
        zero = " (0 on the bottom edge)" if len(positive) < len(finite) else ""
        return _Scale(10.0 ** a, 10.0 ** b, True, ticks, [decade_label(t) for t in ticks], zero)
    if not finite:
        return _Scale(0.0, 1.0, False, [0.0, 0.5, 1.0], ["0.0", "0.5", "1.0"])
    lo, hi = min(min(finite), 0.0), max(finite)
    if hi <= lo:
        hi = lo + 1.0
    ticks = linear_ticks(lo, hi)
    return _Scale(ticks[0], ticks[-1], False, ticks, tick_labels(ticks))


def percent_scale() -> _Scale:
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    return _Scale(0.0, 1.0, False, ticks, [f"{round(t * 100)}" for t in ticks])


def epoch_scale(last: float) -> _Scale:
    last = max(last, 1e-9)
    if last <= 1:
        ticks = linear_ticks(0.0, 1.0, 4)   # 0, 0.25 ... in quarters or fifths of the only epoch
    else:
        ticks = linear_ticks(0.0, last, 8)
        step = ticks[1] - ticks[0]
        if step < 1:  # whole epochs are the natural unit once there are several
            ticks = [float(k) for k in range(0, math.ceil(last) + 1)]
    return _Scale(0.0, ticks[-1], False, ticks, tick_labels(ticks))


def _thin(points: list[tuple[float, float]]) -> tuple[list[tuple[float, float]], int]:
    """At most MAX_POINTS points: groups of consecutive batches averaged (x and y). Returns (points, group)."""
    group = max(1, math.ceil(len(points) / MAX_POINTS))
    if group == 1:
        return points, 1
    out = []
    for i in range(0, len(points), group):
        chunk = points[i:i + group]
        out.append((sum(p[0] for p in chunk) / len(chunk), sum(p[1] for p in chunk) / len(chunk)))
    return out, group


def training_svg(history: TrainingHistory, *, title: str, loss_label: str, x_note: str = "") -> str:
    """The picture: a loss panel and, when the history has accuracies, an accuracy panel below it."""
    batches = [(x, l, a) for x, l, a in history.batches]
    epochs = history.epochs
    has_acc = any(a is not None for _, _, a in batches) or any("accuracy" in e for e in epochs)
    has_val = any("val_loss" in e for e in epochs)
    last_x = max([x for x, _, _ in batches] + [float(e["epoch"]) for e in epochs] + [1.0])
    xs = epoch_scale(last_x)
    loss_values = [l for _, l, _ in batches] + [e["loss"] for e in epochs] + \
        [e["val_loss"] for e in epochs if "val_loss" in e]
    ls = loss_scale(loss_values)
    panels = [("loss", loss_label, ls, 1, "loss")]
    if has_acc:
        panels.append(("accuracy", "accuracy (%)", percent_scale(), 2, "accuracy"))

    label_chars = max(len(t) for p in panels for t in p[2].labels)
    title_rows = max(len(_wrap(p[1] + (", log scale" + p[2].note if p[2].log else ""), PANEL - 10)) for p in panels)
    left = round(14 + title_rows * (FONT + 4) + 4 + label_chars * CHAR + 10)  # axis titles, tick labels, marks
    right = 24
    top = 56                                                 # title and legend
    gap = 48                                                 # between panels: the upper x tick labels
    bottom = 58                                              # x tick labels and the x axis title
    plot_w = WIDTH - left - right
    height = top + len(panels) * PANEL + (len(panels) - 1) * gap + bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Arial, Helvetica, sans-serif" '
           f'font-size="{FONT}">',
           f'<title>{escape(title)}</title>',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text id="title" x="{WIDTH / 2:.1f}" y="20" text-anchor="middle" font-size="{FONT + 2}" '
           f'font-weight="bold">{escape(title)}</text>']
    out.extend(_legend(left, 40, has_val, _thin([(x, l) for x, l, _ in batches])[1]))

    def px(v: float) -> float:
        return left + plot_w * xs.frac(v)

    for i, (pid, ylabel, scale, column, key) in enumerate(panels):
        y0 = top + i * (PANEL + gap)

        def py(v: float, scale=scale, y0=y0) -> float:
            return y0 + PANEL * (1 - scale.frac(v))

        out.append(f'<g id="{pid}-panel">')
        # grid and y ticks
        out.append('<g class="y-ticks">')
        for t, text in zip(scale.ticks, scale.labels):
            y = py(t)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e6e6e6"/>'
                       f'<line x1="{left - 5}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="black"/>'
                       f'<text class="tick" x="{left - 8}" y="{y + FONT * 0.35:.1f}" text-anchor="end">{escape(text)}</text>')
        out.append('</g>')
        out.append('<g class="x-ticks">')
        for t, text in zip(xs.ticks, xs.labels):
            x = px(t)
            out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + PANEL}" stroke="#f0f0f0"/>'
                       f'<line x1="{x:.1f}" y1="{y0 + PANEL}" x2="{x:.1f}" y2="{y0 + PANEL + 5}" stroke="black"/>'
                       f'<text class="tick" x="{x:.1f}" y="{y0 + PANEL + 8 + FONT:.1f}" text-anchor="middle">'
                       f'{escape(text)}</text>')
        out.append('</g>')
        out.append(f'<rect x="{left}" y="{y0}" width="{plot_w}" height="{PANEL}" fill="none" stroke="black"/>')
        cy = y0 + PANEL / 2
        rows = _wrap(ylabel + (", log scale" + scale.note if scale.log else ""), PANEL - 10)
        for r, text in enumerate(rows):  # rotated: the first row leftmost
            x = 14 + r * (FONT + 4)
            out.append(f'<text class="axis-label" x="{x}" y="{cy:.1f}" text-anchor="middle" '
                       f'transform="rotate(-90 {x} {cy:.1f})" dy="{FONT * 0.35:.1f}">{escape(text)}</text>')
        if i == len(panels) - 1:  # the panels share the x axis: its title once, under the last
            out.append(f'<text class="axis-label" x="{left + plot_w / 2:.1f}" y="{y0 + PANEL + 14 + 2 * FONT:.1f}" '
                       f'text-anchor="middle">epoch{escape(x_note)}</text>')
        # series: per-batch points, then epoch means (train), then validation
        points, group = _thin([(b[0], b[column]) for b in batches if _finite(b[column])])
        out.append(f'<g id="train-batch-{key}" fill="{COLORS["batch"]}" fill-opacity="0.6">')
        out.extend(f'<circle cx="{px(x):.1f}" cy="{py(v):.1f}" r="{2 if len(points) > 200 else 3}"/>'
                   for x, v in points)
        out.append('</g>')
        mean = [(e["epoch"] - 0.5, e[key]) for e in epochs if _finite(e.get(key))]
        mark = 4 if len(epochs) <= 25 else 2.5 if len(epochs) <= 80 else 0
        out.append(_series(f"train-epoch-{key}", mean, px, py, COLORS["train"], dashed=False, mark=mark))
        val = [(float(e["epoch"]), e[f"val_{key}"]) for e in epochs if _finite(e.get(f"val_{key}"))]
        if has_val:
            out.append(_series(f"val-{key}", val, px, py, COLORS["val"], dashed=True, mark=mark))
        out.append('</g>')
    out.append('</svg>')
    return "\n".join(out) + "\n"


def _wrap(text: str, width: float) -> list[str]:
    """`text` in rows of at most `width` px, broken at spaces."""
    rows: list[str] = []
    for word in text.split(" "):
        if rows and len(rows[-1] + " " + word) * CHAR <= width:
            rows[-1] += " " + word
        else:
            rows.append(word)
    return rows


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def _series(sid: str, pts: list[tuple[float, float]], px, py, color: str, dashed: bool, mark: float) -> str:
    coords = " ".join(f"{px(x):.1f},{py(v):.1f}" for x, v in pts)
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    line = f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{coords}"/>' if len(pts) > 1 else ""
    if not mark and len(pts) == 1:
        mark = 4  # a single point needs a mark to be seen at all
    marks = "".join(f'<circle cx="{px(x):.1f}" cy="{py(v):.1f}" r="{mark}" fill="{color if not dashed else "white"}" '
                    f'stroke="{color}" stroke-width="{min(2, mark / 2):g}"/>' for x, v in pts) if mark else ""
    return f'<g id="{sid}">{line}{marks}</g>'


def _legend(x: float, y: float, has_val: bool, group: int) -> list[str]:
    items = [("batch", f"train, each batch" + (f" (mean of {group})" if group > 1 else "")),
             ("train", "train, epoch mean (at mid-epoch)")]
    if has_val:
        items.append(("val", "validation, end of epoch"))
    out = ['<g id="legend">']
    for kind, text in items:
        color = COLORS["val" if kind == "val" else "train"]
        if kind == "batch":
            out.append(f'<circle cx="{x + 10}" cy="{y - 4}" r="3" fill="{COLORS["batch"]}" fill-opacity="0.6"/>')
        else:
            dash = ' stroke-dasharray="6 4"' if kind == "val" else ""
            fill = "white" if kind == "val" else color
            out.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 20}" y2="{y - 4}" stroke="{color}" stroke-width="2"{dash}/>'
                       f'<circle cx="{x + 10}" cy="{y - 4}" r="4" fill="{fill}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{x + 26}" y="{y}">{escape(text)}</text>')
        x += 26 + len(text) * CHAR + 22
    out.append('</g>')
    return out
