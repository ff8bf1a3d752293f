"""What a model reference is, and loading it: the registry of model families.

    model = robust_pt.load_model("ckpts/pt-vqa")        # = load_model below

A model family is one object (a `ModelFamily`) that knows how to recognise a reference
(`detect`) and how to load it (`load`: a VLModel, or an nn.Module as it is). The
families are tried in registration order and the first that recognises a reference
loads it; a directory that none recognises is one CheckpointError listing them all:

  module        a torch nn.Module, used as it is (any image classifier)
  builtin       a robust-pt checkpoint directory (meta.json), or builtin:NAME
  peft-adapter  a peft adapter directory (adapter_config.json) on a base of an HF family
  hf-delta      a robust-pt delta directory (delta_config.json: a method peft does not
                have, e.g. APT) on a base of an HF family (robust_pt/models/hf/delta.py)
  vilt, blip, clip, llava, llava-next, paligemma, idefics3, qwen2-vl, qwen2.5-vl
                a Hugging Face save_pretrained directory whose config.json names the
                family's architecture; one module per family in robust_pt/models/hf/
                (vilt.py, blip.py, clip.py, llava.py, ...), which declares and registers it

A Hugging Face family (`HFFamily`) holds everything that differs between architectures,
and the code around the models asks it instead of testing an architecture's name: its
VLModel class; its image settings (`image_settings`: input resolution and resize mode
from the saved processor, and the processor's rescale and normalisation, which run
inside the model so that an eps is an L-inf ball in [0, 1] pixels); and what it
supports: the task kinds it serves (`task_kinds`), whether it answers with a label head
(`label_head`), how peft prompt tuning runs on it (`prompt_tuning`, None: it cannot),
the attention modules a method that follows each attention (APT) attaches to
(`attention_site`, None: none), and the peft target modules by role (`peft_targets`).
Adding one is one module: its HFVLModel subclass and one `register(HFFamily(...))`
beside it (the architecture name is written there and nowhere else), plus its name in
robust_pt/models/hf/__init__.py's import list, e.g.

    FAMILY = register(HFFamily("git", "GitForCausalLM", f"{__name__}:GitCaption",
                               PeftTargets(lora=("q_proj", "v_proj"), ia3=("k_proj", "v_proj", "fc2"),
                                           ia3_feedforward=("fc2",))))

The family modules import torch, so they are imported (robust_pt/models/hf/__init__.py,
in its order) the first time a family past the built-in ones is needed: recognising a
built-in reference imports neither torch nor transformers, and the model modules import
this one (never the other way round at import time).
"""

from __future__ import annotations

import importlib
import json
import operator
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError
from ..tuning import checkpoint as ckpt

CONFIG = "config.json"
ADAPTER_CONFIG = "adapter_config.json"


# ----------------------------------------------------------------------------- what a family holds


@dataclass(frozen=True)
class PeftTargets:
    """The module names peft's LoRA and IA3 inject into, for one architecture (`robust-pt train`)."""

    lora: tuple[str, ...]
    ia3: tuple[str, ...]
    ia3_feedforward: tuple[str, ...]  # the IA3 targets that are feed-forward layers (scaled on their input)


@dataclass(frozen=True)
class PromptTuning:
    """How peft's prompt tuning runs on a family so that plain peft prepends the virtual tokens too:
    `task_type`, the peft task type whose forward does (SEQ_CLS, CAUSAL_LM); `config`, the part of
    the model config that describes the layers the prompts enter ("" for the config itself, e.g.
    "text_config"); `sample_vocab`, the prompts start as embeddings of tokens sampled from the
    vocabulary (peft's random start swamps a small LM's attention)."""

    task_type: str
    config: str = ""
    sample_vocab: bool = False


@dataclass(frozen=True)
class AttentionSite:
    """Where a method that follows each attention (APT, tuning/apt.py) attaches: `attention`, the class
    name of the attention modules whose output it rewrites; `head`, the model attribute holding the
    head that trains with it ("": none, a dual encoder); `towers`, (depth name, submodule) pairs of a
    model with several encoders (CLIP's image and text), so a method may follow the attentions of one."""

    attention: str
    head: str = ""
    towers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ImageSettings:
    """How images reach a model: tasks bring them to size x size in [0, 1] (`resize`: squash,
    or crop: shortest edge to size, then centre crop); inside the model they become
    (x * scale - mean) / std, what the saved processor would have fed it."""

    size: int
    resize: str = "squash"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 255.0

    @classmethod
    def from_processor(cls, ip: dict, size: int, resize: str) -> "ImageSettings":
        """The processor config's rescale and normalisation (image_mean, image_std), at `size`."""
        mean = ip.get("image_mean") or [0.0, 0.0, 0.0]
        std = ip.get("image_std") or [1.0, 1.0, 1.0]
        if not ip.get("do_normalize", True):
            mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
        # our pixels are x in [0, 1]; the processor feeds the model rescale(x * 255)
        scale = 255.0 * float(ip.get("rescale_factor", 1 / 255)) if ip.get("do_rescale", True) else 255.0
        return cls(int(size), resize, tuple(_triple(mean)), tuple(_triple(std)), scale)


def _triple(v) -> list[float]:
    v = [float(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
    return v * 3 if len(v) == 1 else v


class ModelFamily:
    """One kind of model robust-pt loads. Subclasses set `name` and `recognised_by` (a phrase
    for the error that lists the families) and implement `detect` and `load`."""

    name: str  # unique; shown in errors
    recognised_by: str  # e.g. "a robust-pt checkpoint directory (meta.json)"

    def detect(self, ref: Any) -> bool:
        """Whether `ref` (a path, a string such as builtin:NAME, or an object) is one of this family's."""
        raise NotImplementedError

    def load(self, ref: Any, *, device: Any = None, precision: str | None = None, base: Any = None):
        """The model `ref` names, frozen, in eval mode, on `device` (see load_model)."""
        raise NotImplementedError


def _resolve(spec: str) -> Any:
    """The object a "module:attribute" spec names (imported on first use)."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _dir(ref: Any) -> Path | None:
    p = Path(str(ref))
    return p if p.is_dir() else None


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return data


def _architectures(cfg: dict) -> list:
    """config.json's "architectures"; transformers 4.57 saves Qwen2-VL's inside text_config."""
    archs = cfg.get("architectures") or (cfg.get("text_config") or {}).get("architectures") or []
    return archs if isinstance(archs, list) else []


def _named_architecture(path: Path) -> str | None:
    """The first architecture path/config.json names; None when there is none or it cannot be read."""
    try:
        archs = _architectures(read_json(path / CONFIG))
    except CheckpointError:
        return None
    return archs[0] if isinstance(archs, list) and archs else None


# ----------------------------------------------------------------------------- the families


class ModuleFamily(ModelFamily):
    """An nn.Module: returned as it is (moved to `device` if one is given)."""

    name = "module"
    recognised_by = "a torch nn.Module, used as it is"

    def detect(self, ref):
        torch = sys.modules.get("torch")  # an nn.Module means torch is imported already
        return torch is not None and isinstance(ref, torch.nn.Module)

    def load(self, ref, *, device=None, precision=None, base=None):
        if device is not None:
            from ..runtime.devices import resolve_device

            ref.to(resolve_device(device))
        return ref


class BuiltinFamily(ModelFamily):
    """robust-pt's own checkpoints (the miniature OFA; robust_pt/tuning/checkpoint.py)."""

    name = "builtin"
    recognised_by = (
        f"a robust-pt checkpoint directory ({ckpt.META}, made by `robust-pt train` or `robust-pt "
        f"pretrain`) or {ckpt.BUILTIN_PREFIX}NAME"
    )

    def detect(self, ref):
        if str(ref).startswith(ckpt.BUILTIN_PREFIX):
            return True
        d = _dir(ref)  # one that lost its meta.json is still ours: loading it says what is missing
        return d is not None and ((d / ckpt.META).exists() or ckpt.looks_builtin(d))

    def load(self, ref, *, device=None, precision=None, base=None):
        """On `device`; it computes in float32 whatever `precision` says (the value is still checked)."""
        from ..runtime.devices import autocast_dtype, resolve_device

        s = str(ref)
        model = ckpt.load(s if s.startswith(ckpt.BUILTIN_PREFIX) else Path(s))
        dev = resolve_device(device)
        autocast_dtype(precision, dev)  # validates the value
        return model.to(dev)


class PeftAdapterFamily(ModelFamily):
    """A peft adapter directory on its base model, a directory of one of the HF families."""

    name = "peft-adapter"
    recognised_by = f"a peft adapter directory ({ADAPTER_CONFIG}) on a base of a Hugging Face family"
    loader = "robust_pt.models.hf.adapters:load_adapter"

    def detect(self, ref):
        d = _dir(ref)
        return d is not None and (d / ADAPTER_CONFIG).exists()

    def load(self, ref, *, device=None, precision=None, base=None):
        return _resolve(self.loader)(Path(str(ref)), base=base, device=device, precision=precision or "auto")


class HFDeltaFamily(ModelFamily):
    """A Hugging Face model tuned by a method peft does not have (APT): its tensors on a base of an HF family."""

    name = "hf-delta"
    recognised_by = "a robust-pt delta directory (delta_config.json, e.g. APT) on a base of a Hugging Face family"
    loader = "robust_pt.models.hf.delta:load_delta"

    def detect(self, ref):
        d = _dir(ref)
        return d is not None and (d / "delta_config.json").exists()

    def load(self, ref, *, device=None, precision=None, base=None):
        return _resolve(self.loader)(Path(str(ref)), base=base, device=device, precision=precision or "auto")


@dataclass(frozen=True, eq=False)
class HFFamily(ModelFamily):
    """A Hugging Face architecture: recognised by the architecture its config.json names.

    name: the family's short name (also robust_pt/testing's tiny builders'); architecture: config.json
    "architectures"[0], also the transformers class loaded; model: "module:Class" of
    its HFVLModel subclass; peft_targets: what LoRA / IA3 tune; generative: a decoder-only VLM whose class takes the
    whole saved processor (AutoProcessor: the chat template) instead of the tokenizer. Image settings: the
    processor's size (its shortest edge, or height = width), else the model config's
    `config_size` attribute; `crop`: the processor's centre crop is honoured (resize
    mode crop); `size_divisor`: the size is rounded down to the processor's size_divisor; `size_rule`:
    a function of the processor config and the model config that gives the size robust-pt pins
    a processor that would tile or vary the resolution to. What it supports (the module
    docstring): task_kinds, label_head, prompt_tuning, attention_site, class_prompts, peft_targets."""

    name: str
    architecture: str
    model: str
    peft_targets: PeftTargets
    config_size: str = "vision_config.image_size"
    crop: bool = False
    size_divisor: bool = False
    generative: bool = False  # a decoder-only VLM: its class takes the whole saved processor (chat template)
    size_rule: str | None = None  # "module:function" (ip, model config) -> the pinned input size, if any
    loader: str = "robust_pt.models.hf.base:load_hf"
    task_kinds: tuple[str, ...] = ("closed",)  # the task kinds it serves (robust_pt/tasks/base.py)
    label_head: bool = False  # answers with a classifier over config.id2label (its class grows it: `grow_head`)
    prompt_tuning: PromptTuning | None = None  # None: peft's prompt tuning would not prepend its tokens here
    attention_site: AttentionSite | None = None  # None: no place for a method that follows each attention
    # a dual encoder that reads class names in prompt templates (classify tasks, CoOp): the attribute path of its
    # text token embedding (where a learned context lives); None: not one
    class_prompts: str | None = None

    @property
    def recognised_by(self) -> str:  # type: ignore[override]
        return f"a Hugging Face directory whose {CONFIG} names {self.architecture}"

    @property
    def model_class(self) -> type:
        return _resolve(self.model)

    def detect(self, ref):
        d = _dir(ref)
        return d is not None and (d / CONFIG).exists() and _named_architecture(d) == self.architecture

    def load(self, ref, *, device=None, precision=None, base=None):
        return _resolve(self.loader)(Path(str(ref)), device=device, precision=precision or "auto")

    def image_settings(self, ip: dict, model_config) -> ImageSettings:
        """Input resolution, resize mode and normalisation from the saved processor config `ip`."""
        size, resize = self.input_size(ip, model_config)
        return ImageSettings.from_processor(ip, size, resize)

    def input_size(self, ip: dict, model_config) -> tuple[int, str]:
        """(input resolution S, resize mode) of the saved image processor: how a task prepares images."""
        if self.size_rule is not None:
            return int(_resolve(self.size_rule)(ip, model_config)), "squash"
        crop = ip.get("crop_size")
        if self.crop and ip.get("do_center_crop", True) and crop is not None:
            return self._edge(crop), "crop"
        s = self._edge(ip.get("size")) or operator.attrgetter(self.config_size)(model_config)
        if self.size_divisor:
            div = int(ip.get("size_divisor") or 1)
            s = s - s % div
        return s, "squash"

    def _edge(self, v) -> int | None:
        if isinstance(v, dict):
            if "shortest_edge" in v:
                return int(v["shortest_edge"])
            h, w = v.get("height"), v.get("width")
            if h is not None and w is not None and int(h) != int(w):
                raise CheckpointError(
                    f"{self.architecture}: non-square processor size {h}x{w} is not supported; "
                    f"robust-pt attacks square inputs"
                )
            return int(h if h is not None else w)
        return int(v) if v is not None else None


def vision_size(ip: dict, model_config) -> int:
    """The vision encoder's own input size (config.vision_config.image_size): one untiled image."""
    return int(model_config.vision_config.image_size)


# ----------------------------------------------------------------------------- the registry

_FAMILIES: dict[str, ModelFamily] = {}
HF_PACKAGE = "robust_pt.models.hf"  # its __init__ imports the family modules, each registering its family
_declared = False


def _declare() -> None:
    """Import the Hugging Face family modules (once; they import torch): they register themselves."""
    global _declared
    if not _declared:
        _declared = True
        importlib.import_module(HF_PACKAGE)


def register(family: ModelFamily) -> ModelFamily:
    """Add a family; it is tried after the ones registered before it."""
    if not family.name or family.name in _FAMILIES:
        raise ConfigError(f"a model family needs a new name, got {family.name!r} (registered: {', '.join(_FAMILIES)})")
    arch = getattr(family, "architecture", None)
    if arch is not None:
        _declare()
    if arch is not None and arch in hf_architectures():
        raise ConfigError(f"architecture {arch} is already the {hf_family(arch).name} family's")
    _FAMILIES[family.name] = family
    return family


def families() -> tuple[ModelFamily, ...]:
    """Every registered family, in the order they are tried."""
    _declare()
    return tuple(_FAMILIES.values())


def hf_families() -> tuple[HFFamily, ...]:
    """The Hugging Face families (each declared in its module under robust_pt/models/hf/)."""
    _declare()
    return tuple(f for f in _FAMILIES.values() if isinstance(f, HFFamily))


def hf_architectures() -> tuple[str, ...]:
    """The Hugging Face architectures robust-pt loads (and peft adapters on them)."""
    return tuple(f.architecture for f in hf_families())


def hf_family(architecture: str) -> HFFamily:
    """The family of a Hugging Face architecture name, or a one-line error listing the supported ones."""
    for f in hf_families():
        if f.architecture == architecture:
            return f
    raise CheckpointError(
        f"unsupported architecture {architecture}; robust-pt loads "
        f"{', '.join(hf_architectures())} and peft adapters on them"
    )


def architecture_of(path: Path) -> str:
    """The supported architecture named in path/config.json, or a one-line error."""
    archs = _architectures(read_json(path / CONFIG))
    supported = ", ".join(hf_architectures())
    if not archs:
        raise CheckpointError(
            f'{path}/{CONFIG} names no architecture (no "architectures" field); robust-pt '
            f"loads {supported} and peft adapters on them"
        )
    arch = archs[0]
    if arch not in hf_architectures():
        raise CheckpointError(
            f"unsupported architecture {arch} in {path}; robust-pt loads {supported} and peft adapters on them"
        )
    return arch


def detect(ref: Any) -> ModelFamily:
    """The first registered family that recognises `ref`, or one CheckpointError that says why none does."""
    for f in list(_FAMILIES.values()):  # the built-in ones: a built-in reference imports no family module
        if f.detect(ref):
            return f
    if not _declared:
        _declare()
        return detect(ref)
    path = Path(str(ref))
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint directory {path} does not exist; pass a directory made by "
            f"`robust-pt train` or `robust-pt pretrain`, a Hugging Face save_pretrained "
            f"directory or a peft adapter directory"
        )
    if (path / CONFIG).exists():
        architecture_of(path)  # raises: no architecture, or one no family has
    known = "; ".join(f"{f.name}: {f.recognised_by}" for f in _FAMILIES.values())
    raise CheckpointError(
        f"{path} holds no checkpoint (no {ckpt.META}, {ADAPTER_CONFIG}, delta_config.json or {CONFIG}); robust-pt "
        f"loads these model families: {known}"
    )


def load_model(path_or_module: Any, *, device: Any = None, precision: str | None = None, base: Any = None):
    """A VLModel from a checkpoint directory, or the given nn.Module unchanged (any image
    classifier works with `evaluate`).

    Directories are recognised by what they hold (the families above, in this order):
    meta.json (a robust-pt checkpoint; `builtin:base-small` for the shipped base),
    adapter_config.json (a peft adapter on its base; `base` overrides the base directory
    it names), config.json naming one of the supported Hugging Face architectures
    (one module per family in robust_pt/models/hf/: ViLT, BLIP and CLIP; the generative LLaVA,
    LLaVA-NeXT, PaliGemma, Idefics3, Qwen2-VL and Qwen2.5-VL on robust_pt/models/hf/generative.py).
    device: auto, cpu, cuda or cuda:N (default: cpu for an nn.Module left as it is, auto for
    directories). precision: auto, fp32 or bf16
    (Hugging Face models on CUDA; robust_pt/runtime/devices.py)."""
    return detect(path_or_module).load(path_or_module, device=device, precision=precision, base=base)


register(ModuleFamily())
register(BuiltinFamily())
register(PeftAdapterFamily())
register(HFDeltaFamily())
