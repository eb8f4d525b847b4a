"""Stage ``synthetic``: the paper's synthetic check (section 4.1, Figures 3 and 4).

1. Generate the (circle, square | triangle | black) pairs, split train/test.
2. Cache the frozen trunk output of every patch once; the top stream's targets are the
   frozen backbone's representation of the top patch.
3. Train the SCN (bottom head + context module, :func:`pipeline.models.context.scn_loss`)
   with and without the offset input; record the test MSE per epoch (Figure 3).
4. Train it again with the raw top patches (``pixel_size`` squared x 3) as targets and
   decode h3 for a test circle with a horizontal, a vertical and an off-axis offset
   after ``recon_epochs`` (Figure 4).

Outputs under ``paths.synthetic``: ``pairs.h5`` (the dataset), ``history.csv``,
``figure3.png``, ``figure4.png``, ``samples.png``, ``reconstructions.npz``; the DVC plot
``paths.plots/synthetic.csv``; the metrics dict (``metrics/synthetic.json``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import numpy as np
import torch

from pipeline.backbones import build_backbone
from pipeline.config import to_dict
from pipeline.io import atomic_path, write_text
from pipeline.provenance import code_version
from pipeline.seed import seed_everything
from pipeline.synthetic import figures
from pipeline.synthetic.config import SyntheticConfig
from pipeline.synthetic.generate import KINDS, SyntheticPairs, generate, write_pairs
from pipeline.synthetic.train import (
    RunResult,
    TrainSettings,
    decode_pixels,
    encode,
    pixel_targets,
    train_scn,
)

log = logging.getLogger(__name__)

PROBE_ROWS = ("horizontal offset", "vertical offset", "off-axis offset")  # one per kind


def probe_indices(test: SyntheticPairs) -> list[int]:
    """The first test pair of each kind: square (horizontal), triangle (vertical), black."""
    idx = []
    for k, name in enumerate(KINDS):
        hits = np.flatnonzero(test.kind == k)
        if len(hits) == 0:
            raise ValueError(f"synthetic: the test split has no {name} pair; raise n_test")
        idx.append(int(hits[0]))
    return idx


def history_csv(results: dict[str, RunResult]) -> str:
    """One row per epoch: ``epoch, <run>_test_mse, <run>_train_mse, ...``."""
    names = list(results)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["epoch"] + [f"{n}_{s}" for n in names for s in ("test_mse", "train_mse")])
    for e in range(len(results[names[0]].test_mse)):
        row = [e + 1]
        for n in names:
            row += [f"{results[n].test_mse[e]:.6g}", f"{results[n].train_mse[e]:.6g}"]
        w.writerow(row)
    return buf.getvalue()


def run_experiment(cfg: SyntheticConfig, out_dir: Path, plot_csv: Path) -> dict:
    """Run the whole experiment of ``cfg``; write its files into ``out_dir`` and ``plot_csv``."""
    seed_everything(cfg.seed)
    pairs, canvases = generate(cfg, n_canvases=2)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_pairs(
        out_dir / "pairs.h5",
        pairs,
        {"code_version": code_version(), "created_by": "synthetic",
         "params": json.dumps(to_dict(cfg)), "offset_scale": "image"},
    )  # fmt: skip
    figures.samples(canvases, out_dir / "samples.png")
    train, test = pairs.subset(0), pairs.subset(1)

    bb = build_backbone(cfg.backbone, input_size=cfg.input_size)
    trunk, head = bb.split(cfg.scope)
    log.info(
        "caching the frozen trunk (%s) of %d patches", bb.trunk_layer(cfg.scope), 2 * len(pairs)
    )
    enc = {
        name: encode(trunk, arr, bb.mean, bb.std)  # (N, ...) trunk output
        for name, arr in (
            ("train_bottom", train.bottom), ("train_top", train.top),
            ("test_bottom", test.bottom), ("test_top", test.top),
        )
    }  # fmt: skip
    with torch.no_grad():
        y_train = head(enc["train_top"])  # (N_train, D) frozen top stream = bb.features
        y_test = head(enc["test_top"])  # (N_test, D)
    off_train = torch.from_numpy(train.offset)  # (N_train, 8)
    off_test = torch.from_numpy(test.offset)  # (N_test, 8)

    settings = TrainSettings(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
        weight_decay=cfg.weight_decay, optimizer=cfg.optimizer, hidden=cfg.hidden, seed=cfg.seed,
    )  # fmt: skip
    tr = (enc["train_bottom"], off_train, y_train)
    te = (enc["test_bottom"], off_test, y_test)
    runs = {
        "offset": train_scn("offset", head, tr, te, settings, use_offset=True),
        "no_offset": train_scn("no_offset", head, tr, te, settings, use_offset=False),
    }

    # Figure 4: pixel targets
    probes = probe_indices(test)
    px_train, px_test = pixel_targets(train.top_pixels), pixel_targets(test.top_pixels)
    pixel = train_scn(
        "pixels",
        head,
        (enc["train_bottom"], off_train, px_train),
        (enc["test_bottom"], off_test, px_test),
        TrainSettings(**{**settings.__dict__, "lr": cfg.pixel_lr}),
        use_offset=True,
        probe=(enc["test_bottom"][probes], off_test[probes]),
        probe_epochs=cfg.recon_epochs,
    )
    recon = {e: decode_pixels(h3, cfg.pixel_size) for e, h3 in pixel.probes.items()}
    figures.figure4(
        [f"{r}\n({KINDS[k]})" for k, r in enumerate(PROBE_ROWS)],
        test.bottom[probes],
        test.top_pixels[probes],
        recon,
        out_dir / "figure4.png",
    )
    with atomic_path(out_dir / "reconstructions.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                epochs=np.array(sorted(recon)),
                recon=np.stack([recon[e] for e in sorted(recon)]),  # (E, 3, P, P, 3)
                targets=test.top_pixels[probes],
                kinds=np.array(KINDS),
            )

    # Figure 3 and the DVC plot
    runs_all = {**runs, "pixels": pixel}
    csv_text = history_csv(runs_all)
    write_text(out_dir / "history.csv", csv_text)
    write_text(plot_csv, csv_text)
    figures.figure3(
        {"with offset": runs["offset"].test_mse, "without offset": runs["no_offset"].test_mse},
        out_dir / "figure3.png",
        title=f"Synthetic data, {bb.name} @ {cfg.input_size}px: test MSE",
    )

    base = float((y_test - y_train.mean(0)).pow(2).sum(1).mean())  # predict the train mean
    with_off, without = runs["offset"].test_mse[-1], runs["no_offset"].test_mse[-1]
    per_kind = {
        f"test_mse_offset_{name}": float(runs["offset"].test_mse_per_pair[test.kind == k].mean())
        for k, name in enumerate(KINDS)
    }
    px_err = pixel.test_mse_per_pair  # (N_test,)
    return {
        "n_train": len(train),
        "n_test": len(test),
        "backbone": bb.name,
        "feature_dim": int(y_train.shape[1]),
        "epochs": cfg.epochs,
        "offset_scale": cfg.offset_scale,
        "test_mse_offset": with_off,
        "test_mse_no_offset": without,
        "test_mse_ratio": with_off / without if without > 0 else float("nan"),
        "test_mse_mean_predictor": base,
        **per_kind,
        "pixel_test_mse": pixel.test_mse[-1],
        **{
            f"pixel_test_mse_{name}": float(px_err[test.kind == k].mean())
            for k, name in enumerate(KINDS)
        },
    }


def run_synthetic(cfg: SyntheticConfig, out_dir: Path, csv_path: Path) -> dict:
    """DVC stage ``synthetic`` (see module docstring): figures into ``out_dir``, the test
    curves into ``csv_path``."""
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # tiny ops: extra threads only add sync costs
    try:
        with atomic_path(out_dir) as tmp:
            metrics = run_experiment(cfg, tmp, csv_path)
    finally:
        torch.set_num_threads(threads)
    return metrics
