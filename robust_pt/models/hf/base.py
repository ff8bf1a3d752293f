"""The part every Hugging Face family shares: HFVLModel (pixel normalisation inside the model,
tokenisation, prompts from peft, device and precision) and loading a save_pretrained directory
into the VLModel of its family.

    model = robust_pt.load_model("ckpts/vilt-vqa")      # a save_pretrained directory

Each family is one module beside this one (vilt.py, blip.py, clip.py, and generative.py's
subclasses llava.py, paligemma.py, idefics3.py, qwen2vl.py): its HFVLModel subclass and the
HFFamily it registers in robust_pt/models/loading.py (architecture, image settings, what it
supports); a subclass names its family (`family = FAMILY`), from which it takes its
architecture and task kinds. Everything here dispatches through that registry.

Same eps everywhere: models take images (B, 3, S, S) in [0, 1] at the processor's input
resolution S (tasks resize real images to S before the attack, see `resize_mode`); the
processor's rescale and normalisation (image_mean, image_std) run inside `normalize`, so
an eps is an L-inf ball in [0, 1] pixel space for every backend.

Embedding attacks: `embed` returns the continuous encoder inputs the architectures
accept, image tokens after the patch embedding (with position embeddings, as the
encoders take them) and text word embeddings (before position embeddings, the
`inputs_embeds` of the text encoders); `*_from_embeds` run the rest of the model from
there. peft adapters (robust_pt/models/hf/adapters.py) plug in unchanged: injected methods
(LoRA, IA3, ...) live inside the modules; prompt tuning's virtual tokens are prepended
to the text embeddings in `_with_prompts`.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ...errors import CheckpointError, TaskError
from ...tuning.checkpoint import refuse_nonfinite, verify_weights
from ..base import Embeds, VLModel

# architecture_of, read_json: also imported from here by adapters.py and robust_pt/tuning/hf_train.py
from ..loading import HFFamily, ImageSettings, architecture_of, hf_family, read_json  # noqa: F401

CLOSED, GROUND, CAPTION = "closed", "ground", "caption"  # = robust_pt.tasks.base (kept import-light)
SIDE_FILE = "robust_pt.json"  # what robust-pt adds to a directory it saved (method, task, metrics)


class HFVLModel(VLModel):
    """Common part: pixel normalisation, tokenisation, prompts from peft, device and precision."""

    family: HFFamily | None = None  # the family this class implements (registered beside it)
    architecture = ""  # = family.architecture
    task_kinds: tuple[str, ...] = (CLOSED,)  # = family.task_kinds
    trains_on_answer_text = False  # robust-pt train: the answer's token loss (else cross-entropy over candidates)

    def __init_subclass__(cls, **kw):
        """A subclass that names its family takes its architecture and task kinds from it."""
        super().__init_subclass__(**kw)
        if cls.__dict__.get("family") is not None:
            cls.architecture = cls.family.architecture
            cls.task_kinds = cls.family.task_kinds

    def __init__(self, net: nn.Module, tokenizer, image_cfg: dict, meta: dict, *, image: ImageSettings):
        """image_cfg: the saved processor config; image: the family's image settings from it
        (HFFamily.image_settings: resolution, resize mode, normalisation)."""
        super().__init__()
        self.net = net  # the transformers model, or a PeftModel wrapping it
        self.tokenizer = tokenizer
        self.meta = dict(meta)
        self.image_size = int(image.size)
        self.resize_mode = image.resize
        self.image_cfg = dict(image_cfg)
        self.register_buffer("pixel_mean", torch.tensor(list(image.mean)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(list(image.std)).view(1, 3, 1, 1), persistent=False)
        self.pixel_scale = image.scale
        self.amp_dtype: torch.dtype | None = None  # bfloat16 autocast on CUDA (set by load_model)

    # ---------------------------------------------------------------- plumbing
    @property
    def hf(self) -> nn.Module:
        """The transformers model (inside the PeftModel for adapters)."""
        get = getattr(self.net, "get_base_model", None)
        return get() if callable(get) else self.net

    @property
    def peft_config(self):
        cfg = getattr(self.net, "peft_config", None)
        return None if not cfg else cfg[self.net.active_adapter]

    def _prompts(self, batch: int) -> torch.Tensor | None:
        """(B, P, d) virtual-token embeddings of prompt tuning / P-tuning adapters, else None."""
        cfg = self.peft_config
        if cfg is None or not getattr(cfg, "is_prompt_learning", False):
            return None
        return self.net.get_prompt(batch).to(self.device)

    @property
    def n_prompt_tokens(self) -> int:
        cfg = self.peft_config
        if cfg is None or not getattr(cfg, "is_prompt_learning", False):
            return 0
        return int(cfg.num_virtual_tokens) * int(getattr(cfg, "num_transformer_submodules", 1) or 1)

    def _with_prompts(self, text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self._prompts(text.shape[0])
        if p is None:
            return text, mask
        ones = torch.ones(mask.shape[0], p.shape[1], dtype=mask.dtype, device=mask.device)
        return torch.cat([p.to(text.dtype), text], 1), torch.cat([ones, mask], 1)

    def _amp(self):
        if self.amp_dtype is not None and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return nullcontext()

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels at the input resolution -> what the processor would have fed the model."""
        if (
            images.dim() != 4
            or images.shape[1] != 3
            or images.shape[-1] != self.image_size
            or images.shape[-2] != self.image_size
        ):
            raise TaskError(
                f"{self.architecture} expects (B, 3, {self.image_size}, {self.image_size}) images in "
                f"[0, 1], got {tuple(images.shape)}; load the task at size={self.image_size}"
            )
        return (images * self.pixel_scale - self.pixel_mean) / self.pixel_std

    def _tokenize(self, texts: Sequence[str], max_len: int, special: bool = True):
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=max_len,
            add_special_tokens=special,
            return_tensors="pt",
        )
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device).bool()

    # ---------------------------------------------------------------- VLModel
    def embed(self, images: torch.Tensor, texts: Sequence[str]) -> Embeds:
        text, mask = self.embed_text(texts)
        return Embeds(self.embed_image(images), text, mask)

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed_text(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _cannot(self, what: str):
        return TaskError(
            f"{self.architecture} cannot {what}; it serves closed-answer tasks only "
            f"(vqav2, snli-ve, shapes-vqa, shapes-ve)"
        )

    def sequence_loss_from_embeds(self, embeds: Embeds, targets: Sequence[str]) -> torch.Tensor:
        raise self._cannot("score free-form target text")

    def generate_from_embeds(self, embeds: Embeds, max_len: int = 24, beam: int = 1) -> list[str]:
        raise self._cannot("generate text")


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype != torch.float32 else t


def norm_answer(s: str) -> str:
    """An answer as label heads compare them: lower case, single spaces."""
    return " ".join(str(s).lower().split())


# ============================================================================ loading
# The families (architecture -> class, image settings, what they support) are registered by their
# modules in robust_pt/models/loading.py; everything below dispatches through that registry.


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # noqa: BLE001 - transformers raises many kinds
        raise CheckpointError(
            f"cannot load the tokenizer saved in {path} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); save the processor with the model "
            f"(processor.save_pretrained(DIR))"
        ) from None


def _load_processor(path: Path, arch: str):
    """The whole saved processor (tokenizer, image processor, chat template) of a generative family."""
    try:
        return hf_family(arch).model_class.load_processor(path)
    except Exception as err:  # noqa: BLE001 - transformers raises many kinds
        raise CheckpointError(
            f"cannot load the processor saved in {path} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); save it with the model "
            f"(processor.save_pretrained(DIR))"
        ) from None


def load_transformers(path: Path, arch: str):
    """(transformers model, tokenizer (the whole processor for generative families), image processor
    config) from a save_pretrained directory."""
    import transformers

    if not (path / "preprocessor_config.json").exists():
        raise CheckpointError(
            f"{path} has no preprocessor_config.json; save the processor with the model "
            f"(processor.save_pretrained(DIR)) so robust-pt knows the input size and normalisation"
        )
    ip = read_json(path / "preprocessor_config.json")
    tok = _load_processor(path, arch) if hf_family(arch).generative else _load_tokenizer(path)
    cls = getattr(transformers, arch)
    try:
        model = cls.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(
            f"cannot load {arch} from {path} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    if not verify_weights(path, side_meta(path), SIDE_FILE):  # not written by robust-pt: no NaN / Inf weights
        refuse_nonfinite(model.named_parameters(), path)
    return model.eval(), tok, ip


def side_meta(path: Path) -> dict:
    p = path / SIDE_FILE
    return read_json(p) if p.exists() else {}


def wrap(arch: str, net: nn.Module, tok, ip: dict, meta: dict) -> HFVLModel:
    """The VLModel of `arch`'s family around `net` (a transformers model or a PeftModel on one)."""
    family = hf_family(arch)
    base = net.get_base_model() if callable(getattr(net, "get_base_model", None)) else net
    return family.model_class(net, tok, ip, meta, image=family.image_settings(ip, base.config))


def load_hf(path: str | Path, *, device: Any = None, precision: str = "auto") -> HFVLModel:
    """A VLModel from a transformers save_pretrained directory (see the module docstring)."""
    path = Path(path)
    arch = architecture_of(path)
    net, tok, ip = load_transformers(path, arch)
    side = side_meta(path)
    meta = {
        "name": path.name,
        "architecture": arch,
        "method": side.get("method", "finetune"),
        "task": side.get("task"),
        "source": str(path),
    }
    meta.update({k: v for k, v in side.items() if k not in meta})
    model = wrap(arch, net, tok, ip, meta)
    return finish(model, device, precision)


def finish(model: HFVLModel, device: Any = None, precision: str = "auto") -> HFVLModel:
    """Frozen (attacks need input gradients only), in eval mode, on `device`, with `precision`."""
    from ...runtime.devices import autocast_dtype, resolve_device

    for p in model.parameters():
        p.requires_grad_(False)
    dev = resolve_device(device)
    model.to(dev).eval()
    model.amp_dtype = autocast_dtype(precision, dev)
    model.meta["device"] = str(dev)
    if model.amp_dtype is not None:
        model.meta["precision"] = str(model.amp_dtype).replace("torch.", "")
    return model
