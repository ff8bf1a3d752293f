"""Tiny Hugging Face vision-language models built from configs, with offline tokenizers.

For tests, smoke runs and examples where no real checkpoint can be downloaded:

    from robust_pt.testing.hf_tiny import save_tiny
    save_tiny("vilt", "ckpts/tiny-vilt", answers=["yes", "no", "red"])   # model + processor

Each is saved with `save_pretrained` together with its processor (the image processor's
preprocessor_config.json and a tokenizer built offline with the `tokenizers` library), so
the directory is exactly what a real checkpoint looks like: `robust_pt.load_model`,
plain transformers and peft all load it. Random weights: they answer by chance until
trained (`robust-pt train`).
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import ConfigError

ARCHS = ("vilt", "blip", "clip", "siglip")
_SPECIALS_BERT = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _corpus_words(extra: Iterable[str] = ()) -> list[str]:
    from ..tasks.vocab import WORDS

    words = {w for w in WORDS if w.isalpha()}
    for t in extra:
        words.update(w for w in t.lower().replace('"', " ").replace("?", " ").split() if w)
    return sorted(words)


def bert_tokenizer(words: Sequence[str], extra_special: Sequence[str] = ()):
    """A BertTokenizerFast with a WordPiece vocab built offline: special tokens, every
    character (alone and as a ##continuation, so misspellings split into pieces instead of
    [UNK]) and `words`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = _SPECIALS_BERT + list(extra_special) + chars + ["##" + c for c in chars]
    tokens += [w for w in words if w not in set(tokens)]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    kw = {"bos_token": extra_special[0]} if extra_special else {}
    return BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        do_lower_case=True,
        **kw,
    )


def clip_tokenizer(words: Sequence[str], folder: Path):
    """A CLIPTokenizerFast with a byte-level BPE vocab (every byte, with and without </w>, plus
    merges for `words`), written as vocab.json + merges.txt and converted offline."""
    from transformers import CLIPTokenizer, CLIPTokenizerFast
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    seen = set(vocab)
    for w in words:  # merge left to right: ((a b) c) ... </w>
        if not w.isascii() or len(w) < 2:
            continue
        cur = w[0]
        for i, c in enumerate(w[1:], 1):
            last = i == len(w) - 1
            nxt = c + "</w>" if last else c
            merged = cur + nxt
            if merged not in seen:
                merges.append(f"{cur} {nxt}")
                vocab.append(merged)
                seen.add(merged)
            cur = merged
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    slow = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    slow.save_pretrained(folder)
    fast = CLIPTokenizerFast.from_pretrained(folder, from_slow=True)
    for f in ("vocab.json", "merges.txt"):
        (folder / f).unlink(missing_ok=True)
    return fast


def siglip_tokenizer(words: Sequence[str]):
    """A PreTrainedTokenizerFast laid out as SigLIP's: lower case, word pieces, "</s>" appended, "<pad>" padding
    (SigLIP pads every text to its full length and reads the last position)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = ["<pad>", "</s>", "<unk>"] + chars + ["##" + c for c in chars] + [w for w in words]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=32,
        model_input_names=["input_ids"],  # as SigLIP's tokenizer: no attention mask (the model reads the pads)
    )


def _siglip(tok, image_size: int, patch_size: int, hidden: int, layers: int, heads: int):
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    common = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=heads)
    text = dict(vocab_size=len(tok), max_position_embeddings=32, pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id, **common)  # fmt: skip
    vision = dict(image_size=image_size, patch_size=patch_size, **common)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    ip = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    return model, SiglipProcessor(image_processor=ip, tokenizer=tok)


def _vilt(tok, answers: list[str], image_size: int, patch_size: int, hidden: int, layers: int, heads: int):
    from transformers import ViltConfig, ViltForQuestionAnswering, ViltImageProcessor, ViltProcessor

    cfg = ViltConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=40,
        image_size=image_size,
        patch_size=patch_size,
        max_image_length=-1,
        num_labels=len(answers),
        id2label=dict(enumerate(answers)),
        label2id={a: i for i, a in enumerate(answers)},
        pad_token_id=tok.pad_token_id,
    )
    ip = ViltImageProcessor(
        size={"shortest_edge": image_size}, size_divisor=patch_size, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return ViltForQuestionAnswering(cfg), ViltProcessor(image_processor=ip, tokenizer=tok)


def _blip(tok, image_size: int, patch_size: int, hidden: int, layers: int, heads: int):
    from transformers import BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    text = dict(
        vocab_size=len(tok),
        hidden_size=hidden,
        encoder_hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=40,
        bos_token_id=tok.convert_tokens_to_ids("[DEC]"),
        pad_token_id=tok.pad_token_id,
        sep_token_id=tok.sep_token_id,
        eos_token_id=tok.sep_token_id,
    )
    # initializer_range 0.02: BLIP's default (1e-10) gives ~1e-11 pixel gradients in a random model
    vision = dict(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
        initializer_range=0.02,
    )
    model = BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=vision, projection_dim=hidden))
    ip = BlipImageProcessor(size={"height": image_size, "width": image_size})
    return model, BlipProcessor(image_processor=ip, tokenizer=tok)


def _clip(tok, image_size: int, patch_size: int, hidden: int, layers: int, heads: int):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    text = dict(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=48,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    vision = dict(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
    )
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=hidden))
    ip = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return model, CLIPProcessor(image_processor=ip, tokenizer=tok)


def build_tiny(
    arch: str,
    answers: Sequence[str] = ("yes", "no"),
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    words: Iterable[str] = (),
    seed: int = 0,
    tmp: Path | None = None,
):
    """(model, processor) of a tiny random `arch` (vilt, blip, clip or siglip) built from a config."""
    import tempfile

    import torch

    if arch not in ARCHS:
        raise ConfigError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    torch.manual_seed(seed)
    vocab_words = _corpus_words([*answers, *words])
    dims = (image_size, patch_size, hidden, layers, heads)
    if arch == "vilt":
        model, processor = _vilt(bert_tokenizer(vocab_words), list(answers), *dims)
    elif arch == "blip":
        model, processor = _blip(bert_tokenizer(vocab_words, extra_special=["[DEC]"]), *dims)
    elif arch == "siglip":
        model, processor = _siglip(siglip_tokenizer(vocab_words), *dims)
    else:
        with tempfile.TemporaryDirectory() as d:
            tok = clip_tokenizer(vocab_words, Path(tmp or d) / "clip-tokenizer")
        model, processor = _clip(tok, *dims)
    return model.eval(), processor


def save_tiny(arch: str, out: str | Path, answers: Sequence[str] = ("yes", "no"), **kw) -> Path:
    """Build a tiny `arch` model and save it with its processor into `out` (save_pretrained)."""
    out = Path(out)
    model, processor = build_tiny(arch, answers, **kw)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out
