"""PaliGemma (PaliGemmaForConditionalGeneration): SigLIP, a linear projector, Gemma.

No chat template: the processor's own prompt format, image tokens, bos, the question and a
newline, after which the answer follows directly (`answer_sep` ""). Mix checkpoints expect a
task prefix in the question ("answer en ...", "caption en"): put it in the task's questions.
Gemma attends bidirectionally inside the prompt (prefix-LM) and causally in the answer; the
prompt pass with the cache followed by the answer pass is exactly that.
"""

from __future__ import annotations

from .generative import GenerativeVLM


class PaliGemma(GenerativeVLM):
    architecture = "PaliGemmaForConditionalGeneration"
    answer_sep = ""

    def render(self, question: str) -> str:
        return "<image>" + question
