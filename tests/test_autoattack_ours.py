"""APGD, Square and AutoAttack on backend ours (attacks/apgd.py, square.py, autoattack.py).

An example's result must not depend on the examples that share its batch (every random draw
comes from its own seed), every adversarial stays in its ball and in [0, 1], APGD is the
reference's algorithm (bit for bit from the same start), robust accuracy agrees with
torchattacks' APGD and AutoAttack within their Monte-Carlo spread, and what backend ours
cannot run is refused in one line. All on a small CNN trained here on sklearn's 8x8 digits.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import robust_pt as rpt
from robust_pt.attacks import build
from robust_pt.attacks.apgd import apgd_run
from robust_pt.attacks.image import flat_norms, run_image_attack
from robust_pt.attacks.objectives import ClassifierImage
from robust_pt.attacks.seeds import derive_seed
from robust_pt.attacks.square import square_run
from robust_pt.errors import AttackError

torchattacks = pytest.importorskip("torchattacks")

# case -> (preset, small budgets, eps on the digits' [0, 1] pixels; L2: 8x8 single-channel images)
CASES = {
    "apgd-ce": ("apgd-ce", dict(steps=20), 0.1),
    "apgd-dlr-l2": ("apgd-ce", dict(steps=20, loss="dlr", norm="l2"), 0.8),
    "square": ("square", dict(queries=100), 0.15),
    "square-l2": ("square", dict(queries=100, norm="l2"), 1.0),
    "autoattack": ("autoattack", dict(steps=8, target_classes=3, queries=40), 0.1),
    "autoattack-l2": ("autoattack", dict(steps=8, target_classes=3, queries=40, norm="l2"), 0.8),
}


def _spec(case: str):
    preset, kw, _ = CASES[case]
    return build(preset, backend="ours", **kw).spec


@pytest.fixture(scope="module")
def digits():
    """(classifier, 64 test images it classifies correctly, their labels): a 2-layer CNN, ~0.5 s of training."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    Y = torch.tensor(d.target)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 16, 10),
    )
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        perm = torch.randperm(1500, generator=g)
        for i in range(0, 1500, 64):
            b = perm[i : i + 64]
            loss = nn.functional.cross_entropy(net(X[b]), Y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        ok = net(X[1500:]).argmax(-1) == Y[1500:]
    assert ok.float().mean() > 0.85  # it learned the digits
    return net, X[1500:][ok][:64], Y[1500:][ok][:64]


def _attack(spec, net, x, y, eps, seeds, size=None):
    """Adversarials and logits of the examples attacked in consecutive batches of `size` (all at once: None)."""
    size = size or len(x)
    advs, logits = [], []
    for s in range(0, len(x), size):
        sl = slice(s, s + size)
        r = run_image_attack(
            spec, ClassifierImage(net, y[sl]), x[sl], eps, seeds=seeds[sl], batch_seed=s, classifier=net, n_classes=10
        )
        advs.append(r.adv)
        logits.append(r.logits)
    return torch.cat(advs), torch.cat(logits)


@pytest.mark.parametrize("case", list(CASES))
def test_an_examples_result_does_not_depend_on_its_batch(case, digits):
    """Measured (64 examples, 10-37 left robust): logits at the adversarials within 3e-6 in batches of 7, equal
    in batches of 32; verdicts identical. Allowed: 1e-4 (float noise of batched convolutions)."""
    net, x, y = digits
    eps = CASES[case][2]
    seeds = [derive_seed(0, i, eps) for i in range(len(x))]
    spec = _spec(case)
    adv, logits = _attack(spec, net, x, y, eps, seeds)
    robust = logits.argmax(-1) == y
    assert 0 < int(robust.sum()) < len(x), int(robust.sum())  # the attack breaks some, not all
    for size in (7, 32):
        adv_b, logits_b = _attack(spec, net, x, y, eps, seeds, size)
        assert (logits_b - logits).abs().max() <= 1e-4, (size, (logits_b - logits).abs().max())
        assert torch.equal(logits_b.argmax(-1) == y, robust), size


def test_the_check_above_catches_a_batch_seeded_attack(digits):
    """The same comparison on torchattacks' APGD (one generator per batch): its adversarials move."""
    net, x, y = digits
    seeds = [derive_seed(0, i) for i in range(len(x))]
    spec = build("apgd-ce", backend="torchattacks", steps=20).spec
    adv, _ = _attack(spec, net, x, y, 0.1, seeds)
    adv_b, _ = _attack(spec, net, x, y, 0.1, seeds, 7)
    assert (adv_b - adv).abs().max() > 1e-3


@pytest.mark.parametrize("case", ["apgd-ce", "square"])
def test_each_example_draws_from_its_own_seed(case, digits):
    """A new seed for one example changes that example's adversarial and no other."""
    net, x, y = digits
    x, y = x[:16], y[:16]
    eps = CASES[case][2]
    seeds = [derive_seed(0, i, eps) for i in range(16)]
    spec = _spec(case)
    adv, _ = _attack(spec, net, x, y, eps, seeds)
    adv2, _ = _attack(spec, net, x, y, eps, seeds[:5] + [12345] + seeds[6:])
    moved = (adv2 - adv).flatten(1).abs().amax(1) > 0
    assert moved.tolist() == [i == 5 for i in range(16)]


@pytest.mark.parametrize("case", list(CASES))
def test_every_adversarial_is_inside_its_ball(case, digits):
    net, x, y = digits
    eps = CASES[case][2]
    spec = _spec(case)
    r = run_image_attack(spec, ClassifierImage(net, y), x, eps, seeds=list(range(len(x))), batch_seed=0)
    assert float(r.adv.min()) >= 0.0 and float(r.adv.max()) <= 1.0
    linf, l2 = flat_norms(r.adv - x)
    if spec.norm == "linf":
        assert float(linf.max()) <= eps + 1e-6
    else:
        assert float(l2.max()) <= eps * (1 + 1e-5)
    with torch.no_grad():
        assert torch.equal(net(r.adv).argmax(-1), r.logits.argmax(-1))  # the logits are those at adv
    assert r.queries == (spec.queries if spec.method == "square" else None)


@pytest.mark.parametrize("eps", [0.1, 0.15])
@pytest.mark.parametrize("loss", ["ce", "dlr-targeted"])
def test_apgd_is_the_reference_algorithm_from_the_same_start(loss, eps, digits):
    """APGD-CE and APGD-T (second most likely class) from torchattacks' own random start: without
    early stopping the same adversarials bit for bit (measured: max difference 0.0), with it the same
    examples broken, for fewer passes."""
    net, x, y = digits
    n = len(x)
    if loss == "ce":
        atk = torchattacks.APGD(net, eps=eps, steps=25, n_restarts=1, seed=5, loss="ce")
    else:
        atk = torchattacks.APGDT(net, eps=eps, steps=25, n_restarts=1, seed=5, n_classes=10)
        atk.n_target_classes = 1  # k = 2 only
    ta = atk(x, y).detach()
    with torch.no_grad():
        broken_ta = net(ta).argmax(-1) != y
        target = None if loss == "ce" else net(x).sort(dim=1)[1][:, -2]
    torch.manual_seed(5)  # torchattacks' start: uniform in [-1, 1], scaled to L-inf norm eps
    t = 2 * torch.rand(x.shape) - 1
    start = (x + eps * t / t.flatten(1).abs().amax(1).view(-1, 1, 1, 1)).clamp(0, 1)
    obj, rows = ClassifierImage(net, y), torch.arange(n)
    how = dict(norm="linf", steps=25, loss=loss, start=start, target=target)
    full = apgd_run(obj, rows, x, y, eps, early_stop=False, **how)
    assert 5 < int(broken_ta.sum()) < n - 5
    assert torch.equal(full.fooled, broken_ta)
    assert float((full.adv - ta)[broken_ta].abs().max()) <= 1e-6
    fast = apgd_run(obj, rows, x, y, eps, early_stop=True, **how)
    assert torch.equal(fast.fooled, broken_ta)
    assert fast.grad_evals < full.grad_evals  # a broken example stops costing passes


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 1.0)])
def test_square_is_the_reference_run_on_each_example_alone(norm, eps, digits):
    """Our draws follow the reference's order for a batch of one, so ours on a batch equals torchattacks'
    Square run one example at a time with that example's seed (measured: L-inf 0.0, L2 1.8e-7)."""
    net, x, y = digits
    n = 24
    x, y = x[:n], y[:n]
    seeds = [1000 + i for i in range(n)]
    how = dict(norm=norm, queries=100, p_init=0.8, loss="margin", rescale=True, seeds=seeds)
    ours = square_run(ClassifierImage(net, y), torch.arange(n), x, y, eps, **how)
    ta_norm = "Linf" if norm == "linf" else "L2"
    one = lambda i: torchattacks.Square(net, norm=ta_norm, eps=eps, n_queries=100, seed=seeds[i], loss="margin")
    ref = torch.cat([one(i)(x[i : i + 1], y[i : i + 1]) for i in range(n)])
    with torch.no_grad():
        broken = net(ref).argmax(-1) != y
    assert 3 < int(broken.sum()) < n - 3
    assert torch.equal(ours.fooled, broken)
    assert float((ours.adv - ref)[broken].abs().max()) <= 1e-5


@pytest.mark.parametrize("eps", [0.1, 0.15])
def test_robust_accuracy_agrees_with_torchattacks(eps, digits):
    """64 examples; measured over 10 seeds: APGD-CE |ours - torchattacks| <= 2 (0 at eps 0.1; each side
    ranges 12-16 at 0.15), AutoAttack <= 1. Allowed: 6 and 4 examples. AutoAttack never breaks fewer
    than APGD-CE alone with the same seeds (its first stage is that run)."""
    net, x, y = digits
    seeds = [derive_seed(0, i, eps) for i in range(len(x))]
    robust = {}
    for name, kw in (("apgd-ce", dict(steps=25)), ("autoattack", dict(steps=10, target_classes=3, queries=200))):
        for backend in ("ours", "torchattacks"):
            _, logits = _attack(build(name, backend=backend, **kw).spec, net, x, y, eps, seeds)
            robust[name, backend] = logits.argmax(-1) == y
    count = {k: int(v.sum()) for k, v in robust.items()}
    assert 5 < count["apgd-ce", "ours"] < len(x) - 5, count
    assert abs(count["apgd-ce", "ours"] - count["apgd-ce", "torchattacks"]) <= 6, count
    assert abs(count["autoattack", "ours"] - count["autoattack", "torchattacks"]) <= 4, count
    assert not bool((robust["autoattack", "ours"] & ~robust["apgd-ce", "ours"]).any())


def test_fab_t_runs_once_per_example_across_eps(digits):
    """FAB-T without a random start never reads eps: what it found at a smaller eps decides a larger one
    exactly as a fresh run would, and nothing runs again."""
    from robust_pt.attacks import autoattack as aa
    from robust_pt.attacks.tally import Tally

    net, x, y = digits
    obj = ClassifierImage(net, y)

    def fab(eps: float, memos):
        t = Tally(obj, x, "autoattack")
        aa._fab_stage(t, obj, eps, "linf", 10, 3, memos)
        return t

    alone = fab(0.15, None)
    memos = [{} for _ in range(len(x))]
    small = fab(0.05, memos)
    again = fab(0.15, memos)
    assert again.grad_evals == 0 and small.grad_evals > 0
    assert int(small.fooled.sum()) < int(alone.fooled.sum()) < len(x)  # the larger ball takes in more of its points
    assert torch.equal(again.fooled, alone.fooled)
    assert (again.adv - alone.adv)[alone.fooled].abs().max() <= 1e-6
    assert torch.equal(again.logits.argmax(-1), alone.logits.argmax(-1))


def test_the_engine_keeps_fab_t_points_across_eps(digits):
    """A sweep runs FAB-T's iterations on each example once: at the larger eps, the examples still
    standing after APGD spend no FAB steps."""
    net, x, y = digits
    kw = dict(attack="autoattack", backend="ours", steps=6, target_classes=2, queries=10, progress=False)
    sweep = rpt.evaluate(net, (x, y), eps=[0.05, 0.06], **kw).records
    alone = rpt.evaluate(net, (x, y), eps=[0.06], **kw).records
    at = sweep[(sweep["eps"] == 0.06) & sweep["attacked"]]
    ref = alone[alone["index"].isin(at["index"])].set_index("index").loc[at["index"]]
    robust = at["correct"].to_numpy()
    assert robust.sum() > 5
    # the same examples spend FAB's 2 x 6 steps less in the sweep than alone (APGD's 3 x 6 only)
    assert (ref["steps"].to_numpy()[robust] - at["steps"].to_numpy()[robust] == 12).all()
    assert (at["correct"].to_numpy() == ref["correct"].to_numpy()).all()


def test_square_queries_only_the_examples_standing(digits):
    net, x, y = digits
    spec = _spec("square")
    r = run_image_attack(spec, ClassifierImage(net, y), x, 0.15, seeds=list(range(len(x))), batch_seed=0)
    broken = int((r.logits.argmax(-1) != y).sum())
    assert broken > 10
    assert r.fwd_evals < len(x) * (spec.queries + 1) - broken * spec.queries // 2
    assert int(r.steps.sum()) == 0  # its budget is queries, not gradient steps


def test_the_engine_runs_autoattack_ours_the_same_in_any_batch_size(digits):
    net, x, y = digits
    kw = dict(attack="autoattack", backend="ours", eps=[0.1, 0.15], steps=5, target_classes=2, queries=20)
    a = rpt.evaluate(net, (x, y), progress=False, batch_size=16, **kw).records
    b = rpt.evaluate(net, (x, y), progress=False, batch_size=64, **kw).records
    assert a["correct"].tolist() == b["correct"].tolist() and a["steps"].tolist() == b["steps"].tolist()
    assert 0 < a["correct"].mean() < a["clean_correct"].mean()


def _linear(classes: int):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, classes)).eval()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x).argmax(-1)
    return net, x, y


def test_refusals():
    net, x, y = _linear(2)
    with pytest.raises(AttackError, match="DLR loss needs at least 3 candidate answers, this task has 2; use loss: ce"):
        run_image_attack(
            build("apgd-ce", backend="ours", loss="dlr", steps=2).spec,
            ClassifierImage(net, y),
            x,
            0.1,
            seeds=[0] * 4,
            batch_seed=0,
        )
    net, x, y = _linear(3)
    with pytest.raises(AttackError, match="targeted DLR loss\\) needs at least 4 candidate answers, this task has 3"):
        run_image_attack(
            build("autoattack", backend="ours", steps=2).spec,
            ClassifierImage(net, y),
            x,
            0.1,
            seeds=[0] * 4,
            batch_seed=0,
        )
    for version in ("plus", "rand"):
        with pytest.raises(AttackError, match=f"AutoAttack {version} runs only with --backend torchattacks"):
            build("autoattack", backend="ours", version=version)
    assert build("autoattack", backend="torchattacks", version="plus").spec.version == "plus"


@pytest.mark.parametrize(
    "name,kw",
    [
        ("apgd-ce", dict(steps=3)),
        ("square", dict(queries=10)),
        ("autoattack", dict(steps=2, target_classes=2, queries=5)),
    ],
)
def test_ours_on_a_vl_model(name, kw, tiny_vqa, vqa_task):
    """On candidate logits of the VL model (ClosedImage): inside the ball, and batch-independent."""
    from robust_pt.attacks.objectives import ClosedImage
    from robust_pt.models.predict import images_of

    exs = [vqa_task[i] for i in range(8)]
    x, y, texts = images_of(exs), torch.tensor([e.label for e in exs]), [e.text for e in exs]
    spec = build(name, backend="ours", **kw).spec
    eps, seeds = 8 / 255, [derive_seed(0, e.id) for e in exs]
    parts = [
        run_image_attack(
            spec, ClosedImage(tiny_vqa, texts[sl], vqa_task.answers, y[sl]), x[sl], eps, seeds=seeds[sl], batch_seed=0
        )
        for sl in (slice(0, 8), slice(0, 3), slice(3, 8))
    ]
    linf, _ = flat_norms(parts[0].adv - x)
    assert float(linf.max()) <= eps + 1e-6 and 0 <= float(parts[0].adv.min()) and float(parts[0].adv.max()) <= 1
    split = torch.cat([parts[1].logits, parts[2].logits])
    assert (split - parts[0].logits).abs().max() <= 1e-4
    assert torch.equal(split.argmax(-1), parts[0].logits.argmax(-1))


def test_autoattack_ours_leaves_a_trainable_models_gradients_alone():
    """FAB-T (torchattacks') calls .backward(); the gradient must reach the images only."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x).argmax(-1)
    spec = build("autoattack", backend="ours", steps=3, target_classes=2, queries=5).spec
    r = run_image_attack(spec, ClassifierImage(net, y), x, 0.02, seeds=list(range(8)), batch_seed=0)
    assert int(r.steps.max()) > 3 + 2 * 3  # FAB-T ran (after APGD-CE and APGD-T)
    assert all(p.grad is None for p in net.parameters())
