"""Checkpoint directories: config.json + model.safetensors + meta.json, never pickles.

A finetuned (or pretrained) checkpoint stores every weight. Any other method stores
only its own tensors plus the path and sha256 of its base's weights, and loads on top
of that base; a changed base is refused rather than silently mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from ..errors import CheckpointError

FORMAT = "robust-pt-checkpoint/1"
WEIGHTS, CONFIG, META = "model.safetensors", "config.json", "meta.json"
BUILTIN_PREFIX = "builtin:"


def builtin_dir(name: str) -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / name


def checkpoint_dir(ref: str | Path) -> Path:
    """The directory a checkpoint reference names: `builtin:NAME` (package data) or a path."""
    s = str(ref)
    return builtin_dir(s[len(BUILTIN_PREFIX) :]) if s.startswith(BUILTIN_PREFIX) else Path(ref)


def resolve_base(ref: str, ckpt_dir: Path) -> Path:
    if ref.startswith(BUILTIN_PREFIX):
        return checkpoint_dir(ref)
    p = Path(ref)
    return p if p.is_absolute() else (ckpt_dir / p).resolve()


def base_ref(base_dir: Path, ckpt_dir: Path) -> str:
    """How a tuned checkpoint names its base: builtin:NAME, else a path relative to it."""
    base_dir = base_dir.resolve()
    assets = builtin_dir("").resolve()
    if base_dir.parent == assets:
        return BUILTIN_PREFIX + base_dir.name
    return os.path.relpath(base_dir, ckpt_dir.resolve())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} is missing; {path.parent} is not a complete robust-pt checkpoint "
            f"(re-create it with `robust-pt train`)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); re-create the checkpoint") from None


def read_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    if not path.exists():
        raise CheckpointError(f"{path} is missing; re-create the checkpoint with `robust-pt train`")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises SafetensorError / OSError on truncation
        raise CheckpointError(
            f"{path} is corrupt or truncated ({str(err).splitlines()[0][:120]}); re-create the checkpoint"
        ) from None


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def is_checkpoint(path: Path) -> bool:
    return (path / META).exists() or (path / WEIGHTS).exists()


def check_out_dir(out: Path, identity: dict, overwrite: bool, replace_stale: bool = False) -> bool:
    """Before training: True if `out` already holds this very checkpoint (reuse it).

    Refuses an out dir that holds a different checkpoint unless overwrite is set (always
    retrain) or replace_stale is (a cache such as the recipe zoo: reuse if the same, else
    retrain over it).
    """
    if not out.exists() or not is_checkpoint(out):
        return False
    try:
        meta = json.loads((out / META).read_text())
    except Exception:
        meta = {}
    same = meta.get("identity") == identity and (out / WEIGHTS).exists()
    if same and not overwrite:
        return True
    if not overwrite and not replace_stale:
        raise CheckpointError(
            f"{out} already holds a different checkpoint "
            f"({meta.get('method', '?')} on {meta.get('task', '?')}); "
            f"choose another --out or pass --overwrite"
        )
    return False


def save(model, out: Path, meta: dict, base_dir: Path | None = None) -> None:
    """Write the checkpoint; a method with `delta` (every one but finetuning) keeps only its trainable
    tensors + the base's hash."""
    from safetensors.torch import save_file

    from .registry import REFERENCE, find

    out.mkdir(parents=True, exist_ok=True)
    name = meta.get("method", REFERENCE)
    method = find(name)
    full = base_dir is None or name == "pretrain" or (method is not None and not method.delta)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if not full:
        keep = {n for n, p in model.named_parameters() if p.requires_grad}
        state = {k: v for k, v in state.items() if k in keep}
        meta = {**meta, "base": {"path": base_ref(base_dir, out), "sha256": sha256_file(base_dir / WEIGHTS)}}
    meta = {"format": FORMAT, **meta}
    _atomic_write(out / WEIGHTS, lambda p: save_file(state, p, metadata={"format": FORMAT}))
    _atomic_write(out / CONFIG, lambda p: Path(p).write_text(json.dumps(model.cfg.to_dict(), indent=1)))
    _atomic_write(out / META, lambda p: Path(p).write_text(json.dumps(meta, indent=1, default=str)))


def read_meta(path: str | Path) -> dict:
    """A checkpoint's meta.json (no weights read)."""
    return _read_json(Path(path) / META)


def load(path: str | Path, _depth: int = 0):
    """Load a built-in checkpoint directory (tuned ones on top of their verified base)."""
    from ..models.ofa import MiniOFA, OFAConfig
    from .config import TuningConfig
    from .methods import apply_method

    path = checkpoint_dir(path)
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint directory {path} does not exist; pass a directory made by "
            f"`robust-pt train` / `robust-pt pretrain`"
        )
    meta = _read_json(path / META)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path / META} is not a robust-pt checkpoint (format {meta.get('format')!r})")
    cfg_dict = _read_json(path / CONFIG)
    tensors = read_tensors(path / WEIGHTS)
    if "base" not in meta:
        model = MiniOFA(OFAConfig.from_dict(cfg_dict), meta)
        _load_state(model, tensors, path, strict=True)
    else:
        if _depth > 3:
            raise CheckpointError(f"{path}: chain of base checkpoints too deep")
        base_dir = resolve_base(meta["base"]["path"], path)
        if not (base_dir / WEIGHTS).exists():
            raise CheckpointError(f"base checkpoint {base_dir} of {path} is missing; restore it or re-train")
        digest = sha256_file(base_dir / WEIGHTS)
        if digest != meta["base"]["sha256"]:
            raise CheckpointError(
                f"base weights {base_dir / WEIGHTS} have sha256 {digest[:12]}..., but {path} "
                f"was tuned on {meta['base']['sha256'][:12]}...; use the original base or re-train"
            )
        model = load(base_dir, _depth + 1)
        model.meta = dict(meta)
        tuning = meta.get("tuning", {"method": meta.get("method")})
        apply_method(model, TuningConfig(**tuning))
        model.meta = dict(meta)
        _load_state(model, tensors, path, strict=False)
        lacking = [n for n, p in model.named_parameters() if p.requires_grad and n not in tensors]
        if lacking:  # the method's own tensors must all be there (else they stay at their initialisation)
            raise CheckpointError(
                f"{path / WEIGHTS} lacks {lacking[0]} (and {len(lacking) - 1} more) of its "
                f"{tuning.get('method')} tensors; re-create the checkpoint"
            )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _load_state(model, tensors: dict, path: Path, strict: bool) -> None:
    own = model.state_dict()
    unknown = [k for k in tensors if k not in own]
    missing = [k for k in own if k not in tensors] if strict else []
    bad_shape = [k for k in tensors if k in own and own[k].shape != tensors[k].shape]
    if unknown or missing or bad_shape:
        what = (unknown or missing or bad_shape)[0]
        raise CheckpointError(
            f"{path / WEIGHTS} does not match its config ({len(unknown)} unknown, "
            f"{len(missing)} missing, {len(bad_shape)} mis-shaped tensors, e.g. {what}); "
            f"re-create the checkpoint"
        )
    model.load_state_dict(tensors, strict=strict)
