"""Adaptive draft length on a device (a round-level family: one round at a time per trial).

:func:`sim.engine.stopping.stopping_kernel` as tensor operations, in the kernel's order and in
float64, so the arrays equal the compiled engine's bit for bit.  All unfinished trials play one
round per iteration of the outer loop; a trial whose rule has stopped keeps its drafts masked.
"""

from __future__ import annotations

from gpu_kernels.engine import _Run, _torch, register_run
from sim.engine.result import SimResult
from sim.engine.stopping import StoppingTables


class _StoppingRun(_Run):
    """Adaptive drafting then token-wise verification (see the compiled kernel).  The counter
    position of a round's uniforms is the round's start (a tensor): one cipher evaluation per
    round, with the tensor backend when ``philox`` is ``"fused"``."""

    def __init__(self, tables: StoppingTables, device, philox):
        super().__init__(tables, device, philox)
        vocab_size = self.layout.vocab_size
        self.draft = self.alias(tables.draft)
        self.residual = self.alias(tables.residual)
        self.target = self.alias(tables.target)
        self.p = self.floats(tables.draft_probs).view(-1, vocab_size)
        self.q = self.floats(tables.target_probs).view(-1, vocab_size)
        self.window, self.bonus = tables.algorithm.max_window, bool(tables.algorithm.bonus)
        self.form, self.threshold = tables.form, tables.threshold
        self.decisions = self.tensor(tables.decisions)
        self.offsets = [int(offset) for offset in tables.offsets]
        self.stop_rows = self.tensor(tables.stop_rows)

    def _stops(self, k: int, start, context, start_context, code, product):
        """The rule's decision before draft k + 1 (one bool per trial)."""
        n_contexts = self.layout.n_contexts
        if self.form == 0:
            return (1.0 - product > self.threshold) if k >= 1 else product < 0.0
        if self.form == 1:
            width = self.offsets[self.window]
            start = start.clamp(max=self.layout.horizon - 1)  # finished trials: masked
            index = (start * n_contexts + start_context) * width + self.offsets[k] + code
            return self.decisions.index_select(0, index) != 0
        row = ((start + k).clamp(max=self.layout.horizon - 1)) * n_contexts + context
        return self.stop_rows.index_select(0, row) != 0

    @classmethod
    def tensor_calls(cls, algorithm, target) -> float:
        """Up to T rounds per chunk, each drafting up to W tokens (three passes over them)."""
        return target.horizon * (float(algorithm.max_window) * 3 * (target.vocab_size + 25)
                                 + 6 * target.vocab_size + 40)

    def run(self, key, first: int, n: int, record_tokens: bool) -> SimResult:
        torch = _torch()
        self.key = key
        layout, window = self.layout, self.window
        horizon, stride, vocab_size = layout.horizon, layout.row_stride, layout.vocab_size
        device = self.device
        trial, index, context, position, rejections, calls, n_drafted, tokens = \
            self.round_setup(first, n, record_tokens)
        while True:
            active = position < horizon
            if not bool(active.any()):
                break
            calls += active
            start = position
            span = (horizon - position).clamp(min=0, max=window)
            drafting = active.clone()
            k = torch.zeros(n, dtype=torch.int64, device=device)
            code = torch.zeros(n, dtype=torch.int64, device=device)
            product = torch.ones(n, dtype=torch.float64, device=device)
            contexts, drafted, accept = [context], [], []
            u = self.slots(trial, start, range(window + 1))  # the round's slots 0 … 2W + 1
            for i in range(window):
                drafting = drafting & (i < span) & ~self._stops(i, start, contexts[i], context,
                                                                code, product)
                row = (position + i).clamp(max=horizon - 1) * stride + contexts[i]
                token = self.draft.draw(row, u[2 * i]).long()
                p_rows, q_rows = self.p.index_select(0, row), self.q.index_select(0, row)
                ratio = q_rows.gather(1, token[:, None])[:, 0] / \
                    p_rows.gather(1, token[:, None])[:, 0]
                accept.append(torch.where(ratio < 1.0, ratio, 1.0))
                product = torch.where(drafting, product * accept[i], product)
                code = torch.where(drafting, code * vocab_size + token, code)
                drafted.append(token)
                contexts.append(torch.where(drafting, self.advance(contexts[i], token).long(),
                                            contexts[i]))
                k = k + drafting
            n_drafted += k.to(n_drafted.dtype)
            kept = torch.zeros(n, dtype=torch.int64, device=device)
            for i in range(window):
                kept = kept + ((kept == i) & (i < k)
                               & (u[2 * i + 1] < accept[i]))
            if record_tokens:
                for i in range(window):
                    keep = active & (i < kept)
                    tokens[keep, (position + i)[keep]] = drafted[i][keep].to(tokens.dtype)
            context = torch.stack(contexts)[kept, index]
            position = position + kept
            u_last = u[2 * window]
            row = position.clamp(max=horizon - 1) * stride + context
            rejected = active & (kept < k)
            target_step = active & ~rejected & ((k == 0) | ((position < horizon) & self.bonus))
            final = torch.where(rejected, self.residual.draw(row, u_last),
                                self.target.draw(row, u_last)).long()
            context, position = self.emit_last(tokens, record_tokens, rejected | target_step,
                                               position, context, final)
            rejections += rejected
        return self.result(rejections, calls, tokens, n_drafted, record_tokens)


register_run(StoppingTables, _StoppingRun)
