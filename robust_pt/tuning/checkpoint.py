"""Checkpoint directories: config.json + model.safetensors + meta.json, never pickles.

A finetuned (or pretrained) checkpoint stores every weight. Any other method stores
only its own tensors plus the path and sha256 of its base's weights, and loads on top
of that base; a changed base is refused rather than silently mixed.

Every checkpoint robust-pt writes also records the sha256 of its own weight files
(`weights_sha256` in meta.json; in robust_pt.json for Hugging Face directories, tuning/
hf_train.py), and loading checks it: a file overwritten or damaged on disk (a few KB of
0xFF bytes in model.safetensors are NaN weights that still load) is one error line instead
of a silently broken model. A checkpoint without the hashes (made elsewhere, or before they
were recorded) is refused when any floating weight is NaN or Inf. Hashes are cached per file
state (path, inode, size, times), so loading the same checkpoint again in a run re-reads nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

from ..errors import CheckpointError
from ..outputs import usual_mode

FORMAT = "robust-pt-checkpoint/1"
WEIGHTS, CONFIG, META = "model.safetensors", "config.json", "meta.json"
BUILTIN_PREFIX = "builtin:"
WEIGHTS_SHA = "weights_sha256"  # meta.json (robust_pt.json): {weight file name: sha256 of the file}
ARCHITECTURE = "mini-ofa"  # config.json's "architecture" of a built-in checkpoint (models/ofa.py)


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


@functools.lru_cache(maxsize=64)
def _sha_cached(path: str, ino: int, size: int, mtime_ns: int, ctime_ns: int) -> str:
    return sha256_file(Path(path))


def sha256_cached(path: Path) -> str:
    """sha256_file, remembered per file state (a rewritten or replaced file is hashed again)."""
    st = os.stat(path)
    return _sha_cached(str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def weights_sha256(d: Path) -> dict[str, str]:
    """{name: sha256} of the weight files (*.safetensors) in directory `d`: what meta.json records."""
    return {f.name: sha256_file(f) for f in sorted(Path(d).glob("*.safetensors"))}


def verify_weights(d: Path, meta: dict, meta_name: str = META) -> bool:
    """Check `d`'s weight files against the sha256 its meta (read from `meta_name`) records: True when
    they match, False when it records none (then the caller checks that the weights are finite), a
    one-line CheckpointError when a file differs or is missing."""
    want = meta.get(WEIGHTS_SHA) if isinstance(meta, dict) else None
    if not isinstance(want, dict) or not want:
        return False
    for name, digest in want.items():
        f = Path(d) / name
        if not f.is_file():
            raise CheckpointError(
                f"{f} is missing but its {meta_name} records it; re-create the checkpoint (robust-pt train ...) "
                f"or restore it"
            )
        if sha256_cached(f) != digest:
            raise CheckpointError(
                f"{f} does not match the sha256 in its {meta_name}: the file is corrupt or was changed; "
                f"re-create it (robust-pt train ...) or restore it"
            )
    return True


def refuse_nonfinite(tensors: Iterable, where: Path) -> None:
    """A one-line CheckpointError when any floating tensor of (name, tensor) pairs holds NaN or Inf."""
    import torch

    for name, t in tensors:
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(
                f"{where} holds non-finite weights (NaN or Inf in {name}): the file is corrupt or its training "
                f"diverged; re-create it (robust-pt train ...) or restore it"
            )


def looks_builtin(path: Path) -> bool:
    """A directory whose config.json is a built-in checkpoint's (a robust-pt checkpoint, maybe lacking meta.json)."""
    try:
        cfg = json.loads((Path(path) / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and cfg.get("architecture") == ARCHITECTURE


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
        usual_mode(tmp)
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
    full = base_dir is None or method is None or not method.delta  # a base (no tuning method) is saved whole
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if not full:
        keep = {n for n, p in model.named_parameters() if p.requires_grad}
        state = {k: v for k, v in state.items() if k in keep}
        meta = {**meta, "base": {"path": base_ref(base_dir, out), "sha256": sha256_file(base_dir / WEIGHTS)}}
    _atomic_write(out / WEIGHTS, lambda p: save_file(state, p, metadata={"format": FORMAT}))
    meta = {"format": FORMAT, **meta, WEIGHTS_SHA: {WEIGHTS: sha256_file(out / WEIGHTS)}}
    _atomic_write(out / CONFIG, lambda p: Path(p).write_text(json.dumps(model.cfg.to_dict(), indent=1)))
    _atomic_write(out / META, lambda p: Path(p).write_text(json.dumps(meta, indent=1, default=str)))


def read_meta(path: str | Path) -> dict:
    """A checkpoint's meta.json (no weights read)."""
    return _read_json(Path(path) / META)


def load(path: str | Path, _depth: int = 0):
    """Load a built-in checkpoint directory (tuned ones on top of their verified base)."""
    from .config import TuningConfig
    from .methods import apply_method

    path = checkpoint_dir(path)
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint directory {path} does not exist; pass a directory made by "
            f"`robust-pt train` / `robust-pt pretrain`"
        )
    if not (path / META).exists() and (looks_builtin(path) or (path / WEIGHTS).exists()):
        raise CheckpointError(
            f"{path} has no {META}: it is not a complete robust-pt checkpoint (meta.json says how it was made "
            f"and holds its weights' sha256); restore {META} or re-create it with `robust-pt train` / "
            f"`robust-pt pretrain`"
        )
    meta = _read_json(path / META)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path / META} is not a robust-pt checkpoint (format {meta.get('format')!r})")
    cfg_dict = _read_json(path / CONFIG)
    tensors = read_tensors(path / WEIGHTS)
    if "base" not in meta:
        model = build_from_config(cfg_dict, meta, path / CONFIG)
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
    # after the checks that name what is wrong (truncated, a tensor short, mis-shaped): any other change
    if not verify_weights(path, meta):  # made elsewhere or before the hashes were recorded: no NaN / Inf weights
        refuse_nonfinite(tensors.items(), path / WEIGHTS)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_from_config(cfg: dict, meta: dict, where: Path):
    """A fresh built-in model of the architecture config.json names (mini-ofa when it names none)."""
    from ..models.miniclip import ARCHITECTURE as CLIP
    from ..models.miniclip import ClipConfig, MiniCLIP
    from ..models.ofa import MiniOFA, OFAConfig

    arch = cfg.get("architecture", MiniOFA.architecture)
    if arch == CLIP:
        return MiniCLIP(ClipConfig.from_dict(cfg), meta)
    if arch != MiniOFA.architecture:
        raise CheckpointError(
            f"{where} names architecture {arch!r}; robust-pt's built-in models are {MiniOFA.architecture} and {CLIP}"
        )
    return MiniOFA(OFAConfig.from_dict(cfg), meta)


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
