# robust-pt developer tasks.
#
#   make setup        create .venv, install robust-pt (editable, [dev]) with the tested pins in
#                     constraints.txt, torchattacks and ART (--no-deps), and the offline NLTK data (robust-pt setup).
#                     Idempotent: re-runs only what changed (a few seconds when nothing did).
#   make test         setup, then ruff (lint + format check, rules in pyproject.toml) and the test suite, offline
#   make test-wheel   the pip user's path (tests/test_wheel.py): the built wheel in a fresh venv outside the
#                     repo runs DeepWordBug and PGD from another directory (~3 min; .ci/run runs it)
#   make test-kernels the suite under torch's other CPU kernel paths (ATen default and avx2, oneDNN and MKL
#                     capped at AVX2): training is not bit-reproducible across CPUs, so tests must hold on each
#   make demo         setup, then `robust-pt demo`
#   make dogfood      setup, then recipes/ci-smoke.yaml from scratch and `robust-pt check` against
#                     reports/ci-smoke-baseline.json (CI runs it after the tests)
#   make tiny-llava   rebuild robust_pt/assets/tiny-llava (a tiny LLaVA trained on the shapes pretraining mix,
#                     the committed base of the generative-VLM recipes) and tiny-llava-captions (the same
#                     model trained on captions only: it cannot answer VQA, so tuning it shows learning) and
#                     tests/assets/tiny-llava-lora (the recipe's LoRA on tiny-llava, attacked by the tests); ~10 min
#   make robust-base  rebuild robust_pt/assets/base-small-robust (builtin:base-small-robust): the committed base
#                     adversarially pretrained on, PGD-3 at 4/255 for 2000 steps of 64 on the pretraining mix
#                     (the adversarial-tuning study's robust base); ~30 min on 2 cores
#   make clip-base    rebuild robust_pt/assets/clip-small (builtin:clip-small): the miniature CLIP pretrained
#                     contrastively on ShapesWorld image-caption pairs (3000 steps of 128); ~25 min on 2 cores
#   make clip-robust-base  rebuild robust_pt/assets/clip-small-robust (builtin:clip-small-robust): clip-small's
#                     image tower adversarially finetuned TeCoA-style, PGD-3 at 4/255 on the pairs
#   make constraints  rewrite constraints.txt with the versions installed in .venv
#   make clean        build outputs and caches of Python / pytest (keeps .venv and .cache)
#   make distclean    clean, plus .venv and .cache

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
PIP := $(BIN)/python -m pip
PYTEST_ARGS ?=

# Not a dependency in pyproject.toml: its metadata pulls torchvision and an old requests
# that break the environment. Nothing in it imports torchvision.
TORCHATTACKS := torchattacks==3.5.1
# Test-only: IBM ART's randomized smoothing, the reference tests/test_certify.py checks our certificates against
# (pure Python; its dependencies are already here, and --no-deps keeps pip from touching them).
ART := adversarial-robustness-toolbox==1.20.1

# What constraints.txt pins (besides the comments at its top).
PINNED := torch transformers tokenizers huggingface-hub textattack foolbox peft safetensors \
          numpy pandas scipy statsmodels scikit-learn typer rich matplotlib nltk pyyaml pytest \
          pycocoevalcap pycocotools ruff imagecorruptions-imaug opencv-python scikit-image numba

DOGFOOD_OUT ?= .cache/ci-smoke

.PHONY: setup test test-wheel test-kernels demo dogfood constraints clean distclean tiny-llava robust-base \
        clip-base clip-robust-base

setup: $(STAMP)
	@$(BIN)/robust-pt setup

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The slow part (pip) runs only when the venv is new or the packaging files changed.
$(STAMP): pyproject.toml setup.py constraints.txt Makefile | $(BIN)/python
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	$(PIP) install -q --no-deps $(TORCHATTACKS)
	$(PIP) install -q --no-deps $(ART)
	@touch $@

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS) tests

test-wheel: setup
	ROBUST_PT_WHEEL_TEST=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS) tests/test_wheel.py

# Each path runs the whole suite (PYTEST_ARGS to narrow it); how long each took: docs/benchmarks.md.
test-kernels: setup
	for cap in default avx2; do \
	  echo "== ATEN_CPU_CAPABILITY=$$cap ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2"; \
	  ATEN_CPU_CAPABILITY=$$cap ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 HF_HUB_OFFLINE=1 \
	    TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests || exit 1; \
	done

demo: setup
	$(BIN)/robust-pt demo

ROBUST_BASE := robust_pt/assets/base-small-robust
robust-base: setup
	$(BIN)/robust-pt pretrain --init builtin:base-small --adversarial pgd --adv-eps 4/255 --adv-steps 3 --steps 2000 \
	    --lr 3e-4 --threads 2 --out $(ROBUST_BASE) --overwrite
	rm -rf $(ROBUST_BASE).step*

CLIP_BASE := robust_pt/assets/clip-small
clip-base: setup
	$(BIN)/robust-pt pretrain --arch clip --preset small --steps 3000 --batch-size 128 --threads 2 \
	    --out $(CLIP_BASE) --overwrite
	rm -rf $(CLIP_BASE).step*

CLIP_ROBUST := robust_pt/assets/clip-small-robust
clip-robust-base: setup
	$(BIN)/robust-pt pretrain --arch clip --init builtin:clip-small --adversarial pgd --adv-eps 4/255 --adv-steps 3 \
	    --steps 500 --batch-size 128 --lr 3e-4 --threads 2 --out $(CLIP_ROBUST) --overwrite
	rm -rf $(CLIP_ROBUST).step*

TINY_INIT := .cache/tiny-llava-init
tiny-llava: setup
	rm -rf $(TINY_INIT)
	$(BIN)/python -c "from robust_pt.testing.tiny_vlm import save_tiny_vlm; save_tiny_vlm('llava', '$(TINY_INIT)')"
	$(BIN)/robust-pt train --base $(TINY_INIT) --task shapes-pretrain --method finetune --steps 1000 \
	    --batch-size 32 --lr 3e-3 --eval-size 200 --threads 2 --device cpu --out robust_pt/assets/tiny-llava --overwrite
	$(BIN)/robust-pt train --base $(TINY_INIT) --task shapes-caption --method finetune --steps 600 --lr 3e-3 \
	    --eval-size 100 --threads 2 --device cpu --out robust_pt/assets/tiny-llava-captions --overwrite
	$(BIN)/robust-pt train --base robust_pt/assets/tiny-llava --task shapes-vqa --method lora --steps 600 \
	    --batch-size 16 --lr 0.002 --eval-size 400 --threads 2 --device cpu --out tests/assets/tiny-llava-lora --overwrite
	rm -f tests/assets/tiny-llava-lora/README.md

# Always from scratch: resuming would reuse records made by older code.
dogfood: setup
	rm -rf $(DOGFOOD_OUT)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/robust-pt run ci-smoke --out $(DOGFOOD_OUT)
	$(BIN)/robust-pt check $(DOGFOOD_OUT)/runs --baseline reports/ci-smoke-baseline.json --two-sided --tolerance 0.03

# Pins the exact versions now in .venv (local labels such as +cpu dropped). The venv
# already has them, so the stamp is refreshed and the next `make setup` skips pip.
constraints: $(STAMP)
	@set -euo pipefail; \
	tmp=$$(mktemp constraints.txt.XXXXXX); chmod 644 $$tmp; \
	grep '^#' constraints.txt > $$tmp || true; \
	freeze=$$($(PIP) freeze --exclude-editable); \
	for p in $(PINNED); do \
	  line=$$(grep -i "^$$p==" <<<"$$freeze" || true); \
	  if [ -z "$$line" ]; then line=$$(grep -i "^$${p//-/_}==" <<<"$$freeze" || true); fi; \
	  if [ -z "$$line" ]; then echo "constraints: $$p is not installed" >&2; rm -f $$tmp; exit 1; fi; \
	  echo "$${line%%+*}" >> $$tmp; \
	done; \
	mv $$tmp constraints.txt; touch $(STAMP); cat constraints.txt

clean:
	rm -rf build dist *.egg-info .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .cache
