"""From-scratch optimizers, learning-rate schedule and gradient clipping (CS336 assignment 1, section 4).

    $ python -m pytest -q tests/test_optim.py     # checked against torch.optim.AdamW and clip_grad_norm_
    $ python -c "from optim import cosine_lr; print([round(cosine_lr(t, 1, 0.1, 7, 21), 3) for t in range(25)])"

What is here:
- AdamW(params, lr, betas, eps, weight_decay, foreach=False): Adam with decoupled weight decay
  (Loshchilov & Hutter 2019; handout Algorithm 1). `foreach=True` is the opt-in fast path: the same
  arithmetic as one torch._foreach_* kernel per op over all tensors instead of one per tensor
  (fewer kernel launches on GPU); tests check both paths agree.
- SGD(params, lr): the handout's toy example, lr decaying as lr / sqrt(t + 1).
- Muon(param_groups, lr=0.02, momentum=0.95, ...): momentum, then the update orthogonalised by a Newton-Schulz
  iteration (Jordan et al. 2024), for the 2-D hidden weight matrices (groups with use_muon=True); groups with
  use_muon=False get AdamW's update, so the training loop steps ONE optimizer (see model.param_groups(muon=True)).
- cosine_lr(it, max_lr, min_lr, warmup_iters, cosine_cycle_iters): linear warmup then cosine decay.
- wsd_lr(it, max_lr, min_lr, warmup_iters, decay_start, total_iters): warmup-stable-decay (trapezoidal).
- clip_grad_norm(params, max_norm): scale all gradients so their global L2 norm is at most max_norm.
Nothing here syncs with the host: step counts live in Python ints, norms stay tensors.
"""
import math

import torch


class SGD(torch.optim.Optimizer):
    """The handout's example optimizer: theta <- theta - lr / sqrt(t + 1) * grad, t = steps taken so far."""

    def __init__(self, params, lr=1e-3):
        if lr < 0:
            raise ValueError(f"invalid learning rate {lr}: must be >= 0")
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else torch.enable_grad()(closure)()  # the closure re-runs forward/backward
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                t = state.get("t", 0)  # per-parameter step count, saved in state_dict
                p.add_(p.grad, alpha=-group["lr"] / math.sqrt(t + 1))
                state["t"] = t + 1
        return loss


class AdamW(torch.optim.Optimizer):
    """AdamW, handout Algorithm 1. Per step t (from 1), for each parameter theta with gradient g:

        m <- beta1 * m + (1 - beta1) * g              first moment
        v <- beta2 * v + (1 - beta2) * g^2            second moment
        lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)   bias correction folded into the step size
        theta <- theta - lr_t * m / (sqrt(v) + eps)
        theta <- theta - lr * weight_decay * theta    decoupled decay: uses lr, not lr_t, and never touches m, v

    lr and weight_decay are read from each param group at every step, so a schedule just writes group['lr'].
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, foreach=False):
        if lr < 0:
            raise ValueError(f"invalid learning rate {lr}: must be >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}: each must be in [0, 1)")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"invalid eps {eps} or weight_decay {weight_decay}: must be >= 0")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else torch.enable_grad()(closure)()  # the closure re-runs forward/backward
        for group in self.param_groups:
            self.step_group(group, self.state)
        return loss

    @classmethod
    def step_group(cls, group, state):
        """One AdamW step for the parameters of `group` with a gradient; `state` maps parameter -> its state
        dict (an optimizer's self.state). Muon calls this for its non-Muon groups."""
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            s = state[p]
            if not s:  # lazy init, so the state lives on the parameter's device and dtype
                s["step"] = 0  # subtle: a Python int, so the bias correction needs no host sync
                s["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                s["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            s["step"] += 1
        steps = {state[p]["step"] for p in params}
        if group["foreach"] and len(steps) == 1:  # the usual case: every tensor got a gradient every step
            cls._update_foreach(params, group, state, steps.pop())
        else:
            for p in params:
                cls._update_plain(p, group, state[p], state[p]["step"])

    @staticmethod
    def _hyper(group, t):
        """(beta1, beta2, lr_t, eps, lr * weight_decay) for step t, all Python floats."""
        beta1, beta2 = group["betas"]
        lr_t = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        return beta1, beta2, lr_t, group["eps"], group["lr"] * group["weight_decay"]

    @classmethod
    def _update_plain(cls, p, group, s, t):
        beta1, beta2, lr_t, eps, decay = cls._hyper(group, t)
        m, v, g = s["exp_avg"], s["exp_avg_sq"], p.grad
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.addcdiv_(m, v.sqrt().add_(eps), value=-lr_t)
        if decay != 0:
            p.mul_(1 - decay)  # theta - lr*wd*theta, after the Adam step as in Algorithm 1

    @classmethod
    def _update_foreach(cls, params, group, state, t):
        # The same arithmetic as _update_plain, op for op, each op applied to the whole list at once.
        beta1, beta2, lr_t, eps, decay = cls._hyper(group, t)
        grads = [p.grad for p in params]
        ms = [state[p]["exp_avg"] for p in params]
        vs = [state[p]["exp_avg_sq"] for p in params]
        torch._foreach_mul_(ms, beta1)
        torch._foreach_add_(ms, grads, alpha=1 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, ms, denom, value=-lr_t)
        if decay != 0:
            torch._foreach_mul_(params, 1 - decay)


def newton_schulz(G, steps=5, eps=1e-7):
    """An approximation of U V^T for G = U S V^T (G's nearest semi-orthogonal matrix): the quintic iteration
    X <- a X + (b A + c A^2) X, A = X X^T, of Jordan et al. (2024). Its coefficients trade exactness for speed:
    after 5 steps the singular values land in roughly [0.7, 1.2] instead of exactly 1, which trains as well."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16() if G.is_cuda else G.float()  # bf16 is stable here on GPU (the iteration is self-correcting)
    tall = X.shape[-2] > X.shape[-1]
    if tall:  # iterate on the wide side: A = X X^T is then the smaller Gram matrix
        X = X.mT
    X = X / (X.norm() + eps)  # Frobenius norm >= spectral norm, so every singular value starts in [0, 1]
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X.mT if tall else X


class Muon(torch.optim.Optimizer):
    """Muon (Jordan et al. 2024, "MomentUm Orthogonalized by Newton-Schulz") for 2-D weight matrices, AdamW for
    everything else, in one optimizer. For a group with use_muon=True (every parameter 2-D), per step:

        buf <- momentum * buf + (1 - momentum) * g                  momentum, as an EMA
        u = g + momentum * (buf - g) if nesterov else buf           Nesterov: look one step ahead
        theta <- theta * (1 - lr * weight_decay)                    decoupled decay
        theta <- theta - lr * sqrt(max(1, rows / cols)) * newton_schulz(u)

    Orthogonalising sets every singular value of the step to ~1, so rare directions of the gradient move as far
    as the dominant ones; the sqrt factor keeps the per-entry update size similar for tall matrices.
    Groups with use_muon=False take AdamW.step_group with their own lr, betas, eps, weight_decay, foreach.
    """

    def __init__(self, params, lr=0.02, momentum=0.95, nesterov=True, ns_steps=5, weight_decay=0.0,
                 betas=(0.9, 0.95), eps=1e-8, foreach=False, use_muon=True):
        if lr < 0 or not 0.0 <= momentum < 1.0 or weight_decay < 0:
            raise ValueError(f"invalid lr {lr}, momentum {momentum} or weight_decay {weight_decay}: need lr >= 0, "
                             f"0 <= momentum < 1, weight_decay >= 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                      weight_decay=weight_decay, betas=betas, eps=eps, foreach=foreach,
                                      use_muon=use_muon))
        for group in self.param_groups:
            if group["use_muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon orthogonalises matrices: a use_muon=True group holds a parameter that is "
                                 "not 2-D; put it in a group with use_muon=False (see model.param_groups(muon=True))")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else torch.enable_grad()(closure)()  # the closure re-runs forward/backward
        for group in self.param_groups:
            if not group["use_muon"]:
                AdamW.step_group(group, self.state)
                continue
            lr, mu = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"].lerp_(p.grad, 1 - mu)
                u = p.grad.lerp(buf, mu) if group["nesterov"] else buf
                update = newton_schulz(u, group["ns_steps"]).to(p.dtype)
                if group["weight_decay"] != 0:
                    p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-lr * max(1.0, p.shape[0] / p.shape[1]) ** 0.5)
        return loss


def cosine_lr(it, max_lr, min_lr, warmup_iters, cosine_cycle_iters):
    """Learning rate at step `it` (handout section 4.3): linear warmup from 0 to max_lr over warmup_iters
    steps, cosine annealing from max_lr to min_lr until cosine_cycle_iters, then min_lr forever."""
    if it < warmup_iters:
        return it / warmup_iters * max_lr
    if it <= cosine_cycle_iters:
        progress = (it - warmup_iters) / max(1, cosine_cycle_iters - warmup_iters)  # 0 -> 1; max() guards 0/0
        return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)
    return min_lr


def wsd_lr(it, max_lr, min_lr, warmup_iters, decay_start, total_iters):
    """Warmup-stable-decay (trapezoidal) schedule (Hagele et al. 2024): linear warmup from 0 to max_lr over
    warmup_iters steps, flat at max_lr until decay_start, linear decay to min_lr at total_iters, then min_lr.
    Unlike the cosine, the flat part does not depend on the run's length, so only the final decay does."""
    if it < warmup_iters:
        return it / warmup_iters * max_lr
    if it < decay_start:
        return max_lr
    if it < total_iters:
        return max_lr + (it - decay_start) / (total_iters - decay_start) * (min_lr - max_lr)
    return min_lr


@torch.no_grad()
def clip_grad_norm(params, max_norm, eps=1e-6):
    """Scale every gradient in place so that the L2 norm of all gradients together is at most max_norm
    (handout section 4.4); parameters without a gradient are skipped. Returns the norm before clipping,
    as a 0-d tensor (call .item() only when you need the number: it waits for the device)."""
    params = [params] if isinstance(params, torch.Tensor) else params
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    # Global norm = norm of the per-tensor norms; computed in float32 even for low-precision grads.
    norms = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads])
    total = torch.linalg.vector_norm(norms)
    # subtle: multiply by min(1, max_norm / (total + eps)) unconditionally rather than `if total > max_norm`,
    # which would need the value on the host; the factor is exactly 1 when no clipping is needed.
    scale = (max_norm / (total + eps)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return total
