"""Batch verification on a device: Algorithm 4 ("paper") and the trie.

The per-position step of :func:`sim.engine.batch.batch_kernel` as tensor operations; candidates
beyond :data:`gpu_kernels.engine.SYNC_FROM` are computed only while some trial still tries them.
"""

from __future__ import annotations

from gpu_kernels.engine import SYNC_FROM, _Run, _torch, register_run
from sim.engine.batch import BatchTables


class _BatchRun(_Run):
    def __init__(self, tables: BatchTables, device, philox):
        super().__init__(tables, device, philox)
        self.draft = self.alias(tables.draft)
        self.residual = self.alias(tables.residual)
        self.acceptance = self.floats(tables.acceptance)
        self.draft_probs = self.floats(tables.draft_probs)
        self.n_drafts = tables.algorithm.n_drafts
        self.trie = tables.algorithm.verifier == "trie"
        self.n_rows = tables.n_rows

    @classmethod
    def tensor_calls(cls, algorithm, target) -> float:
        """Per position: up to M candidates tried and (trie) M − 1 untried ones tested, a
        cipher evaluation for each beyond the first few (counted: 180–250 for M = 2, 4, up
        to 912 for a trie of M = 8)."""
        return target.horizon * (200.0 + 120.0 * algorithm.n_drafts)

    def step(self, trial, position, rows, state):
        torch = _torch()
        vocab_size, n_rows, n_drafts = self.layout.vocab_size, self.n_rows, self.n_drafts
        live = torch.where(state == 0, n_drafts, state)
        token = torch.zeros_like(rows)
        winner = torch.full_like(rows, -1)
        pending = torch.ones_like(rows, dtype=torch.bool)
        eager = [*range(min(n_drafts, SYNC_FROM)), n_drafts]  # one cipher evaluation
        if self.trie and min(n_drafts, SYNC_FROM) > 2:
            eager.append(n_drafts + 1)  # untried candidates 2 and 3 (slots 2M + 2, 2M + 3)
        pairs = self.pair_table(trial, position, eager)
        for m in range(n_drafts):
            trying = pending & (live > m)
            if m >= SYNC_FROM and not bool(trying.any()):
                break
            u_draw, u_test = pairs[m] if m in pairs else self.pair(trial, position, m)
            candidate = self.draft.draw(rows, u_draw)
            accepted = trying & (u_test < self.acceptance.index_select(
                0, (rows + m * n_rows) * vocab_size + candidate))
            token = torch.where(accepted, candidate, token)
            winner = torch.where(accepted, m, winner)
            pending = pending & ~accepted
        residual = self.residual.draw((live - 1) * n_rows + rows, pairs[n_drafts][0])
        token = torch.where(pending, residual, token)
        if not self.trie:
            return token, torch.where(pending, 0, 1).to(state.dtype), pending
        share = self.draft_probs.index_select(0, rows * vocab_size + token)
        stay = torch.ones_like(state)
        for i in range(1, n_drafts):  # untried candidate i: slot 2M + i
            untried = (i > winner) & (i < live)
            if i >= SYNC_FROM and not bool(untried.any()):
                break
            index = n_drafts + (i >> 1)
            if index not in pairs:  # beyond the eager ones: only the latest pair is kept
                pairs = {index: self.pair(trial, position, index)}
            stay += untried & (pairs[index][i & 1] < share)
        return token, torch.where(pending, 0, stay), pending


register_run(BatchTables, _BatchRun)
