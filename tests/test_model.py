"""model.py: every block against a direct torch.nn.functional formula with the same weights, plus model invariants
(causality and fused == reference for every switch combination, KV cache == full forward, tied storage, init loss,
state-dict compatibility, config errors). Tolerances are for float32 unless stated.
"""
import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from model import (Embedding, FeedForward, LayerNorm, Linear, ModelConfig, MultiHeadSelfAttention, RMSNorm, RoPE,
                   SwiGLU, TransformerLM, cross_entropy, flops_breakdown, gelu, scaled_dot_product_attention, silu,
                   softmax)

TOL = dict(atol=1e-5, rtol=1e-4)
SWITCHES = dict(norm=('pre', 'post', 'none'), norm_type=('rms', 'layer'),
                pos_emb=('rope', 'none', 'learned', 'sinusoidal'), ffn=('swiglu', 'silu', 'relu', 'gelu'),
                tie_embeddings=(False, True))
ALL_COMBOS = [dict(zip(SWITCHES, values)) for values in itertools.product(*SWITCHES.values())]  # 192
TINY = dict(vocab_size=37, context_length=12, d_model=16, num_layers=2, num_heads=2, d_ff=24)


def tiny(**kw):
    torch.manual_seed(0)
    return TransformerLM(ModelConfig(**{**TINY, **kw}))


def rotation_matrices(positions, d, theta=10000.0):
    """(T, d, d) block-diagonal RoPE matrices: block k rotates (x[2k], x[2k+1]) by p * theta^(-2k/d)."""
    out = []
    for p in positions.tolist():
        blocks = []
        for k in range(d // 2):
            a = p * theta ** (-2 * k / d)
            blocks.append(torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]))
        out.append(torch.block_diag(*blocks))
    return torch.stack(out)


# ----------------------------------------------------------------------------- functions

def test_softmax_matches_torch_and_survives_huge_logits():
    x = torch.randn(3, 4, 5)
    for dim in (0, 1, -1):
        torch.testing.assert_close(softmax(x, dim), torch.softmax(x, dim))
    g = torch.randn(3, 4, 5)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    (softmax(x1, 1) * g).sum().backward()  # the hand-written backward
    (torch.softmax(x2, 1) * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    assert torch.autograd.gradcheck(lambda t: softmax(t, -1), (x.double().requires_grad_(),))
    big = torch.tensor([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4]])
    out = softmax(big, -1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.softmax(big, -1))
    assert out[0, 1:].eq(0).all()  # exactly 0, as torch gives (see the flush in model.Softmax)
    assert torch.equal(softmax(torch.tensor([0.0, -math.inf, 1.0]), 0)[1], torch.tensor(0.0))  # sample.py's -inf


def test_activations_match_torch():
    x = torch.linspace(-8, 8, 101)
    torch.testing.assert_close(silu(x), F.silu(x))
    torch.testing.assert_close(gelu(x), F.gelu(x))  # exact erf form, not the tanh approximation


def test_cross_entropy_matches_torch_huge_logits_and_ignore_index():
    logits, targets = torch.randn(2, 3, 7), torch.randint(0, 7, (2, 3))
    torch.testing.assert_close(cross_entropy(logits, targets), F.cross_entropy(logits.view(-1, 7), targets.view(-1)))
    big = torch.tensor([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4]])
    t = torch.tensor([0, 0])
    loss = cross_entropy(big, t)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, F.cross_entropy(big, t))  # (0 + 2e4 + ln 2) / 2
    t = torch.tensor([[1, -100, 2], [-100, 4, -100]])
    torch.testing.assert_close(cross_entropy(logits, t, ignore_index=-100),
                               F.cross_entropy(logits.view(-1, 7), t.view(-1), ignore_index=-100))
    lg = logits.clone().requires_grad_()
    cross_entropy(lg, t, ignore_index=-100).backward()
    ref = logits.clone().requires_grad_()
    F.cross_entropy(ref.view(-1, 7), t.view(-1), ignore_index=-100).backward()
    torch.testing.assert_close(lg.grad, ref.grad)


@pytest.mark.parametrize('leading', [(2, 5), (2, 3, 5)])  # 3-D (B, T, D) and 4-D (B, H, T, D)
def test_attention_with_masks_matches_torch(leading):
    torch.manual_seed(0)
    *batch, T = leading
    Q, K, V = torch.randn(*batch, T, 4), torch.randn(*batch, 6, 4), torch.randn(*batch, 6, 3)
    mask = torch.rand(*batch, T, 6) > 0.4
    mask[..., 0] = True  # every query keeps a key (torch gives NaN for a fully masked row)
    for m in (None, mask, torch.ones(T, 6, dtype=torch.bool).tril(1)):
        torch.testing.assert_close(scaled_dot_product_attention(Q, K, V, m),
                                   F.scaled_dot_product_attention(Q, K, V, attn_mask=m), **TOL)
    mask[..., 0, :] = False  # a fully masked query gets the mean of V rather than NaN
    out = scaled_dot_product_attention(Q, K, V, mask)
    torch.testing.assert_close(out[..., 0, :], V.mean(-2), **TOL)


# ----------------------------------------------------------------------------- layers

def test_linear_and_embedding_match_torch_and_init():
    torch.manual_seed(0)
    lin, emb = Linear(300, 200), Embedding(1000, 64)
    assert lin.weight.shape == (200, 300) and emb.weight.shape == (1000, 64)
    x, idx = torch.randn(2, 3, 300), torch.randint(0, 1000, (2, 3))
    torch.testing.assert_close(lin(x), F.linear(x, lin.weight), **TOL)
    torch.testing.assert_close(emb(idx), F.embedding(idx, emb.weight))
    std = math.sqrt(2 / 500)  # truncation at 3 sigma shrinks the std by ~1.3%
    assert lin.weight.abs().max() <= 3 * std and abs(lin.weight.std() / std - 0.987) < 0.02
    assert emb.weight.abs().max() <= 3 and abs(emb.weight.std() - 0.987) < 0.02


@pytest.mark.parametrize('fused', [False, True])
def test_norms_match_torch(fused):
    torch.manual_seed(0)
    x = 3 * torch.randn(2, 5, 8) + 1
    rms, ln = RMSNorm(8, fused=fused), LayerNorm(8, fused=fused)
    with torch.no_grad():
        for p in (rms.weight, ln.weight, ln.bias):
            p.normal_()
    torch.testing.assert_close(rms(x), x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * rms.weight, **TOL)
    torch.testing.assert_close(ln(x), F.layer_norm(x, (8,), ln.weight, ln.bias, 1e-5), **TOL)
    xb = x.bfloat16()  # bf16 in, computed in float32, bf16 out
    assert rms(xb).dtype == torch.bfloat16
    torch.testing.assert_close(rms(xb), rms(xb.float()).bfloat16())


@pytest.mark.parametrize('act,ref', [(silu, F.silu), (gelu, F.gelu), (torch.relu, F.relu)])
def test_feedforward_matches_formula(act, ref):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8)
    plain, swiglu = FeedForward(8, 12, act), SwiGLU(8, 12, act)
    torch.testing.assert_close(plain(x), F.linear(ref(F.linear(x, plain.w1.weight)), plain.w2.weight), **TOL)
    gate = ref(F.linear(x, swiglu.w1.weight)) * F.linear(x, swiglu.w3.weight)
    torch.testing.assert_close(swiglu(x), F.linear(gate, swiglu.w2.weight), **TOL)


def test_rope_at_arbitrary_positions_matches_rotation_matrices():
    torch.manual_seed(0)
    rope = RoPE(10000.0, 8, 64)
    x = torch.randn(2, 3, 5, 8)  # (B, H, T, D)
    pos = torch.tensor([0, 7, 3, 63, 7])
    expected = torch.einsum('tij,bhtj->bhti', rotation_matrices(pos, 8), x)
    torch.testing.assert_close(rope(x, pos), expected, **TOL)
    # positions with leading batch dims: (B, 1, T) broadcasts over heads
    pos2 = torch.stack([pos, torch.tensor([1, 2, 3, 4, 5])])
    out = rope(x, pos2[:, None, :])
    torch.testing.assert_close(out[1], torch.einsum('tij,htj->hti', rotation_matrices(pos2[1], 8), x[1]), **TOL)
    assert list(rope.state_dict()) == []  # cos/sin tables are not persistent


def test_multihead_attention_with_rope_matches_formula():
    torch.manual_seed(0)
    B, T, C, H = 2, 6, 16, 4
    attn = MultiHeadSelfAttention(C, H, rope=RoPE(10000.0, C // H, 32))
    x, pos = torch.randn(B, T, C), torch.tensor([[3, 4, 5, 6, 7, 8], [0, 1, 2, 3, 4, 5]])
    heads = lambda w: F.linear(x, w).view(B, T, H, C // H).transpose(1, 2)  # noqa: E731
    rot = torch.stack([rotation_matrices(p, C // H) for p in pos])  # (B, T, D, D)
    q, k = (torch.einsum('btij,bhtj->bhti', rot, heads(p.weight)) for p in (attn.q_proj, attn.k_proj))
    y = F.scaled_dot_product_attention(q, k, heads(attn.v_proj.weight), is_causal=True)
    expected = F.linear(y.transpose(1, 2).reshape(B, T, C), attn.output_proj.weight)
    torch.testing.assert_close(attn(x, pos), expected, **TOL)


# ----------------------------------------------------------------------------- the model

def reference_keys(num_layers):
    """The keys of the CS336 reference state dict (load_state_dict ignores order; this is our module order)."""
    per_layer = ('ln1', 'attn.q_proj', 'attn.k_proj', 'attn.v_proj', 'attn.output_proj', 'ln2', 'ffn.w1', 'ffn.w2',
                 'ffn.w3')
    return (['token_embeddings.weight'] + [f'layers.{i}.{name}.weight' for i in range(num_layers) for name in per_layer]
            + ['ln_final.weight', 'lm_head.weight'])


def reference_shape(key, cfg):
    """Shape of a reference weight: matrices stored (d_out, d_in)."""
    C = cfg.d_model
    if key in ('token_embeddings.weight', 'lm_head.weight'):
        return (cfg.vocab_size, C)
    if '.ln' in key or key.startswith('ln'):
        return (C,)
    return {'w1': (cfg.d_ff, C), 'w3': (cfg.d_ff, C), 'w2': (C, cfg.d_ff)}.get(key.split('.')[-2], (C, C))


def reference_lm(sd, cfg, idx):
    """The handout's pre-norm RoPE SwiGLU LM written directly with torch.nn.functional, reading weights by name."""
    B, T = idx.shape
    C, H = cfg.d_model, cfg.num_heads
    rot = rotation_matrices(torch.arange(T), C // H, cfg.rope_theta)
    x = F.embedding(idx, sd['token_embeddings.weight'])
    for i in range(cfg.num_layers):
        w = lambda name: sd[f'layers.{i}.{name}.weight']  # noqa: E731
        h = F.rms_norm(x, (C,), w('ln1'), 1e-5)
        q, k, v = (F.linear(h, w(f'attn.{n}_proj')).view(B, T, H, C // H).transpose(1, 2) for n in 'qkv')
        q, k = (torch.einsum('tij,bhtj->bhti', rot, t) for t in (q, k))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(y, w('attn.output_proj'))
        h = F.rms_norm(x, (C,), w('ln2'), 1e-5)
        x = x + F.linear(F.silu(F.linear(h, w('ffn.w1'))) * F.linear(h, w('ffn.w3')), w('ffn.w2'))
    return F.linear(F.rms_norm(x, (C,), sd['ln_final.weight'], 1e-5), sd['lm_head.weight'])


def test_default_config_state_dict_keys():
    with torch.device('meta'):  # shapes only, no memory or init time
        model = TransformerLM(ModelConfig())
    sd = model.state_dict()
    assert list(sd) == reference_keys(4)
    assert all(tuple(v.shape) == reference_shape(k, model.config) for k, v in sd.items())


@pytest.mark.parametrize('fused', [False, True])
def test_reference_state_dict_loads_and_gives_same_logits(fused):
    model = tiny(fused=fused)
    cfg = model.config
    torch.manual_seed(1)  # a state dict built independently, from names and shapes alone
    sd = {k: torch.randn(reference_shape(k, cfg)) * (0.3 if 'layers' in k or 'lm_head' in k else 1.0)
          for k in reference_keys(cfg.num_layers)}
    model.load_state_dict(sd)
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.context_length))
    torch.testing.assert_close(model(idx)[0], reference_lm(sd, cfg, idx), **TOL)


@pytest.mark.parametrize('kw', ALL_COMBOS, ids=lambda kw: '-'.join(str(v) for v in kw.values()))
def test_causal_and_fused_equals_reference(kw):
    """Every switch combination: changing a later token never changes earlier logits; the fused fast path
    gives the reference path's loss and gradients (float32; loss atol 1e-5, grads atol 1e-5 rtol 1e-4)."""
    model = tiny(**kw)
    idx = torch.randint(0, 37, (2, 12), generator=torch.Generator().manual_seed(0))
    logits, loss = model(idx, idx)
    loss.backward()
    changed = idx.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 37
    with torch.no_grad():
        logits2, _ = model(changed)
    torch.testing.assert_close(logits2[:, :7], logits[:, :7].detach(), atol=1e-6, rtol=1e-6)
    assert not torch.allclose(logits2[:, 7:], logits[:, 7:])

    fused = tiny(**kw, fused=True)
    fused.load_state_dict(model.state_dict())
    f_logits, f_loss = fused(idx, idx)
    f_loss.backward()
    torch.testing.assert_close(f_logits, logits, **TOL)
    for (name, p), fp in zip(model.named_parameters(), fused.parameters()):
        torch.testing.assert_close(fp.grad, p.grad, **TOL, msg=name)


@pytest.mark.parametrize('pos_emb', ['rope', 'none', 'learned', 'sinusoidal'])
@pytest.mark.parametrize('fused', [False, True])
def test_kv_cache_equals_full_forward(pos_emb, fused):
    model = tiny(pos_emb=pos_emb, fused=fused)
    idx = torch.randint(0, 37, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_kv_cache(3)
        pieces = []
        for a, b in [(0, 5), (5, 6), (6, 7), (7, 10), (10, 12)]:  # a prompt, single tokens, chunks
            pieces.append(model(idx[:, a:b], kv_cache=cache)[0])
            assert cache.pos == b
    torch.testing.assert_close(torch.cat(pieces, 1), full, **TOL)
    with pytest.raises(ValueError, match='exceeds context_length=12'):
        model(idx[:, :1], kv_cache=cache)


def test_tied_embeddings_share_storage():
    model = tiny(tie_embeddings=True)
    assert model.lm_head.weight is model.token_embeddings.weight
    assert model.state_dict()['lm_head.weight'].data_ptr() == model.state_dict()['token_embeddings.weight'].data_ptr()
    untied = tiny()
    assert model.num_params() == untied.num_params() - 37 * 16
    assert model.lm_head.weight.std() < 0.3  # keeps lm_head's small init, see TransformerLM.__init__
    new = torch.randn(37, 16)
    model.load_state_dict({**model.state_dict(), 'lm_head.weight': new, 'token_embeddings.weight': new})
    assert torch.equal(model.token_embeddings.weight, new)


@pytest.mark.parametrize('kw', [{}, dict(norm='post'), dict(norm_type='layer'), dict(pos_emb='learned'),
                                dict(ffn='gelu', tie_embeddings=True)])
def test_initial_loss_is_about_ln_vocab(kw):
    torch.manual_seed(0)
    model = TransformerLM(ModelConfig(vocab_size=2000, context_length=64, d_model=64, num_layers=2, num_heads=4, **kw))
    idx = torch.randint(0, 2000, (4, 64))
    _, loss = model(idx, idx)
    assert abs(loss.item() - math.log(2000)) < 0.2


def test_block_param_groups_and_counters():
    model = tiny(pos_emb='learned')
    x = torch.randn(2, 5, 16)
    assert model.layers[0](x).shape == (2, 5, 16)
    decay, no_decay = model.param_groups(0.1)
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    assert {id(p) for p in decay['params']} == {id(m.weight) for m in model.modules() if isinstance(m, Linear)}
    assert len(decay['params']) + len(no_decay['params']) == len(list(model.parameters()))
    assert model.num_params() - model.num_params(non_embedding=True) == 37 * 16 + 12 * 16
    # matmul FLOPs = 2 * (matmul parameters) per token, plus the attention scores
    cfg = model.config
    fl = flops_breakdown(cfg, 12)
    linear_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, Linear))
    assert fl['attn_proj'] + fl['ffn'] + fl['lm_head'] == 2 * 12 * linear_params
    assert fl['attn_scores'] == 2 * 2 * 2 * 12 * 12 * 16
    assert model.flops_per_token() == 3 * sum(fl.values()) / 12


def test_gpt2_xl_forward_flops():
    """Handout 3.6 (GPT-2 XL, context 1024, SwiGLU d_ff 6400): ~4.5 TFLOPs per forward pass, 2/3 of it FFN."""
    cfg = ModelConfig(vocab_size=50257, context_length=1024, num_layers=48, d_model=1600, num_heads=25, d_ff=6400)
    fl = flops_breakdown(cfg, 1024)
    assert fl['ffn'] == 48 * 3 * 2 * 1024 * 1600 * 6400
    assert fl['attn_proj'] == 48 * 4 * 2 * 1024 * 1600 * 1600 and fl['lm_head'] == 2 * 1024 * 1600 * 50257
    assert fl['attn_scores'] == 48 * 2 * 2 * 1024 * 1024 * 1600
    assert sum(fl.values()) == 4_513_336_524_800 and round(fl['ffn'] / sum(fl.values()), 3) == 0.669


def test_config_derivation_round_trip_and_errors():
    assert ModelConfig(d_model=512).d_ff == 1344 and ModelConfig(d_model=512, ffn='silu').d_ff == 2048
    cfg = ModelConfig(pos_emb='learned', tie_embeddings=True)
    assert ModelConfig(**dataclasses.asdict(cfg)) == cfg
    bad = [(dict(d_model=100, num_heads=16), 'not divisible by num_heads=16'),
           (dict(d_model=48, num_heads=16), 'must be even'),
           (dict(norm='pre_norm'), "norm='pre_norm' is not one of pre|post|none"),
           (dict(norm_type='batch'), 'rms|layer'), (dict(pos_emb='alibi'), 'rope|none|learned|sinusoidal'),
           (dict(ffn='geglu'), 'swiglu|silu|relu|gelu'), (dict(num_layers=0), 'num_layers=0 must be a positive'),
           (dict(d_ff=-1), 'd_ff=-1'), (dict(vocab_size=10.5), 'vocab_size'), (dict(rope_theta=0), 'rope_theta'),
           (dict(fused='yes'), 'True or False')]
    for kw, message in bad:
        with pytest.raises(ValueError, match=message.replace('|', r'\|')):
            ModelConfig(**kw)
    ModelConfig(d_model=48, num_heads=16, pos_emb='none')  # odd head dim is fine without RoPE


@pytest.mark.parametrize('fused', [False, True])
def test_bf16_autocast_runs_close_to_float32(fused):
    model = tiny(fused=fused)
    idx = torch.randint(0, 37, (2, 12), generator=torch.Generator().manual_seed(0))
    _, loss32 = model(idx, idx)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
    loss.backward()
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert abs(loss.item() - loss32.item()) < 0.05
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize('fused', [False, True])
def test_torch_compile_matches_eager(fused):
    model = tiny(fused=fused)
    idx = torch.randint(0, 37, (2, 12), generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(model)
    loss = compiled(idx, idx)[1]
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref = model(idx, idx)[1]
    ref.backward()
    torch.testing.assert_close(loss, ref, **TOL)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, **TOL)
