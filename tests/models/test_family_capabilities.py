"""What each Hugging Face family declares, pinned: the peft target modules of every family (the lists
and the modules they reach in a tiny build) are exactly those of the adapters trained before the
families declared their capabilities (tests/models/peft_targets.json, computed at 50a409f), so a
saved adapter and a re-run train the same modules."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

PINNED = json.loads((Path(__file__).with_name("peft_targets.json")).read_text())


def _tiny(name: str):
    from robust_pt.testing.hf_tiny import ARCHS, build_tiny
    from robust_pt.testing.tiny_vlm import build_tiny_vlm

    return (build_tiny if name in ARCHS else build_tiny_vlm)(name)[0]


def _reached(config, net) -> list:
    """[count, digest] of the module names peft's `config` injects into in `net`."""
    from peft.tuners.tuners_utils import check_target_module_exists

    names = sorted(n for n, _ in net.named_modules() if n and check_target_module_exists(config, n))
    return [len(names), hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]]


def test_every_family_is_pinned():
    from robust_pt.models import loading

    assert sorted(f.name for f in loading.hf_families()) == sorted(PINNED)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_peft_targets_are_unchanged(name):
    from peft import IA3Config, LoraConfig

    from robust_pt.models import loading
    from robust_pt.models.hf.delta import context

    family = next(f for f in loading.hf_families() if f.name == name)
    net = _tiny(name)
    t = context(family.architecture, net).targets
    want = PINNED[name]
    assert {k: list(v) for k, v in t.items()} == {k: want[k] for k in ("lora", "ia3", "ia3_feedforward")}
    assert _reached(LoraConfig(target_modules=list(t["lora"])), net) == want["lora_modules"]
    ia3 = IA3Config(target_modules=list(t["ia3"]), feedforward_modules=list(t["ia3_feedforward"]))
    assert _reached(ia3, net) == want["ia3_modules"]
