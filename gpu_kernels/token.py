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
        """The compiled kernel's branch-free step (see :func:`sim.engine.token.token_kernel`)."""
        torch = _torch()
        u_token, u_test = self.pair(trial, position, 0)
        if self.round_start is not None:  # a window policy: the round's first state
            context = rows - position * self.layout.row_stride
            state = torch.where(state == 0, self.round_start.index_select(
                0, context + position * self.layout.n_contexts), state)
        proposed = rows + self.bonus_offset * (state == self.bonus_state).to(rows.dtype)
        token = self.proposal.draw(proposed, u_token)
        accepted = u_test < self.acceptance.index_select(
            0, proposed * self.layout.vocab_size + token)
        in_bonus = (state == self.bonus_state).to(rows.dtype)
        fallback = self.rejection.draw(rows + self.rejection_offset * in_bonus,
                                       self.pair(trial, position, 1)[0])
        following = self.after_accept.index_select(0, state)
        return (torch.where(accepted, token, fallback), torch.where(accepted, following, 0),
                ~accepted)


register_run(TokenTables, _TokenRun)
register_run(RootTables, _TokenRun)
