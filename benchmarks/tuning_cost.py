"""What prompts cost: extra FLOPs per example over the frozen base, and wall time, for deep prompt
tuning (OFA-PT's prefixes, and the prompt-token form APT's paper compared against) and APT.

    python benchmarks/tuning_cost.py [--prompts 16 200] [--batch 64] [--repeat 5] [--threads 2]

On the built-in base (builtin:base-small) and a batch of shapes-vqa test questions, at the
same prompt count M in every layer of encoder and decoder:

* prompt (prefix): OFA-PT's deep prompts, M keys and values prepended to every self-attention
  (robust_pt/tuning/prompt.py): no projections or FFN for the prompts;
* prompt (tokens): M prompt tokens that pass through every whole layer (projections,
  attention, FFN), the form APT's paper measured (its "deep prompt" baseline); not a
  robust-pt method, counted here only: each layer the base runs is run again with M more
  tokens (masks extended), and the first encoder layer is checked against the formula
  8 M d^2 + 4 M d f + 4 d ((N + M)^2 - N^2);
* apt: APT after every self-attention (robust_pt/tuning/apt.py).

FLOPs are torch's own count (torch.utils.flop_counter.FlopCounterMode: matrix products;
CPU scaled-dot-product attention, which it does not count, is counted with its formula),
for one closed-answer pass (the candidates' scores, what every attack step runs forward)
and one training step's forward and backward. Wall time: milliseconds per training step
(forward, backward, AdamW) and per attack pass (forward and backward to the pixels), the
variants alternating within each repeat, medians over repeats; the apt / prompt ratio is
of those medians. This machine is noisy: read the ratios, not single timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import _common

DEPTH = "both"


def counter():
    """FlopCounterMode that also counts CPU scaled-dot-product attention (its formula, as for CUDA)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def fwd(q, k, v, *args, out_shape=None, **kw):
        return sdpa_flop_count(q, k, v)

    def bwd(grad_out, q, k, v, *args, out_shape=None, **kw):
        return sdpa_backward_flop_count(grad_out, q, k, v)

    return FlopCounterMode(
        display=False,
        custom_mapping={
            aten._scaled_dot_product_flash_attention_for_cpu: fwd,  # overload packets: what it looks up
            aten._scaled_dot_product_flash_attention_for_cpu_backward: bwd,
        },
    )


def variant(name: str, m: int):
    """The built-in base with `name` applied (frozen base: 'base')."""
    from robust_pt.tuning import checkpoint as ckpt
    from robust_pt.tuning.config import TuningConfig
    from robust_pt.tuning.methods import apply_method

    model = ckpt.load("builtin:base-small")
    if name == "prompt":
        apply_method(model, TuningConfig("prompt", prompt_length=m, prompt_depth=DEPTH, prompt_dropout=0.0))
    elif name == "apt":
        apply_method(model, TuningConfig("apt", apt_prompts=m, apt_depth=DEPTH, apt_dropout=0.0))
    return model.eval()


def batch(n: int, size: int):
    from robust_pt.models.predict import images_of
    from robust_pt.tasks import load_task

    task = load_task("shapes-vqa", split="test", limit=n, seed=0, size=size)
    ex = [task[i] for i in range(len(task))]
    return images_of(ex), [e.text for e in ex], [e.target for e in ex], task.answers


def attack_pass(model, x, q, answers):
    import torch

    img = x.clone().requires_grad_(True)
    logits = model.candidate_logits(img, q, answers)
    torch.nn.functional.cross_entropy(logits, logits.argmax(-1)).backward()


def train_step(model, opt, x, q, y):
    loss = model.sequence_loss(x, q, y).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def flops(fn) -> int:
    with counter() as c:
        fn()
    return c.get_total_flops()


def token_form_flops(base, x, q, answers, m: int) -> tuple[int, dict]:
    """Extra FLOPs of M prompt tokens through every layer the base runs in one closed-answer pass,
    and the first encoder layer's count next to the formula."""
    import torch

    from robust_pt.models.ofa import DecoderLayer, EncoderLayer

    calls = []
    hooks = [
        layer.register_forward_pre_hook(lambda mod, a, kw: calls.append((mod, a, kw)), with_kwargs=True)
        for layer in base.modules()
        if isinstance(layer, (EncoderLayer, DecoderLayer))
    ]
    with torch.no_grad():
        base.candidate_logits(x, q, answers)
    for h in hooks:
        h.remove()
    extra, check = 0, {}
    d, f = base.cfg.d_model, base.cfg.ffn
    for mod, a, kw in calls:
        with torch.no_grad():
            plain = flops(lambda: mod(*a, **kw))
            more = flops(lambda: mod(*_with_tokens(mod, a, kw, m, d)))
        extra += more - plain
        if not check and isinstance(mod, EncoderLayer):
            B, N = a[0].shape[:2]
            formula = B * (8 * m * d * d + 4 * m * d * f + 4 * d * ((N + m) ** 2 - N**2))
            check = {"measured": more - plain, "formula": formula, "N": N, "B": B}
    return extra, check


def _with_tokens(layer, a, kw, m: int, d: int):
    """The arguments of one layer call with M prompt tokens (zeros: FLOPs do not depend on values) in front."""
    import torch

    from robust_pt.models.ofa import EncoderLayer

    x = a[0]
    B = x.shape[0]
    tokens = torch.zeros(B, m, d)
    if isinstance(layer, EncoderLayer):
        mask = torch.cat([torch.ones(B, m, dtype=torch.bool), a[1]], 1)
        return (torch.cat([tokens, x], 1), mask)
    y, y_mask, memory, memory_mask = a[:4]
    pattern = a[5] if len(a) > 5 else kw.get("pattern")
    y_mask = torch.cat([torch.ones(B, m, dtype=torch.bool), y_mask], 1)
    if pattern is not None:  # prompts see and are seen by every position
        T = pattern.shape[0]
        full = torch.ones(T + m, T + m, dtype=torch.bool)
        full[m:, m:] = pattern
        pattern = full
    return (torch.cat([tokens, y], 1), y_mask, memory, memory_mask, None, pattern)


def timings(models: dict, attacked: dict, x, q, y, answers, repeat: int, iters: int) -> dict:
    """{variant: {"train_ms": median, "attack_ms": median}}, the variants alternating in each repeat (training
    steps on `models`, attack passes on their frozen copies `attacked`)."""
    import torch

    opts = {k: torch.optim.AdamW([p for p in mdl.parameters() if p.requires_grad] or [torch.zeros(1)], lr=1e-4)
            for k, mdl in models.items()}  # fmt: skip
    out = {k: {"train_ms": [], "attack_ms": []} for k in models}
    for r in range(repeat + 1):  # the first round warms up and is not counted
        order = list(models) if r % 2 == 0 else list(reversed(models))
        for k in order:
            mdl = models[k]
            for what, fn in (
                ("attack_ms", lambda: attack_pass(attacked[k], x, q, answers)),
                ("train_ms", lambda: train_step(mdl.train(), opts[k], x, q, y)),
            ):
                if what == "train_ms" and k == "base":
                    continue
                t = time.perf_counter()
                for _ in range(iters):
                    fn()
                mdl.eval()
                if r:
                    out[k][what].append(1000 * (time.perf_counter() - t) / iters)
    return {k: {w: statistics.median(v) if v else None for w, v in d.items()} for k, d in out.items()}


def frozen(model):
    """A copy with no parameter requiring grad: what an attack runs (load_model freezes every model)."""
    import copy

    out = copy.deepcopy(model)
    for p in out.parameters():
        p.requires_grad_(False)
    return out.eval()


def measure(m: int, n: int, repeat: int, iters: int) -> dict:
    import torch

    models = {k: variant(k, m) for k in ("base", "prompt", "apt")}
    attacked = {k: frozen(mdl) for k, mdl in models.items()}
    x, q, y, answers = batch(n, models["base"].image_size)
    closed = {k: flops(lambda: attack_pass(mdl, x, q, answers)) for k, mdl in attacked.items()}
    fwd = {}
    for k, mdl in attacked.items():
        with torch.no_grad():
            fwd[k] = flops(lambda: mdl.candidate_logits(x, q, answers))
    tokens_extra, check = token_form_flops(attacked["base"], x, q, answers, m)
    per = lambda v: v / len(x) / 1e9  # noqa: E731 - GFLOPs per example
    res = {
        "M": m,
        "examples": n,
        "extra_gflops_forward": {
            "prompt (prefix)": per(fwd["prompt"] - fwd["base"]),
            "prompt (tokens)": per(tokens_extra),
            "apt": per(fwd["apt"] - fwd["base"]),
        },
        "base_gflops_forward": per(fwd["base"]),
        "extra_gflops_attack_pass": {k: per(closed[k] - closed["base"]) for k in ("prompt", "apt")},
        "token_form_check": check,
        "trainable_params": {
            k: sum(p.numel() for p in mdl.parameters() if p.requires_grad) for k, mdl in models.items() if k != "base"
        },
        "ms": timings(models, attacked, x, q, y, answers, repeat, iters),
    }
    return res


def report(res: dict) -> None:
    m, ms = res["M"], res["ms"]
    g = res["extra_gflops_forward"]
    print(
        f"\nM = {m} prompts per layer, {res['examples']} shapes-vqa questions, base {res['base_gflops_forward']:.4f} GFLOPs/example"
    )
    print("  extra GFLOPs per example (closed-answer forward):")
    for k, v in g.items():
        print(f"    {k:<16} {v:9.5f}  ({100 * v / res['base_gflops_forward']:5.1f}% of the base)")
    print(
        f"    apt / prompt (prefix) {g['apt'] / g['prompt (prefix)']:.2f};  apt / prompt (tokens) {g['apt'] / g['prompt (tokens)']:.2f}"
    )
    c = res["token_form_check"]
    print(
        f"  token form, first encoder layer (B={c['B']}, N={c['N']}): measured {c['measured']:,} vs formula {c['formula']:,} FLOPs"
    )
    print(
        f"  trainable parameters: prompt {res['trainable_params']['prompt']:,}, apt {res['trainable_params']['apt']:,}"
    )
    print("  median ms per batch:      train step   attack pass")
    for k in ("base", "prompt", "apt"):
        t = ms[k]["train_ms"]
        print(f"    {k:<22} {'-' if t is None else f'{t:9.1f}':>9}   {ms[k]['attack_ms']:9.1f}")
    print(f"    apt / prompt           {ms['apt']['train_ms'] / ms['prompt']['train_ms']:9.2f}   {ms['apt']['attack_ms'] / ms['prompt']['attack_ms']:9.2f}")  # fmt: skip
    print(f"    prompt / base          {'':>9}   {ms['prompt']['attack_ms'] / ms['base']['attack_ms']:9.2f}")
    print(f"    apt / base             {'':>9}   {ms['apt']['attack_ms'] / ms['base']['attack_ms']:9.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, nargs="+", default=[16, 200], help="prompt counts M to compare")
    ap.add_argument("--batch", type=int, default=64, help="examples per batch")
    ap.add_argument("--iters", type=int, default=3, help="timed iterations per repeat")
    _common.add_repeat(ap)
    _common.add_threads(ap)
    _common.add_seed_json(ap)
    args = ap.parse_args()
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    results = [measure(m, args.batch, max(args.repeat, 1), args.iters) for m in args.prompts]
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {max(args.repeat, 1)} repeats x {args.iters} iterations"
    )
    for r in results:
        report(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
