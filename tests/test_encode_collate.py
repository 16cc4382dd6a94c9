import pytest
from transformers import AutoTokenizer

from rewardlab.contracts.schema import Comparison, Pair
from rewardlab.data.collate import EncodedComparison, LengthGroupedBatchSampler, PreferenceCollator, encode_comparisons
from rewardlab.data.encode import EncodingSpec, TextEncoder, TextItems
from rewardlab.models.backbones import prepare_tokenizer


@pytest.fixture(scope="module")
def bert_tok(tiny_bert):
    return AutoTokenizer.from_pretrained(tiny_bert)


def test_short_pairs_encode_like_plain_transformers(bert_tok):
    enc = TextEncoder(bert_tok, EncodingSpec(max_length=64))
    feats, truncated = enc.encode(["Why is the sky blue?"], ["Because of scattering."])
    plain = bert_tok("Why is the sky blue?", "Because of scattering.")
    assert feats[0]["input_ids"] == plain["input_ids"] and feats[0]["token_type_ids"] == plain["token_type_ids"]
    assert truncated == 0 and enc.spec.pair_encoding == "text_pair"


def test_truncation_keeps_prompt_end_and_response_start(bert_tok):
    prompt = " ".join(f"p{i}" for i in range(40)) + " final question"
    response = "first answer words " + " ".join(f"r{i}" for i in range(40))
    enc = TextEncoder(bert_tok, EncodingSpec(max_length=32, max_prompt_tokens=10))
    (feat,), truncated = enc.encode([prompt], [response])
    assert truncated == 1 and len(feat["input_ids"]) <= 32
    text = bert_tok.decode(feat["input_ids"])
    first_sep = text.index("[SEP]")
    assert "final question" in text[:first_sep] and "p0 " not in text[:first_sep]
    assert text[first_sep:].startswith("[SEP] first answer words")
    # the other sides, when asked
    enc2 = TextEncoder(bert_tok, EncodingSpec(max_length=32, max_prompt_tokens=10, prompt_truncation="right",
                                              response_truncation="left"))
    text2 = bert_tok.decode(enc2.encode([prompt], [response])[0][0]["input_ids"])
    assert text2.startswith("[CLS] p0") and text2.rstrip().endswith("r39 [SEP]")


def test_max_length_with_no_room_for_text_is_refused(bert_tok):
    # BERT's pair encoding adds [CLS] [SEP] [SEP]: at max_length 4 one token is left, and every item would be
    # the same few tokens (chosen == rejected for every pair), so the encoder says so instead of training on them
    with pytest.raises(ValueError, match=r"data.max_length=4 leaves 1 token\(s\) for the text: the encoding adds 3"):
        TextEncoder(bert_tok, EncodingSpec(max_length=4, max_prompt_tokens=2))
    (feat,), truncated = TextEncoder(bert_tok, EncodingSpec(max_length=5, max_prompt_tokens=2)).encode(
        ["why is it"], ["because of this"])
    assert truncated == 1 and bert_tok.decode(feat["input_ids"]) == "[CLS] it [SEP] because [SEP]"


def test_short_prompt_gives_its_room_to_the_response(bert_tok):
    enc = TextEncoder(bert_tok, EncodingSpec(max_length=32, max_prompt_tokens=16))
    (feat,), _ = enc.encode(["hi"], [" ".join(["word"] * 100)])
    assert len(feat["input_ids"]) == 32
    assert bert_tok.decode(feat["input_ids"]).startswith("[CLS] hi [SEP] word word")


def test_inference_reads_the_whole_text_and_past_the_limit_cuts_its_start(tiny_bert):
    tok = AutoTokenizer.from_pretrained(tiny_bert)  # a fresh one: the inference encoder sets its truncation
    spec = EncodingSpec(max_length=8, max_prompt_tokens=4, pair_encoding="concat", concat_separator="\n",
                        inference_max_length=12)
    enc = TextEncoder(tok, spec, inference=True)
    assert (enc.max_length, tok.truncation_side, tok.model_max_length) == (12, "left", 12)
    (whole, cut), truncated = enc.encode(["why is the sky blue?", "p0 p1 p2 p3 why?"],
                                         ["because of scattering", "because r0 r1 r2"])
    assert whole["input_ids"] == tok("why is the sky blue?\nbecause of scattering")["input_ids"]  # 11 > max_length 8
    assert truncated == 1 and len(cut["input_ids"]) == 12  # the text's start goes, [CLS] stays: a plain left cut
    assert tok.decode(cut["input_ids"]) == "[CLS]3 why? because r0 r1 r2 [SEP]"
    assert cut["input_ids"] == tok("p0 p1 p2 p3 why?\nbecause r0 r1 r2", truncation=True)["input_ids"]
    # text pairs: the tokenizer's longest_first, from the start of the longer text
    pair = TextEncoder(tok, EncodingSpec(max_length=8, pair_encoding="text_pair", inference_max_length=12),
                       inference=True)
    feats, truncated = pair.encode(["p0 p1 p2 p3 why?", "why?"], ["because r0", "because r0 r1 r2 r3 r4 r5 r6"])
    assert truncated == 2 and [tok.decode(f["input_ids"]) for f in feats] == [
        "[CLS] p2 p3 why? [SEP] because r0 [SEP]", "[CLS] why? [SEP]3 r4 r5 r6 [SEP]"]
    assert feats[1]["token_type_ids"] == [0, 0, 0, 0] + [1] * 8


def test_decoder_tokenizer_concatenates_and_gets_a_pad_token(tiny_llama):
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_llama))
    assert tok.pad_token == tok.eos_token
    enc = TextEncoder(tok, EncodingSpec(max_length=64))
    assert enc.spec.pair_encoding == "concat"
    (feat,), _ = enc.encode(["The sky "], ["is blue."])
    assert feat["input_ids"] == tok("The sky is blue.")["input_ids"] and "token_type_ids" not in feat
    # the separator takes room too: prompt + reply that fill max_length exactly no longer fit once it joins them,
    # and the cut is counted (not left to the tokenizer, which would drop the reply's last token silently)
    enc = TextEncoder(tok, EncodingSpec(max_length=16, max_prompt_tokens=4, concat_separator="\n"))
    reply = " ".join(["word"] * 20)
    ids = tok(reply, add_special_tokens=False)["input_ids"]
    reply = tok.decode(ids[: 16 - len(tok("Q")["input_ids"])])
    (feat,), truncated = enc.encode(["Q"], [reply])
    assert truncated == 1 and len(feat["input_ids"]) == 16
    assert tok.decode(feat["input_ids"], skip_special_tokens=True).startswith("Q\nword word")


def test_data_pair_encoding_concat_makes_one_segment_for_an_encoder(bert_tok):
    from rewardlab.config import DataConfig

    spec = EncodingSpec.from_data_config(DataConfig(pair_encoding="concat", max_length=64))
    (feat,), _ = TextEncoder(bert_tok, spec).encode(["Why is the sky blue? "], ["Because of scattering."])
    plain = bert_tok("Why is the sky blue? Because of scattering.")
    assert feat["input_ids"] == plain["input_ids"] and set(feat["token_type_ids"]) == {0}
    # no whitespace at the joint: the separator keeps the prompt's last word and the reply's first apart
    (feat,), _ = TextEncoder(bert_tok, spec).encode(["Tell me a fact"], ["Water boils at 100 C."])
    assert feat["input_ids"] == bert_tok("Tell me a fact\nWater boils at 100 C.")["input_ids"]
    assert feat["input_ids"] != bert_tok("Tell me a factWater boils at 100 C.")["input_ids"]
    with pytest.raises(ValueError, match="data.pair_encoding"):
        DataConfig(pair_encoding="pairs")


def test_pair_encoding_auto_is_each_model_kinds_choice(tiny_bert, tmp_path):
    from rewardlab.config import load_config
    from rewardlab.models.base import get_kind

    def spec(kind: str, *overrides: str) -> EncodingSpec:
        cfg = load_config(None, [f"model.backbone={tiny_bert}", f"model.kind={kind}", *overrides])
        return get_kind(kind).processor(cfg).encoder.spec

    assert spec("text").pair_encoding == "concat"  # one text per reply, as TRL builds it
    assert spec("text", "data.pair_encoding=text_pair").pair_encoding == "text_pair"
    assert spec("cross_encoder").pair_encoding == "text_pair"  # BERT has a separator token


def test_collator_encodes_each_unique_item_once():
    a = EncodedComparison((((1, 2, 3), None), ((1, 4), None)), (3, 2), (Pair(0, 1),), 0)
    b = EncodedComparison((((1, 4), None), ((5,), None)), (2, 1), (Pair(1, 0, 2.0),), 1)
    out = PreferenceCollator(TextItems(pad_token_id=0))([a, b])
    items, pairs = out["items"], out["pairs"]
    assert items["input_ids"].tolist() == [[1, 2, 3], [1, 4, 0], [5, 0, 0]]
    assert items["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert (pairs.i.tolist(), pairs.j.tolist()) == ([0, 2], [1, 1])
    assert pairs.margin.tolist() == [0.0, 2.0] and pairs.comparison.tolist() == [0, 1]
    assert pairs.head.tolist() == [0, 0] and pairs.weight.tolist() == [1.0, 1.0] and not pairs.tie.any()
    assert pairs.labeler.tolist() == [-1, -1]


def test_pair_table_routes_attributes_to_heads_and_labelers_to_rows():
    items = (((1,), None), ((2,), None), ((3,), None))
    comp = EncodedComparison(items, (1, 1, 1), (Pair(0, 1, attribute="style"), Pair(1, 2, attribute="spatial"),
                                                Pair(0, 2, 1.5, weight=2.0)), 7, labeler="u2")
    heads = {"spatial": 0, "style": 1, "aggregate": 2, None: 2}
    pairs = PreferenceCollator(TextItems(pad_token_id=0), heads, {"u1": 0, "u2": 1})([comp])["pairs"]
    assert pairs.head.tolist() == [1, 0, 2]
    assert pairs.labeler.tolist() == [1, 1, 1] and pairs.weight.tolist() == [1.0, 1.0, 2.0]
    assert pairs.comparison.tolist() == [7, 7, 7]
    unknown = PreferenceCollator(TextItems(pad_token_id=0), heads, {"u1": 0})([comp])["pairs"]
    assert unknown.labeler.tolist() == [-1, -1, -1]  # never silently someone else


def test_ranking_of_k_costs_k_sequences(bert_tok):
    c = Comparison(prompt="p", responses=("a", "b", "c", "d"),
                   pairs=tuple((i, j, 0.0) for i in range(4) for j in range(i + 1, 4)))
    processor = TextItems(TextEncoder(bert_tok, EncodingSpec(max_length=16)))
    (encoded,), _ = encode_comparisons([c], processor)
    out = PreferenceCollator(processor)([encoded])
    items = out["items"]
    assert items["input_ids"].shape[0] == 4 and len(out["pairs"]) == 6
    assert "token_type_ids" in items and items["token_type_ids"].shape == items["input_ids"].shape
    assert encoded.costs == tuple(len(ids) for ids, _ in encoded.items) and encoded.longest == max(encoded.costs)


def test_sampler_is_seeded_complete_and_length_grouped():
    lengths = [5, 50, 6, 49, 7, 48, 8, 47] * 5
    s = LengthGroupedBatchSampler(lengths, 4, seed=1, mega=2)
    batches = s.batches()
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches == LengthGroupedBatchSampler(lengths, 4, seed=1, mega=2).batches()
    s.set_epoch(1)
    assert s.batches() != batches
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert sum(spread) / len(spread) < 30  # random batches would mix 5s with 50s
    assert len(s) == len(batches) == 10
    unsorted = LengthGroupedBatchSampler(lengths, 4, shuffle=False, group_by_length=False).batches()
    assert unsorted[0] == [0, 1, 2, 3]


def test_each_epoch_starts_with_its_costliest_batch():
    from rewardlab.data.sampling import LengthMatchedBatchSampler, TokenBudgetBatchSampler

    rng = __import__("random").Random(0)
    lengths = [rng.randint(3, 200) for _ in range(90)]
    cost = lambda b: len(b) * max(lengths[i] for i in b)
    samplers = [LengthGroupedBatchSampler(lengths, 4, seed=3, mega=3),
                TokenBudgetBatchSampler(lengths, [2] * 90, 1000, 8, seed=3),
                LengthMatchedBatchSampler([1, -1, 0] * 30, 4, lengths=lengths, seed=3)]
    for sampler in samplers:
        for epoch in range(4):
            sampler.set_epoch(epoch)
            batches = sampler.batches()
            assert cost(batches[0]) == max(cost(b) for b in batches), (type(sampler).__name__, epoch)
    # the order after the first batch is still shuffled: epochs differ beyond their first batch
    sampler = samplers[0]
    sampler.set_epoch(0)
    first = sampler.batches()
    sampler.set_epoch(1)
    assert first[1:] != sampler.batches()[1:]
