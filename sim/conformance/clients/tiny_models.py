r"""Small transformers built here: a GPT-2-style target and draft that imitate a Markov pair.

Whole-stack conformance (:func:`sim.conformance.check_generation`) needs real models in a real
generation stack, and no weights can be downloaded.  :func:`tiny_pair` builds two models with
transformers' own classes (``GPT2LMHeadModel`` from a ``GPT2Config``: vocabulary V, a few
dozen hidden units, 2 layers for the target and 1 for the draft, seeded) and trains each for a
few hundred Adam steps to imitate one chain of a package pair
(:func:`sim.models.temperature_pair`: a first-order target and a hotter draft with the same
logits, so that the draft is a flatter version of the target, as a small model sampled at a
higher temperature is).  Token V − 1 is a BOS token: a training sequence is BOS, a start token
from the chain's start law, then the chain's tokens; the loss is the cross-entropy of the
model's next-token law against the chain's exact row at every position (soft labels, which
train faster than sampled tokens).

The trained weights are cached on disk (``torch.save`` of the state dicts, keyed by every
setting that changes them and by the torch and transformers versions) in ``cache_dir``: the
argument, else the environment variable ``SPECDEC_CACHE``, else the platform's user cache
directory (``platformdirs`` when installed, else ``$XDG_CACHE_HOME`` or ``~/.cache``) under
``specdec-theory``.  Never in the repository.

:class:`ProcessedLaw` is the exact next-token law of such a model after a prefix, with the
sampling processors transformers applies (:func:`processed_probabilities`): the target law of
:mod:`sim.conformance.clients.hf_generate`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.conformance.clients.common import _torch

#: Default vocabulary of :func:`tiny_pair` (seven chain tokens and BOS).
VOCAB = 8
#: Training steps of :func:`tiny_pair` by default (≈ 5 s of one CPU thread for both models).
STEPS = 150


def cache_directory(cache_dir=None) -> Path:
    """Where :func:`tiny_pair` caches weights (module doc)."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("SPECDEC_CACHE"):
        return Path(os.environ["SPECDEC_CACHE"])
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return base / "specdec-theory"
    return Path(user_cache_dir("specdec-theory"))


def markov_pair(vocab_size: int = VOCAB, seed: int = 0, logit_scale: float = 2.0):
    """The (draft, target) chains the tiny models imitate: :func:`sim.models.temperature_pair`
    over V − 1 tokens (draft temperature 1.6, time-homogeneous, uniform start)."""
    from sim.models import temperature_pair

    return temperature_pair(vocab_size - 1, 2, draft_temperature=1.6, logit_scale=logit_scale,
                            time_homogeneous=True, rng=seed)


def _soft_labels(chain, tokens: np.ndarray, vocab: int) -> np.ndarray:
    """(B, L, V) exact next-token rows of ``chain`` along BOS + tokens: the start law after
    BOS, then the row of the last token (first order); BOS itself has probability 0."""
    rows = np.asarray(chain.probs[0], dtype=np.float64)
    start = np.asarray(chain.start_distribution, dtype=np.float64)
    labels = np.zeros((*tokens.shape, vocab))
    labels[:, 0, :vocab - 1] = start
    labels[:, 1:, :vocab - 1] = rows[tokens[:, :-1]]
    return labels


def _sample_chain(chain, rng, batch: int, length: int) -> np.ndarray:
    rows = np.asarray(chain.probs[0], dtype=np.float64)
    start = np.asarray(chain.start_distribution, dtype=np.float64)
    tokens = np.empty((batch, length), dtype=np.int64)
    tokens[:, 0] = rng.choice(start.size, size=batch, p=start)
    cdf = np.cumsum(rows, axis=1)
    for n in range(1, length):
        u = rng.random(batch)[:, None]
        tokens[:, n] = np.minimum((cdf[tokens[:, n - 1]] <= u).sum(axis=1), rows.shape[1] - 1)
    return tokens


@dataclass(frozen=True)
class TinySettings:
    """What :func:`tiny_pair` builds (every field is part of the cache key)."""

    vocab_size: int = VOCAB
    steps: int = STEPS
    seed: int = 0
    hidden: int = 32
    target_layers: int = 2
    draft_layers: int = 1
    heads: int = 2
    positions: int = 16
    batch: int = 64
    sequence: int = 10
    learning_rate: float = 3e-3
    logit_scale: float = 2.0  #: of the chains (:func:`markov_pair`)


def _build(settings: TinySettings, layers: int, seed: int):
    torch = _torch()
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=settings.vocab_size, n_positions=settings.positions,
                        n_embd=settings.hidden, n_layer=layers, n_head=settings.heads,
                        bos_token_id=settings.vocab_size - 1, eos_token_id=None,
                        pad_token_id=None)
    model = GPT2LMHeadModel(config)
    # no EOS, no padding: with pad = BOS, generate would infer an attention mask that hides
    # the BOS token from the assistant (it passes position ids but no mask)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = None
    return model


def _train(model, chain, data_chain, settings: TinySettings, seed: int) -> None:
    torch = _torch()
    generator = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    bos = settings.vocab_size - 1
    model.train()
    for _ in range(settings.steps):
        tokens = _sample_chain(data_chain, generator, settings.batch, settings.sequence - 1)
        labels = torch.from_numpy(_soft_labels(chain, tokens, settings.vocab_size)).float()
        ids = torch.from_numpy(np.concatenate([np.full((settings.batch, 1), bos), tokens[:, :-1]],
                                              axis=1))
        logits = model(input_ids=ids).logits
        loss = -(labels * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def tiny_pair(settings: TinySettings | None = None, *, cache_dir=None):
    """A trained (target, draft) pair of GPT-2-style transformers (module doc), from the cache
    when it holds them.

    Parameters
    ----------
    settings : TinySettings, optional
        Sizes, steps and seed (default ``TinySettings()``).
    cache_dir : path, optional
        Where the weights are cached (default: :func:`cache_directory`).

    Returns
    -------
    (target, draft) : transformers ``GPT2LMHeadModel`` in eval mode
    """
    torch = _torch()
    import transformers

    settings = TinySettings() if settings is None else settings
    draft_chain, target_chain = markov_pair(settings.vocab_size, settings.seed,
                                            settings.logit_scale)
    key = json.dumps({**settings.__dict__, "torch": torch.__version__,
                      "transformers": transformers.__version__}, sort_keys=True)
    path = cache_directory(cache_dir) / f"tiny-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    target = _build(settings, settings.target_layers, settings.seed)
    draft = _build(settings, settings.draft_layers, settings.seed + 1)
    if path.is_file():
        states = torch.load(path, weights_only=True)
        target.load_state_dict(states["target"])
        draft.load_state_dict(states["draft"])
        return target.eval(), draft.eval()
    _train(target, target_chain, target_chain, settings, settings.seed)
    _train(draft, draft_chain, target_chain, settings, settings.seed + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"target": target.state_dict(), "draft": draft.state_dict()}, partial)
    os.replace(partial, path)  # atomic: a concurrent reader sees the whole file or none
    return target, draft


def processed_probabilities(logits, *, temperature: float = 1.0, top_k: int | None = None,
                            top_p: float | None = None) -> np.ndarray:
    r"""Next-token laws after transformers' sampling processors, as transformers defines them
    (``generation/logits_process.py``; applied in this order by ``_get_logits_processor`` when
    ``do_sample=True``), on float32 logits (B, V):

    * temperature τ ≠ 1: ℓ / τ (``TemperatureLogitsWarper``);
    * top-k: tokens whose logit is below the k-th largest get −∞ (``TopKLogitsWarper``; ties
      at the k-th value are kept);
    * top-p: sort the logits ascending, take the cumulative softmax; tokens whose cumulative
      probability is ≤ 1 − top_p get −∞, the largest token is always kept
      (``TopPLogitsWarper``, ``min_tokens_to_keep = 1``);

    then the softmax (in float64 here).

    Parameters
    ----------
    logits : array (B, V)
        Raw logits (float32, as the models return them).
    temperature, top_k, top_p :
        The ``generate`` settings (None or 1.0: off).

    Returns
    -------
    array (B, V) of float64
    """
    scores = np.array(logits, dtype=np.float32, copy=True)
    if temperature is not None and temperature != 1.0:
        scores = scores / np.float32(temperature)
    if top_k is not None and top_k != 0:
        k = min(int(top_k), scores.shape[-1])
        kth = np.sort(scores, axis=-1)[:, -k][:, None]
        scores = np.where(scores < kth, -np.inf, scores).astype(np.float32)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(scores, axis=-1, kind="stable")
        ordered = np.take_along_axis(scores, order, axis=-1)
        shifted = np.exp(ordered - ordered.max(axis=-1, keepdims=True))
        cumulative = np.cumsum(shifted / shifted.sum(axis=-1, keepdims=True), axis=-1)
        remove = cumulative <= np.float32(1 - top_p)
        remove[:, -1] = False
        mask = np.zeros_like(remove)
        np.put_along_axis(mask, order, remove, axis=-1)
        scores = np.where(mask, -np.inf, scores).astype(np.float32)
    shifted = np.exp(scores.astype(np.float64) - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class ProcessedLaw:
    """The exact next-token law of a causal LM after a prefix, processed as transformers
    samples (:func:`processed_probabilities`): ``law(prefix) -> (V,)`` and
    ``law.batch(prefixes) -> (B, V)`` (one forward pass per prefix length).  The logits are the
    model's float32 logits at the prefix's last position, from a full forward pass.

    Parameters
    ----------
    model : transformers causal LM
    temperature, top_k, top_p :
        The ``generate`` settings.
    """

    def __init__(self, model, *, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None):
        self.model = model
        self.settings = {"temperature": temperature, "top_k": top_k, "top_p": top_p}

    def logits(self, prefixes) -> np.ndarray:
        """Raw float32 logits (B, V) after each prefix."""
        torch = _torch()
        out = np.empty((len(prefixes), self.model.config.vocab_size), dtype=np.float32)
        by_length: dict = {}
        for i, prefix in enumerate(prefixes):
            by_length.setdefault(len(prefix), []).append(i)
        with torch.no_grad():
            for rows in by_length.values():
                ids = torch.tensor([list(prefixes[i]) for i in rows], dtype=torch.long)
                out[rows] = self.model(input_ids=ids).logits[:, -1].float().numpy()
        return out

    def batch(self, prefixes) -> np.ndarray:
        return processed_probabilities(self.logits(prefixes), **self.settings)

    def __call__(self, prefix) -> np.ndarray:
        return self.batch([list(prefix)])[0]
