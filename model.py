"""A decoder-only Transformer LM (CS336 assignment 1, handout section 3), every block written from scratch.

    $ python -m pytest -q tests/test_model.py                # each block vs a direct PyTorch formula
    $ python bench_train.py --device=cpu                     # train-step speed vs an equivalent torch.nn model
    $ python -c "from model import *; m = TransformerLM(ModelConfig()); print(m.num_params())"

Switches (ModelConfig fields; defaults are the handout's modern block):
    norm       'pre' | 'post' | 'none'      where the norm sits in each block (post = Vaswani et al. 2017)
    norm_type  'rms' | 'layer'              RMSNorm (Zhang & Sennrich 2019) or LayerNorm (Ba et al. 2016)
    pos_emb    'rope' | 'none' | 'learned' | 'sinusoidal'
    ffn        'swiglu' | 'silu' | 'relu' | 'gelu' | 'relu2'   SwiGLU (Shazeer 2020) or a plain 2-matrix MLP;
               relu2 = ReLU(x)^2 (So et al. 2021, Primer)
    tie_embeddings  lm_head.weight IS token_embeddings.weight (one tensor)
The leaderboard switches (handout 7.5; all off by default, each on its own):
    qk_norm         RMSNorm over the head dim of every query and key before RoPE (Dehghani et al. 2023)
    zero_init_proj  attention output_proj and FFN w2 start at zero, so every block starts as the identity
    logit_softcap   0 = off; else logits = cap * tanh(logits / cap) (Gemma 2), bounding them in (-cap, cap)
    fused      opt-in fast path: PyTorch's fused attention/norm/activation/loss kernels instead of ours
The reference path uses only tensor ops and nn.Parameter; torch.nn.functional appears only behind `fused`.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F  # used only on the fused=True fast path

NORMS = ('pre', 'post', 'none')
NORM_TYPES = ('rms', 'layer')
POS_EMBS = ('rope', 'none', 'learned', 'sinusoidal')
FFNS = ('swiglu', 'silu', 'relu', 'gelu', 'relu2')


@dataclass
class ModelConfig:
    vocab_size: int = 10000  # tokenizer vocabulary, incl. special tokens
    context_length: int = 256  # max tokens per sequence (RoPE/pos-emb tables and the KV cache are this long)
    d_model: int = 512  # residual stream width C
    num_layers: int = 4
    num_heads: int = 16  # H; head dim D = d_model // num_heads
    d_ff: int | None = None  # FFN width; None -> swiglu: 8/3*d_model to the nearest multiple of 64, else 4*d_model
    rope_theta: float = 10000.0  # RoPE base (Su et al. 2021)
    norm: str = 'pre'  # 'pre' | 'post' | 'none'
    norm_type: str = 'rms'  # 'rms' | 'layer'
    pos_emb: str = 'rope'  # 'rope' | 'none' | 'learned' | 'sinusoidal'
    ffn: str = 'swiglu'  # 'swiglu' | 'silu' | 'relu' | 'gelu' | 'relu2'
    tie_embeddings: bool = False  # share token_embeddings.weight with lm_head.weight
    qk_norm: bool = False  # RMSNorm (learned gain per head dim) on q and k of every head
    zero_init_proj: bool = False  # attn.output_proj and ffn.w2 initialised to zero
    logit_softcap: float = 0.0  # 0 = off; else cap * tanh(logits / cap), e.g. 30
    fused: bool = False  # fast path: fused PyTorch kernels (same math, same parameters)

    def __post_init__(self):
        for name, options in (('norm', NORMS), ('norm_type', NORM_TYPES), ('pos_emb', POS_EMBS), ('ffn', FFNS)):
            if getattr(self, name) not in options:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {'|'.join(options)}")
        if self.d_ff is None:
            # handout 3.5.2: d_ff ~ 8/3 d_model for SwiGLU (512 -> 1344); 4 d_model keeps the
            # 2-matrix FFN at the same parameter count (3*512*1344 ~ 2*512*2048)
            # subtle: the NEAREST multiple of 64 (512 -> 1365.3 -> 1344, the handout's value; rounding up gives 1408)
            self.d_ff = max(64, 64 * round(8 * self.d_model / 3 / 64)) if self.ffn == 'swiglu' else 4 * self.d_model
        for name in ('vocab_size', 'context_length', 'd_model', 'num_layers', 'num_heads', 'd_ff'):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if not self.rope_theta > 0:
            raise ValueError(f"rope_theta={self.rope_theta!r} must be positive")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}; "
                             f"pick num_heads among {[h for h in range(1, self.d_model + 1) if self.d_model % h == 0]}")
        if self.pos_emb == 'rope' and (self.d_model // self.num_heads) % 2:
            raise ValueError(f"RoPE rotates pairs, so head dim d_model/num_heads={self.d_model // self.num_heads} "
                             f"must be even; change d_model or num_heads, or use pos_emb='none'|'learned'|'sinusoidal'")
        if self.pos_emb == 'sinusoidal' and self.d_model % 2:
            raise ValueError(f"sinusoidal positions interleave sin/cos, so d_model={self.d_model} must be even")
        if not (isinstance(self.logit_softcap, (int, float)) and self.logit_softcap >= 0):
            raise ValueError(f"logit_softcap={self.logit_softcap!r} must be 0 (off) or a positive cap such as 30.0")
        for name in ('tie_embeddings', 'qk_norm', 'zero_init_proj', 'fused'):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")


# ----------------------------------------------------------------------------- functions

class Softmax(torch.autograd.Function):
    """softmax with its backward written out: for y = softmax(x) and upstream gradient g,
    dL/dx = y * (g - sum(g * y)). Three passes over the (B, H, T, T) attention scores instead of the
    six or so that autograd records for exp / sum / divide, and only y is kept for backward."""

    @staticmethod
    def forward(ctx, x, dim):
        y = softmax_values(x, dim)
        ctx.dim = dim
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved_tensors
        gy = g * y
        return gy.addcmul_(y, gy.sum(ctx.dim, keepdim=True), value=-1), None  # gy - y * sum(gy)


def softmax_values(x, dim):
    """The forward computation of softmax (no autograd record)."""
    # subtract the max so exp never overflows (handout 3.5.4); softmax(x - c) == softmax(x)
    z = x - x.amax(dim, keepdim=True)
    # subtle: exp is ~10x slower on inputs below -87 (results that underflow), and half of causal
    # attention is masked down there. So exp sees max(z, -80), and entries with z < -80 (weight below
    # e^-80 ~ 2e-35 of the largest, which includes -inf and masked scores) are set to exactly 0.
    flushed = z < -80.0
    e = z.clamp_min_(-80.0).exp_().masked_fill_(flushed, 0.0)
    return e.div_(e.sum(dim, keepdim=True))


def softmax(x, dim):
    """exp(x) / sum(exp(x)) along `dim`, numerically stable (see Softmax)."""
    if x.requires_grad and torch.is_grad_enabled():
        return Softmax.apply(x, dim)
    return softmax_values(x, dim)  # inference (e.g. KV-cache decoding): skip the autograd.Function overhead


def silu(x):
    """SiLU / Swish: x * sigmoid(x) (torch.sigmoid is the numerically stable logistic)."""
    return x * torch.sigmoid(x)


def relu(x):
    """max(x, 0)."""
    return x.clamp_min(0)


def relu2(x):
    """ReLU squared, max(x, 0)^2 (So et al. 2021): sparse like ReLU, smooth at 0 like GELU."""
    return x.clamp_min(0).square()


def gelu(x):
    """Exact GELU, x * Phi(x) with the normal CDF written through erf (Hendrycks & Gimpel 2016)."""
    return 0.5 * x * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))


ACTIVATIONS = {'silu': silu, 'relu': relu, 'gelu': gelu, 'relu2': relu2}
FUSED_ACTIVATIONS = {'silu': F.silu, 'relu': F.relu, 'gelu': F.gelu, 'relu2': relu2}  # F's one-kernel versions where they exist


def scaled_dot_product_attention(Q, K, V, mask=None):
    """softmax(Q K^T / sqrt(D)) V. Q (..., Tq, D), K (..., Tk, D), V (..., Tk, Dv), mask (Tq, Tk) or
    broadcastable to (..., Tq, Tk), True = attend. A query whose whole row is masked gets the mean of V
    (every score is the same large negative number) instead of NaN."""
    # scaling Q (..., Tq, D) is cheaper than scaling the (..., Tq, Tk) scores; softmax runs in float32
    # even under bf16 autocast, as in PyTorch's fused kernels
    scores = ((Q * (1.0 / math.sqrt(Q.shape[-1]))) @ K.transpose(-2, -1)).float()  # (..., Tq, Tk)
    if mask is not None:
        # subtle: the most negative finite float, not -inf, so a fully masked row stays finite. Adding a
        # bias built at the mask's size (T, T) costs no backward pass, unlike masked_fill on the scores.
        bias = torch.zeros(mask.shape, device=scores.device).masked_fill_(~mask, torch.finfo(torch.float32).min)
        scores = scores + bias
    return softmax(scores, dim=-1).to(V.dtype) @ V


class CrossEntropy(torch.autograd.Function):
    """sum_i weight_i * -log softmax(logits_i)[target_i] for logits (N, V), targets (N,), weight (N,), with its
    backward written out: dL/dlogits_i = (softmax(logits_i) - onehot(target_i)) * weight_i * g. That is one
    pass over the (N, V) logits instead of the three or four autograd would make for exp / sum / gather."""

    @staticmethod
    def forward(ctx, logits, targets, weight):
        m = logits.amax(-1, keepdim=True)  # subtract the max: log-sum-exp without overflow (handout 4.1)
        e = (logits - m).exp_()
        s = e.sum(-1, keepdim=True)
        nll = (s.log() + m).squeeze(-1) - logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N,)
        ctx.save_for_backward(e.div_(s), targets, weight)  # e / s = softmax probabilities
        return (nll * weight).sum()

    @staticmethod
    def backward(ctx, g):
        probs, targets, weight = ctx.saved_tensors
        w = weight * g  # (N,)
        grad = probs * w.unsqueeze(-1)
        grad[torch.arange(len(targets), device=grad.device), targets] -= w  # the onehot part
        return grad, None, None


def cross_entropy(logits, targets, ignore_index=None):
    """Mean over all leading dims of -log softmax(logits)[target]. logits (..., V), targets (...) int64.
    Targets equal to ignore_index are left out of the mean (if all are, the result is NaN, like torch)."""
    logits = logits.float().reshape(-1, logits.shape[-1])  # bf16 logits under autocast: lse in float32
    targets = targets.reshape(-1)
    if ignore_index is None:
        weight = torch.full(targets.shape, 1.0 / len(targets), device=logits.device)
    else:
        keep = targets != ignore_index
        weight = keep / keep.sum()  # 1/count for kept rows, 0 for ignored ones
        targets = targets.masked_fill(~keep, 0)  # any valid index: its row has weight 0
    return CrossEntropy.apply(logits, targets, weight)


def fused_cross_entropy(logits, targets, ignore_index=None):
    """Fast path of cross_entropy: torch's fused log-softmax + NLL kernel, same semantics."""
    kwargs = {} if ignore_index is None else {'ignore_index': ignore_index}
    return F.cross_entropy(logits.float().flatten(0, -2), targets.flatten(), **kwargs)


# ----------------------------------------------------------------------------- layers

class Linear(nn.Module):
    """y = x W^T, no bias. W (d_out, d_in) ~ truncated normal, sigma^2 = 2 / (d_in + d_out), cut at +-3 sigma."""

    def __init__(self, d_in, d_out, device=None, dtype=None):
        super().__init__()
        std = math.sqrt(2.0 / (d_in + d_out))
        self.weight = nn.Parameter(torch.empty(d_out, d_in, device=device, dtype=dtype))
        nn.init.trunc_normal_(self.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)

    def forward(self, x):  # (..., d_in) -> (..., d_out)
        return x @ self.weight.t()


class Embedding(nn.Module):
    """Lookup table weight (num_embeddings, embedding_dim) ~ truncated normal, sigma = 1, cut at +-3."""

    def __init__(self, num_embeddings, embedding_dim, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        nn.init.trunc_normal_(self.weight, mean=0.0, std=1.0, a=-3.0, b=3.0)

    def forward(self, idx):  # (...) int64 -> (..., embedding_dim)
        return self.weight[idx]


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last dim, computed in float32 and cast back (handout 3.5.1)."""

    def __init__(self, d_model, eps=1e-5, fused=False, device=None, dtype=None):
        super().__init__()
        self.eps, self.fused = eps, fused
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))

    def forward(self, x):
        in_dtype = x.dtype
        x = x.float()  # squaring bf16 activations loses too much precision
        if self.fused:
            return F.rms_norm(x, self.weight.shape, self.weight.float(), self.eps).to(in_dtype)
        return (x * torch.rsqrt(x.square().mean(-1, keepdim=True) + self.eps) * self.weight).to(in_dtype)


class LayerNorm(nn.Module):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dim, in float32 (for the norm_type ablation)."""

    def __init__(self, d_model, eps=1e-5, fused=False, device=None, dtype=None):
        super().__init__()
        self.eps, self.fused = eps, fused
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(d_model, device=device, dtype=dtype))

    def forward(self, x):
        in_dtype = x.dtype
        x = x.float()
        if self.fused:
            return F.layer_norm(x, self.weight.shape, self.weight.float(), self.bias.float(), self.eps).to(in_dtype)
        x = x - x.mean(-1, keepdim=True)
        return (x * torch.rsqrt(x.square().mean(-1, keepdim=True) + self.eps) * self.weight + self.bias).to(in_dtype)


class FeedForward(nn.Module):
    """Position-wise MLP: w2(act(w1 x)), or with gated=True w2(act(w1 x) * w3 x) (a GLU, Shazeer 2020)."""

    def __init__(self, d_model, d_ff, act=silu, gated=False):
        super().__init__()
        self.act = act
        self.w1 = Linear(d_model, d_ff)
        self.w2 = Linear(d_ff, d_model)
        self.w3 = Linear(d_model, d_ff) if gated else None

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        h = self.act(self.w1(x))  # (B, T, d_ff)
        if self.w3 is not None:
            h = h * self.w3(x)
        return self.w2(h)


class SwiGLU(FeedForward):
    """w2(silu(w1 x) * w3 x): the handout's FFN (3.5.2)."""

    def __init__(self, d_model, d_ff, act=silu):
        super().__init__(d_model, d_ff, act=act, gated=True)


class RoPE(nn.Module):
    """Rotary position embedding (Su et al. 2021): rotates each pair (x[2i], x[2i+1]) of a query/key vector by
    the angle pos * theta^(-2i/D). x (..., T, D), token_positions (..., T) int -> (..., T, D)."""

    def __init__(self, theta, d_k, max_seq_len, device=None):
        super().__init__()
        inv_freq = theta ** (-torch.arange(0, d_k, 2, device=device, dtype=torch.float64) / d_k)  # (D/2,)
        angles = torch.arange(max_seq_len, device=device, dtype=torch.float64)[:, None] * inv_freq  # (T, D/2)
        # Rotating (a, b) by t gives (a cos t - b sin t, b cos t + a sin t) = (a, b) * cos t + (b, a) * (-sin t, sin t):
        # so the tables hold each angle twice, (cos, cos) and (-sin, sin), and forward is 2 multiplies and an add
        # (few tensor ops matter when decoding one token at a time). Not persistent: derived from the config, so
        # they stay out of the state dict (as in the reference).
        self.register_buffer('cos', angles.cos().repeat_interleave(2, dim=-1).float(), persistent=False)  # (T, D)
        self.register_buffer('sin', torch.stack((-angles.sin(), angles.sin()), dim=-1).flatten(-2).float(),
                             persistent=False)

    def forward(self, x, token_positions):
        swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # every pair (a, b) -> (b, a)
        return (x * self.cos[token_positions] + swapped * self.sin[token_positions]).to(x.dtype)


class SinusoidalPositions(nn.Module):
    """Fixed absolute positions (Vaswani et al. 2017): PE[p, 2i] = sin(p / 10000^(2i/C)), PE[p, 2i+1] = cos(...)."""

    def __init__(self, max_seq_len, d_model):
        super().__init__()
        angles = torch.arange(max_seq_len, dtype=torch.float64)[:, None] * \
            10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (T, C/2)
        table = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # (T, C)
        self.register_buffer('table', table.float(), persistent=False)

    def forward(self, token_positions):  # (T,) -> (T, C)
        return self.table[token_positions]


class MultiHeadSelfAttention(nn.Module):
    """Causal multi-head self-attention (handout 3.5.5). One (C, C) matmul per projection covers all heads;
    RoPE, if given, rotates Q and K per head. With a KV cache, keys/values of earlier calls are reused.
    qk_norm=True RMS-normalises every query and key over the head dim first, so the attention logits
    q.k / sqrt(D) are bounded by sqrt(D) * |gain|^2 and cannot blow up as the weights grow."""

    def __init__(self, d_model, num_heads, rope=None, fused=False, layer_idx=0, qk_norm=False):
        super().__init__()
        self.num_heads, self.rope, self.fused, self.layer_idx = num_heads, rope, fused, layer_idx
        self.q_proj = Linear(d_model, d_model)
        self.k_proj = Linear(d_model, d_model)
        self.v_proj = Linear(d_model, d_model)
        self.output_proj = Linear(d_model, d_model)
        if qk_norm:  # gains of ones: no random numbers drawn, so the other weights init as without it
            self.q_norm = RMSNorm(d_model // num_heads, fused=fused)
            self.k_norm = RMSNorm(d_model // num_heads, fused=fused)
        self.qk_norm = qk_norm

    def forward(self, x, token_positions=None, kv_cache=None):
        B, T, C = x.shape
        H = self.num_heads
        q, k, v = (proj(x).view(B, T, H, C // H).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))
        if self.qk_norm:  # (B, H, T, D), normalised over D; before RoPE, which preserves the norm anyway
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:  # q, k: (B, H, T, D)
            if token_positions is None:
                token_positions = torch.arange(T, device=x.device)
            if token_positions.dim() > 1:  # (B, T) -> (B, 1, T): the same positions for every head
                token_positions = token_positions.unsqueeze(-2)
            q, k = self.rope(torch.stack((q, k)), token_positions)  # one call rotates both: (2, B, H, T, D)
        start = 0
        if kv_cache is not None:
            start = kv_cache.pos
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, H, start + T, D)
        if self.fused and kv_cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # query t (absolute position start + t) sees keys 0 .. start + t; a single new token sees them all
            mask = None if T == 1 else torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
            attend = F.scaled_dot_product_attention if self.fused else scaled_dot_product_attention
            y = attend(q, k, v, mask)  # (B, H, T, D)
        return self.output_proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """One Transformer block. pre: x + f(norm(x)); post: norm(x + f(x)); none: x + f(x)."""

    def __init__(self, config, rope=None, layer_idx=0):
        super().__init__()
        self.post_norm = config.norm == 'post'
        self.ln1 = make_norm(config)
        self.attn = MultiHeadSelfAttention(config.d_model, config.num_heads, rope, config.fused, layer_idx,
                                           config.qk_norm)
        self.ln2 = make_norm(config)
        act = (FUSED_ACTIVATIONS if config.fused else ACTIVATIONS)['silu' if config.ffn == 'swiglu' else config.ffn]
        self.ffn = FeedForward(config.d_model, config.d_ff, act, gated=config.ffn == 'swiglu')
        if config.zero_init_proj:
            # subtle: zeroed after the random init, so the RNG stream (and every other weight) is unchanged.
            # Each block then adds exactly 0 to the residual stream at step 0; w2's gradient is still nonzero.
            nn.init.zeros_(self.attn.output_proj.weight)
            nn.init.zeros_(self.ffn.w2.weight)

    def forward(self, x, token_positions=None, kv_cache=None):  # (B, T, C) -> (B, T, C)
        if self.post_norm:
            x = self.ln1(x + self.attn(x, token_positions, kv_cache))
            return self.ln2(x + self.ffn(x))
        x = x + self.attn(self.ln1(x), token_positions, kv_cache)  # 'none': ln1, ln2 are identities
        return x + self.ffn(self.ln2(x))


def make_norm(config):
    """The norm layer the config asks for; nn.Identity (no parameters) when norm='none'."""
    if config.norm == 'none':
        return nn.Identity()
    return (RMSNorm if config.norm_type == 'rms' else LayerNorm)(config.d_model, fused=config.fused)


class KVCache:
    """Keys and values of the tokens processed so far: per layer a pair of (B, H, context_length, D) buffers,
    filled up to `pos`. Made by TransformerLM.new_kv_cache; the model advances `pos` after each forward."""

    def __init__(self, num_layers, batch_size, max_len):
        self.batch_size, self.max_len = batch_size, max_len
        self.pos = 0  # tokens already cached = absolute position of the next token
        self.k = [None] * num_layers  # allocated on first use, in the keys' dtype (bf16 under autocast)
        self.v = [None] * num_layers

    def update(self, layer, k, v):
        """Store k, v (B, H, T, D) at positions pos .. pos+T-1; return all cached keys, values (B, H, pos+T, D)."""
        if self.k[layer] is None:
            B, H, _, D = k.shape
            self.k[layer] = k.new_zeros(B, H, self.max_len, D)
            self.v[layer] = v.new_zeros(B, H, self.max_len, D)
        end = self.pos + k.shape[2]
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class TransformerLM(nn.Module):
    """token_embeddings -> (+ absolute positions) -> num_layers Blocks -> ln_final -> lm_head (handout 3.1)."""

    def __init__(self, config):
        super().__init__()
        self.config = c = config
        self.token_embeddings = Embedding(c.vocab_size, c.d_model)
        if c.pos_emb == 'learned':
            self.pos_embeddings = Embedding(c.context_length, c.d_model)
        elif c.pos_emb == 'sinusoidal':
            self.pos_embeddings = SinusoidalPositions(c.context_length, c.d_model)
        else:
            self.pos_embeddings = None
        # one RoPE table shared by every layer (non-persistent buffers: nothing in the state dict)
        rope = RoPE(c.rope_theta, c.d_model // c.num_heads, c.context_length) if c.pos_emb == 'rope' else None
        self.layers = nn.ModuleList(Block(c, rope, i) for i in range(c.num_layers))
        self.ln_final = make_norm(c)  # kept for post-norm too (harmless re-normalisation); absent for 'none'
        self.lm_head = Linear(c.d_model, c.vocab_size)
        if c.tie_embeddings:
            # subtle: the shared matrix keeps lm_head's init (sigma ~ 0.014), not the embedding's sigma = 1,
            # which would make the initial logits ~sqrt(d_model) large and the initial loss >> ln(vocab_size).
            # The state dict then holds the same tensor under both names; load_state_dict fills it twice
            # (lm_head.weight last, so its values win if the two entries differ).
            self.token_embeddings.weight = self.lm_head.weight
        self.loss_fn = fused_cross_entropy if c.fused else cross_entropy
        self.softcap = float(c.logit_softcap)

    def forward(self, idx, targets=None, kv_cache=None):
        """idx (B, T) int64 -> logits (B, T, vocab_size), loss (mean cross-entropy vs targets, or None).
        With kv_cache, idx holds the tokens at positions kv_cache.pos .. kv_cache.pos + T - 1."""
        B, T = idx.shape
        start = 0 if kv_cache is None else kv_cache.pos
        if start + T > self.config.context_length:
            raise ValueError(f"sequence of {start + T} tokens ({start} cached + {T} new) exceeds context_length="
                             f"{self.config.context_length}; crop the input or start a new cache")
        if kv_cache is not None and B != kv_cache.batch_size:
            raise ValueError(f"idx has batch size {B} but the KV cache was made for {kv_cache.batch_size}")
        positions = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.token_embeddings(idx)  # (B, T, C)
        if self.pos_embeddings is not None:
            x = x + self.pos_embeddings(positions)
        for block in self.layers:
            x = block(x, positions, kv_cache)
        logits = self.lm_head(self.ln_final(x))  # (B, T, V)
        if self.softcap:  # in float32: tanh of bf16 logits would round them to ~3 significant digits
            logits = self.softcap * torch.tanh(logits.float() / self.softcap)
        if kv_cache is not None:
            kv_cache.pos += T
        return logits, (None if targets is None else self.loss_fn(logits, targets))

    def new_kv_cache(self, batch_size):
        """An empty KVCache for incremental decoding (under torch.no_grad() or torch.inference_mode()):
        model(idx_new, kv_cache=cache) appends idx_new. The cache holds at most context_length tokens; crop and
        refill it to go further."""
        return KVCache(self.config.num_layers, batch_size, self.config.context_length)

    def num_params(self, non_embedding=False):
        """Number of parameters (a tied matrix counted once). non_embedding=True leaves out the lookup tables
        (token and learned position embeddings), which cost no FLOPs; a tied matrix then counts as lm_head."""
        skip = set()
        if non_embedding:
            tables = [self.token_embeddings] * (not self.config.tie_embeddings) + [self.pos_embeddings]
            skip = {id(p) for m in tables if m is not None for p in m.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)  # a shared tensor is yielded once

    def flops_per_token(self):
        """Training FLOPs per token (forward + backward = 3x forward matmul FLOPs, attention scores counted at
        the full context_length, as in the PaLM paper's MFU appendix). For MFU = tokens/s * this / peak."""
        c = self.config
        return 3 * sum(flops_breakdown(c, c.context_length).values()) / c.context_length

    def param_groups(self, weight_decay, muon=False):
        """Optimizer groups: weight decay on the weight of every Linear (incl. lm_head, hence a tied embedding
        matrix too); none on norm gains/biases and untied embedding tables, which decay would only shrink.
        muon=True puts the 2-D weights inside the blocks (q, k, v, output_proj, w1, w2, w3) in a first group
        with use_muon=True; the rest (embeddings, lm_head, norms) keep the two AdamW groups, use_muon=False."""
        decay = {id(m.weight) for m in self.modules() if isinstance(m, Linear)}
        # subtle: lm_head stays on AdamW even though it is 2-D: its rows are per-token outputs, not a hidden map
        hidden = {id(m.weight) for m in self.layers.modules() if isinstance(m, Linear)} if muon else set()
        params = list(self.parameters())
        groups = [{'params': [p for p in params if id(p) in decay and id(p) not in hidden], 'weight_decay': weight_decay},
                  {'params': [p for p in params if id(p) not in decay], 'weight_decay': 0.0}]
        if not muon:
            return groups
        return [{'params': [p for p in params if id(p) in hidden], 'weight_decay': weight_decay, 'use_muon': True},
                *({**g, 'use_muon': False} for g in groups)]


def flops_breakdown(config, seq_len):
    """Forward-pass matmul FLOPs (2 per multiply-add) for ONE sequence of seq_len tokens, by component
    (handout 3.6). Embedding lookups, norms, softmax and other elementwise work are not counted."""
    C, L, T = config.d_model, config.num_layers, seq_len
    return {
        'attn_proj': L * 4 * 2 * T * C * C,  # q, k, v, output projections
        'attn_scores': L * 2 * 2 * T * T * C,  # Q K^T and (attention weights) V, all heads together
        'ffn': L * (3 if config.ffn == 'swiglu' else 2) * 2 * T * C * config.d_ff,
        'lm_head': 2 * T * C * config.vocab_size,
    }
