"""A maximum-size request costs the tokens the model reads, not its bytes: long texts reach the tokenizer cut to a
head and a tail (rewardlab.serve.precut), and the cut changes no token the model reads, hence no score."""

from __future__ import annotations

import random

import pytest

from conftest import Gated, post, serving
from rewardlab.data.encode import EncodingSpec, TextEncoder, TextItems
from rewardlab.scoring import RewardModel
from rewardlab.serve.app import create_app
from rewardlab.serve.batcher import DynamicBatcher
from rewardlab.serve.config import BatcherConfig
from rewardlab.serve.precut import PreCut, keeps_words_apart

PIECES = ["the", "quick", "Ünïcödé", "中文", "😀", "12345", "can't", ",", ".", "\n", "\n\n", "  ", "\t", "sky", "é",
          "x" * 150]


def text(rng: random.Random, n: int) -> str:
    """``n`` characters of words, digits, CJK, emoji, punctuation, runs of whitespace and a 150-letter word."""
    out, size = [], 0
    while size < n:
        out += [rng.choice(PIECES), rng.choice([" ", " ", " ", "", "  ", "\n"])]
        size += len(out[-2]) + len(out[-1])
    return "".join(out)[:n]


def pairs(rng: random.Random, both_long: bool) -> tuple[list[str], list[str]]:
    """Prompts and responses of 100,000 characters beside short ones, whitespace-only gaps and unbreakable words."""
    long = lambda: text(rng, 100_000)  # noqa: E731
    prompts = ["", text(rng, 300), long(), "q", "1" * 100_000, text(rng, 3000)]
    responses = [long(), long(), text(rng, 50), "a" + " " * 99_998 + "b", long(), long()]
    if both_long:  # a text-pair encoder at inference would spend seconds truncating two whole 100k texts here
        prompts.append(long()), responses.append(long())
    return prompts, responses


@pytest.mark.parametrize("inference", [True, False], ids=["inference", "training-cut"])
@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_llama"])
def test_a_cut_text_encodes_and_scores_exactly_as_the_whole_text(backbone, inference, request):
    """The ids of 100,000-character texts are the same with and without the pre-cut, for a text-pair encoder
    (WordPiece) and a concatenating one (byte-level BPE), under the loaded model's rule (the whole text up to the
    backbone's limit) and the training budget's (prompt end, response start); so are the scores."""
    rm = RewardModel.from_pretrained(request.getfixturevalue(backbone), device="cpu")
    encoder = rm.processor.encoder
    if not inference:
        rm.processor = TextItems(TextEncoder(encoder.tokenizer, EncodingSpec(
            max_length=64, max_prompt_tokens=24, pair_encoding=encoder.spec.pair_encoding)))
    assert keeps_words_apart(encoder.tokenizer)
    precut = PreCut.of(rm.processor)
    rng = random.Random(0)
    prompts, responses = pairs(rng, both_long=not (inference and backbone == "tiny_bert"))
    cut_prompts, cut_responses = precut.items(prompts, responses)
    shortened = [len(c) for c, t in zip(cut_prompts + cut_responses, prompts + responses) if c != t]
    assert len(shortened) >= 5 and max(shortened) < 40_000  # all but the unbreakable ones: 100,000 digits, blanks
    whole, truncated = rm.processor.encode_items(prompts, responses)
    assert rm.processor.encode_items(cut_prompts, cut_responses) == (whole, truncated) and truncated >= 5
    assert rm.score_batch(cut_prompts, cut_responses) == rm.score_batch(prompts, responses)


class Spy:
    """A tokenizer that records the longest text it is handed."""

    def __init__(self, tokenizer):
        self.__dict__.update(tokenizer=tokenizer, longest=0)

    def __call__(self, *texts, **kwargs):
        for t in texts:
            self.__dict__["longest"] = max(self.longest, *(len(x) for x in ([t] if isinstance(t, str) else t)))
        return self.tokenizer(*texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def __setattr__(self, name, value):
        setattr(self.tokenizer, name, value)


def test_the_server_never_tokenises_a_whole_long_text(tiny_bert):
    """A request of 100,000-character responses (inside the default bounds): the model's tokenizer reads a few
    thousand characters of each (a head and a tail of 521 tokens: the model reads 512), and the scores are the
    whole texts' scores."""
    rm = RewardModel.from_pretrained(tiny_bert, device="cpu")
    rng = random.Random(1)
    words = "why is the sky blue because light scatters off small molecules in the air".split()
    prose = lambda n: " ".join(rng.choice(words) for _ in range(n // 4))[:n]  # noqa: E731
    prompts, responses = [prose(200) for _ in range(4)], [prose(100_000) for _ in range(4)]
    expected = rm.score_batch(prompts, responses)
    spy = rm.processor.encoder.tokenizer = Spy(rm.processor.encoder.tokenizer)
    with serving(create_app({"default": rm})) as (base, _):
        body = {"items": [{"prompt": p, "response": r} for p, r in zip(prompts, responses)]}
        code, reply, _ = post(f"{base}/v1/score", body)
    assert code == 200 and reply["truncated"] == 4
    assert reply["scores"] == pytest.approx(expected, abs=1e-6)
    assert 0 < spy.longest < 10_000  # of 100,000


def test_a_small_request_is_not_held_behind_all_of_a_large_one(tiny_bert):
    """A request larger than a round is taken a slice a round: a 1-item request that arrives while its first
    slice is scored gets the next round, and is answered long before the large request."""
    rm = RewardModel.from_pretrained(tiny_bert, device="cpu")
    rm.model = Gated(rm.model)
    batcher = DynamicBatcher(rm, BatcherConfig(max_batch_tokens=64, max_wait_ms=0))  # rounds of 4 x 64 tokens
    large, _ = rm.processor.encode_items(["q"] * 200, [f"answer number {i} is a fine one" for i in range(200)])
    small, _ = rm.processor.encode_items(["q"], ["a helpful answer"])
    done = []
    try:
        big = batcher.submit(large)
        big.add_done_callback(lambda _: done.append("large"))
        assert rm.model.entered.wait(10)  # the first slice is in its pass
        one = batcher.submit(small)
        one.add_done_callback(lambda _: done.append("small"))
        rm.model.gate.set()
        assert big.result(30).shape == (200, 1) and one.result(30).shape == (1, 1)
        assert done == ["small", "large"]
        assert big.result()[:, 0] == pytest.approx(rm.score_batch(["q"] * 200, [f"answer number {i} is a fine one"
                                                                              for i in range(200)]), abs=1e-5)
    finally:
        rm.model.gate.set()
        batcher.close(10)
