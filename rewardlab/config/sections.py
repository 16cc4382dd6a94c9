"""The option sections of an experiment: data, model and multimodal (train has its own module)."""

from __future__ import annotations

from dataclasses import dataclass

from rewardlab.config.options import check_types, choice, option, positive
from rewardlab.contracts.registry import DATA_FORMATS, MODEL_KINDS
from rewardlab.contracts.schema import OUTCOMES


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    train: str = option("default", "Training data: a .jsonl/.json/.csv/.parquet file (optionally .gz), a folder "
                      "(every dataset.json below it, as LLMBar ships), 'hf:NAME' for a Hugging Face dataset, a "
                      "`rewardlab label` store (.sqlite, 'sqlite:PATH' or a postgresql:// URL: its rankings), or "
                      "'default' for the embedded data set.")
    eval: str | None = option(None, "Held-out data in the same forms as `train`; when unset, a split of `train` is used.")
    format: str = option("auto", "Row format: auto, pairs, implicit_prompt, chat, rankings, ratings, ab (prompt, "
                       "response_a, response_b, winner a / b / tie; or Chatbot Arena's columns), item_ratings "
                       "(one row per response with a rating column per attribute; rows of a prompt form pairs) or "
                       "stepwise (a solution with a label per step, for process reward models: TRL's prompt / "
                       "completions / labels, Math-Shepherd's input / label, PRM800K's ratings). Public benchmarks, "
                       "each read as distributed: rewardbench, rewardbench2, llmbar, pandalm, mtbench_human, "
                       "judgebench (auto-detected from their fields).")
    columns: dict = option({}, "Column mapping {our_name: your_column}, e.g. {prompt: question, chosen: good}.")
    hf_split: str = option("train", "Split to read for 'hf:' sources.")
    min_rating_diff: float = option(1.0, "Ratings formats: a pair is formed only where two scores differ by at least this.")
    attributes: list = option([], "item_ratings format: the rating columns, one reward head each (e.g. [helpfulness, "
                            "correctness]). Empty: every numeric column that is not a known field.")
    rating_range: list = option([], "Ratings formats: [low, high]; a rating outside it is an error. Empty: any finite number.")
    aggregate_pairs: bool = option(True, "item_ratings format: also form overall pairs from the mean rating of rows "
                                 "rated on every attribute; they train the aggregate.")
    winner_codes: dict = option({}, "ab format: what integer winners mean, e.g. {0: a, 1: b, 2: tie}; integer "
                              "winners are an error without it (the codes differ between data sets).")
    eval_fraction: float = option(0.2, "Fraction of groups held out when `eval` is unset.")
    split_by: str = option("prompt", "Field that groups examples for the split (prompt, group, labeler, ...; "
                         "'pair' splits by example). No group appears on both sides.")
    stratify: bool = option(False, "Train/eval split keeps the proportions of outcomes (A / B / tie; 'a' for plain "
                          "pairs) on both sides, still never splitting a group (scikit-learn StratifiedGroupKFold).")
    folds: int = option(1, "Cross-validation folds over `train` (split by `split_by`, stratified with `stratify`); "
                      "1 = a single train/eval split.")
    seed: int = option(0, "Seed of the train/eval split.")
    on_bad_row: str = option("error", "What to do with an invalid row: 'error' stops naming file, row and field; "
                           "'skip' drops it and reports how many and why.")
    max_examples: int | None = option(None, "Read at most this many rows per source (for quick runs).")
    max_length: int = option(256, "Maximum tokens per (prompt, response) sequence; longer ones are truncated and counted.")
    max_prompt_tokens: int | None = option(None, "When a sequence is too long, the prompt keeps at most this many "
                                         "tokens (default: half of max_length).")
    prompt_truncation: str = option("left", "Which side of a long prompt is cut: 'left' keeps its end.")
    response_truncation: str = option("right", "Which side of a long response is cut: 'right' keeps its start.")
    pair_encoding: str = option("auto", "How a prompt and a response make one sequence: concat (one segment, prompt + "
                              "response as written, as TRL's RewardTrainer builds it), text_pair (two segments, the "
                              "response with its own token type) or auto, the model kind's choice: concat for "
                              "model.kind=text, text_pair for a cross-encoder whose tokenizer has a separator token.")
    concat_separator: str = option("\n", "pair_encoding=concat: put between prompt and response when neither has "
                                 "whitespace at the joint ('Why?' + 'Because.' → 'Why?\\nBecause.').")
    assistant_marker: str = option("\n\nAssistant:", "implicit_prompt format: the marker that opens the final response.")
    step_tag: str = option("ки", "stepwise format, Math-Shepherd rows: the tag that ends each step of `input`; "
                         "`label` is the same text with `+` (correct) or `-` (wrong) in each tag's place.")
    neutral_step: str = option("good", "stepwise format, PRM800K-style ratings (1 good, -1 bad, 0 neutral): what a "
                             "neutral step counts as, good or bad. good: a step that makes no progress is no "
                             "mistake, as PRM800K's labelers stop a solution only at a -1 step and OpenR's PRM800K "
                             "preprocessing counts neutral as positive; bad asks the model for progress in every step.")

    def __post_init__(self) -> None:
        check_types(self, "data")
        choice("data.format", self.format, ("auto", *DATA_FORMATS.names()))
        if self.rating_range and (len(self.rating_range) != 2 or not all(
                isinstance(x, (int, float)) for x in self.rating_range) or self.rating_range[0] >= self.rating_range[1]):
            raise ValueError(f"data.rating_range={self.rating_range!r} must be [low, high] with low < high")
        choice("data.on_bad_row", self.on_bad_row, ("error", "skip"))
        choice("data.neutral_step", self.neutral_step, ("good", "bad"))
        if not self.step_tag.strip():
            raise ValueError("data.step_tag is empty: name the tag that ends each step (Math-Shepherd's is 'ки')")
        choice("data.prompt_truncation", self.prompt_truncation, ("left", "right"))
        choice("data.response_truncation", self.response_truncation, ("left", "right"))
        choice("data.pair_encoding", self.pair_encoding, ("auto", "text_pair", "concat"))
        positive("data.min_rating_diff", self.min_rating_diff, allow_zero=True)
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"data.eval_fraction={self.eval_fraction!r} must be in [0, 1)")
        positive("data.max_length", self.max_length)
        for code, outcome in self.winner_codes.items():
            if isinstance(code, bool) or not str(code).strip().lstrip("+-").isdigit():
                raise ValueError(f"data.winner_codes: key {code!r} must be an integer code, "
                                 "e.g. {0: a, 1: b, 2: tie}")
            choice(f"data.winner_codes[{code}]", outcome, OUTCOMES)
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 1:
            raise ValueError(f"data.folds={self.folds!r} must be a whole number >= 1 (1 = no cross-validation)")
        if self.max_prompt_tokens is not None and not 0 <= self.max_prompt_tokens < self.max_length:
            raise ValueError(f"data.max_prompt_tokens={self.max_prompt_tokens!r} must be in [0, max_length)")
        if self.max_examples is not None:
            positive("data.max_examples", self.max_examples)


STEP_AGGREGATES = ("min", "product", "mean", "last")  # a process reward model's step probabilities -> one reward
JUDGE_PLACEHOLDERS = ("{prompt}", "{response_a}", "{response_b}")
JUDGE_TEMPLATE = ("Please act as an impartial judge and evaluate the two responses to the user prompt below. "
                  "Which response is better?\n\n[User prompt]\n{prompt}\n\n[Response A]\n{response_a}\n\n"
                  "[Response B]\n{response_b}\n\nAnswer with one letter: A if response A is better, B if response B "
                  "is better, or C for a tie.")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    kind: str = option("text", "Model kind (see `rewardlab kinds`): text (a text reward model), multimodal "
                     "(text prompt + image; settings in the multimodal section) or prm (a process reward model: a "
                     "probability per step; chosen by itself for stepwise data).")
    aggregate: str = option("mean", "With several attribute heads, the overall reward: mean, weighted "
                          "(model.aggregate_weights), learned (softmax weights trained by overall pairs) or, for "
                          "model.kind=multimodal, gate (per-item softmax weights computed from the fused features).")
    aggregate_weights: dict = option({}, "aggregate=weighted: {attribute: weight}; unnamed attributes weigh 0.")
    backbone: str = option("minilm", "Backbone: a registry name (see `rewardlab backbones`), a local folder, "
                         "or a Hugging Face hub id; it must load as AutoModelForSequenceClassification. "
                         "model.kind=judge: a causal LM (folder, hub id, .gguf file, or smollm2 for the offline "
                         "SmolLM2-135M-Instruct, which also stands in for the default minilm, an encoder). "
                         "model.kind=multimodal: dual (EfficientNet-Lite0 + MiniLM, offline), a CLIPModel or "
                         "SiglipModel folder or hub id, or open_clip:MODEL[:PRETRAINED].")
    lora: bool = option(False, "Train LoRA adapters (PEFT) instead of the full backbone; the head is always trained. "
                      "model.kind=multimodal: adapters on the towers (needs multimodal.freeze_towers=false).")
    lora_r: int = option(8, "LoRA rank.")
    lora_alpha: int = option(16, "LoRA scaling alpha.")
    lora_dropout: float = option(0.05, "LoRA dropout.")
    lora_target_modules: list = option([], "Modules to adapt; empty lets PEFT choose for known architectures.")
    dropout: float = option(0.0, "Text and cross-encoder backbones: every dropout probability of the backbone's "
                          "config (hidden, attention, classifier) set to this in training; -1 keeps the checkpoint's "
                          "own. 0 by default, as TRL's disable_dropout.")
    gradient_checkpointing: bool = option(False, "Trade compute for memory in the backbone.")
    packing: bool = option(False, "Padding-free training for decoders whose attention takes per-sequence position ids "
                         "(Llama, Qwen2, Mistral, Gemma, Phi-3 class): a batch's sequences are concatenated without "
                         "padding and each reward is read at its own last token.")
    quantize_4bit: bool = option(False, "QLoRA: load the backbone in 4 bits (bitsandbytes NF4) and train LoRA adapters "
                               "on it (needs model.lora=true, a CUDA GPU and bitsandbytes); model.kind=judge.")
    personalization: str = option("none", "Per-labeler rewards from the data's labeler column: none; tokens (a "
                                "trainable <user:ID> token in front of the text); embedding (a learned user vector "
                                "FiLM-conditions the features of the reward layer); lowrank (each user's reward adds "
                                "a user mix of personal_rank shared reward directions). A population reward is learned "
                                "too and scores unknown labelers.")
    min_labeler_pairs: int = option(5, "personalization: labelers with fewer training pairs get no parameters of their "
                                  "own; their data trains the population reward.")
    labeler_dropout: float = option(0.2, "personalization: share of training items scored as the population (no "
                                  "labeler), so the population reward learns from everyone.")
    personal_rank: int = option(4, "personalization=lowrank: number of shared reward directions.")
    step_separator: str = option("auto", "model.kind=prm: the text put after every step; the step's probability is "
                               "read at its last token (TRL PRMTrainer's step_separator; its token id is saved as "
                               "step_tag_id, what vLLM's STEP pooling reads), and `score` splits a response into "
                               "steps at it. auto: '\\n' where the tokenizer keeps it as a token, else its "
                               "separator token (BERT-like tokenizers drop newlines: '[SEP]').")
    step_aggregate: str = option("min", "model.kind=prm: how `score` turns step probabilities into one reward: min "
                               "(a solution is as good as its worst step, as Math-Shepherd scores; unlike product it "
                               "does not mark long solutions down for their many slightly uncertain steps), product "
                               "(P(every step is correct), Let's Verify Step by Step), mean or last.")
    judge_template: str = option(JUDGE_TEMPLATE, "model.kind=judge: the judge's instruction, with the placeholders "
                               "{prompt}, {response_a} and {response_b}; it is sent as a user turn through the chat "
                               "template and the judge answers with one token: A, B or C (tie).")

    def __post_init__(self) -> None:
        check_types(self, "model")
        choice("model.aggregate", self.aggregate, ("mean", "weighted", "learned", "gate"))
        choice("model.kind", self.kind, MODEL_KINDS.names())
        if not self.backbone.strip():
            raise ValueError("model.backbone is empty: name a registry backbone (rewardlab backbones), a folder or a "
                             "hub id")
        positive("model.lora_r", self.lora_r)
        positive("model.lora_alpha", self.lora_alpha)
        if not (self.dropout == -1.0 or 0.0 <= self.dropout < 1.0):
            raise ValueError(f"model.dropout={self.dropout!r} must be in [0, 1), or -1 to keep the backbone's own")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"model.lora_dropout={self.lora_dropout!r} must be in [0, 1)")
        choice("model.personalization", self.personalization, ("none", "tokens", "embedding", "lowrank"))
        positive("model.min_labeler_pairs", self.min_labeler_pairs)
        positive("model.personal_rank", self.personal_rank)
        if not 0.0 <= self.labeler_dropout < 1.0:
            raise ValueError(f"model.labeler_dropout={self.labeler_dropout!r} must be in [0, 1)")
        if self.quantize_4bit and not self.lora:
            raise ValueError("model.quantize_4bit=true trains LoRA adapters on a 4-bit backbone: set model.lora=true")
        choice("model.step_aggregate", self.step_aggregate, STEP_AGGREGATES)
        if not self.step_separator:
            raise ValueError("model.step_separator is empty: give the text that ends each step, or auto")
        missing = [p for p in JUDGE_PLACEHOLDERS if p not in self.judge_template]
        if missing:
            raise ValueError(f"model.judge_template lacks the placeholder(s) {', '.join(missing)}; it must contain "
                             f"{', '.join(JUDGE_PLACEHOLDERS)}")


@dataclass(frozen=True, kw_only=True)
class MultimodalConfig:
    fusion: str = option("attention", "How image and text meet: attention (cross-attention both ways, then "
                       "self-attention over the joint tokens, gated with the pooled path; sees where things are) or "
                       "concat (pooled image, pooled text, their product and cosine; cheaper).")
    hidden: int = option(256, "Width of the fusion layers and heads.")
    layers: int = option(2, "fusion=attention: self-attention layers over the joint image and text tokens.")
    attention_heads: int = option(4, "fusion=attention: attention heads (must divide hidden).")
    dropout: float = option(0.1, "Dropout in the fusion layers and heads.")
    token_pool: int = option(1, "fusion=attention: average the image tokens of each scale in k x k windows before "
                           "fusion (CLS-like tokens kept). 2 turns EfficientNet-Lite0's 7x7 grid into 4x4 tokens: "
                           "fusion costs about 2.5x less per item, spatial detail is coarser.")
    head_layers: int = option(2, "Residual MLP blocks in the reward heads (0: a linear head).")
    freeze_towers: bool = option(True, "Keep the image and text towers frozen (only fusion and heads learn; tower "
                               "outputs can be cached). false: fine-tune them, fully or with LoRA (model.lora).")
    cache: bool = option(True, "With frozen towers, compute tower outputs once and keep them on disk (cache_dir), so "
                       "training epochs never run the towers.")
    cache_dir: str | None = option(None, "Embedding cache folder (default: $XDG_CACHE_HOME/rewardlab/embeddings, "
                                 "~/.cache/... when unset); entries are keyed by image content, backbone weights and "
                                 "preprocessing, so one folder serves every run.")
    image_size: int | None = option(None, "Input size of the image tower (default: the tower's own, e.g. 224); images "
                                  "are resized on the shorter side and centre-cropped.")
    scales: list = option([], "Several input sizes, e.g. [128, 224]: the tower sees each, and their tokens are "
                        "concatenated (overrides image_size). Empty: image_size only.")
    augment: list = option([], "Training augmentations: any of hflip, rotate, crop, color (never hue). hflip swaps "
                         "left and right: leave it out when prompts name horizontal positions. Evaluation and "
                         "scoring never augment.")
    augment_views: int = option(4, "augment with the cache: augmented views cached per image (computed once); each "
                              "training batch picks one of them or the clean image at random.")
    text_blind: bool = option(False, "Replace every prompt with the empty text: a control that shows how much of the "
                            "model's accuracy needs the prompt.")
    tower_batch_size: int = option(32, "Images per tower pass when filling the cache.")

    def __post_init__(self) -> None:
        check_types(self, "multimodal")
        choice("multimodal.fusion", self.fusion, ("attention", "concat"))
        for name in ("hidden", "attention_heads", "tower_batch_size", "token_pool"):
            positive(f"multimodal.{name}", getattr(self, name))
        for name in ("layers", "head_layers", "augment_views"):
            positive(f"multimodal.{name}", getattr(self, name), allow_zero=True)
        if self.hidden % self.attention_heads:
            raise ValueError(f"multimodal.attention_heads={self.attention_heads} must divide "
                             f"multimodal.hidden={self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"multimodal.dropout={self.dropout!r} must be in [0, 1)")
        for size in ([self.image_size] if self.image_size is not None else []) + list(self.scales):
            if not isinstance(size, int) or isinstance(size, bool) or not 16 <= size <= 4096:
                raise ValueError(f"multimodal image sizes must be whole numbers of pixels in [16, 4096], got {size!r} "
                                 "(multimodal.image_size / multimodal.scales)")
        for name in self.augment:
            choice("multimodal.augment", name, ("hflip", "rotate", "crop", "color"))
        if self.augment and self.cache and self.freeze_towers and self.augment_views < 1:
            raise ValueError("multimodal.augment with multimodal.cache needs multimodal.augment_views >= 1 (augmented "
                             "views are cached per image); or set multimodal.cache=false to augment afresh every step")
