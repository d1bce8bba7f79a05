"""train.py: batches, evaluation, checkpoints (round trip, atomic, exact resume), DDP, bad inputs, an end-to-end run."""
import dataclasses
import io
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from model import ModelConfig, TransformerLM
from optim import AdamW

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 64


def _write_tokens(path, ids, vocab_size=VOCAB, tokenizer_hash="none"):
    """A token file + sidecar in tokenize_data.py's format."""
    np.asarray(ids, dtype=np.uint16).tofile(path)
    meta = {"dtype": "uint16", "num_tokens": len(ids), "vocab_size": vocab_size, "tokenizer_hash": tokenizer_hash,
            "tokenizer_dir": "tok", "source": "test", "source_bytes": 0}
    Path(f"{path}.json").write_text(json.dumps(meta))


def _pattern(n, seed):
    """Learnable tokens: a fixed cycle of 37 ids with 10% random noise."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n) * 7 % 37
    noise = rng.random(n) < 0.1
    ids[noise] = rng.integers(0, VOCAB, noise.sum())
    return ids


@pytest.fixture
def run_args(tmp_path):
    """Arguments for a tiny in-process run on pattern data (train 20k tokens, val 4k)."""
    _write_tokens(tmp_path / "train.bin", _pattern(20_000, 0))
    _write_tokens(tmp_path / "val.bin", _pattern(4_000, 1))
    return [f"--train_data={tmp_path / 'train.bin'}", f"--val_data={tmp_path / 'val.bin'}",
            f"--tokenizer_dir={tmp_path / 'tok'}", f"--vocab_size={VOCAB}", "--context_length=16", "--d_model=32",
            "--num_layers=2", "--num_heads=4", "--batch_size=4", "--device=cpu", "--warmup_steps=2",
            "--eval_iters=2", "--log_interval=1", "--lr=3e-3"]


def _run(args, out_dir, *extra):
    train.main([*args, f"--out_dir={out_dir}", *extra])
    return torch.load(Path(out_dir) / "ckpt.pt", weights_only=True)


def _error(args, *extra):
    with pytest.raises(SystemExit) as e:
        train.main([*args, *extra])
    msg = str(e.value.code)
    assert msg.startswith("error: ") and "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- batches and evaluation

def test_get_batch_alignment_and_uniform_starts():
    # The CS336 test: data = arange(100), T = 7; starts must cover 0 .. 92 uniformly (within 5 sigma).
    data, T, B, iters = np.arange(100), 7, 32, 1000
    g = torch.Generator().manual_seed(0)
    counts = Counter()
    for _ in range(iters):
        x, y = train.get_batch(data, B, T, "cpu", generator=g)
        assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == torch.int64
        assert torch.equal(x + 1, y)  # y is x shifted by one token
        counts.update(x[:, 0].tolist())
    n = len(data) - T  # valid starts 0 .. n-1; start n-1 = 92 makes the last target token 99
    assert min(counts) == 0 and max(counts) == n - 1 and len(counts) == n
    mean, sd = iters * B / n, math.sqrt(iters * B * (1 / n) * (1 - 1 / n))
    assert all(abs(c - mean) < 5 * sd for c in counts.values())


def test_get_batch_memmap_and_bad_device(tmp_path):
    _write_tokens(tmp_path / "t.bin", np.arange(50) % VOCAB)
    data = train.open_tokens(str(tmp_path / "t.bin"), VOCAB, str(tmp_path / "tok"), 8)
    x, y = train.get_batch(data, 3, 8, "cpu")
    assert torch.equal(x + 1, y) and int(y.max()) <= 49
    with pytest.raises((RuntimeError, AssertionError)):
        train.get_batch(data, 3, 8, "cuda:99")


def test_get_batch_ranks_split_one_global_draw():
    # Rank r of N keeps slice r of the same draw, so N ranks see exactly one process's batches.
    data = np.arange(1000)
    whole, _ = train.get_batch(data, 8, 5, "cpu", generator=torch.Generator().manual_seed(3))
    parts = [train.get_batch(data, 4, 5, "cpu", torch.Generator().manual_seed(3), rank=r, world_size=2)[0]
             for r in range(2)]
    assert torch.equal(torch.cat(parts), whole)


def test_evaluate_matches_direct_loss():
    torch.manual_seed(0)
    model = TransformerLM(ModelConfig(vocab_size=VOCAB, context_length=8, d_model=16, num_layers=1, num_heads=2))
    data = np.random.default_rng(0).integers(0, VOCAB, 300)
    starts = list(range(0, 300 - 8, 8))  # whole-file mode: consecutive windows
    got = train.evaluate(model, data, starts, 5, 8, "cpu", train.nullcontext())  # 36 windows: a ragged last batch
    x, y = train.windows(data, starts, 8, "cpu")
    with torch.no_grad():
        assert got == pytest.approx(model(x, y)[1].item(), rel=1e-6)


def test_validation_windows_fixed_and_whole_file(run_args, tmp_path):
    # lr 0: the weights never change, so fixed windows must give the same val loss at every eval.
    _run(run_args, tmp_path / "fixed", "--max_steps=4", "--eval_interval=2", "--lr=0", "--min_lr=0")
    rows = [json.loads(x) for x in (tmp_path / "fixed" / "log.jsonl").read_text().splitlines()]
    assert len({r["val_loss"] for r in rows if "val_loss" in r}) == 1 and len(rows) == 5
    # eval_iters=-1: every consecutive T-window of the validation file, checked against a direct forward.
    ckpt = _run(run_args, tmp_path / "whole", "--max_steps=1", "--eval_iters=-1", "--batch_size=64")
    model = TransformerLM(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    data = np.fromfile(tmp_path / "val.bin", dtype=np.uint16)
    x, y = train.windows(data, range(0, len(data) - 16, 16), 16, "cpu")
    with torch.no_grad():
        assert ckpt["val_loss"] == pytest.approx(model(x, y)[1].item(), rel=1e-5)


# ----------------------------------------------------------------------------- checkpoints

def _tiny_model_and_opt(seed=0):
    torch.manual_seed(seed)
    model = TransformerLM(ModelConfig(vocab_size=VOCAB, context_length=8, d_model=16, num_layers=1, num_heads=2))
    return model, AdamW(model.parameters(), lr=1e-2)


def _train_steps(model, opt, n):
    g = torch.Generator().manual_seed(5)
    for _ in range(n):
        x, y = train.get_batch(np.arange(500) % VOCAB, 4, 8, "cpu", generator=g)
        opt.zero_grad()
        model(x, y)[1].backward()
        opt.step()


def test_checkpoint_round_trip_through_file_object():
    model, opt = _tiny_model_and_opt()
    _train_steps(model, opt, 3)
    buf = io.BytesIO()
    compiled = torch.nn.Module()
    compiled._orig_mod = model  # what torch.compile's wrapper looks like: every key gets an '_orig_mod.' prefix
    train.save_checkpoint(compiled, opt, 3, buf, note="x")
    buf.seek(0)
    raw = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    assert raw["note"] == "x" and set(raw["model"]) == set(model.state_dict())  # prefix stripped
    model2, opt2 = _tiny_model_and_opt(seed=1)
    assert train.load_checkpoint(buf, model2, opt2) == 3
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k])
    # Both continue identically: the optimizer moments and step count came along.
    _train_steps(model, opt, 2)
    _train_steps(model2, opt2, 2)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))


def test_atomic_save_survives_crash_mid_write(tmp_path, monkeypatch):
    model, opt = _tiny_model_and_opt()
    path = tmp_path / "ckpt.pt"
    train.save_checkpoint(model, opt, 1, path)
    good = path.read_bytes()

    def crash(obj, f):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        train.save_checkpoint(model, opt, 2, path)
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["ckpt.pt"]  # old file intact, no tmp left
    assert torch.load(path, weights_only=True)["iteration"] == 1


def test_resume_is_bit_exact(run_args, tmp_path):
    # 7 steps in one go == 4 steps, stop, resume, 3 more (same schedule: cosine_steps fixed).
    args = [*run_args, "--cosine_steps=7", "--eval_interval=3"]
    straight = _run(args, tmp_path / "a", "--max_steps=7")
    _run(args, tmp_path / "b", "--max_steps=4")
    resumed = _run(args, tmp_path / "b", "--max_steps=7", "--resume=True")
    assert resumed["iteration"] == straight["iteration"] == 7
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert torch.equal(straight["rng"]["data"], resumed["rng"]["data"])
    s_opt, r_opt = straight["optimizer"]["state"], resumed["optimizer"]["state"]
    assert all(torch.equal(s_opt[i]["exp_avg_sq"], r_opt[i]["exp_avg_sq"]) for i in s_opt)
    rows = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train_loss" in r] == list(range(1, 8))  # the log continues


def test_checkpoint_contents_and_max_time(run_args, tmp_path):
    ckpt = _run(run_args, tmp_path / "o", "--max_steps=50", "--max_time=1e-9", "--eval_interval=100")
    assert ckpt["iteration"] == 1  # stopped at the first log step, with a final eval and checkpoint
    assert ModelConfig(**ckpt["model_config"]).d_model == 32
    assert ckpt["config"]["tokenizer_dir"] == str(tmp_path / "tok") and math.isfinite(ckpt["val_loss"])
    assert {"python", "numpy", "torch", "cuda", "data"} <= set(ckpt["rng"])


# ----------------------------------------------------------------------------- non-finite steps

def _poison_step(monkeypatch, bad_call):
    """Make the gradient non-finite at optimizer step `bad_call` (1-based)."""
    calls = []
    real = train.clip_grad_norm

    def clip(params, max_norm):
        params = list(params)
        calls.append(1)
        if len(calls) == bad_call:
            params[0].grad.fill_(float("nan"))
        return real(params, max_norm)

    monkeypatch.setattr(train, "clip_grad_norm", clip)


def test_nonfinite_stops_and_keeps_last_good_checkpoint(run_args, tmp_path, monkeypatch):
    _poison_step(monkeypatch, 3)
    msg = _error(run_args, f"--out_dir={tmp_path}", "--max_steps=6", "--eval_interval=2", "--log_interval=2")
    assert "non-finite gradient at step 3" in msg and "--skip_nonfinite=True" in msg and "last good checkpoint" in msg
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ckpt["iteration"] == 2 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_skip_nonfinite_skips_the_step(run_args, tmp_path, monkeypatch, capsys):
    _poison_step(monkeypatch, 3)
    ckpt = _run(run_args, tmp_path, "--max_steps=5", "--skip_nonfinite=True")
    assert ckpt["iteration"] == 5 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert "step 3: non-finite gradient norm, step skipped" in capsys.readouterr().out


# ----------------------------------------------------------------------------- bad inputs

def test_missing_data(run_args, tmp_path):
    assert "nope.bin not found" in _error(run_args, f"--train_data={tmp_path / 'nope.bin'}")
    os.remove(tmp_path / "val.bin.json")
    assert "val.bin.json not found" in _error(run_args)


def test_sidecar_vocab_mismatch(run_args):
    msg = _error(run_args, "--vocab_size=100")
    assert "vocab_size=64" in msg and "vocab_size=100" in msg


def test_truncated_data_and_context_too_long(run_args, tmp_path):
    assert "context_length=4000" in _error(run_args, "--context_length=4000")  # val has 4000 tokens
    with open(tmp_path / "val.bin", "r+b") as f:
        f.truncate(100)
    assert "truncated" in _error(run_args)


def test_tokenizer_hash_mismatch(run_args, tmp_path):
    pytest.importorskip("bpe")
    tok = tmp_path / "tok"
    tok.mkdir()
    for name, text in [("vocab.json", "{}"), ("merges.txt", ""), ("special_tokens.json", "[]")]:
        (tok / name).write_text(text)
    assert "different tokenizer" in _error(run_args)


def test_bad_checkpoints(run_args, tmp_path):
    assert "does not exist" in _error(run_args, f"--out_dir={tmp_path}", "--resume=True")
    (tmp_path / "ckpt.pt").write_bytes(b"\x00not a checkpoint")
    msg = _error(run_args, f"--out_dir={tmp_path}", "--resume=True")
    assert "not a readable training checkpoint" in msg and "ckpt.pt" in msg


def test_bad_config(run_args, monkeypatch):
    assert "'max_steps'" in _error(run_args, "--max_step=3")
    assert "auto|bfloat16|float32" in _error(run_args, "--dtype=float16")
    monkeypatch.setenv("RANK", "0")  # as under torchrun with 2 processes; the check comes before any setup
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "not a multiple of the 2 processes" in _error(run_args, "--grad_accum_steps=3")


def test_defaults_cover_model_config():
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    assert names <= set(train.DEFAULTS)


# ----------------------------------------------------------------------------- end to end, DDP

def _subprocess(cmd, cwd, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_end_to_end_loss_drops(tmp_path, run_args):
    # python train.py CONFIG --key=value as a user runs it, with a config file relative to the cwd.
    (tmp_path / "cfg.py").write_text("max_steps = 60\neval_interval = 30\nlog_interval = 10\nlr = 1e-2\n")
    args = [a for a in run_args if not a.startswith(("--log_interval=", "--lr="))]  # cfg.py sets those
    r = _subprocess([sys.executable, str(ROOT / "train.py"), "cfg.py", *args, "--out_dir=out"], tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert {"step", "tokens", "time", "train_loss", "lr", "grad_norm", "val_loss"} <= set(rows[-1])
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert val[0] == pytest.approx(math.log(VOCAB), abs=0.5) and val[-1] < val[0] - 1.0
    assert "eta" in r.stdout and "tok/s" in r.stdout


def test_bad_input_exit_code(tmp_path):
    r = _subprocess([sys.executable, str(ROOT / "train.py"), "--train_data=missing.bin", "--device=cpu"], tmp_path)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "error: missing.bin not found; make it with `python tokenize_data.py --tokenizer DIR --input TEXT "
        "--output missing.bin` (or point --train_data/--val_data at it)"]


@pytest.mark.slow
def test_ddp_two_processes_equal_one_with_twice_the_accumulation(run_args, tmp_path):
    # grad_accum_steps counts micro-batches over all processes: 2 ranks x 1 == 1 process x 2.
    args = [*run_args, "--max_steps=6", "--eval_interval=3", "--grad_accum_steps=2"]
    one = _subprocess([sys.executable, str(ROOT / "train.py"), *args, "--out_dir=one"], tmp_path)
    assert one.returncode == 0, one.stderr
    two = _subprocess([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                       str(ROOT / "train.py"), *args, "--out_dir=two"], tmp_path)
    assert two.returncode == 0, two.stderr
    rows = {d: [json.loads(x) for x in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("one", "two")}
    assert len(rows["one"]) == len(rows["two"]) == 7
    for a, b in zip(rows["one"], rows["two"]):
        for key in ("train_loss", "val_loss", "grad_norm"):
            if key in a:
                assert abs(a[key] - b[key]) <= 1e-5, (a, b)
    assert rows["two"].count(rows["two"][0]) == 1  # only rank 0 wrote the log
