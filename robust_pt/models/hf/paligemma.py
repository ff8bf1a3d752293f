"""PaliGemma (PaliGemmaForConditionalGeneration): SigLIP, a linear projector, Gemma.

No chat template: the processor's own prompt format, image tokens, bos, the question and a
newline, after which the answer follows directly (`answer_sep` ""). Mix checkpoints expect a
task prefix in the question ("answer en ...", "caption en"): put it in the task's questions.
Gemma attends bidirectionally inside the prompt (prefix-LM) and causally in the answer; the
prompt pass with the cache followed by the answer pass is exactly that.
"""

from __future__ import annotations

from ..loading import HFFamily, PeftTargets, register
from .generative import GENERATIVE, LM_LORA, GenerativeVLM

FAMILY = register(
    HFFamily(
        "paligemma",
        "PaliGemmaForConditionalGeneration",
        f"{__name__}:PaliGemma",
        PeftTargets(lora=LM_LORA, ia3=("k_proj", "v_proj", "down_proj", "fc2"), ia3_feedforward=("down_proj", "fc2")),
        **GENERATIVE,
    )
)


class PaliGemma(GenerativeVLM):
    family = FAMILY
    answer_sep = ""

    def render(self, question: str) -> str:
        return "<image>" + question
