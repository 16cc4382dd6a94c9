"""Long texts cut before they are tokenised, so that a request costs the tokens the model reads, not its bytes.

A text model's encoder reads at most ``M`` tokens of a text (its ``max_length``): tokenising a 100,000-character
response whole, with every token's offsets, to keep 512 of its tokens is what made one maximum-size request cost
gigabytes. :class:`PreCut` hands the encoder the text's start and end instead: a *head* and a *tail* of more than
``M`` tokens each, joined where the middle was dropped, so the encoder cuts exactly as it would have.

Why the tokens the encoder keeps cannot change:

1. Cuts fall on *word starts*: a space with a non-space before it and a letter after it (:data:`WORD_START`). Word
   pre-tokenizers (BERT's, the byte-level expressions of GPT-2, Llama 3 and Qwen, SentencePiece's Metaspace) begin
   a new piece there, and normalisers act one character at a time, so neither side's pieces depend on the other.
2. No vocabulary entry spans a word start: checked when the model loads (:func:`keeps_words_apart`; an entry with
   a space inside that is not all whitespace turns the pre-cut off), so even a tokenizer that merges over the whole
   text (BPE or Unigram with no pre-tokenizer) cannot join the two sides: no merge or piece crosses the cut.
3. By 1 and 2 the tokens of head + tail are the text's first tokens, then its last ones. Head and tail each hold
   more than ``M`` tokens (counted by the tokenizer itself, not estimated), so whatever the encoder keeps from
   either end is in them, and "is the text over the limit" has the same answer. A bound from characters alone
   would not do: whitespace between words belongs to no token, and WordPiece reads a 200-letter word as one
   ``[UNK]``.

The one rule that compares two texts' lengths (text-pair encoders truncating the longer text first) keeps a cut
only where it cannot change which text is longer: a pair whose texts are both long is encoded whole. A text with
no word start far enough in (one long word) is encoded whole too. Both are still bounded in memory: the service
encodes a request in chunks of :data:`CHUNK_CHARS` characters.
"""

from __future__ import annotations

import re
from typing import Sequence

from rewardlab.data.encode import TextItems

# a word start: a space with a non-space before it and a letter after it (see the module docstring, point 1)
WORD_START = re.compile(r"(?<=\S) (?=[^\W\d_])")
SPACE_MARKS = frozenset(" \u0120\u2581")  # a space as vocabularies write it: itself, byte-level Ġ, SentencePiece ▁
BLANK_MARKS = frozenset(" \t\n\r\u0120\u0109\u010a\u010d\u2581")  # whitespace as vocabularies write it (Ġ ĉ Ċ č ▁)
MARGIN_TOKENS = 8  # a tail counted alone may differ from the tail in place by a prefix token (Metaspace's ▁)
FIRST_GUESS_CHARS = 6  # characters per token of the first window tried; a window short of tokens doubles
CHUNK_CHARS = 1_000_000  # characters per call to the encoder: the most one call tokenises at once


def keeps_words_apart(tokenizer) -> bool:
    """Whether no vocabulary entry (added tokens included) spans a word start: none has a space after its first
    character unless it is all whitespace (``"ĠĠ"``, ``"▁▁"``, ``"ĊĠ"``).

    Example:
        >>> class Vocab:
        ...     def __init__(self, *tokens): self.tokens = tokens
        ...     def get_vocab(self): return dict.fromkeys(self.tokens, 0)
        >>> keeps_words_apart(Vocab("Ġthe", "##ing", "ĠĠ", "▁of")), keeps_words_apart(Vocab("▁of▁the"))
        (True, False)
    """
    for token in tokenizer.get_vocab():
        if any(c in SPACE_MARKS for c in token[1:]) and not set(token) <= BLANK_MARKS:
            return False
    return True


class PreCut:
    """Cuts long prompts and responses of one text model to head + tail (see the module docstring).

    Args:
        tokenizer: the model's fast tokenizer; a copy of its Rust tokenizer, with no truncation or padding, counts
            tokens (the model's own one changes its truncation setting with every call).
        max_tokens: the most tokens the encoder keeps of a text (``M``).
        pair_encoding: whether prompt and response are encoded as a text pair (their lengths compared).
    """

    def __init__(self, tokenizer, max_tokens: int, pair_encoding: bool):
        from tokenizers import Tokenizer

        self.counter = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.counter.no_truncation()
        self.counter.no_padding()
        self.need = max_tokens + 1 + MARGIN_TOKENS  # tokens a head, and a tail, hold at least
        self.pair_encoding = pair_encoding

    @classmethod
    def of(cls, processor) -> "PreCut | None":
        """The pre-cut of a kind's item processor (a personalised model's: the one it wraps), or None where it does
        not apply: not a plain text model (images, pairwise kinds), an encoder with no token limit, or a vocabulary
        with entries across words."""
        if type(processor) is not TextItems:
            return None
        encoder = processor.encoder
        if encoder.max_length is None or not keeps_words_apart(encoder.tokenizer):  # at inference: the backbone's
            return None
        return cls(encoder.tokenizer, encoder.max_length, encoder.spec.pair_encoding == "text_pair")

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, as the model's tokenizer reads it with no special tokens."""
        encode = getattr(self.counter, "encode_batch_fast", self.counter.encode_batch)  # fast: no offsets
        return [len(e.ids) for e in encode(list(texts), add_special_tokens=False)]

    def items(self, prompts: Sequence[object], responses: Sequence[object]) -> tuple[list[object], list[object]]:
        """Prompts and responses with every long text cut to head + tail (others as they are), in order."""
        texts = list(prompts) + list(responses)
        windows = self._cuts(texts)
        n = len(prompts)
        for i in range(n) if self.pair_encoding else ():
            windows[i], windows[n + i] = self._pair((texts[i], texts[n + i]), [windows[i], windows[n + i]])
        cut = [t if w is None else t[:w[0]] + t[w[1]:] for t, w in zip(texts, windows)]
        return cut[:n], cut[n:]

    def _pair(self, texts: tuple, windows: list) -> list:
        """A text pair's windows, such that the same text is the longer one (a text-pair encoder truncates the
        longer text first, the second where they tie): kept where the cut text is still the longer one, else
        counted whole and the text that must be longer regrown (doubled windows) until it is."""
        if windows == [None, None]:
            return windows
        now = self.count([_apply(t, w) for t, w in zip(texts, windows)])
        if windows.count(None) == 1:
            i = windows.index(None)  # the whole one
            if now[1 - i] > now[i]:  # the cut text is longer than its whole partner, and its whole self is longer still
                return windows
        full = list(now)  # the whole texts' tokens: counted for the cut ones (no offsets, one pair at a time)
        for i, counted in zip([i for i in (0, 1) if windows[i] is not None],
                              self.count([t for t, w in zip(texts, windows) if w is not None])):
            full[i] = counted
        first_longer = full[0] > full[1]
        while (now[0] > now[1]) != first_longer:
            g = 0 if first_longer else 1
            a, b = windows[g]
            windows[g] = self._windows(texts[g], 2 * max(a, len(texts[g]) - b))
            now[g] = full[g] if windows[g] is None else self.count([_apply(texts[g], windows[g])])[0]
        return windows

    def _cuts(self, texts: list[object]) -> list[tuple[int, int] | None]:
        """Per text: the head's end and the tail's start where it holds at least ``need`` tokens at each end beyond
        its word starts, else None. Windows start at ``need`` x :data:`FIRST_GUESS_CHARS` characters and double
        until they hold ``need`` tokens (a few tokenizer calls, of short windows, for all texts at once)."""
        out: list[tuple[int, int] | None] = [None] * len(texts)
        todo = {i: self.need * FIRST_GUESS_CHARS for i, t in enumerate(texts)
                if isinstance(t, str) and len(t) >= 2 * self.need}  # shorter ones: too little to drop
        while todo:
            windows = {i: w for i, chars in todo.items() if (w := self._windows(texts[i], chars)) is not None}
            counted = self.count([t for i, (a, b) in windows.items() for t in (texts[i][:a], texts[i][b:])])
            todo = {}
            for k, (i, (a, b)) in enumerate(windows.items()):
                if counted[2 * k] >= self.need and counted[2 * k + 1] >= self.need:
                    out[i] = (a, b)
                else:
                    todo[i] = 2 * max(a, len(texts[i]) - b)
        return out

    def _windows(self, text: str, chars: int) -> tuple[int, int] | None:
        """The head's end and the tail's start: the first word start at least ``chars`` in, the last at least
        ``chars`` from the end; None where they would meet (nothing left to drop)."""
        if 2 * chars >= len(text):
            return None
        head = WORD_START.search(text, chars)
        tail = _last_word_start(text, len(text) - chars)
        if head is None or tail is None or tail <= head.start():
            return None
        return head.start(), tail


def _apply(text, window: tuple[int, int] | None):
    return text if window is None else text[:window[0]] + text[window[1]:]


def _last_word_start(text: str, at_most: int) -> int | None:
    """The last word start at or before ``at_most``, searched backwards a block at a time."""
    end = at_most
    while end > 0:
        start = max(0, end - 4096)
        found = [i for m in WORD_START.finditer(text, start, min(len(text), end + 2)) if (i := m.start()) <= end]
        if found:
            return found[-1]
        end = start
    return None
