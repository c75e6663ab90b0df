"""Block verification on a device (a round-level family: one round at a time per trial).

:func:`sim.engine.block.block_kernel` as tensor operations, operation by operation in float64,
so the arrays equal the compiled engine's bit for bit.
"""

from __future__ import annotations

from gpu_kernels.engine import (
    _Run,
    _torch,
    inverse_cdf,
    register_run,
    running_sums,
)
from sim.engine.block import BlockTables
from sim.engine.result import SimResult


class _BlockRun(_Run):
    """Block verification (:func:`sim.engine.block.block_kernel`), bit for bit.

    Every trial plays its own rounds, starting at its own position, so this run is not a
    per-position step: all trials play one round per iteration of the outer loop (finished
    trials are masked), every round drafting γ tokens with masks beyond γ' — correctness and
    bit-identity first, not GPU speed.  The O(V) sums r_i and the residual's running sums
    add the columns x = 0 … V − 1 one tensor operation at a time, in the kernel's order
    (``torch.cumsum`` is sequential on the CPU but not on CUDA).  A round's uniforms (slots
    0 … 2γ + 1) come from one cipher evaluation at the round's start position, a tensor, so
    ``philox="fused"`` falls back to the tensor backend here.
    """

    def __init__(self, tables: BlockTables, device, philox):
        super().__init__(tables, device, philox)
        vocab_size = self.layout.vocab_size
        self.draft = self.alias(tables.draft)
        self.target = self.alias(tables.target)
        self.p = self.floats(tables.draft_probs).view(-1, vocab_size)
        self.q = self.floats(tables.target_probs).view(-1, vocab_size)
        self.window, self.bonus = tables.algorithm.window, bool(tables.algorithm.bonus)
        self.selection = tables.selection

    @classmethod
    def tensor_calls(cls, algorithm, target) -> float:
        """Up to T rounds per chunk, each drafting γ tokens (a column-by-column sum over V for
        each) and drawing the residual; generous (the round's cipher is one evaluation)."""
        vocab = target.vocab_size
        return target.horizon * (float(algorithm.window) * (4 * vocab + 200) + 8 * vocab + 300)

    def _select(self, u, span, weights, ratios):
        torch = _torch()
        window, rule = self.window, self.selection
        tau = torch.zeros_like(span)
        if rule in (0, 1):  # τ = max{i : η_i < h_i}; rule 1 shares η₁ (slot 1)
            shared = u[1]
            found = torch.zeros_like(span, dtype=torch.bool)
            for i in range(window, 0, -1):
                eta = shared if rule == 1 else u[2 * i - 1]
                hit = (i <= span) & ~found & (eta < weights[i])
                tau = torch.where(hit, i, tau)
                found |= hit
            return tau
        if rule == 2:  # upward scan, stop at the first failure
            tau = span.clone()
            stopped = torch.zeros_like(span, dtype=torch.bool)
            for i in range(1, window + 1):
                fail = (i <= span) & ~stopped & ~(u[2 * i - 1] < weights[i])
                tau = torch.where(fail, i - 1, tau)
                stopped |= fail
            return tau
        products = torch.ones_like(weights[0])  # cumulative products
        etas = torch.ones_like(weights[0])
        for i in range(1, window + 1):
            products = products * ratios[i]
            etas = etas * u[2 * i - 1]
            tau = torch.where((i <= span) & (products >= etas), i, tau)
        return tau

    def run(self, key, first: int, n: int, record_tokens: bool) -> SimResult:
        torch = _torch()
        self.key = key
        layout, window = self.layout, self.window
        horizon, stride = layout.horizon, layout.row_stride
        device = self.device
        trial, index, context, position, rejections, calls, n_drafted, tokens = \
            self.round_setup(first, n, record_tokens)
        ones = torch.ones(n, dtype=torch.float64, device=device)
        while True:
            active = position < horizon
            if not bool(active.any()):
                break
            calls += active
            start = position
            span = (horizon - position).clamp(min=0, max=window)
            n_drafted += span.to(n_drafted.dtype)  # 0 for finished trials
            contexts, pis, weights, ratios, drafted = [context], [ones], [ones], [ones], []
            u = self.slots(trial, start, range(window + 1))  # the round's slots 0 … 2γ + 1
            for i in range(window):
                row = (position + i).clamp(max=horizon - 1) * stride + contexts[i]
                p_rows, q_rows = self.p.index_select(0, row), self.q.index_select(0, row)
                if i > 0:
                    r = running_sums(pis[i][:, None] * q_rows - p_rows)[:, -1]
                    denominator = r + (1.0 - pis[i])
                    positive = denominator > 0.0
                    weights.append(torch.where(
                        positive, r / torch.where(positive, denominator, 1.0), 1.0))
                token = self.draft.draw(row, u[2 * i]).long()
                drafted.append(token)
                ratio = q_rows.gather(1, token[:, None])[:, 0] / \
                    p_rows.gather(1, token[:, None])[:, 0]
                product = pis[i] * ratio
                ratios.append(ratio)
                pis.append(torch.where(product < 1.0, product, 1.0))
                contexts.append(self.advance(contexts[i], token).long())
            weights.append(pis[window])
            weights = [torch.where(span == i, pis[i], h) for i, h in enumerate(weights)]
            tau = self._select(u, span, weights, ratios)
            if record_tokens:
                for i in range(window):
                    kept = active & (i < tau)
                    tokens[kept, (position + i)[kept]] = drafted[i][kept].to(tokens.dtype)
            context = torch.stack(contexts)[tau, index]
            pi = torch.stack(pis)[tau, index]
            position = position + tau
            u_last = u[2 * window]
            row = position.clamp(max=horizon - 1) * stride + context
            # residual [π_τ q − p]₊ by inverse CDF (q itself if its mass is 0)
            p_rows, q_rows = self.p.index_select(0, row), self.q.index_select(0, row)
            gap = pi[:, None] * q_rows - p_rows
            use_target = ~(running_sums(gap)[:, -1] > 0.0)
            residual_token = inverse_cdf(torch.where(use_target[:, None], q_rows, gap), u_last)
            bonus_token = self.target.draw(row, u_last).long()
            residual = active & (tau < span)
            bonus = active & (tau == span) & (position < horizon) & self.bonus
            final = torch.where(residual, residual_token, bonus_token)
            context, position = self.emit_last(tokens, record_tokens, residual | bonus,
                                               position, context, final)
            rejections += residual
        return self.result(rejections, calls, tokens, n_drafted, record_tokens)


register_run(BlockTables, _BlockRun)
