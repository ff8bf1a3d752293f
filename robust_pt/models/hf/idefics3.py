"""Idefics3 (Idefics3ForConditionalGeneration; SmolVLM v1 checkpoints are this architecture).

SmolVLM2's own class (SmolVLMForConditionalGeneration) is not registered: transformers' SmolVLM
processor module imports torchvision, which this project's environment cannot install beside
its CPU torch, so it could not be tested here.

A SigLIP-style encoder, a pixel-shuffle connector and a Llama-style LM. Their processors split
a large image into tiles plus a global image; robust-pt pins `do_image_splitting` off, so the
image is the one global image at the vision encoder's size (config.vision_config.image_size,
the processor's max_image_size), recorded in the model's meta (`pinned`).
"""

from __future__ import annotations

import torch

from ..loading import HFFamily, PeftTargets, register
from .generative import GENERATIVE, LM_LORA, GenerativeVLM

FAMILY = register(
    HFFamily(
        "idefics3",
        "Idefics3ForConditionalGeneration",
        f"{__name__}:Idefics3",
        PeftTargets(lora=LM_LORA, ia3=("k_proj", "v_proj", "down_proj", "fc2"), ia3_feedforward=("down_proj", "fc2")),
        size_rule="robust_pt.models.loading:vision_size",
        **GENERATIVE,
    )
)


class Idefics3(GenerativeVLM):
    family = FAMILY

    def __init__(self, net, processor, image_cfg, meta, *, image):
        processor.image_processor.do_image_splitting = False
        meta = {**meta, "pinned": f"no image splitting: one global image at {image.size}x{image.size}"}
        super().__init__(net, processor, image_cfg, meta, image=image)

    def pixel_values(self, images: torch.Tensor) -> dict:
        x = self.normalize(images)[:, None]  # (B, 1 image, 3, S, S)
        mask = torch.ones(x.shape[0], 1, x.shape[-2], x.shape[-1], dtype=torch.long, device=x.device)
        return {"pixel_values": x, "pixel_attention_mask": mask}
