"""The token-wise family on a device: ``Speculative``, every (b, 𝒫) verifier, window policies,
``Autoregressive`` and (with their root row set) the multi-draft root verifiers.

The per-position step of :func:`sim.engine.token.token_kernel` as tensor operations: the same
tables (:class:`sim.engine.token.TokenTables`, :class:`sim.engine.multidraft.RootTables`), the
same slots, every branch evaluated for every trial and selected with ``torch.where``.
"""

from __future__ import annotations

from gpu_kernels.engine import _Run, _torch, register_run
from sim.engine.multidraft import RootTables
from sim.engine.token import TokenTables


class _TokenRun(_Run):
    def __init__(self, tables: TokenTables, device, philox):
        super().__init__(tables, device, philox)
        self.proposal = self.alias(tables.proposal)
        self.rejection = self.alias(tables.rejection)
        self.acceptance = self.floats(tables.acceptance)
        self.after_accept = self.tensor(tables.after_accept).to(self.index_dtype)
        self.bonus_state, self.bonus_offset = tables.bonus_state, tables.bonus_offset
        self.rejection_offset = tables.rejection_offset
        self.round_start = None if tables.round_start.size == 0 else self.tensor(
            tables.round_start).to(self.index_dtype)

    def step(self, trial, position, rows, state):
        """The compiled kernel's branch-free step (see :func:`sim.engine.token.token_kernel`);
        the three uniforms (slots 0, 1, 2) come from one cipher evaluation."""
        torch = _torch()
        u_token, u_test, u_rejection = self.slots(trial, position, (0, 1))[:3]
        if self.round_start is not None:  # a window policy: the round's first state
            context = rows - position * self.layout.row_stride
            state = torch.where(state == 0, self.round_start.index_select(
                0, context + position * self.layout.n_contexts), state)
        proposed = fallback_rows = rows  # offsets 0 (or no bonus state): the rows themselves
        if self.bonus_state >= 0 and (self.bonus_offset or self.rejection_offset):
            in_bonus = (state == self.bonus_state).to(rows.dtype)
            if self.bonus_offset:
                proposed = rows + self.bonus_offset * in_bonus
            if self.rejection_offset:
                fallback_rows = rows + self.rejection_offset * in_bonus
        token = self.proposal.draw(proposed, u_token)
        accepted = u_test < self.acceptance.index_select(
            0, proposed * self.layout.vocab_size + token)
        fallback = self.rejection.draw(fallback_rows, u_rejection)
        rejected = ~accepted
        following = self.after_accept.index_select(0, state).mul_(accepted)  # 0 if rejected
        return torch.where(accepted, token, fallback), following, rejected


register_run(TokenTables, _TokenRun)
register_run(RootTables, _TokenRun)
