"""sample.py: decoding filters on hand-made distributions, KV cache == full forward (also past context_length),
seeds, EOT, streaming of split UTF-8, perplexity mode vs a manual computation, and bad inputs."""
import dataclasses
import json
import math
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sample
from bpe import Tokenizer, train_bpe
from model import ModelConfig, TransformerLM

EOT = "<|endoftext|>"
ROOT = Path(__file__).resolve().parent.parent
TINY = dict(context_length=16, d_model=32, num_layers=2, num_heads=4)  # crops after a few tokens


def kept(logits):
    """Token ids that survived filtering (row 0)."""
    return torch.isfinite(logits[0]).nonzero().flatten().tolist()


def filtered(probs, **kw):
    return sample.filter_logits(torch.tensor([probs]).log(), **kw)


# ----------------------------------------------------------------------------- filters (pure functions)

@pytest.mark.parametrize("top_p, expected", [
    (1.0, [0, 1, 2, 3]), (0.96, [0, 1, 2, 3]), (0.9, [0, 1, 2]), (0.81, [0, 1, 2]), (0.8, [0, 1]),
    (0.6, [0, 1]), (0.5, [0]), (1e-6, [0]),  # a tiny top_p still keeps the top token
])
def test_top_p_keeps_smallest_nucleus(top_p, expected):
    assert kept(filtered([0.5, 0.3, 0.15, 0.05], top_p=top_p)) == expected


def test_top_p_and_top_k_work_on_token_ids_not_positions():
    probs = [0.15, 0.5, 0.05, 0.3]
    assert kept(filtered(probs, top_p=0.8)) == [1, 3]
    assert kept(filtered(probs, top_k=2)) == [1, 3]
    assert kept(filtered(probs, top_k=1)) == [1]


@pytest.mark.parametrize("top_k, expected", [(0, [0, 1, 2, 3, 4]), (1, [2]), (3, [1, 2, 3]), (9, [0, 1, 2, 3, 4])])
def test_top_k_keeps_k_most_likely(top_k, expected):
    assert kept(filtered([0.1, 0.2, 0.4, 0.25, 0.05], top_k=top_k)) == expected


def test_ties_break_toward_lower_id():
    logits = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0]])
    assert kept(sample.filter_logits(logits, top_k=2)) == [1, 2]  # exactly k, not every tied token
    assert kept(filtered([0.25, 0.25, 0.25, 0.25], top_p=0.5)) == [0, 1]
    assert sample.sample_next(logits, temperature=0).tolist() == [1]


def test_top_p_applies_to_top_k_survivors_renormalized():
    # top-3 of [.4, .3, .2, .1] renormalizes to [.44, .33, .22]: mass .78 before the third token >= .75
    assert kept(filtered([0.4, 0.3, 0.2, 0.1], top_k=3, top_p=0.75)) == [0, 1]
    assert kept(filtered([0.4, 0.3, 0.2, 0.1], top_p=0.75)) == [0, 1, 2]


def test_filter_keeps_values_and_rows_independent():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    out = sample.filter_logits(logits, top_k=2)
    assert torch.equal(out, torch.tensor([[3.0, -math.inf, 2.0, -math.inf], [-math.inf, -math.inf, 2.0, 3.0]]))


def test_sampling_frequencies_follow_filtered_distribution():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().repeat(4000, 1)
    gen = torch.Generator().manual_seed(0)
    ids = sample.sample_next(logits, temperature=1.0, top_p=0.8, generator=gen)
    assert set(ids.tolist()) == {0, 1}
    assert abs((ids == 0).float().mean().item() - 0.5 / 0.8) < 0.03
    # temperature 0.5 squares the probabilities: p0 = .25 / (.25 + .09 + .0225 + .0025)
    ids = sample.sample_next(logits, temperature=0.5, generator=gen)
    assert abs((ids == 0).float().mean().item() - 0.25 / 0.365) < 0.03


def test_temperature_zero_is_argmax_whatever_the_rng():
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(1))
    for s in range(3):
        ids = sample.sample_next(logits, temperature=0, top_k=3, top_p=0.5, generator=torch.Generator().manual_seed(s))
        assert torch.equal(ids, logits.argmax(-1))


# ----------------------------------------------------------------------------- a tiny model and tokenizer

@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    rng = random.Random(0)
    words = "once upon a time there was little cat dog who liked to play run in the park sun happy".split()
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))).capitalize() + "." for _ in range(300)]
    (d / "corpus.txt").write_text(EOT.join(docs))  # ASCII only: a non-ASCII char stays split into byte tokens
    vocab, merges = train_bpe(str(d / "corpus.txt"), 300, [EOT], num_workers=1, verbose=False)
    Tokenizer(vocab, merges, [EOT]).save(str(d / "tokenizer"))
    return d / "tokenizer"


@pytest.fixture(scope="module")
def tok(tok_dir):
    return Tokenizer.load(str(tok_dir))


def make_model(vocab_size, **overrides):
    torch.manual_seed(0)
    model = TransformerLM(ModelConfig(vocab_size=vocab_size, **{**TINY, **overrides})).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8)  # decisive greedy margins: float noise cannot flip an argmax
    return model


def save_ckpt(out_dir, model, tok_dir):
    """A checkpoint in train.py's layout (ckpt.pt with model, model_config, config incl. tokenizer_dir)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({'model': model.state_dict(), 'optimizer': {}, 'iteration': 7,
                'model_config': dataclasses.asdict(model.config), 'config': {'tokenizer_dir': str(tok_dir)}},
               out_dir / "ckpt.pt")
    return out_dir


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory, tok, tok_dir):
    return save_ckpt(tmp_path_factory.mktemp("out"), make_model(tok.vocab_size), tok_dir)


def run_main(capsys, *argv):
    sample.main([f"--{a}" for a in argv])
    return capsys.readouterr()


def greedy(model, prompt, n, use_cache):
    return list(sample.generate(model, prompt, n, temperature=0, use_cache=use_cache))


# ----------------------------------------------------------------------------- generation

@pytest.mark.parametrize("pos_emb", ["rope", "learned", "sinusoidal", "none"])
def test_cache_matches_no_cache_greedy_past_context_length(pos_emb):
    model = make_model(300, pos_emb=pos_emb)
    prompt = [5, 17, 200, 42, 9]
    out = greedy(model, prompt, 45, use_cache=True)  # 50 tokens: crops at 17, 25, 33, 41, 49
    assert len(out) == 45 and len(set(out)) > 3
    assert out == greedy(model, prompt, 45, use_cache=False)


def test_prompt_longer_than_context_keeps_its_tail():
    model = make_model(300)
    prompt = list(range(40, 70))  # 30 tokens > context_length 16
    out = greedy(model, prompt, 20, use_cache=True)
    assert out == greedy(model, prompt, 20, use_cache=False) == greedy(model, prompt[-16:], 20, use_cache=True)


def test_crop_policy_windows():
    """Both paths see ids[start:]; when it would exceed context_length it restarts at the last 8 tokens."""
    model = make_model(300)
    seen = {True: [], False: []}
    forward = model.forward

    for cached in (True, False):
        def spy(idx, targets=None, kv_cache=None):
            seen[cached].append((idx.shape[1], 0 if kv_cache is None else kv_cache.pos))
            return forward(idx, targets, kv_cache)
        model.forward = spy
        greedy(model, [1, 2, 3, 4, 5], 30, use_cache=cached)
    windows = list(range(5, 17)) + list(range(8, 17)) + list(range(8, 17))
    assert [n for n, _ in seen[False]] == windows  # full forward over the window every step
    # with the cache: prefill, then one token per step; re-prefill of the last 8 tokens when the window is full
    assert [n for n, _ in seen[True]] == [5] + [1] * 11 + [8] + [1] * 8 + [8] + [1] * 8
    assert [n + pos for n, pos in seen[True]] == windows


def test_eot_stops_generation():
    model = make_model(300)
    forward, eot = model.forward, 256

    def eot_after_3(idx, targets=None, kv_cache=None):  # EOT wins once the sequence holds prompt + 3 tokens
        length = idx.shape[1] + (0 if kv_cache is None else kv_cache.pos)  # forward advances pos
        logits, loss = forward(idx, targets, kv_cache)
        if length >= 4 + 3:
            logits[:, -1, eot] += 1e4
        return logits, loss
    model.forward = eot_after_3
    for cached in (True, False):
        out = list(sample.generate(model, [1, 2, 3, 4], 50, temperature=1.0, eot_id=eot, use_cache=cached,
                                   generator=torch.Generator().manual_seed(0)))
        assert len(out) == 3 and eot not in out


def test_seed_reproduces_and_differs(capsys, ckpt_dir):
    args = [f"out_dir={ckpt_dir}", "temperature=1.0", "top_p=1.0", "max_new_tokens=30"]
    a = run_main(capsys, *args, "seed=1").out
    assert a.startswith("Once upon a time") and len(a) > len("Once upon a time") + 10
    assert run_main(capsys, *args, "seed=1").out == a
    assert run_main(capsys, *args, "seed=2").out != a


def test_cli_greedy_cache_no_cache_and_stream_agree(capsys, ckpt_dir):
    args = [f"out_dir={ckpt_dir}", "temperature=0", "max_new_tokens=40", "prompt=The cat"]
    outs = [run_main(capsys, *args, f"use_cache={c}", f"stream={s}") for c in (True, False) for s in (True, False)]
    assert len({o.out for o in outs}) == 1
    assert "tokens/s" in outs[0].err and "tokens/s" not in outs[0].out
    assert "step 7" in outs[0].err  # the checkpoint's iteration is reported


def test_num_samples_and_prompt_file(capsys, ckpt_dir, tmp_path):
    (tmp_path / "p.txt").write_text("A dog")
    out = run_main(capsys, f"out_dir={ckpt_dir}", f"prompt=FILE:{tmp_path / 'p.txt'}", "num_samples=3",
                   "max_new_tokens=5").out
    samples = out.split("-" * 40)
    assert len(samples) == 3 and all(s.strip().startswith("A dog") for s in samples)


def test_eot_stops_cli(capsys, tok, tok_dir, tmp_path):
    # LayerNorm's bias makes the final hidden state the same unit vector everywhere; lm_head then favours EOT
    model = make_model(tok.vocab_size, norm_type="layer")
    with torch.no_grad():
        model.ln_final.weight.zero_()
        model.ln_final.bias.zero_()[0] = 1.0
        model.lm_head.weight[tok.eot_id, 0] = 100.0
    res = run_main(capsys, f"out_dir={save_ckpt(tmp_path, model, tok_dir)}", "max_new_tokens=50", "prompt=Once")
    assert res.out == "Once\n" and "0 tokens" in res.err


def test_stream_holds_back_split_utf8(capsys, tok):
    text = " once upon é time 😀 cat ü"
    ids = tok.encode(text)
    assert len(ids) > len(text.split())  # the non-ASCII characters span several byte tokens
    chunks = []

    def arrive():
        for t in ids:
            yield t
            chunks.append(capsys.readouterr().out)  # what was printed for this token
    assert sample.print_stream(tok, arrive(), stream=True) == ids
    chunks.append(capsys.readouterr().out)
    assert "".join(chunks) == text + "\n"
    assert not any("\ufffd" in c for c in chunks) and sum(bool(c) for c in chunks) > len(ids) // 2


# ----------------------------------------------------------------------------- perplexity

def manual_loss(model, data, T):
    """Sum of -log p(next token) over non-overlapping windows of T predictions, one window at a time."""
    total, n = 0.0, len(data) - 1
    for a in range(0, n, T):
        x = torch.tensor(data[a:min(a + T, n)])[None]
        y = torch.tensor(data[a + 1:min(a + T, n) + 1])
        with torch.no_grad():
            logits, _ = model(x)
        total += torch.nn.functional.cross_entropy(logits[0], y, reduction='sum').item()
    return total / n


def test_perplexity_on_bin_matches_manual(capsys, ckpt_dir, tok, tmp_path):
    model = sample.load_model(ckpt_dir, "cpu")[0]
    data = np.random.default_rng(0).integers(0, tok.vocab_size, 16 * 5 + 7).astype(np.uint16)  # a short tail
    data.tofile(tmp_path / "x.bin")
    (tmp_path / "x.bin.json").write_text(json.dumps({"dtype": "uint16", "num_tokens": len(data)}))
    expected = manual_loss(model, data.tolist(), 16)
    for bs in (1, 2, 8):
        assert sample.eval_loss(model, data, bs) == pytest.approx(expected, rel=1e-5)
    out = run_main(capsys, f"out_dir={ckpt_dir}", f"eval_file={tmp_path / 'x.bin'}", "eval_batch_size=2").out
    loss, ppl = map(float, re.search(r"loss (\S+) nats/token, perplexity (\S+)", out).groups())
    assert loss == pytest.approx(expected, abs=1e-4) and ppl == pytest.approx(math.exp(expected), rel=1e-4)


def test_perplexity_on_text_encodes_it(capsys, ckpt_dir, tok, tmp_path):
    text = "Once upon a time there was a happy dog.\nThe sun liked to play in the park." * 4
    (tmp_path / "x.txt").write_text(text)
    expected = manual_loss(sample.load_model(ckpt_dir, "cpu")[0], tok.encode(text), 16)
    out = run_main(capsys, f"out_dir={ckpt_dir}", f"eval_file={tmp_path / 'x.txt'}").out
    assert float(re.search(r"loss (\S+) nats", out).group(1)) == pytest.approx(expected, abs=1e-4)


def test_benchmark_mode(capsys, ckpt_dir):
    out = run_main(capsys, f"out_dir={ckpt_dir}", "benchmark=True", "max_new_tokens=20", "bench_runs=1").out
    assert "with KV cache" in out and "without KV cache" in out and "same tokens: True" in out


def test_tokenizer_found_beside_moved_checkpoint(capsys, tok, tok_dir, tmp_path, monkeypatch):
    out = tmp_path / "moved"
    save_ckpt(out, make_model(tok.vocab_size), "runs/old/tokenizer")  # a path valid only where it was trained
    shutil.copytree(tok_dir, out / "tokenizer")
    monkeypatch.chdir(tmp_path)
    res = run_main(capsys, f"out_dir={out}", "max_new_tokens=3")
    assert "beside the checkpoint" in res.err and res.out.startswith("Once upon a time")


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("arg, message", [
    ("top_p=0", "top_p must be in (0, 1]"), ("top_p=1.5", "top_p must be in (0, 1]"),
    ("temperature=-1", "temperature must be >= 0"), ("top_k=-1", "top_k must be an int >= 0"),
    ("max_new_tokens=-5", "max_new_tokens must be >= 0"), ("num_samples=0", "num_samples must be >= 1"),
])
def test_bad_knobs(arg, message, ckpt_dir):
    with pytest.raises(SystemExit, match="^error: " + re.escape(message)):
        sample.main([f"--out_dir={ckpt_dir}", f"--{arg}"])


def test_bad_prompts(ckpt_dir, tmp_path):
    with pytest.raises(SystemExit, match="^error: empty prompt"):
        sample.main([f"--out_dir={ckpt_dir}", "--prompt="])
    with pytest.raises(SystemExit, match="^error: cannot read prompt file .*nope.txt"):
        sample.main([f"--out_dir={ckpt_dir}", f"--prompt=FILE:{tmp_path / 'nope.txt'}"])


def test_bad_checkpoints(ckpt_dir, tmp_path):
    with pytest.raises(SystemExit, match="^error: no checkpoint at .*ckpt.pt: train one"):
        sample.main([f"--out_dir={tmp_path / 'empty'}"])
    for name, data in [("garbage", b"not a checkpoint"), ("truncated", (ckpt_dir / "ckpt.pt").read_bytes()[:3000])]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "ckpt.pt").write_bytes(data)
        with pytest.raises(SystemExit, match="^error: cannot load checkpoint .*is it a ckpt.pt written by train.py"):
            sample.main([f"--out_dir={tmp_path / name}"])


def test_missing_tokenizer(tok, tok_dir, tmp_path):
    model = make_model(tok.vocab_size)
    save_ckpt(tmp_path / "a", model, tmp_path / "no_such_dir")
    with pytest.raises(SystemExit, match="^error: tokenizer directory .*not found.*--tokenizer_dir"):
        sample.main([f"--out_dir={tmp_path / 'a'}"])
    broken = tmp_path / "broken_tok"
    broken.mkdir()
    (broken / "vocab.json").write_bytes((tok_dir / "vocab.json").read_bytes())  # merges.txt missing
    save_ckpt(tmp_path / "b", model, broken)
    with pytest.raises(SystemExit, match="^error: cannot load tokenizer from .*merges.txt"):
        sample.main([f"--out_dir={tmp_path / 'b'}"])


def test_bad_eval_files(ckpt_dir, tmp_path):
    def score(ids, sidecar):
        np.array(ids, dtype=np.uint16).tofile(tmp_path / "x.bin")
        if sidecar is not None:
            (tmp_path / "x.bin.json").write_text(json.dumps({"dtype": "uint16", **sidecar}))
        sample.main([f"--out_dir={ckpt_dir}", f"--eval_file={tmp_path / 'x.bin'}"])
    with pytest.raises(SystemExit, match=r"^error: cannot read .*x.bin.json.*tokenize_data.py"):
        score(range(50), None)
    with pytest.raises(SystemExit, match=r"^error: .*x.bin was made by a different tokenizer"):
        score(range(50), {"tokenizer_hash": "0123456789abcdef"})
    with pytest.raises(SystemExit, match=r"^error: eval_file holds token id 5000 but the model has vocab_size 300"):
        score([1, 2, 5000], {})
    with pytest.raises(SystemExit, match=r"^error: eval_file has fewer than 2 tokens"):
        score([1], {})


def test_cli_error_is_one_line_and_nonzero_exit():
    r = subprocess.run([sys.executable, "sample.py", "--top_p=2"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.strip() == "error: top_p must be in (0, 1] (1 = off), got 2.0"
