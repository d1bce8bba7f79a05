"""From-scratch optimizers, learning-rate schedule and gradient clipping (CS336 assignment 1, section 4).

    $ python -m pytest -q tests/test_optim.py     # checked against torch.optim.AdamW and clip_grad_norm_
    $ python -c "from optim import cosine_lr; print([round(cosine_lr(t, 1, 0.1, 7, 21), 3) for t in range(25)])"

What is here:
- AdamW(params, lr, betas, eps, weight_decay, foreach=False): Adam with decoupled weight decay
  (Loshchilov & Hutter 2019; handout Algorithm 1). `foreach=True` is the opt-in fast path: the same
  arithmetic as one torch._foreach_* kernel per op over all tensors instead of one per tensor
  (fewer kernel launches on GPU); tests check both paths agree.
- SGD(params, lr): the handout's toy example, lr decaying as lr / sqrt(t + 1).
- cosine_lr(it, max_lr, min_lr, warmup_iters, cosine_cycle_iters): linear warmup then cosine decay.
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
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                state = self.state[p]
                if not state:  # lazy init, so the state lives on the parameter's device and dtype
                    state["step"] = 0  # subtle: a Python int, so the bias correction needs no host sync
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
            steps = {self.state[p]["step"] for p in params}
            if group["foreach"] and len(steps) == 1:  # the usual case: every tensor got a gradient every step
                self._update_foreach(params, group, steps.pop())
            else:
                for p in params:
                    self._update_plain(p, group, self.state[p]["step"])
        return loss

    @staticmethod
    def _hyper(group, t):
        """(beta1, beta2, lr_t, eps, lr * weight_decay) for step t, all Python floats."""
        beta1, beta2 = group["betas"]
        lr_t = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        return beta1, beta2, lr_t, group["eps"], group["lr"] * group["weight_decay"]

    def _update_plain(self, p, group, t):
        beta1, beta2, lr_t, eps, decay = self._hyper(group, t)
        m, v, g = self.state[p]["exp_avg"], self.state[p]["exp_avg_sq"], p.grad
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.addcdiv_(m, v.sqrt().add_(eps), value=-lr_t)
        if decay != 0:
            p.mul_(1 - decay)  # theta - lr*wd*theta, after the Adam step as in Algorithm 1

    def _update_foreach(self, params, group, t):
        # The same arithmetic as _update_plain, op for op, each op applied to the whole list at once.
        beta1, beta2, lr_t, eps, decay = self._hyper(group, t)
        grads = [p.grad for p in params]
        ms = [self.state[p]["exp_avg"] for p in params]
        vs = [self.state[p]["exp_avg_sq"] for p in params]
        torch._foreach_mul_(ms, beta1)
        torch._foreach_add_(ms, grads, alpha=1 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, ms, denom, value=-lr_t)
        if decay != 0:
            torch._foreach_mul_(params, 1 - decay)


def cosine_lr(it, max_lr, min_lr, warmup_iters, cosine_cycle_iters):
    """Learning rate at step `it` (handout section 4.3): linear warmup from 0 to max_lr over warmup_iters
    steps, cosine annealing from max_lr to min_lr until cosine_cycle_iters, then min_lr forever."""
    if it < warmup_iters:
        return it / warmup_iters * max_lr
    if it <= cosine_cycle_iters:
        progress = (it - warmup_iters) / max(1, cosine_cycle_iters - warmup_iters)  # 0 -> 1; max() guards 0/0
        return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)
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
