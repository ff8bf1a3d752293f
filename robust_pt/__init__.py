"""robust-pt: are prompt-tuned vision-language models more robust than finetuned ones?

The public API is re-exported lazily from `robust_pt.api`, so `import robust_pt` stays
fast and never imports torch, textattack or torchattacks until they are needed.
"""

from __future__ import annotations

__version__ = "0.2.0"

_API = ("load_model", "load_task", "evaluate", "report")

__all__ = list(_API) + ["RobustPTError", "__version__"]

from .errors import RobustPTError  # noqa: E402  (light: no heavy imports)


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'robust_pt' has no attribute {name!r}")
