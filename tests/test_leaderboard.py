"""The leaderboard switches (model.py qk_norm / relu2 / zero_init_proj / logit_softcap, optim.py Muon / wsd_lr,
train.py optimizer=muon, lr_schedule=wsd): off == baseline exactly, each one's defining property, exact resume."""
import io
import json

import pytest
import torch

import train
from model import ModelConfig, TransformerLM, relu2
from optim import AdamW, Muon, newton_schulz, wsd_lr
from test_train import _pattern, _write_tokens, VOCAB

SWITCHES = dict(qk_norm=True, ffn='relu2', zero_init_proj=True, logit_softcap=5.0)
TINY = dict(vocab_size=VOCAB, context_length=16, d_model=32, num_layers=2, num_heads=4)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return TransformerLM(ModelConfig(**TINY, **kw))


def _batch(seed=1, B=3, T=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(VOCAB, (B, T), generator=g), torch.randint(VOCAB, (B, T), generator=g)


def test_switches_off_are_the_baseline():
    # explicit off values == the defaults: same parameter names, values (RNG stream) and outputs
    base, off = _model(), _model(qk_norm=False, zero_init_proj=False, logit_softcap=0.0)
    assert list(base.state_dict()) == list(off.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), off.state_dict().values()))
    x, y = _batch()
    assert torch.equal(base(x, y)[0], off(x, y)[0])
    # muon=False param groups are today's two groups, and a Muon with only AdamW groups IS AdamW, bit for bit
    assert [set(g) for g in base.param_groups(0.1)] == [{'params', 'weight_decay'}] * 2
    groups = [{**g, 'use_muon': False} for g in off.param_groups(0.1)]
    opt_a = AdamW(base.param_groups(0.1), lr=1e-2, betas=(0.9, 0.95))
    opt_b = Muon(groups, lr=1e-2, betas=(0.9, 0.95))
    for step in range(3):
        for m, opt in ((base, opt_a), (off, opt_b)):
            opt.zero_grad()
            m(*_batch(step))[1].backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(base.parameters(), off.parameters()))


def test_switch_param_names_and_init_rng():
    on = _model(**SWITCHES)
    names = set(on.state_dict())
    assert {'layers.0.attn.q_norm.weight', 'layers.1.attn.k_norm.weight'} <= names
    assert on.layers[0].attn.q_norm.weight.shape == (8,)  # head dim D = 32 / 4
    # zero-init only zeroes: q, k, v, w1 are the baseline's values (same RNG consumption, relu2 has no w3)
    base = _model(ffn='relu')
    for n in ('layers.1.attn.q_proj.weight', 'layers.1.ffn.w1.weight', 'lm_head.weight'):
        assert torch.equal(on.state_dict()[n], base.state_dict()[n])
    for bad, msg in ((dict(logit_softcap=-1.0), 'logit_softcap'), (dict(qk_norm=1), 'qk_norm'), (dict(ffn='relu3'), 'relu2')):
        with pytest.raises(ValueError, match=msg):
            ModelConfig(**bad)


@pytest.mark.parametrize('switch', list(SWITCHES.items()) + [('all', None)])
def test_each_switch_trains_and_fused_matches(switch):
    kw = SWITCHES if switch[0] == 'all' else dict([switch])
    ref, fused = _model(**kw), _model(**kw, fused=True)
    x, y = _batch()
    (logits, loss), (logits_f, loss_f) = ref(x, y), fused(x, y)
    torch.testing.assert_close(logits_f, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_f, loss, atol=1e-5, rtol=1e-5)
    loss.backward()
    grads = [p.grad for p in ref.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_relu2_softcap_and_zero_init():
    x = torch.linspace(-3, 3, 13)
    assert torch.equal(relu2(x), torch.where(x > 0, x * x, torch.zeros_like(x)))
    m = _model(logit_softcap=2.0)
    with torch.no_grad():
        m.lm_head.weight.mul_(100)  # logits in the hundreds before the cap
        logits = m(_batch()[0])[0]
        m.softcap = 0.0
        raw = m(_batch()[0])[0]
    assert raw.abs().max() > 50 and logits.abs().max() <= 2.0  # (float32 tanh saturates to exactly 1)
    torch.testing.assert_close(logits, 2.0 * torch.tanh(raw / 2.0))
    z = _model(zero_init_proj=True)
    h = torch.randn(2, 16, 32)
    for block in z.layers:  # every block is the identity on the residual stream at init
        assert torch.equal(block(h), h)


def test_newton_schulz_singular_values_near_one():
    g = torch.Generator().manual_seed(0)
    for shape in ((64, 64), (32, 128), (128, 32), (48, 80)):
        G = torch.randn(shape, generator=g)
        O = newton_schulz(G)
        assert O.shape == G.shape
        s = torch.linalg.svdvals(O)
        # square Gaussian matrices have a few tiny singular values that 5 steps do not lift all the way
        bulk = s[: int(0.9 * len(s))] if shape[0] == shape[1] else s
        assert bulk.min() > 0.5 and s.max() < 1.5, (shape, s.min(), s.max())
        # and it is G's polar factor U V^T, approximately: the same singular vectors
        U, _, Vh = torch.linalg.svd(G, full_matrices=False)
        assert torch.nn.functional.cosine_similarity((U @ Vh).flatten(), O.flatten(), dim=0) > 0.95


def test_muon_groups_and_update_shape_scaling():
    m = _model(**SWITCHES)
    groups = m.param_groups(0.1, muon=True)
    assert [g['use_muon'] for g in groups] == [True, False, False]
    muon_ids = {id(p) for p in groups[0]['params']}
    named = dict(m.named_parameters())
    assert {n for n, p in named.items() if id(p) in muon_ids} == {
        f'layers.{i}.{w}.weight' for i in range(2)
        for w in ('attn.q_proj', 'attn.k_proj', 'attn.v_proj', 'attn.output_proj', 'ffn.w1', 'ffn.w2')}
    assert sum(len(g['params']) for g in groups) == len(list(m.parameters()))
    with pytest.raises(ValueError, match='not 2-D'):
        Muon(m.parameters())
    # one step from zero momentum: the change is lr * sqrt(max(1, rows/cols)) * newton_schulz(grad)
    W = torch.nn.Parameter(torch.randn(64, 16))
    W.grad = torch.randn(64, 16)
    before, grad = W.detach().clone(), W.grad.clone()
    Muon([W], lr=0.1, nesterov=False).step()
    torch.testing.assert_close(W.detach(), before - 0.1 * 2.0 * newton_schulz(0.05 * grad))


def _train_steps(model, opt, steps, start=0):
    for step in range(start, start + steps):
        opt.zero_grad(set_to_none=True)
        model(*_batch(step))[1].backward()
        opt.step()


def test_muon_checkpoint_resumes_bit_exactly():
    a = _model(**SWITCHES)
    opt_a = Muon(a.param_groups(0.1, muon=True), lr=1e-2, foreach=True)
    _train_steps(a, opt_a, 6)
    b = _model(**SWITCHES)
    opt_b = Muon(b.param_groups(0.1, muon=True), lr=1e-2, foreach=True)
    _train_steps(b, opt_b, 3)
    buf = io.BytesIO()
    train.save_checkpoint(b, opt_b, 3, buf)
    buf.seek(0)
    c = _model(seed=99, **SWITCHES)  # different init: everything must come from the checkpoint
    opt_c = Muon(c.param_groups(0.1, muon=True), lr=1e-2, foreach=True)
    assert train.load_checkpoint(buf, c, opt_c) == 3
    _train_steps(c, opt_c, 3, start=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_wsd_lr_known_values():
    lrs = [wsd_lr(t, 1.0, 0.1, 10, 70, 100) for t in (0, 5, 10, 50, 69, 70, 85, 100, 200)]
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.55, 0.1, 0.1])


def test_train_muon_wsd_end_to_end(tmp_path):
    _write_tokens(tmp_path / "train.bin", _pattern(20_000, 0))
    _write_tokens(tmp_path / "val.bin", _pattern(4_000, 1))
    out = tmp_path / "out"
    train.main([f"--train_data={tmp_path / 'train.bin'}", f"--val_data={tmp_path / 'val.bin'}",
                f"--tokenizer_dir={tmp_path / 'tok'}", f"--vocab_size={VOCAB}", "--context_length=16",
                "--d_model=32", "--num_layers=2", "--num_heads=4", "--batch_size=8", "--device=cpu",
                "--warmup_steps=5", "--eval_iters=-1", "--log_interval=10", "--eval_interval=30", "--max_steps=60",
                "--lr=3e-3", "--optimizer=muon", "--lr_schedule=wsd", "--decay_frac=0.3", "--ffn=relu2",
                "--qk_norm=True", "--zero_init_proj=True", "--logit_softcap=30.0", f"--out_dir={out}"])
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    vals = [r['val_loss'] for r in rows if 'val_loss' in r]
    assert vals[0] > 4.0 and vals[-1] < vals[0] - 1.0, vals  # ln 64 = 4.16 at init
    assert rows[-1]["lr"] == pytest.approx(1e-4 + (3e-3 - 1e-4) / 18)  # step 59 of 60: 1/18 of the decay left
    with pytest.raises(SystemExit, match='optimizer'):
        train.main(["--optimizer=sgd"])


def test_time_schedule_fits_the_decay_into_max_time(tmp_path):
    _write_tokens(tmp_path / "train.bin", _pattern(20_000, 0))
    _write_tokens(tmp_path / "val.bin", _pattern(4_000, 1))
    out = tmp_path / "out"
    args = [f"--train_data={tmp_path / 'train.bin'}", f"--val_data={tmp_path / 'val.bin'}",
            f"--tokenizer_dir={tmp_path / 'tok'}", f"--vocab_size={VOCAB}", "--context_length=16", "--d_model=32",
            "--num_layers=2", "--num_heads=4", "--batch_size=4", "--device=cpu", "--warmup_steps=5",
            "--eval_iters=2", "--log_interval=1", "--eval_interval=0", "--lr=3e-3", "--min_lr=0.0",
            "--lr_schedule=wsd", "--decay_frac=0.5", "--max_steps=1000000", f"--out_dir={out}"]
    with pytest.raises(SystemExit, match="time_schedule=True.*--max_time"):
        train.main(args + ["--time_schedule=True"])
    train.main(args + ["--time_schedule=True", "--max_time=2.0"])
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps, lrs = [r["step"] for r in rows], [r["lr"] for r in rows]
    assert 50 < steps[-1] < 1_000_000 and 2.0 <= rows[-1]["time"] < 4.0  # stopped by the clock, not the cap
    assert "val_loss" in rows[-1]  # the final evaluation
    assert lrs[steps.index(6)] == 3e-3  # warmup done, flat part
    assert 3e-3 in lrs[steps.index(6):len(lrs) // 3]  # still flat a third of the way in
    assert lrs[-1] < 0.1 * 3e-3  # and the decay ends with the time, not at max_steps


@pytest.mark.slow
def test_compile_all_switches():
    m = _model(**SWITCHES)
    x, y = _batch()
    ref_logits, ref_loss = m(x, y)
    logits, loss = torch.compile(m)(x, y)
    torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=1e-4)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
