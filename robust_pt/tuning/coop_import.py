"""CoOp checkpoints users already have: a Dassl prompt learner (`model.pth.tar-N`) onto a Hugging Face CLIP.

Why: most CoOp contexts in circulation were trained with the authors' Dassl code, which saves
`{"state_dict": {"ctx": (n, d), "token_prefix": ..., "token_suffix": ...}, "epoch": ..., ...}`
with torch.save, that is a pickle. robust-pt never unpickles: the file is read with
`torch.load(weights_only=True)`, which accepts tensors and plain containers only, and anything
else is refused. Only the context is taken; token_prefix / token_suffix are the frozen
embeddings of "<sos>" and of "<class name> . <eos>" around it, which robust-pt rebuilds from
the base (so a tampered prefix cannot change what the model reads): the prompt is
"<sos> context <class name> . <eos>" as CoOp's (coop_suffix "."). The result is a CoOp delta
on the base (tuning/coop.py, models/hf/delta.py), loaded and attacked like one trained here.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CheckpointError, ConfigError


def read_context(path: Path):
    """The (n, d) unified context of a CoOp checkpoint; a file that needs pickle, lacks ctx or holds a
    class-specific context is refused in one line."""
    import torch

    if not path.is_file():
        raise CheckpointError(f"CoOp checkpoint {path} does not exist; pass the model.pth.tar-N file Dassl saved")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle.UnpicklingError (a refused global, a corrupt file) and others
        import re

        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found is None:
            raise CheckpointError(
                f"{path} is not a torch checkpoint robust-pt can read ({type(err).__name__}); pass the "
                f"model.pth.tar-N file Dassl saved"
            ) from None
        raise CheckpointError(
            f"{path} needs unpickling of an object of type {found.group(1)}; robust-pt reads CoOp files with "
            f"torch.load(weights_only=True) and never unpickles: re-save its state_dict alone "
            f"(torch.save({{'state_dict': ckpt['state_dict']}}, PATH)) where you trust the file"
        ) from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    ctx = state.get("ctx") if isinstance(state, dict) else None
    if not isinstance(ctx, torch.Tensor):
        raise CheckpointError(f"{path} holds no CoOp context (state_dict['ctx']); is it a CoOp prompt learner?")
    if ctx.dim() == 3:
        raise CheckpointError(
            f"{path} holds class-specific contexts (CSC, {list(ctx.shape)}); robust-pt imports a unified context"
        )
    if ctx.dim() != 2 or not torch.isfinite(ctx).all():
        raise CheckpointError(f"{path}: the context must be a finite (n, d) tensor, got shape {list(ctx.shape)}")
    return ctx.float()


def import_coop(checkpoint: Path, base: Path, out: Path, position: str = "end") -> dict:
    """Write a robust-pt CoOp delta on the Hugging Face dual encoder `base` from a Dassl CoOp checkpoint."""
    import operator

    from ..models.hf.base import load_transformers
    from ..models.hf.delta import context, save_delta
    from ..models.loading import architecture_of, hf_family
    from ..outputs import require_writable_dir
    from .registry import get

    require_writable_dir(out, "checkpoint directory")
    method = get("coop")
    method.make_options({"coop_position": position, "coop_init": ""}, where="robust-pt import coop")  # checked first
    arch = architecture_of(Path(base))
    family = hf_family(arch)
    if not family.class_prompts:
        raise ConfigError(f"--base {base} is a {arch}; a CoOp context goes on a dual encoder (a CLIP)")
    ctx = read_context(Path(checkpoint))
    net, tok, _ = load_transformers(Path(base), arch)
    width = operator.attrgetter(family.class_prompts)(net).weight.shape[1]
    if ctx.shape[1] != width:
        raise CheckpointError(
            f"{checkpoint}: its context is {ctx.shape[1]} wide but {base}'s text embeddings are {width}; "
            f"pass the CLIP it was trained on"
        )
    options = method.make_options(
        {"coop_context": int(ctx.shape[0]), "coop_position": position, "coop_init": "", "coop_suffix": "."},
        where="robust-pt import coop",
    )
    method.hf.attach(options, context(arch, net, tok))
    net.prompter.ctx.data.copy_(ctx)
    tuning = method.relevant(options)
    save_delta({"prompter.ctx": net.prompter.ctx}, out, method="coop", options={k: v for k, v in tuning.items() if k != "method"},
               arch=arch, base_dir=Path(base))  # fmt: skip
    meta = {"method": "coop", "tuning": tuning, "imported_from": str(Path(checkpoint).resolve()), "task": None}
    (out / "robust_pt.json").write_text(json.dumps(meta, indent=1))
    return meta
