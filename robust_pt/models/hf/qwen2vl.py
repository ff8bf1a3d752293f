"""Qwen2-VL and Qwen2.5-VL (Qwen2VLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration).

Their processor picks a resolution per image (a multiple of patch x merge between min_pixels
and max_pixels) and flattens it into patches of two identical frames. robust-pt pins one
square resolution S (the processor's min_pixels = max_pixels = S * S, S the multiple of
patch x merge nearest to the square root of max_pixels, at most 448) and does the
flattening itself in torch, as the processor does it, so the attack acts on [0, 1] pixels at
S x S. Positions are the model's multimodal rope (get_rope_index over the prompt's image).

transformers' Qwen2-VL processors hold a video processor, which needs torchvision; where that is
not installed (this project's CPU environment) the saved processor loads as its image-only
subclass (generative.image_only: the same image processor, tokenizer and chat template).
"""

from __future__ import annotations

import torch

from ..loading import HFFamily, register
from .generative import GENERATIVE, LM_TARGETS, GenerativeVLM

MAX_SIDE = 448


def pinned_side(ip: dict, model_config=None) -> int:
    """The square side S the processor is pinned to (see the module docstring)."""
    unit = int(ip.get("patch_size", 14)) * int(ip.get("merge_size", 2))
    size = ip.get("size") or {}
    most = int(ip.get("max_pixels") or size.get("longest_edge") or MAX_SIDE * MAX_SIDE)
    side = min(int(most**0.5), MAX_SIDE)
    return max(unit, side - side % unit)


PINNED = f"{__name__}:pinned_side"
FAMILY = register(
    HFFamily(
        "qwen2-vl", "Qwen2VLForConditionalGeneration", f"{__name__}:Qwen2VL", LM_TARGETS, size_rule=PINNED, **GENERATIVE
    )
)
V25 = register(
    HFFamily(
        "qwen2.5-vl",
        "Qwen2_5_VLForConditionalGeneration",
        f"{__name__}:Qwen25VL",
        LM_TARGETS,
        size_rule=PINNED,
        **GENERATIVE,
    )
)


class Qwen2VL(GenerativeVLM):
    family = FAMILY
    processor_class = "Qwen2VLProcessor"

    def __init__(self, net, processor, image_cfg, meta, *, image):
        S = int(image.size)
        ip = processor.image_processor
        ip.min_pixels = ip.max_pixels = S * S
        if isinstance(getattr(ip, "size", None), dict):
            ip.size = {"shortest_edge": S * S, "longest_edge": S * S}
        meta = {**meta, "pinned": f"one resolution: {S}x{S} (min_pixels = max_pixels = {S * S})"}
        super().__init__(net, processor, image_cfg, meta, image=image)

    @property
    def _grid(self) -> tuple[int, int, int, int]:
        ip = self.processor.image_processor
        P, m, T = int(ip.patch_size), int(ip.merge_size), int(ip.temporal_patch_size)
        return P, m, T, self.image_size // P

    def pixel_values(self, images: torch.Tensor) -> dict:
        """The processor's patch flattening: (B * g * g, C * T * P * P) and grid_thw (B, 3)."""
        x = self.normalize(images)
        P, m, T, g = self._grid
        B, C = x.shape[:2]
        x = x[:, None].expand(B, T, C, g * P, g * P).reshape(B, 1, T, C, g // m, m, P, g // m, m, P)
        x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9).reshape(B * g * g, C * T * P * P)
        thw = torch.tensor([[1, g, g]] * B, device=x.device)
        return {"pixel_values": x, "image_grid_thw": thw}

    def prefix_positions(self, prefix: torch.Tensor) -> torch.Tensor:
        _, _, _, g = self._grid
        thw = torch.tensor([[1, g, g]], device=prefix.device)
        pos, _ = self.hf.model.get_rope_index(prefix[None], thw, None, attention_mask=torch.ones_like(prefix)[None])
        return pos[:, 0]


class Qwen25VL(Qwen2VL):
    family = V25
    processor_class = "Qwen2_5_VLProcessor"
