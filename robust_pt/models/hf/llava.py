"""LLaVA-1.5 and LLaVA-NeXT (LlavaForConditionalGeneration, LlavaNextForConditionalGeneration).

LLaVA-1.5: a CLIP vision tower at one resolution (the processor's crop size), its patch features
projected into the LM: nothing to pin. LLaVA-NeXT tiles ("anyres"): the processor picks a grid
from `image_grid_pinpoints` by the image's size and feeds the base image plus its tiles. robust-pt
pins it to one grid, [[S, S]] with S the processor's crop size: an S x S input is then the base
image and one tile (both the image itself), the same tokens for every input, and the model's
own packing (unpadding, newline tokens) applies; the pin is set on the processor and the model
config alike and recorded in the model's meta (`pinned`), which every run.json carries.
"""

from __future__ import annotations

import torch

from ...errors import CheckpointError
from ..loading import HFFamily, register
from .generative import GENERATIVE, LM_TARGETS, GenerativeVLM

FAMILY = register(
    HFFamily("llava", "LlavaForConditionalGeneration", f"{__name__}:Llava", LM_TARGETS, crop=True, **GENERATIVE)
)
NEXT = register(
    HFFamily(
        "llava-next", "LlavaNextForConditionalGeneration", f"{__name__}:LlavaNext", LM_TARGETS, crop=True, **GENERATIVE
    )
)


class Llava(GenerativeVLM):
    """LLaVA-1.5 and its descendants at one resolution."""

    family = FAMILY


class LlavaNext(GenerativeVLM):
    """LLaVA-NeXT pinned to one tile grid (see the module docstring)."""

    family = NEXT

    def __init__(self, net, processor, image_cfg, meta, *, image):
        S = int(image.size)
        grid = [[S, S]]
        base = net.get_base_model() if callable(getattr(net, "get_base_model", None)) else net
        if int(base.config.vision_config.image_size) != S:
            raise CheckpointError(
                f"{self.architecture}: the processor's crop size {S} differs from the vision "
                f"tower's {base.config.vision_config.image_size}; robust-pt cannot pin its tiling to one grid"
            )
        base.config.image_grid_pinpoints = grid
        processor.image_processor.image_grid_pinpoints = grid
        meta = {**meta, "pinned": f"anyres grid {grid}: the base image and one tile at {S}x{S}"}
        super().__init__(net, processor, image_cfg, meta, image=image)

    def pixel_values(self, images: torch.Tensor) -> dict:
        x = self.normalize(images)
        sizes = torch.tensor([[self.image_size, self.image_size]] * x.shape[0], device=x.device)
        return {"pixel_values": torch.stack([x, x], 1), "image_sizes": sizes}
