"""Batched decoding on one llama.cpp context: many sequences per `llama_decode`, the KV cells of a
shared prompt prefix computed once and shared by reference (`llama_memory_seq_cp`).

Kept apart from the engine (services/generator/engines/llamacpp.py) so the scheduling reads on its
own. Each completion samples with its own llama.cpp sampler chain (top-k, temperature, top-p, then a
draw seeded from the request and the sample's index, vLLM's order), so a seed gives the same samples
whatever else shares the batch.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.generator.engines.protocol import (
    Completion,
    EngineError,
    EngineRejected,
    PromptResult,
    Sampling,
    TokenLogprob,
    first_stop,
)

# Below this many shared tokens a prompt is not worth a copy of another's cells.
MIN_SHARED_PREFIX = 16


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    return len(os.path.commonprefix([list(a), list(b)]))


def waves(count: int, need: Callable[[int], tuple[int, int]], max_seqs: int, cells: int) -> list[list[int]]:
    """Items 0..count-1 in order, grouped so each group's sequences and KV cells fit the context at
    once; need(i) is item i's (sequences, cells). An item that cannot fit alone is refused."""
    groups: list[list[int]] = [[]]
    seqs = used = 0
    for i in range(count):
        s, c = need(i)
        if s > max_seqs or c > cells:
            raise EngineRejected(
                f"one prompt needs {s} sequences and {c} KV cells; this engine has {max_seqs} "
                f"and {cells} (generator_llamacpp_max_seqs, generator_kv_cache_gib)"
            )
        if groups[-1] and (seqs + s > max_seqs or used + c > cells):
            groups.append([])
            seqs = used = 0
        groups[-1].append(i)
        seqs, used = seqs + s, used + c
    return groups


@dataclass
class _Sequence:
    """One completion being decoded."""

    prompt: int  # index of its prompt in the wave
    seq_id: int
    sampler: Any  # its llama.cpp sampler chain
    grammar: Any  # its grammar sampler (structured output) or None
    sampling: Sampling
    next_token: int  # the token to decode next (first: the prompt's last token)
    position: int  # where next_token goes
    tokens: list[int] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    finish: str | None = None
    text: str = ""
    logprobs: list[TokenLogprob] | None = None  # a list when sampling.logprobs asks for them


class BatchDecoder:
    """Decodes calls on one llama.cpp context. Not thread-safe: the engine holds a lock per call.

    `model` and `ctx` are llama-cpp-python's LlamaModel and LlamaContext (made with n_seq_max >=
    `max_seqs` and a unified KV cache of `cells` cells); `batch_tokens` bounds one llama_decode.
    """

    def __init__(self, model: Any, ctx: Any, batch_tokens: int, max_seqs: int, cells: int):
        import llama_cpp

        self._lib = llama_cpp
        self.model, self.ctx = model, ctx
        self.batch_tokens, self.max_seqs, self.cells = batch_tokens, max_seqs, cells
        self.n_vocab = model.n_vocab()
        self.vocab = llama_cpp.llama_model_get_vocab(model.model)
        self._batch: Any = llama_cpp.llama_batch_init(batch_tokens, 0, 1)

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token (llama-cpp-python's own helper returns its whole 32-byte buffer)."""
        buffer = ctypes.create_string_buffer(256)
        size = self._lib.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, special)
        return buffer.raw[: max(size, 0)]

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None

    # -- low level ---------------------------------------------------------------------------
    def _decode(self, items: list[tuple[int, int, int, bool]], on_chunk: Callable[[list[int]], None]) -> None:
        """Decode (token, position, seq_id, wants_logits) items in chunks of batch_tokens; after
        each chunk, on_chunk gets the batch indices whose logits it holds (the next chunk
        overwrites them), in item order."""
        for start in range(0, len(items), self.batch_tokens):
            chunk = items[start : start + self.batch_tokens]
            batch = self._batch
            batch.n_tokens = len(chunk)
            wanted = []
            for i, (token, pos, seq, logits) in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = logits
                if logits:
                    wanted.append(i)
            code = self._lib.llama_decode(self.ctx.ctx, batch)
            if code != 0:
                raise EngineError(f"llama_decode returned {code} (KV cache full or batch invalid)")
            on_chunk(wanted)

    def _logits(self, index: int) -> np.ndarray:
        pointer = self._lib.llama_get_logits_ith(self.ctx.ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def _log_probs(self, items: list[tuple[int, int, int, bool]]) -> list[np.ndarray]:
        """Decode the items; the log-probability rows of those that want logits, in order."""
        rows: list[np.ndarray] = []
        self._decode(items, lambda wanted: rows.extend(log_softmax(self._logits(j)) for j in wanted))
        return rows

    def _prefill(self, prompts: list[list[int]], logits: bool) -> list[np.ndarray]:
        """Each prompt into its own sequence (seq id = its index in `prompts`), its common prefix
        with the first prompt copied rather than recomputed; with `logits`, each prompt's
        last-position logits."""
        first = prompts[0]
        shared = [0] + [
            n if (n := min(shared_prefix(first, p), len(p) - 1)) >= MIN_SHARED_PREFIX else 0
            for p in prompts[1:]
        ]
        own = [i for i, n in enumerate(shared) if n == 0]
        copies = [i for i, n in enumerate(shared) if n]
        rows: list[np.ndarray] = []
        for group in (own, copies):
            items: list[tuple[int, int, int, bool]] = []
            for i in group:
                if shared[i]:
                    self._lib.llama_memory_seq_cp(self.ctx.memory, 0, i, 0, shared[i])
                tokens = prompts[i]
                last = len(tokens) - 1
                items += [(tokens[p], p, i, logits and p == last) for p in range(shared[i], len(tokens))]
            self._decode(items, lambda wanted: rows.extend(self._logits(j) for j in wanted))
        by_prompt = dict(zip(own + copies, rows, strict=True)) if logits else {}
        return [by_prompt[i] for i in range(len(prompts))] if logits else []

    def _clear(self) -> None:
        self._lib.llama_memory_clear(self.ctx.memory, True)

    # -- generation --------------------------------------------------------------------------
    def generate(
        self, prompts: list[list[int]], samplings: list[Sampling], seeds: list[int]
    ) -> list[PromptResult]:
        """n completions of each prompt; completion k of prompt i draws from seed (seeds[i], k)."""
        results: list[PromptResult] = []

        def need(i: int) -> tuple[int, int]:
            return samplings[i].n, len(prompts[i]) + samplings[i].n * samplings[i].max_tokens

        for wave in waves(len(prompts), need, self.max_seqs, self.cells):
            results += self._generate_wave(
                [prompts[i] for i in wave], [samplings[i] for i in wave], [seeds[i] for i in wave]
            )
        return results

    def _generate_wave(
        self, prompts: list[list[int]], samplings: list[Sampling], seeds: list[int]
    ) -> list[PromptResult]:
        sequences: list[_Sequence] = []
        self._clear()
        try:
            # The prompts but their last token; each completion then starts by decoding that token
            # on its own copy of the prompt's cells, so all completions run through one loop.
            self._prefill([p[:-1] for p in prompts], logits=False)
            next_seq = len(prompts)
            for i, (prompt, sampling) in enumerate(zip(prompts, samplings, strict=True)):
                for k in range(sampling.n):
                    seq_id = i if k == 0 else next_seq
                    if k:
                        self._lib.llama_memory_seq_cp(self.ctx.memory, i, seq_id, -1, -1)
                        next_seq += 1
                    sampler = self._sampler(sampling, seeds[i], k)
                    grammar = self._grammar(sampling, sampler)
                    sequence = _Sequence(i, seq_id, sampler, grammar, sampling, prompt[-1], len(prompt) - 1)
                    sequence.logprobs = [] if sampling.logprobs is not None else None
                    sequences.append(sequence)
            live = sequences
            while live:
                items = [(s.next_token, s.position, s.seq_id, True) for s in live]
                self._decode(items, functools.partial(self._accept_all, live))
                live = [s for s in live if s.finish is None]
        finally:
            self._clear()
            for s in sequences:
                self._lib.llama_sampler_free(s.sampler)
                if s.grammar is not None:
                    self._lib.llama_sampler_free(s.grammar)
        return [
            PromptResult(
                prompt_tokens=len(prompt),
                completions=[
                    Completion(text=s.text, tokens=len(s.tokens), finish_reason=s.finish, logprobs=s.logprobs)
                    for s in sequences
                    if s.prompt == i
                ],
            )
            for i, prompt in enumerate(prompts)
        ]

    def _sampler(self, sampling: Sampling, seed: int, k: int) -> Any:
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if sampling.temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            return chain
        if sampling.top_k > 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(sampling.top_k))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(sampling.temperature))
        if sampling.top_p < 1.0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(sampling.top_p, 1))
        draw_seed = int.from_bytes(np.random.SeedSequence([seed, k]).generate_state(1).tobytes(), "little")
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(draw_seed & 0x7FFFFFFF))
        return chain

    def _grammar(self, sampling: Sampling, chain: Any) -> Any:
        """The grammar sampler of a structured completion (kept out of the chain: see _guided), or None."""
        if sampling.field_format is None:
            return None
        grammar = self._lib.llama_sampler_init_grammar(
            self.vocab, sampling.field_format.gbnf().encode(), b"root"
        )
        if not grammar:
            self._lib.llama_sampler_free(chain)
            raise EngineRejected("llama.cpp could not parse the field format's grammar")
        return grammar

    def _guided(self, seq: _Sequence, index: int) -> int:
        """The next token of a structured completion, as llama.cpp's own sampler does it: draw as
        usual, keep the token when the grammar allows it, else draw again from the logits with the
        grammar's mask applied first. Checking one token is cheap; masking the whole vocabulary
        (262k tokens for Gemma) every step tripled the time of a call, and the field format
        rarely refuses the model's own choice."""
        lib = self._lib
        token = lib.llama_sampler_sample(seq.sampler, self.ctx.ctx, index)
        one = (lib.llama_token_data * 1)(lib.llama_token_data(token, 0.0, 0.0))
        self._apply(seq.grammar, one, 1)
        if one[0].logit != -np.inf:
            lib.llama_sampler_accept(seq.grammar, token)
            return int(token)
        table = (lib.llama_token_data * self.n_vocab)()
        view = np.ctypeslib.as_array(table).view(np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]))
        view["id"] = np.arange(self.n_vocab, dtype=np.int32)
        view["logit"] = self._logits(index)
        self._apply(seq.grammar, table, self.n_vocab)
        chosen = self._apply(seq.sampler, table, self.n_vocab)
        token = chosen.data[chosen.selected].id
        lib.llama_sampler_accept(seq.grammar, token)
        lib.llama_sampler_accept(seq.sampler, token)
        return int(token)

    def _apply(self, sampler: Any, table: Any, size: int) -> Any:
        """Run a sampler over a table of llama_token_data in place; its array (with `selected`)."""
        array = self._lib.llama_token_data_array(table, size, -1, False)
        self._lib.llama_sampler_apply(sampler, ctypes.byref(array))
        return array

    def _accept_all(self, sequences: list[_Sequence], wanted: list[int]) -> None:
        for seq, index in zip(sequences, wanted, strict=True):
            self._accept(seq, index)

    def _accept(self, seq: _Sequence, index: int) -> None:
        """Sample the sequence's next token from batch row `index`; decide whether it is finished."""
        if seq.grammar is not None:
            token = self._guided(seq, index)
        else:
            token = self._lib.llama_sampler_sample(seq.sampler, self.ctx.ctx, index)
        seq.position += 1
        if self._lib.llama_vocab_is_eog(self.vocab, token):
            seq.finish = "stop"
            return
        if seq.logprobs is not None and seq.sampling.logprobs is not None:
            entry = self._token_logprob(log_softmax(self._logits(index)), token, seq.sampling.logprobs)
            seq.logprobs.append(entry)
        seq.tokens.append(token)
        seq.next_token = token
        seq.data += self.piece(token)
        seq.text = seq.data.decode("utf-8", errors="ignore")
        cut = first_stop(seq.text, seq.sampling.stop)
        if cut >= 0:
            seq.text, seq.finish = seq.text[:cut], "stop"
        elif len(seq.tokens) >= seq.sampling.max_tokens:
            seq.finish = "length"

    def text(self, token: int) -> str:
        return self.piece(token, special=True).decode("utf-8", errors="replace")

    def _token_logprob(self, row: np.ndarray, token: int, top: int) -> TokenLogprob:
        """`token` as drawn from the distribution `row` (log-probabilities), with the `top` most
        likely tokens there and itself."""
        best = np.argpartition(-row, top)[:top] if 0 < top < row.size else np.arange(0)
        alternatives = {self.text(int(t)): float(row[t]) for t in best[np.argsort(-row[best])]}
        return TokenLogprob(
            self.text(token), float(row[token]), {**alternatives, self.text(token): float(row[token])}
        )

    def prompt_logprobs(self, prompts: list[list[int]], top: int) -> list[list[TokenLogprob]]:
        """Each prompt's tokens with their log-probabilities given the tokens before them (the
        first has none), one prompt at a time: every position's logits are read."""
        out = []
        for ids in prompts:
            self._clear()
            try:
                rows = self._log_probs([(t, p, 0, p < len(ids) - 1) for p, t in enumerate(ids)])
            finally:
                self._clear()
            entries = [TokenLogprob(self.text(ids[0]), None, None)] if ids else []
            entries += [self._token_logprob(row, ids[p + 1], top) for p, row in enumerate(rows)]
            out.append(entries)
        return out

    # -- scoring -----------------------------------------------------------------------------
    def score(self, prompts: list[list[int]], continuations: list[list[int]]) -> list[list[float]]:
        """log P(continuation | prompt) for every pair: each prompt once, each continuation's
        tokens after the first on a copy of the prompt's cells, all in one batch per wave."""
        longer = sum(1 for c in continuations if len(c) > 1)
        extra = sum(len(c) - 1 for c in continuations)
        out: list[list[float]] = []
        for wave in waves(
            len(prompts), lambda i: (1 + longer, len(prompts[i]) + extra), self.max_seqs, self.cells
        ):
            out += self._score_wave([prompts[i] for i in wave], continuations)
        return out

    def _score_wave(self, prompts: list[list[int]], continuations: list[list[int]]) -> list[list[float]]:
        self._clear()
        try:
            firsts = [log_softmax(row) for row in self._prefill(prompts, logits=True)]
            totals = [[float(first[cont[0]]) for cont in continuations] for first in firsts]
            items: list[tuple[int, int, int, bool]] = []
            owners: list[tuple[int, int, int]] = []  # (prompt, continuation, token index)
            next_seq = len(prompts)
            for i, prompt in enumerate(prompts):
                for c, cont in enumerate(continuations):
                    if len(cont) < 2:
                        continue
                    self._lib.llama_memory_seq_cp(self.ctx.memory, i, next_seq, -1, -1)
                    for k, token in enumerate(cont[:-1]):
                        items.append((token, len(prompt) + k, next_seq, True))
                        owners.append((i, c, k + 1))
                    next_seq += 1
            for (i, c, k), row in zip(owners, self._log_probs(items), strict=True):
                totals[i][c] += float(row[continuations[c][k]])
        finally:
            self._clear()
        return totals
