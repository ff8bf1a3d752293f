"""Hugging Face models tuned by a method peft does not have (APT): the method's tensors on top of the base.

    ckpts/vilt-apt/
      delta_config.json        {"format": "robust-pt-hf-delta/1", "method": "apt", "options": {...},
                                "architecture": ..., "base": {"path": ..., "sha256": ...}}
      delta_model.safetensors  the tensors the method trained (APT's modules and the VQA head)
      robust_pt.json           what `robust-pt train` records, as for every Hugging Face run

    model = robust_pt.load_model("ckpts/vilt-apt")                 # base from delta_config.json
    model = robust_pt.load_model("ckpts/vilt-apt", base="ckpts/vilt")

Loading builds the base with transformers, checks the sha256 of its model.safetensors
against the one recorded at training (a changed base is refused, as for built-in
checkpoints), applies the method's `attach` (tuning/registry.py, OnHF.attach) and loads the
tensors: each must have a place of the same shape, and every place the method added a
tensor. Safetensors and JSON only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import CheckpointError, ConfigError
from ..loading import architecture_of, read_json

DELTA_CONFIG = "delta_config.json"
DELTA_WEIGHTS = "delta_model.safetensors"
FORMAT = "robust-pt-hf-delta/1"


def is_delta_dir(path: Path) -> bool:
    return (Path(path) / DELTA_CONFIG).exists()


def context(arch: str, net, tokenizer=None):
    """What a method's peft config or `attach` may read (tuning/registry.py's HFContext)."""
    from ...tuning.registry import HFContext
    from ..loading import hf_family

    family = hf_family(arch)
    t = family.peft_targets
    targets = {"lora": list(t.lora), "ia3": list(t.ia3), "ia3_feedforward": list(t.ia3_feedforward)}
    return HFContext(arch, net, targets, family, tokenizer)


def base_digest(base_dir: Path) -> str:
    """sha256 over the base's weight files (safetensors, shards and their index, .bin) and the labels
    in its config.json (a tuned head means something only with the base's id2label)."""
    import hashlib

    from ...tuning.checkpoint import sha256_file

    files = sorted({*base_dir.glob("*.safetensors"), *base_dir.glob("*.bin"), *base_dir.glob("*.index.json")})
    if not files:
        raise CheckpointError(f"{base_dir} holds no weight files (*.safetensors, *.bin); pass a model directory")
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{sha256_file(f)}\n".encode())
    labels = read_json(base_dir / "config.json").get("id2label")
    h.update(json.dumps(labels, sort_keys=True).encode())
    return h.hexdigest()


def save_delta(tensors: dict, out: Path, *, method: str, options: dict, arch: str, base_dir: Path) -> None:
    """Write the trained tensors ({name in the transformers model: tensor}) and the config that rebuilds
    them on the base into `out`."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(state, str(out / DELTA_WEIGHTS), metadata={"format": FORMAT})
    cfg = {
        "format": FORMAT,
        "method": method,
        "options": options,
        "architecture": arch,
        "base": {"path": str(Path(base_dir).resolve()), "sha256": base_digest(Path(base_dir))},
    }
    (out / DELTA_CONFIG).write_text(json.dumps(cfg, indent=1))


def _base_dir(cfg: dict, path: Path, base: Any) -> Path:
    """The `base` given, else the path delta_config.json names (as written, or relative to the delta)."""
    ref = base if base is not None else (cfg.get("base") or {}).get("path")
    if not ref:
        raise CheckpointError(f"{path / DELTA_CONFIG} names no base; pass the base directory (--base DIR)")
    p = Path(str(ref)).expanduser()
    for cand in [p] if p.is_absolute() else [Path.cwd() / p, path / p]:
        if (cand / "config.json").exists():
            return cand.resolve()
    where = "given with --base" if base is not None else f"named in {DELTA_CONFIG}"
    raise CheckpointError(
        f"the base model of {path} ({ref}, {where}) is missing or holds no config.json; "
        f"pass the base directory it was tuned on (--base DIR)"
    )


def _check_base(cfg: dict, path: Path, base_dir: Path) -> str:
    arch = architecture_of(base_dir)
    if cfg.get("architecture") and cfg["architecture"] != arch:
        raise CheckpointError(
            f"{path} was tuned on a {cfg['architecture']} but its base {base_dir} is a {arch}; "
            f"pass the base it was tuned on (--base DIR)"
        )
    want, got = (cfg.get("base") or {}).get("sha256"), base_digest(base_dir)
    if want != got:
        raise CheckpointError(
            f"the base {base_dir} (weights and labels, sha256 {got[:12]}...) is not the one {path} was "
            f"tuned on ({str(want)[:12]}...); use the original base or re-train"
        )
    return arch


def _load_tensors(net, path: Path) -> None:
    from ...tuning.checkpoint import read_tensors

    tensors = read_tensors(path / DELTA_WEIGHTS)
    places = {n: p for n, p in net.named_parameters() if p.requires_grad}
    for k, v in tensors.items():
        if k not in places or tuple(places[k].shape) != tuple(v.shape):
            why = "has no place" if k not in places else f"has shape {list(v.shape)}, not {list(places[k].shape)}"
            raise CheckpointError(f"{path / DELTA_WEIGHTS}: {k} {why} in its base; pass the base it was tuned on")
    missing = [k for k in places if k not in tensors]
    if missing:
        raise CheckpointError(
            f"{path / DELTA_WEIGHTS} lacks {missing[0]} (and {len(missing) - 1} more); re-create the checkpoint"
        )
    net.load_state_dict(tensors, strict=False)


def load_delta(path: str | Path, *, base: Any = None, device: Any = None, precision: str = "auto"):
    """A VLModel of a delta directory on its verified base (see the module docstring)."""
    from ...tuning import registry
    from .base import finish, load_transformers, side_meta, wrap

    path = Path(path)
    cfg = read_json(path / DELTA_CONFIG)
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"{path / DELTA_CONFIG} is not a robust-pt delta (format {cfg.get('format')!r})")
    method = registry.find(cfg.get("method"))
    if method is None or method.hf is None or method.hf.attach is None:
        raise CheckpointError(f"{path}: unknown delta method {cfg.get('method')!r}; is robust-pt out of date?")
    base_dir = _base_dir(cfg, path, base)
    arch = _check_base(cfg, path, base_dir)
    net, tok, ip = load_transformers(base_dir, arch)
    try:
        options = method.make_options(cfg.get("options") or {}, where=str(path / DELTA_CONFIG))
        method.hf.attach(options, context(arch, net, tok))
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    _load_tensors(net, path)
    side = side_meta(path)
    from ...tuning.checkpoint import read_tensors, refuse_nonfinite, verify_weights
    from .base import SIDE_FILE

    if not verify_weights(path, side, SIDE_FILE):  # not written by robust-pt: at least no NaN / Inf weights
        refuse_nonfinite(read_tensors(path / DELTA_WEIGHTS).items(), path / DELTA_WEIGHTS)
    meta = {
        "name": path.name,
        "architecture": arch,
        "method": method.name,
        "task": side.get("task"),
        "tuning": method.relevant(options),
        "base": str(base_dir),
        "source": str(path),
    }
    meta.update({k: v for k, v in side.items() if k not in meta})
    return finish(wrap(arch, net, tok, ip, meta), device, precision)
