"""The training loop: the loss falls, the offset matters, resume and DDP reproduce; the
regime (loss scale, optimiser, frozen warm-up, model selection, early stopping)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.models.context import scn_loss
from pipeline.train.checkpoint import load_checkpoint, resume_key
from pipeline.train.loop import best_epoch, build_optimizer, stops_early
from pipeline.train.methods.scn import fit
from tests.helpers.numeric import assert_close_rel
from tests.helpers.toy_train import TARGET_DIM, open_toy_sets, toy_config, toy_model, toy_sets

pytestmark = pytest.mark.usefixtures("one_thread")


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_few_steps_lower_the_loss(tmp_path):
    train, test = toy_sets(tmp_path)
    model = toy_model()
    before = fit(model, train, test, toy_config(epochs=1, lr=1e-12)).history[0]["test_loss"]
    result = fit(toy_model(), train, test, toy_config(epochs=3))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[-1]["test_loss"] < 0.7 * before
    assert np.isfinite(result.pairs_per_s) and result.pairs_per_s > 0


@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_offset_solves_what_the_ablation_cannot(tmp_path, loss):
    """Targets depend only on the direction of the top patch: the offset is needed."""
    train, test = toy_sets(tmp_path)
    lr = 0.05 if loss == "mean" else 0.05 / 16  # sum over a batch of 16: same step size
    final = {}
    for use_offset in (True, False):
        cfg = toy_config(epochs=25, lr_step_epoch=20, lr=lr, loss=loss, use_offset=use_offset)
        result = fit(toy_model(use_offset=use_offset), train, test, cfg)
        final[use_offset] = result.history[-1]
    # without offsets the best constant prediction leaves the targets' variance (~7.5)
    assert final[False]["test_loss"] > 5.0
    assert final[True]["test_loss"] < 0.5
    assert final[True]["train_loss"] < 0.05 * final[False]["train_loss"]


def test_resume_continues_to_the_same_weights(tmp_path):
    train, test = toy_sets(tmp_path)
    cfg = toy_config(epochs=5, lr_step_epoch=3)
    full = fit(toy_model(), train, test, cfg, checkpoint=tmp_path / "a.pt")

    class Interrupted(Exception):
        pass

    def crash(epoch, record):
        if epoch == 2:
            raise Interrupted

    ckpt = tmp_path / "b.pt"
    with pytest.raises(Interrupted):
        fit(toy_model(), train, test, cfg, checkpoint=ckpt, on_epoch_end=crash)
    assert load_checkpoint(ckpt, resume_key(cfg, {}), cfg.epochs)["epoch"] == 2
    # a fresh process state: other RNG draws in between must not matter
    torch.manual_seed(999)
    np.random.seed(999)  # noqa: NPY002 - perturb the global RNG on purpose
    resumed = fit(toy_model(seed=7), train, test, cfg, checkpoint=ckpt)
    assert resumed.resumed_epoch == 2
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5]
    for key, value in _state(full.model).items():
        assert torch.equal(value, _state(resumed.model)[key]), key
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]


def test_checkpoint_of_another_config_is_not_resumed(tmp_path):
    train, test = toy_sets(tmp_path, n_train=4, n_test=2)
    ckpt = tmp_path / "c.pt"
    fit(toy_model(), train, test, toy_config(epochs=1), checkpoint=ckpt)
    other = toy_config(epochs=2, lr=0.01)
    assert load_checkpoint(ckpt, resume_key(other, {}), 2) is None
    assert load_checkpoint(ckpt, resume_key(toy_config(), {"targets_sha256": "x"}), 2) is None
    assert load_checkpoint(ckpt, resume_key(toy_config(epochs=3), {}), 3)["epoch"] == 1
    result = fit(toy_model(), train, test, other, checkpoint=ckpt)
    assert result.resumed_epoch == 0 and len(result.history) == 2


def _records(history) -> list[dict]:
    """The records minus wall-clock times, NaN (no h1 drift for the toy) as None."""
    return [{k: None if v != v else v for k, v in r.items() if k != "seconds"} for r in history]


def _same_state(a, b) -> bool:
    return all(torch.equal(v, b[k]) for k, v in a.items())


def test_loss_scales_take_the_same_sgd_step_at_the_implied_lr(tmp_path):
    """sum = B x mean = B x D x element_mean: lr on `mean` is lr / B on `sum` and lr x D on
    `element_mean` (no weight decay, which does not scale with the loss); the history's
    losses are per pair whatever the scale."""
    h3, target = torch.randn(16, TARGET_DIM), torch.randn(16, TARGET_DIM)  # (B, D)
    total = scn_loss(h3, target, "sum")
    assert torch.allclose(total, 16 * scn_loss(h3, target, "mean"))
    assert torch.allclose(total, 16 * TARGET_DIM * scn_loss(h3, target, "element_mean"))
    train, test = toy_sets(tmp_path)  # 128 pairs: 8 full batches of 16
    runs = {
        loss: fit(
            toy_model(), train, test, toy_config(epochs=2, loss=loss, lr=lr, weight_decay=0.0)
        )
        for loss, lr in (("sum", 0.05 / 16), ("mean", 0.05), ("element_mean", 0.05 * TARGET_DIM))
    }
    ref = runs["mean"]
    assert ref.history[-1]["train_loss"] < 0.8 * ref.history[0]["train_loss"]  # it trained
    for loss in ("sum", "element_mean"):
        for key, value in _state(ref.model).items():
            assert_close_rel(value, _state(runs[loss].model)[key], what=key)
        for a, b in zip(ref.history, runs[loss].history, strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


@pytest.mark.parametrize(
    ("name", "kind", "after"),
    [("sgd", torch.optim.SGD, 0.95), ("adam", torch.optim.Adam, 0.9),
     ("adamw", torch.optim.AdamW, 0.95)],
)  # fmt: skip
def test_optimizer_choice_and_its_weight_decay(name, kind, after):
    """One step from a zero loss gradient, lr 0.1, weight decay 0.5: SGD and AdamW shrink the
    weight by lr x wd; Adam normalises the L2 gradient wd x p to a full lr step."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer([{"params": [p], "lr": 0.1}],
                          toy_config(optimizer=name, weight_decay=0.5, momentum=0.9))  # fmt: skip
    assert type(opt) is kind
    p.grad = torch.zeros(3)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), after), atol=1e-6)


def test_best_epoch_and_early_stop_rules():
    hist = [{"epoch": e, "s": v} for e, v in enumerate([0.1, float("nan"), 0.3, 0.3, 0.2], 1)]
    assert best_epoch(hist, "s", "max") == 3  # NaN never counts, a tie keeps the earlier
    assert best_epoch(hist, "s", "min") == 1
    assert best_epoch(hist[1:2], "s", "max") is None
    assert not stops_early(hist, 3, 0)  # patience 0: off
    assert stops_early(hist, 3, 2) and not stops_early(hist, 3, 3)
    unscored = [{"epoch": e, "s": float("nan")} for e in (1, 2)]  # counted from the start
    assert not stops_early(unscored[:1], None, 2) and stops_early(unscored, None, 2)


def test_context_warmup_freezes_the_bottom_stream_then_lets_it_learn(tmp_path):
    """For context_warmup_epochs the head (h1) stays bit-identical to the start, though SGD
    has momentum and weight decay, while the context module learns; then h1 moves."""
    train, test = toy_sets(tmp_path)
    model = toy_model()
    start = _state(model)
    x = train[np.arange(len(train))]["x"]  # (N, TRUNK_DIM) trunk rows of the bottom patches
    h1, states = {}, {}

    def snapshot(epoch, record):
        states[epoch] = _state(model)
        with torch.no_grad():
            h1[epoch] = model.bottom(x, from_trunk=True)  # (N, 12)

    with torch.no_grad():
        h1[0] = model.bottom(x, from_trunk=True)
    fit(model, train, test, toy_config(epochs=4, context_warmup_epochs=2), on_epoch_end=snapshot)
    head = [k for k in start if k.startswith("head.")]
    context = [k for k in start if k.startswith("context.")]
    for epoch in (1, 2):
        assert torch.equal(h1[epoch], h1[0])
        assert all(torch.equal(states[epoch][k], start[k]) for k in head)
    assert not all(torch.equal(states[1][k], start[k]) for k in context)  # context learnt
    assert not torch.equal(h1[3], h1[0]) and not torch.equal(h1[4], h1[3])  # then h1 moves
    assert all(p.requires_grad for p in model.head.parameters())  # handed back trainable


# 8 training images with noisy targets: the held-out explained share rises, peaks, falls
OVERFIT = dict(lr_step_epoch=100, batch_size=8, hidden=64, weight_decay=0.0, lr=0.01,
               optimizer="adam")  # fmt: skip


def _overfit_sets(tmp_path):
    return toy_sets(tmp_path, n_train=8, n_test=8, train_noise=2.0)


def test_select_best_keeps_the_best_epochs_weights(tmp_path):
    train, test = _overfit_sets(tmp_path)
    last = fit(toy_model(hidden=64), train, test, toy_config(epochs=24, **OVERFIT))
    scores = [h["test_explained"] for h in last.history]
    best = int(np.argmax(scores)) + 1
    assert 1 < best < 24 and scores[-1] < scores[best - 1] - 0.05  # overfits after `best`
    assert (last.best_epoch, last.selected_epoch, last.stopped_early) == (best, 24, False)
    cfg = toy_config(epochs=24, select="best", **OVERFIT)
    chosen = fit(toy_model(hidden=64), train, test, cfg)
    assert _records(chosen.history) == _records(last.history)  # the same 24 epochs run
    assert (chosen.best_epoch, chosen.selected_epoch) == (best, best)
    assert chosen.selected["test_explained"] == max(scores)
    short = fit(toy_model(hidden=64), train, test, toy_config(epochs=best, **OVERFIT))
    assert _same_state(_state(chosen.model), _state(short.model))
    assert not _same_state(_state(chosen.model), _state(last.model))


def test_early_stop_stops_patience_epochs_after_the_best(tmp_path):
    train, test = _overfit_sets(tmp_path)
    full = fit(toy_model(hidden=64), train, test, toy_config(epochs=24, **OVERFIT))
    best = full.best_epoch
    stopped = fit(toy_model(hidden=64), train, test,
                  toy_config(epochs=24, early_stop_patience=3, **OVERFIT))  # fmt: skip
    assert stopped.stopped_early and len(stopped.history) == best + 3
    assert _records(stopped.history) == _records(full.history[: best + 3])
    assert (stopped.best_epoch, stopped.selected_epoch) == (best, best + 3)  # select: last
    patient = fit(toy_model(hidden=64), train, test,
                  toy_config(epochs=24, early_stop_patience=24 - best, **OVERFIT))  # fmt: skip
    assert not patient.stopped_early and len(patient.history) == 24


def test_select_best_and_early_stop_resume_like_an_uninterrupted_run(tmp_path):
    """The checkpoint keeps the best weights so far; a run that stopped early stays stopped."""
    train, test = _overfit_sets(tmp_path)
    cfg = toy_config(epochs=24, select="best", early_stop_patience=3, **OVERFIT)
    (tmp_path / "full").mkdir()
    (tmp_path / "resumed").mkdir()
    full = fit(toy_model(hidden=64), train, test, cfg, checkpoint=tmp_path / "full" / "c.pt")
    best = full.best_epoch
    assert full.stopped_early and full.selected_epoch == best and len(full.history) == best + 3

    class Interrupted(Exception):
        pass

    def crash(epoch, record):
        if epoch == best + 1:  # past the best: its weights live only in the checkpoint
            raise Interrupted

    ckpt = tmp_path / "resumed" / "c.pt"
    with pytest.raises(Interrupted):
        fit(toy_model(hidden=64), train, test, cfg, checkpoint=ckpt, on_epoch_end=crash)
    resumed = fit(toy_model(hidden=64, seed=7), train, test, cfg, checkpoint=ckpt)
    assert resumed.resumed_epoch == best + 1 and resumed.stopped_early
    assert (resumed.best_epoch, resumed.selected_epoch) == (best, best)
    assert _same_state(_state(full.model), _state(resumed.model))
    assert ckpt.read_bytes() == (tmp_path / "full" / "c.pt").read_bytes()
    again = fit(toy_model(hidden=64, seed=7), train, test, cfg, checkpoint=ckpt)
    assert again.resumed_epoch == best + 3 and again.stopped_early  # nothing more trained
    assert len(again.history) == best + 3 and again.selected_epoch == best
    assert _same_state(_state(full.model), _state(again.model))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_CASES = {
    "sum": dict(loss="sum", lr=0.05 / 16),
    "mean": dict(loss="mean", lr=0.05),
    # the head frozen for epoch 1: DDP is re-wrapped when it starts to learn
    "warmup": dict(loss="mean", lr=0.05, context_warmup_epochs=1),
}


def _ddp_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    from pathlib import Path

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    torch.set_num_threads(1)
    try:
        train, test = open_toy_sets(Path(root))
        results = {}
        for case, kw in DDP_CASES.items():
            cfg = toy_config(epochs=3, **kw)
            result = fit(toy_model(), train, test, cfg, checkpoint=Path(root) / f"ddp-{case}.pt")
            results[case] = {"state": _state(result.model), "history": result.history}
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one(tmp_path):
    """2 gloo processes with half the batch each follow the single-process trajectory
    (summed loss: DDP's gradient average is scaled back to the global sum; with a frozen
    warm-up, the wrapper is rebuilt when the head starts to learn)."""
    train, test = toy_sets(tmp_path)  # written once, read by every process
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=False)
    for loss, kw in DDP_CASES.items():
        cfg = toy_config(epochs=3, **kw)
        single = fit(toy_model(), train, test, cfg)
        moved = 0.0
        for key, value in _state(single.model).items():
            assert_close_rel(value, ddp[loss]["state"][key], what=key)
            moved += float((value - _state(toy_model())[key]).abs().sum())
        assert moved > 1.0  # the weights did train
        for a, b in zip(single.history, ddp[loss]["history"], strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
            assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-4)
        assert (tmp_path / f"ddp-{loss}.pt").is_file()  # rank 0 wrote the checkpoint
