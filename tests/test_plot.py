"""plot.py: reading train.py's JSONL logs, clipping diverged runs, and drawing a figure."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import plot

ROOT = Path(__file__).resolve().parent.parent


def write_log(run_dir, rows):
    run_dir.mkdir(parents=True)
    with open(run_dir / "log.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def make_runs(tmp_path):
    good = [{"step": s, "time": 0.5 * s, "tokens": 64 * s, "train_loss": 8 - s, "val_loss": 8.2 - s} for s in range(5)]
    bad = [{"step": s, "time": 0.5 * s, "tokens": 64 * s, "train_loss": 8 + 10 * s,
            "val_loss": (8.1 if s == 0 else float("nan"))} for s in range(5)]
    bad[1]["val_loss"] = 30.0
    write_log(tmp_path / "good", good)
    write_log(tmp_path / "bad", bad)
    return tmp_path / "good", tmp_path / "bad"


def test_read_log_picks_metric_and_axis(tmp_path):
    good, bad = make_runs(tmp_path)
    name, xs, ys = plot.read_log(good, "val_loss", "time")
    assert name == "good" and xs == [0.0, 0.5, 1.0, 1.5, 2.0] and ys == pytest.approx([8.2, 7.2, 6.2, 5.2, 4.2])
    name, xs, ys = plot.read_log(bad, "val_loss", "step")
    assert xs == [0, 1, 2, 3, 4] and ys[1] == 30.0 and math.isnan(ys[2])


def test_clip_top_and_divergence(tmp_path):
    runs = [plot.read_log(r, "val_loss", "step") for r in make_runs(tmp_path)]
    assert plot.clip_top(runs) == pytest.approx(1.1 * 8.2)  # median of the starts (8.1, 8.2): the upper one
    runs.append(("high_start", [0, 1], [26.0, 3.0]))  # starts far higher (no norm) but learns
    assert plot.clip_top(runs) == pytest.approx(1.1 * 8.2)
    runs.append(("spike", [0, 1, 2], [8.0, 50.0, 5.0]))  # blew up, then the lr decayed and it recovered
    assert [plot.diverged(ys) for _, _, ys in runs] == [False, True, False, True]


def test_missing_log_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no log at"):
        plot.read_log(tmp_path / "nope", "val_loss", "step")


def test_draws_png(tmp_path):
    pytest.importorskip("matplotlib", reason="plot.py's figure needs matplotlib (optional dependency)")
    good, bad = make_runs(tmp_path)
    out = tmp_path / "curves.png"
    r = subprocess.run([sys.executable, str(ROOT / "plot.py"), str(good), str(bad), "--x=time", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
