"""peft adapter directories (adapter_config.json + adapter_model.safetensors) on their base.

    model = robust_pt.load_model("ckpts/vilt-lora")             # base from adapter_config.json
    model = robust_pt.load_model("ckpts/vilt-lora", base="ckpts/vilt")

The base is `base_model_name_or_path` from adapter_config.json (a local directory, tried
as given, relative to the working directory and relative to the adapter directory, or a
Hugging Face hub id already in the local cache), or the `base` argument (`--base`).
It must be one of the supported architectures (the Hugging Face families registered in
robust_pt/models/loading.py, whose peft-adapter family recognises these directories).

Supported peft methods: every method that injects into the base's modules (LoRA, IA3,
AdaLoRA, LoHa, LoKr, OFT, BOFT, VeRA, ...: they act inside the modules robust-pt calls)
and the prompt-learning methods whose virtual tokens are input embeddings (prompt
tuning, P-tuning: prepended to the text embeddings). Prefix tuning, multitask prompt
tuning and adaption prompts are refused with a clear error.

An adapter that does not fit its base (keys that have no place in it, or other shapes)
is refused with a one-line error instead of peft's warning: a LoRA trained on one model
silently loaded into another measures nothing.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ...errors import CheckpointError
from ...tuning.checkpoint import read_tensors, refuse_nonfinite, verify_weights
from ..loading import ADAPTER_CONFIG, architecture_of, hf_architectures, read_json
from .base import SIDE_FILE, HFVLModel, finish, load_transformers, side_meta, wrap

ADAPTER_WEIGHTS = "adapter_model.safetensors"
METHOD_OF = {
    "LORA": "lora",
    "PROMPT_TUNING": "prompt",
    "IA3": "ia3",
    "P_TUNING": "p-tuning",
    "ADALORA": "adalora",
    "LOHA": "loha",
    "LOKR": "lokr",
    "OFT": "oft",
    "BOFT": "boft",
    "VERA": "vera",
}
UNSUPPORTED = {
    "PREFIX_TUNING": "prefix tuning feeds past_key_values, which ViLT's, BLIP's and CLIP's encoders do not take",
    "MULTITASK_PROMPT_TUNING": "multitask prompt tuning needs task ids per example",
    "ADAPTION_PROMPT": "adaption prompts exist for LLaMA-style decoders only",
    "CARTRIDGE": "cartridges are KV-cache prefixes",
    "POLY": "Poly needs task ids per example",
    "XLORA": "X-LoRA needs its own classifier pass",
}


def is_adapter_dir(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).exists()


def resolve_base(ref: Any, adapter: Path) -> Path:
    """The base model directory an adapter names (see the module docstring)."""
    if not ref:
        raise CheckpointError(
            f"{adapter}/{ADAPTER_CONFIG} names no base model (base_model_name_or_path is empty); "
            f"pass the base directory (--base DIR / load_model(..., base=DIR))"
        )
    ref = str(ref)
    p = Path(ref).expanduser()
    for cand in [p] if p.is_absolute() else [Path.cwd() / p, adapter / p, adapter.parent / p]:
        if cand.is_dir():
            return cand.resolve()
    hub_like = not p.is_absolute() and ref.count("/") == 1 and not ref.startswith(".")
    if hub_like:
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(ref, local_files_only=True))
        except Exception:  # noqa: BLE001 - not in the cache
            pass
    where = "not a local directory" + (" and not in the local Hugging Face cache" if hub_like else "")
    raise CheckpointError(
        f"the base model of adapter {adapter} ({ref!r}, from base_model_name_or_path in "
        f"{ADAPTER_CONFIG}) is missing: {where}; download it and pass its directory "
        f"(--base DIR / load_model(..., base=DIR))"
    )


def _first_line(err: Exception) -> str:
    s = str(err).strip()
    return f"{type(err).__name__}: {s.splitlines()[0][:300]}" if s else type(err).__name__


def _text_hidden(cfg) -> int:
    tc = getattr(cfg, "text_config", None)
    return int(tc.hidden_size if tc is not None else cfg.hidden_size)


def _check_fit(pm, adapter: Path, base_dir: Path, arch: str) -> None:
    """Every adapter weight must have a place of the same shape in the peft model built on this base."""
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open

    mismatch = f"adapter {adapter} does not fit base {base_dir} ({arch})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = get_peft_model_state_dict(pm, save_embedding_layers=False)
    expected = {k: tuple(v.shape) for k, v in state.items()}
    with safe_open(str(adapter / ADAPTER_WEIGHTS), framework="pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    for k, shape in saved.items():
        if k not in expected:
            raise CheckpointError(
                f"{mismatch}: its weight {k} has no place in that base; pass the base it was trained on (--base DIR)"
            )
        if expected[k] != shape:
            raise CheckpointError(
                f"{mismatch}: {k} has shape {list(shape)} in the adapter but {list(expected[k])} "
                f"in that base; pass the base it was trained on (--base DIR)"
            )
    missing = [k for k in expected if k not in saved]
    if missing:
        raise CheckpointError(
            f"{mismatch}: the adapter lacks {missing[0]} (and {len(missing) - 1} more) that this "
            f"base needs; pass the base it was trained on (--base DIR)"
        )


def load_adapter(
    path: str | Path, *, base: str | Path | None = None, device: Any = None, precision: str = "auto"
) -> HFVLModel:
    """A VLModel of a peft adapter directory on its base (see the module docstring)."""
    path = Path(path)
    cfg = read_json(path / ADAPTER_CONFIG)
    ptype = str(cfg.get("peft_type") or "").upper()
    if not ptype:
        raise CheckpointError(f"{path}/{ADAPTER_CONFIG} has no peft_type; is it a peft adapter directory?")
    if ptype in UNSUPPORTED:
        raise CheckpointError(
            f"{path} is a {ptype} adapter, which robust-pt cannot attack: {UNSUPPORTED[ptype]}; "
            f"supported: LoRA, IA3 and the other injected methods, prompt tuning, P-tuning"
        )
    if not (path / ADAPTER_WEIGHTS).exists():
        other = [p.name for p in path.glob("adapter_model.*")]
        raise CheckpointError(
            f"{path} has no {ADAPTER_WEIGHTS}"
            + (
                f" (found {other[0]}: robust-pt loads safetensors "
                f"only; re-save with save_pretrained(safe_serialization=True))"
                if other
                else ""
            )
        )
    base_dir = resolve_base(base if base is not None else cfg.get("base_model_name_or_path"), path)
    if is_adapter_dir(base_dir) and not (base_dir / "config.json").exists():
        raise CheckpointError(f"the base of adapter {path} ({base_dir}) is itself an adapter; pass the model directory")
    if not (base_dir / "config.json").exists():
        raise CheckpointError(
            f"the base of adapter {path} ({base_dir}) has no config.json; robust-pt loads adapters "
            f"on {', '.join(hf_architectures())} directories saved with save_pretrained"
        )
    arch = architecture_of(base_dir)
    side = side_meta(path)
    if side.get("architecture") and side["architecture"] != arch:
        raise CheckpointError(
            f"adapter {path} was trained on a {side['architecture']} but its base {base_dir} is a "
            f"{arch}; pass the base it was trained on (--base DIR)"
        )
    net, tok, ip = load_transformers(base_dir, arch)
    dim = cfg.get("token_dim")
    if ptype in ("PROMPT_TUNING", "P_TUNING") and dim and int(dim) != _text_hidden(net.config):
        raise CheckpointError(
            f"adapter {path} does not fit base {base_dir} ({arch}): its prompts have dimension "
            f"{cfg['token_dim']} but the base's text embeddings {_text_hidden(net.config)}; pass the "
            f"base it was trained on (--base DIR)"
        )
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing/unexpected keys are checked below, as errors
        try:
            pm = PeftModel.from_pretrained(net, str(path), is_trainable=False)
        except Exception as err:  # noqa: BLE001 - peft raises ValueError, RuntimeError, KeyError, ...
            raise CheckpointError(
                f"adapter {path} does not fit base {base_dir} ({arch}): {_first_line(err)}; pass "
                f"the base it was trained on (--base DIR)"
            ) from None
    _check_fit(pm, path, base_dir, arch)
    if not verify_weights(path, side, SIDE_FILE):  # not written by robust-pt: at least no NaN / Inf weights
        refuse_nonfinite(read_tensors(path / ADAPTER_WEIGHTS).items(), path / ADAPTER_WEIGHTS)
    pm.eval()
    method = side.get("method") or METHOD_OF.get(ptype, ptype.lower())
    meta = {
        "name": path.name,
        "architecture": arch,
        "method": method,
        "task": side.get("task"),
        "peft_type": ptype,
        "base": str(base_dir),
        "source": str(path),
    }
    meta.update({k: v for k, v in side.items() if k not in meta})
    return finish(wrap(arch, pm, tok, ip, meta), device, precision)
