"""Tiny generative vision-language models (LLaVA, LLaVA-NeXT, PaliGemma, Idefics3, Qwen2-VL) from configs.

    from robust_pt.models.hf_tiny_vlm import save_tiny_vlm
    save_tiny_vlm("llava", "ckpts/tiny-llava")     # model + processor (tokenizer, chat template)

Two-layer, 32-wide vision towers and decoders with the architecture's real wiring, an LM
tokenizer built offline with the `tokenizers` library (WordPiece pieces of every character and
the tasks' words, a bos token in front, the family's special tokens) and the family's own
processor and chat template, saved with `save_pretrained`: plain transformers, peft and
`robust_pt.load_model` all load the directory as they would a real checkpoint. Random weights:
train them (`robust-pt train --base DIR --method finetune`) before expecting answers.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import ConfigError
from .hf_tiny import _corpus_words

VLM_ARCHS = ("llava", "llava-next")
_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {% for c in message['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def lm_tokenizer(words: Sequence[str], extra_special: Sequence[str] = ()):
    """A PreTrainedTokenizerFast for a decoder: WordPiece over characters and `words`, lower-cased,
    "<s>" prepended, "</s>" its eos, "<pad>" its padding; `extra_special` kept whole."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = _SPECIALS + list(extra_special) + chars + ["##" + c for c in chars]
    tokens += [w for w in words if w not in set(tokens)]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 2)])
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=list(extra_special),
    )
    fast.padding_side = "left"
    return fast


def _clip_vision(image_size: int, patch_size: int, hidden: int, layers: int, heads: int) -> dict:
    return dict(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=hidden,
    )


def _llama(tok, hidden: int, layers: int, heads: int) -> dict:
    return dict(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )


def _llava(next_: bool, tok, image_size, patch_size, hidden, layers, heads):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig

    vision = CLIPVisionConfig(**_clip_vision(image_size, patch_size, hidden, layers, heads))
    text = LlamaConfig(**_llama(tok, hidden, layers, heads))
    common = dict(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"))
    if next_:
        from transformers import (
            LlavaNextConfig,
            LlavaNextForConditionalGeneration,
            LlavaNextImageProcessor,
            LlavaNextProcessor,
        )

        grid = [[image_size, image_size]]
        model = LlavaNextForConditionalGeneration(LlavaNextConfig(**common, image_grid_pinpoints=grid))
        ip = LlavaNextImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
            image_grid_pinpoints=grid,
        )
        proc = LlavaNextProcessor(
            image_processor=ip,
            tokenizer=tok,
            patch_size=patch_size,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=LLAVA_TEMPLATE,
        )
        return model, proc
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    model = LlavaForConditionalGeneration(LlavaConfig(**common))
    ip = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    proc = LlavaProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    return model, proc


def build_tiny_vlm(
    arch: str,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    words: Iterable[str] = (),
    seed: int = 0,
):
    """(model, processor) of a tiny random generative `arch` (one of VLM_ARCHS) built from configs."""
    import torch

    if arch not in VLM_ARCHS:
        raise ConfigError(f"unknown tiny generative architecture {arch!r}; choose one of {', '.join(VLM_ARCHS)}")
    torch.manual_seed(seed)
    vocab = _corpus_words([*words, "user", "assistant"])
    if arch in ("llava", "llava-next"):
        tok = lm_tokenizer(vocab, ["<image>"])
        model, proc = _llava(arch == "llava-next", tok, image_size, patch_size, hidden, layers, heads)
    return model.eval(), proc


def save_tiny_vlm(arch: str, out: str | Path, **kw) -> Path:
    """Build a tiny generative `arch` and save it with its processor into `out` (save_pretrained)."""
    out = Path(out)
    model, processor = build_tiny_vlm(arch, **kw)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out
