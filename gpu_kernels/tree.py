"""Token trees on a device (a round-level family: one round at a time per trial).

:func:`sim.engine.tree_kernel.tree_kernel` as tensor operations, operation by operation in
float64 with the kernel's slots, so the arrays equal the compiled engine's bit for bit.
"""

from __future__ import annotations

from gpu_kernels.engine import (
    _Run,
    _torch,
    inverse_cdf,
    register_run,
)
from sim.engine.result import SimResult
from sim.engine.tree_kernel import TreeTables


def _at(values, index):
    """values[i, index[i]] for a (n, m) tensor and (n,) indices."""
    return values.gather(1, index[:, None])[:, 0]


def _put(values, index, mask, new):
    """values[i, index[i]] = new[i] where ``mask`` (in place)."""
    torch = _torch()
    values.scatter_(1, index[:, None], torch.where(mask, new, _at(values, index))[:, None])


class _TreeRun(_Run):
    """Tree speculative decoding (:func:`sim.engine.tree_kernel.tree_kernel`), bit for bit.

    All unfinished trials play one round per iteration of the outer loop.  Every node of the
    tree is drafted for every trial (masks beyond the round's cut; "iid" drafts that the kernel
    never reaches are pure functions of their slots and are simply not read), then the walk
    over the tree is a state machine advanced one move per step for all trials at once (a
    step descends, rejects or deletes).  Sums over the vocabulary add the columns
    x = 0 … V − 1 one tensor operation at a time, in the kernel's order.  The counter position
    of a round's uniforms is a tensor (the round's start): one cipher evaluation per drafted
    node's children, with the tensor backend when ``philox`` is ``"fused"``.  Correctness and
    bit-identity first, not speed.
    """

    def __init__(self, tables: TreeTables, device, philox):
        super().__init__(tables, device, philox)
        torch = _torch()
        vocab_size = self.layout.vocab_size
        self.draft = self.alias(tables.draft)
        self.target = self.alias(tables.target)
        self.p = self.floats(tables.draft_probs).view(-1, vocab_size)
        self.q = self.floats(tables.target_probs).view(-1, vocab_size)
        tree = tables.tree
        self.flat = tree
        self.parent = self.tensor(tree.parent.clip(min=0))
        self.first_child = self.tensor(tree.first_child)
        self.depth = self.tensor(tree.depth)
        self.tops = self.tensor(tables.top_tokens).view(-1, tables.top_width) \
            if tables.top_tokens.size else None
        self.sampling, self.verifier = tables.sampling, tables.verifier
        self.stale = tables.rule == 1
        self.bonus = bool(tables.algorithm.bonus)
        self.tokens_axis = torch.arange(vocab_size, device=device)
        self.tabulated = tables.acceptance.size > 0
        self.acceptance = self.floats(tables.acceptance)
        self.residual = self.alias(tables.residual)
        self.n_rows = tables.draft_probs.size // vocab_size

    @classmethod
    def tensor_calls(cls, algorithm, target) -> float:
        """Up to T rounds per chunk: every node drafted, a walk of up to N + d moves, and sums
        over the vocabulary a column at a time — per drafted node for "swor" drafting and the
        "traversal" verifier (counted per position, 2,000 trials: 500–2,700 for "rrs" with
        "iid"/"topk", up to 38,000 with "swor" and 114,000 with both at V = 100, N = 30);
        twice the fitted bound, since a chunk's walk lasts as long as its longest trial's."""
        nodes, vocab = float(algorithm.n_nodes), float(target.vocab_size)
        per_token = 4.0 * algorithm.depth
        if algorithm.sampling == "swor":
            per_token += 100.0 + 12.0 * nodes
        if algorithm.verifier == "traversal":
            per_token += 80.0 + 45.0 * nodes
        return target.horizon * 2.0 * (500.0 + 100.0 * nodes + vocab * per_token)

    def _rows(self, start, level, context):
        layout = self.layout
        return (start + level).clamp(max=layout.horizon - 1) * layout.row_stride + context

    # -- drafting ------------------------------------------------------------------------
    def _draft(self, trial, start, cut, active, context):
        """Every node's token, context, test uniform, law mass and the drafted children
        counts (kids), for all trials."""
        torch = _torch()
        flat, n = self.flat, trial.numel()
        size = flat.size
        long = dict(dtype=torch.int64, device=self.device)
        token, contexts = torch.zeros((n, size), **long), torch.zeros((n, size), **long)
        contexts[:, 0] = context
        test = torch.zeros((n, size), dtype=torch.float64, device=self.device)
        mass = torch.ones_like(test)
        present = torch.zeros((n, size), dtype=torch.bool, device=self.device)
        present[:, 0] = active
        kids = torch.zeros((n, size), **long)
        for v in range(size):
            if not flat.n_children[v]:
                continue
            row = self._rows(start, int(flat.depth[v]), contexts[:, v])
            p_rows = self.p.index_select(0, row)
            alive = present[:, v] & (int(flat.depth[v]) < cut)
            taken = torch.zeros_like(p_rows, dtype=torch.bool)
            first = int(flat.first_child[v])  # the children's pairs in one cipher evaluation
            u = self.slots(trial, start, range(first - 1, first - 1 + int(flat.n_children[v])))
            for i in range(int(flat.n_children[v])):
                c = first + i
                even, odd = u[2 * i], u[2 * i + 1]
                if self.sampling == 0:
                    x = self.draft.draw(row, even).long()
                elif self.sampling == 1:
                    weights = torch.where(~taken & (p_rows > 0.0), p_rows, 0.0)
                    m = torch.zeros_like(even)
                    for y in range(weights.shape[1]):
                        m = m + weights[:, y]
                    alive = alive & (m > 0.0)
                    x = inverse_cdf(weights, even)
                    mass[:, c] = torch.where(alive, m, 1.0)
                    taken |= (x[:, None] == self.tokens_axis) & alive[:, None]
                else:
                    x = self.tops[row, i]
                    alive = alive & (x >= 0)
                    x = x.clamp(min=0)
                token[:, c], test[:, c] = x, odd
                contexts[:, c] = self.advance(contexts[:, v], x).long()
                present[:, c] = alive
                kids[:, v] += alive
        return token, contexts, test, mass, kids

    # -- verification --------------------------------------------------------------------
    def _update(self, state, mask, node, level, row, factor, child, frozen):
        """G ← [factor · law − p_j]₊ of ``node``'s level, p_j the law of ``child`` (its earlier
        siblings taken for "swor"), the law falling back to q when the sum is 0; where
        ``mask``, unless ``frozen``.  Returns the sum."""
        torch = _torch()
        token, mass, levels, inverse, is_target = (
            state[k] for k in ("token", "mass", "levels", "inverse", "is_target"))
        index = torch.arange(node.numel(), device=self.device)
        p_rows, q_rows = self.p.index_select(0, row), self.q.index_select(0, row)
        own_levels, own_inverse = levels[index, level], inverse[index, level]
        own_target = is_target[index, level]
        law_token, law_mass = _at(token, child), _at(mass, child)
        taken = torch.zeros_like(p_rows, dtype=torch.bool)
        if self.sampling == 1:
            first = self.first_child.index_select(0, node)
            for i in range(int(self.flat.n_children.max())):
                sibling = (first + i).clamp(max=self.flat.size - 1)
                earlier = (first + i < child)[:, None]
                taken |= (_at(token, sibling)[:, None] == self.tokens_axis) & earlier
        total = torch.zeros_like(law_mass)
        kept = torch.empty_like(p_rows)
        for x in range(p_rows.shape[1]):
            value = torch.where(own_target, q_rows[:, x], own_levels[:, x] * own_inverse)
            if self.sampling == 0:
                law = p_rows[:, x]
            elif self.sampling == 1:
                law = torch.where(taken[:, x], 0.0, p_rows[:, x] / law_mass)
            else:
                law = torch.where(law_token == x, 1.0, 0.0)
            gap = factor * value - law
            kept[:, x] = torch.where(gap > 0.0, gap, 0.0)
            total = total + kept[:, x]
        if not frozen:
            positive = total > 0.0
            levels[index, level] = torch.where(mask[:, None], kept, own_levels)
            inverse[index, level] = torch.where(
                mask, torch.where(positive, 1.0 / torch.where(positive, total, 1.0), 1.0),
                own_inverse)
            is_target[index, level] = torch.where(mask, ~positive, own_target)
        return total

    def _walk(self, trial, start, active, drafted):
        """The verification walk of every trial: the node where its round ends and the
        verification state (levels) at that moment."""
        torch = _torch()
        token, contexts, test, mass, kids = drafted
        flat, n = self.flat, trial.numel()
        depth_max = flat.cut_sizes.size - 1
        vocab_size = self.layout.vocab_size
        index = torch.arange(n, device=self.device)
        state = {"token": token, "mass": mass,
                 "levels": torch.zeros((n, depth_max + 1, vocab_size), dtype=torch.float64,
                                       device=self.device),
                 "inverse": torch.ones((n, depth_max + 1), dtype=torch.float64,
                                       device=self.device),
                 "is_target": torch.ones((n, depth_max + 1), dtype=torch.bool,
                                         device=self.device)}
        levels, inverse, is_target = state["levels"], state["inverse"], state["is_target"]
        alpha = torch.ones((n, flat.size), dtype=torch.float64, device=self.device)
        done = torch.zeros((n, flat.size), dtype=torch.int64, device=self.device)
        u = torch.zeros(n, dtype=torch.int64, device=self.device)
        walking = active.clone()
        while bool(walking.any()):
            level = self.depth.index_select(0, u)
            row = self._rows(start, level, _at(contexts, u))
            i = _at(done, u)
            has_child = walking & (i < _at(kids, u))
            c = (self.first_child.index_select(0, u) + i).clamp(max=flat.size - 1)
            x = _at(token, c)
            if self.sampling == 2:
                law = torch.ones(n, dtype=torch.float64, device=self.device)
            else:
                law = self.p.index_select(0, row).gather(1, x[:, None])[:, 0]
                law = law / _at(mass, c) if self.sampling == 1 else law
            value = torch.where(is_target[index, level],
                                self.q.index_select(0, row).gather(1, x[:, None])[:, 0],
                                levels[index, level].gather(1, x[:, None])[:, 0]
                                * inverse[index, level])
            ratio = value / law
            if self.verifier == 1:  # traversal
                product = _at(alpha, u) * ratio
                _put(alpha, c, has_child, torch.where(product < 1.0, product, 1.0))
                leaf = walking & ~has_child
                keep = leaf & ((u == 0) | (_at(test, u) < _at(alpha, u)))
                delete = leaf & ~keep
                w = self.parent.index_select(0, u)
                parent_row = self._rows(start, (level - 1).clamp(min=0), _at(contexts, w))
                alpha_w = _at(alpha, w)
                total = self._update(state, delete, w, (level - 1).clamp(min=0), parent_row,
                                     alpha_w, u, frozen=self.stale)
                denominator = total + (1.0 - alpha_w)
                positive = denominator > 0.0
                updated = torch.where(positive,
                                      total / torch.where(positive, denominator, 1.0), 1.0)
                _put(alpha, w, delete, updated)
                _put(done, w, delete, _at(done, w) + 1)
                moved = has_child
                u = torch.where(delete, w, u)
                walking = walking & ~keep
            else:  # rrs
                if self.tabulated:
                    at = (i.clamp(max=int(self.flat.n_children.max()) - 1) * self.n_rows + row) \
                        * vocab_size + x
                    accept = has_child & (_at(test, c) < self.acceptance.index_select(0, at))
                else:
                    accept = has_child & (_at(test, c) < ratio)
                reject = has_child & ~accept
                if not self.tabulated:  # the stale rule updates after the last child only
                    update = reject & (i + 1 == _at(kids, u)) if self.stale else reject
                    ones = torch.ones(n, dtype=torch.float64, device=self.device)
                    self._update(state, update, u, level, row, ones, c, frozen=False)
                _put(done, u, reject, i + 1)
                moved = accept
                walking = walking & has_child
            # a move down resets the child's level to q
            child_level = (level + 1).clamp(max=depth_max)
            _put(done, c, moved, torch.zeros_like(i))
            is_target[index, child_level] = is_target[index, child_level] | moved
            inverse[index, child_level] = torch.where(moved, 1.0, inverse[index, child_level])
            u = torch.where(moved, c, u)
        return u, state

    def run(self, key, first: int, n: int, record_tokens: bool) -> SimResult:
        torch = _torch()
        self.key = key
        layout, flat = self.layout, self.flat
        horizon, stride = layout.horizon, layout.row_stride
        depth_max = flat.cut_sizes.size - 1
        trial, index, context, position, rejections, calls, n_drafted, tokens = \
            self.round_setup(first, n, record_tokens, flat.size - 1)
        while True:
            active = position < horizon
            if not bool(active.any()):
                break
            calls += active
            start = position
            cut = (horizon - position).clamp(min=0, max=depth_max)
            drafted = self._draft(trial, start, cut, active, context)
            token, contexts, _, _, kids = drafted
            n_drafted += kids.sum(1).to(n_drafted.dtype)
            end, state = self._walk(trial, start, active, drafted)
            level = self.depth.index_select(0, end)
            if record_tokens:
                node = end
                for _ in range(depth_max):
                    kept = active & (node > 0)
                    at = (position + self.depth.index_select(0, node) - 1)[kept]
                    tokens[kept, at] = _at(token, node)[kept].to(tokens.dtype)
                    node = self.parent.index_select(0, node)
            context = torch.where(active, _at(contexts, end), context)
            position = position + level
            u_last = self.slots(trial, start, (flat.size - 1,))[0]
            row = position.clamp(max=horizon - 1) * stride + context
            terms = torch.where(state["is_target"][index, level][:, None],
                                self.q.index_select(0, row), state["levels"][index, level])
            children = _at(kids, end)
            residual = active & (children > 0)
            bonus = active & ~residual & (position < horizon) & self.bonus
            if self.tabulated:
                rejection = self.residual.draw((children - 1).clamp(min=0) * self.n_rows + row,
                                               u_last).long()
            else:
                rejection = inverse_cdf(terms, u_last)
            final = torch.where(residual, rejection, self.target.draw(row, u_last).long())
            context, position = self.emit_last(tokens, record_tokens, residual | bonus,
                                               position, context, final)
            rejections += residual
        return self.result(rejections, calls, tokens, n_drafted, record_tokens)


register_run(TreeTables, _TreeRun)
