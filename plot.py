"""
Draw learning curves from the JSONL logs that train.py writes (out_dir/log.jsonl), several runs on one figure.

$ python plot.py out/lr_1e-3 out/lr_3e-3 --metric=val_loss --out curves.png
$ python plot.py out/run_a out/run_b --x=time --logy --out curves_time.png
$ python plot.py out/* --x=tokens --metric=train_loss --title="LR sweep"

Each run is a directory holding log.jsonl (or the .jsonl file itself); its legend name is the directory name.
Diverged runs (non-finite values, or values far above where the runs started) are clipped at the top of the
plot and marked with an x, so the runs that did learn stay readable.
"""
import argparse
import json
import math
import sys
from pathlib import Path

X_KEYS = {"step": "step", "time": "time", "tokens": "tokens"}  # --x choice -> log key
X_LABELS = {"step": "optimizer step", "time": "wall-clock (s)", "tokens": "tokens seen"}


def read_log(run, metric, x):
    """Return (name, xs, ys) for one run: the rows of its log.jsonl that carry the metric."""
    path = Path(run)
    if path.is_dir():
        path = path / "log.jsonl"
    if not path.exists():
        raise SystemExit(f"error: no log at {path}: pass run directories written by train.py (out_dir)")
    xs, ys = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get(metric) is None or row.get(X_KEYS[x]) is None:
            continue
        xs.append(row[X_KEYS[x]])
        y = row[metric]
        ys.append(float(y) if y is not None else math.nan)  # json writes NaN/Infinity for diverged losses
    name = path.parent.name if path.name == "log.jsonl" else path.stem
    return name, xs, ys


def clip_top(runs):
    """A y limit that keeps the runs that learned readable: a bit above the largest starting value."""
    firsts = [ys[0] for _, _, ys in runs if ys and math.isfinite(ys[0])]
    return 1.1 * max(firsts) if firsts else None


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("runs", nargs="+", help="run directories (out_dir of train.py) or log.jsonl files")
    p.add_argument("--x", default="step", choices=sorted(X_KEYS), help="x axis")
    p.add_argument("--metric", default="val_loss", help="log key for y: val_loss, train_loss, lr, grad_norm")
    p.add_argument("--out", default="curves.png", help="output image (PNG, SVG, PDF by extension)")
    p.add_argument("--logy", action="store_true", help="log-scale y axis")
    p.add_argument("--title", default="", help="figure title")
    args = p.parse_args()

    try:
        import matplotlib
        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("error: plot.py needs matplotlib: pip install matplotlib")

    runs = [read_log(r, args.metric, args.x) for r in args.runs]
    runs = [r for r in runs if r[1]]
    if not runs:
        sys.exit(f"error: no run has '{args.metric}' in its log; try --metric=train_loss")
    top = clip_top(runs)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for name, xs, ys in runs:
        # subtle: a diverged run is drawn up to the clip line, then marked, instead of stretching the axis
        bad = [i for i, y in enumerate(ys) if not math.isfinite(y) or (top is not None and y > top)]
        if bad:
            cut = bad[0]
            line, = ax.plot(xs[:cut + 1], [min(y, top) if math.isfinite(y) else top for y in ys[:cut + 1]],
                            label=f"{name} (diverged)")
            ax.plot([xs[cut]], [top], marker="x", markersize=9, color=line.get_color())
        else:
            ax.plot(xs, ys, label=name)
    if top is not None and not args.logy:
        ax.set_ylim(top=top)
    if args.logy:
        ax.set_yscale("log")
    ax.set_xlabel(X_LABELS[args.x])
    ax.set_ylabel(args.metric)
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out} ({len(runs)} runs)")


if __name__ == "__main__":
    main()
