"""Tiny generative vision-language models (LLaVA, LLaVA-NeXT, PaliGemma, Idefics3, Qwen2-VL) from configs.

    from robust_pt.testing.tiny_vlm import save_tiny_vlm
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

VLM_ARCHS = ("llava", "llava-next", "paligemma", "idefics3", "qwen2-vl", "qwen2.5-vl")
_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {% for c in message['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def lm_tokenizer(
    words: Sequence[str], extra_special: Sequence[str] = (), bos: bool = True, cls: str = "", metaspace: bool = False
):
    """A PreTrainedTokenizerFast for a decoder: WordPiece over characters and `words`, lower-cased,
    "<s>" prepended (unless not `bos`), "</s>" its eos, "<pad>" its padding; `extra_special` kept whole;
    `cls`: the transformers tokenizer class a family's processor insists on (default PreTrainedTokenizerFast);
    `metaspace`: split on spaces only and mark a word's leading space, as Llama's SentencePiece does (so a
    token depends on what precedes it: "▁what" after a space, "##what" glued to a newline)."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = chars + (["\n"] + [w for w in words if w.isascii()] if metaspace else [])
    tokens = _SPECIALS + list(extra_special) + chars + ["##" + c for c in pieces]
    if metaspace:  # SentencePiece-like: a word after a space is "▁word", glued to a newline it is "##word"
        tokens += ["\n", "▁"] + ["▁" + c for c in pieces if c != "\n"]
    tokens += [w for w in words if w not in set(tokens)]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", max_input_chars_per_word=100))
    tok.normalizer = normalizers.Lowercase() if metaspace else normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = (
        pre_tokenizers.Metaspace(prepend_scheme="first") if metaspace else pre_tokenizers.BertPreTokenizer()
    )
    head = "<s> " if bos else ""
    tok.post_processor = processors.TemplateProcessing(
        single=f"{head}$A", pair=f"{head}$A $B:1", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok.decoder = decoders.Metaspace(prepend_scheme="first") if metaspace else decoders.WordPiece()
    fast = getattr(transformers, cls or "PreTrainedTokenizerFast")(
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
    proc_kw = dict(  # LLaVA-1.5's: the CLS feature dropped, one extra token counted, its chat template
        tokenizer=tok,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    if next_:
        from transformers import (
            LlavaNextConfig,
            LlavaNextForConditionalGeneration,
            LlavaNextImageProcessor,
            LlavaNextProcessor,
        )

        grid = [[image_size, image_size], [image_size, 2 * image_size], [2 * image_size, image_size]]  # anyres
        model = LlavaNextForConditionalGeneration(LlavaNextConfig(**common, image_grid_pinpoints=grid))
        ip = LlavaNextImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
            image_grid_pinpoints=grid,
        )
        return model, LlavaNextProcessor(image_processor=ip, **proc_kw)
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    model = LlavaForConditionalGeneration(LlavaConfig(**common))
    ip = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return model, LlavaProcessor(image_processor=ip, **proc_kw)


def _paligemma(tok, image_size, patch_size, hidden, layers, heads):
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
        SiglipVisionConfig,
    )

    ip = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    ip.image_seq_length = (image_size // patch_size) ** 2
    proc = PaliGemmaProcessor(image_processor=ip, tokenizer=tok)  # adds <image> and the <loc> / <seg> tokens
    vision = SiglipVisionConfig(**_clip_vision(image_size, patch_size, hidden, layers, heads))
    text = GemmaConfig(**{**_llama(tok, hidden, layers, heads), "head_dim": hidden // heads})
    cfg = PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        projection_dim=hidden,
        hidden_size=hidden,
    )
    return PaliGemmaForConditionalGeneration(cfg), proc


IDEFICS_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
IDEFICS_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}"
    "{% elif c['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _idefics3(tok, image_size, patch_size, hidden, layers, heads):
    import transformers as tf

    scale = 2
    ip = tf.Idefics3ImageProcessor(
        do_image_splitting=False,
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
    )
    seq = (image_size // patch_size) ** 2 // scale**2
    proc = tf.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=seq, chat_template=IDEFICS_TEMPLATE)
    vision = tf.Idefics3VisionConfig(**_clip_vision(image_size, patch_size, hidden, layers, heads))
    cfg = tf.Idefics3Config(
        vision_config=vision.to_dict(),
        text_config=tf.LlamaConfig(**_llama(tok, hidden, layers, heads)).to_dict(),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        pad_token_id=tok.pad_token_id,
    )
    return tf.Idefics3ForConditionalGeneration(cfg), proc


QWEN_TOKENS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen2vl(v25: bool, tok, image_size, patch_size, hidden, layers, heads):
    import transformers as tf

    merge = 2
    ip = tf.Qwen2VLImageProcessor(
        min_pixels=image_size * image_size,
        max_pixels=image_size * image_size,
        patch_size=patch_size,
        merge_size=merge,
        temporal_patch_size=2,
    )
    from ..models.hf.generative import image_only

    base = tf.Qwen2_5_VLProcessor if v25 else tf.Qwen2VLProcessor
    try:
        proc = base(
            image_processor=ip, tokenizer=tok, video_processor=tf.Qwen2VLVideoProcessor(), chat_template=QWEN_TEMPLATE
        )
    except ImportError:  # no torchvision: no video processor (models.hf.generative.image_only)
        proc = image_only(base)(image_processor=ip, tokenizer=tok, chat_template=QWEN_TEMPLATE)
    head_dim = hidden // heads
    text = {
        **_llama(tok, hidden, layers, heads),
        "rope_scaling": {"type": "mrope", "mrope_section": _sections(head_dim)},
    }
    vision = dict(
        depth=layers,
        hidden_size=hidden,
        num_heads=heads,
        patch_size=patch_size,
        spatial_merge_size=merge,
        temporal_patch_size=2,
    )
    if v25:
        vision.update(
            out_hidden_size=hidden,
            intermediate_size=2 * hidden,
            fullatt_block_indexes=[layers - 1],
            window_size=patch_size * merge * 2,
        )
        cfg_cls, model_cls = tf.Qwen2_5_VLConfig, tf.Qwen2_5_VLForConditionalGeneration
    else:
        vision.update(embed_dim=hidden, mlp_ratio=2)
        cfg_cls, model_cls = tf.Qwen2VLConfig, tf.Qwen2VLForConditionalGeneration
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_TOKENS}
    cfg = cfg_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    return model_cls(cfg), proc


def _sections(head_dim: int) -> list[int]:
    """Multimodal rope sections (temporal, height, width) summing to head_dim / 2."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


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
    dims = (image_size, patch_size, hidden, layers, heads)
    if arch in ("llava", "llava-next"):
        # LLaVA-NeXT gets a SentencePiece-like tokenizer: in-place tokenisation is tested on it
        tok = lm_tokenizer(vocab, ["<image>"], metaspace=arch == "llava-next")
        model, proc = _llava(arch == "llava-next", tok, *dims)
    elif arch == "paligemma":
        model, proc = _paligemma(lm_tokenizer(vocab, bos=False, cls="GemmaTokenizerFast"), *dims)
    elif arch == "idefics3":
        model, proc = _idefics3(lm_tokenizer(vocab, IDEFICS_TOKENS), *dims)
    else:
        model, proc = _qwen2vl(
            arch == "qwen2.5-vl", lm_tokenizer(vocab, QWEN_TOKENS, bos=False, cls="Qwen2TokenizerFast"), *dims
        )
    return model.eval(), proc


def save_tiny_vlm(arch: str, out: str | Path, **kw) -> Path:
    """Build a tiny generative `arch` and save it with its processor into `out` (save_pretrained)."""
    out = Path(out)
    model, processor = build_tiny_vlm(arch, **kw)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


#: A tiny LLaVA trained on the shapes pretraining mix (`make tiny-llava`): a base to tune and attack, committed
#: so that tests and recipes start from one that has learned (VQA 43.8%, VE 67.5%, caption CIDEr 0.81).
TINY_LLAVA = Path(__file__).resolve().parents[1] / "assets" / "tiny-llava"
#: The same tiny LLaVA trained on shapes captions only (`make tiny-llava`): it answers shapes-vqa below the majority
#: answer (6.5%), so tuning it on VQA shows a method learning (tests/test_generative_vlms.py).
TINY_LLAVA_CAPTIONS = TINY_LLAVA.with_name("tiny-llava-captions")
