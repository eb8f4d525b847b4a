"""Paper Table 1, the context experiment of stage ``classify``: is the top object's class
better predicted from its own features, from the context h3 the trained context module
predicts from the bottom object and the offset, or from both?

Ordered pairs (top i, bottom j) of distinct non-difficult ground-truth objects of one image,
at most ``classify.max_context_pairs`` per split (seeded, :func:`object_pairs`); offsets o_ij
as the pairs stage computes them (:func:`context_offsets`); a multi-class linear SVM on (i)
the top patch's own original features, (ii) h3 predicted from the bottom patch's trained h1
and o_ij (:func:`predict_h3`), (iii) both, each block L2-normalised, concatenated
(:func:`context_classification`). The diagnosis (:mod:`pipeline.diagnose.stage`) pairs its
ground-truth objects with the same :func:`object_pairs` and :func:`context_offsets`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.boxes import corner_offsets
from pipeline.errors import DataError
from pipeline.evaluate.classify.features import ObjectTable
from pipeline.evaluate.classify.svm import l2_normalize, train_multiclass
from pipeline.evaluate.compare import ORIGINAL, TRAINED

if TYPE_CHECKING:
    from pipeline.data.voc import VOCDataset
    from pipeline.evaluate.config import ClassifyConfig

log = logging.getLogger(__name__)


def object_pairs(
    table: ObjectTable, max_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(top, bottom) row indices of ordered pairs of distinct non-difficult objects of one
    image; a seeded sample of at most ``max_pairs``, in (image, top, bottom) order."""
    tops, bottoms = [], []
    keep = np.flatnonzero(~table.difficult)
    by_image: dict[int, list[int]] = {}
    for r in keep:
        by_image.setdefault(int(table.image_index[r]), []).append(int(r))
    for rows in by_image.values():
        for i in rows:
            for j in rows:
                if i != j:
                    tops.append(i)
                    bottoms.append(j)
    top, bottom = np.array(tops, dtype=np.int64), np.array(bottoms, dtype=np.int64)
    if len(top) > max_pairs:
        pick = np.sort(rng.choice(len(top), size=max_pairs, replace=False))
        top, bottom = top[pick], bottom[pick]
    return top, bottom


def context_offsets(
    ds: VOCDataset, table: ObjectTable, top: np.ndarray, bottom: np.ndarray, scale: str
) -> np.ndarray:
    """(M, 8) offsets o_ij = b_top - b_bottom as the pairs stage computes them."""
    sizes = np.array([(im.width, im.height) for im in ds.images], dtype=np.float64)  # (n, 2)
    wh = sizes[table.image_index[top]]  # (M, 2)
    out = np.zeros((len(top), 8), dtype=np.float32)
    for w, h in np.unique(wh, axis=0):  # one call per image size (the function takes scalars)
        m = (wh[:, 0] == w) & (wh[:, 1] == h)
        out[m] = corner_offsets(table.box[top[m]], table.box[bottom[m]], float(w), float(h), scale)
    return out


@torch.no_grad()
def predict_h3(trained, h1: np.ndarray, offset: np.ndarray, batch_size: int) -> np.ndarray:
    """(M, D) SCN h1 of bottom patches and (M, 8) offsets -> (M, D_T) h3."""
    out = []
    for s in range(0, len(h1), max(batch_size, 1)):
        h = torch.from_numpy(
            np.ascontiguousarray(h1[s : s + batch_size], dtype=np.float32)
        )  # (B, D)
        o = torch.from_numpy(np.ascontiguousarray(offset[s : s + batch_size]))  # (B, 8)
        out.append(trained.context(h, o).float().cpu().numpy())  # (B, D_T)
    dim = int(trained.config.get("target_dim", 0))
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def context_features(
    cfg: ClassifyConfig,
    offset_scale: str,
    splits: dict[str, VOCDataset],
    obj: dict[str, dict[str, dict[str, np.ndarray]]],
    trained,
    rng: np.random.Generator,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """The inputs of paper Table 1 per role (train, test): ``own``, ``context``, ``both``
    feature blocks and the top patch's class ``y``; and the same-class share of the pairs."""
    data: dict[str, dict[str, np.ndarray]] = {}
    shares: dict[str, float] = {}
    for role in ("train", "test"):
        ds = splits[role]
        orig, trained_h1 = obj[ORIGINAL][role], obj[TRAINED][role]
        table = ObjectTable(
            orig["image_index"], orig["box"], orig["class_index"], orig["difficult"]
        )
        top, bottom = object_pairs(table, cfg.max_context_pairs, rng)
        if len(top) == 0:
            raise DataError(ds.root, f"split {ds.split!r}: no image has two non-difficult objects")
        offset = context_offsets(ds, table, top, bottom, offset_scale)  # (M, 8)
        own = l2_normalize(orig["features"][top])  # (M, D)
        h3 = l2_normalize(
            predict_h3(trained, trained_h1["features"][bottom], offset, cfg.batch_size)
        )  # (M, D_T)
        data[role] = {
            "own": own,
            "context": h3,
            "both": np.concatenate([own, h3], axis=1),  # (M, D + D_T)
            "y": table.class_index[top].astype(np.int64),
        }
        shares[role] = float(np.mean(table.class_index[top] == table.class_index[bottom]))
    return data, shares


def context_classification(
    cfg: ClassifyConfig,
    offset_scale: str,
    splits: dict[str, VOCDataset],
    obj: dict[str, dict[str, dict[str, np.ndarray]]],
    trained,
    rng: np.random.Generator,
    device: torch.device | None = None,
) -> dict:
    """Paper Table 1 on pairs of ground-truth objects; accuracies of the three inputs."""
    data, shares = context_features(cfg, offset_scale, splits, obj, trained, rng)
    result: dict = {
        "n_train_pairs": len(data["train"]["y"]),
        "n_test_pairs": len(data["test"]["y"]),
        "same_class_share_train": round(shares["train"], 6),
        "same_class_share_test": round(shares["test"], 6),
    }
    counts = np.bincount(data["train"]["y"])
    result["majority_baseline"] = round(float(np.mean(data["test"]["y"] == counts.argmax())), 6)
    for name in ("own", "context", "both"):
        res = train_multiclass(
            data["train"][name],
            data["train"]["y"],
            data["test"][name],
            data["test"]["y"],
            cfg.costs,
            cfg.cv_folds,
            cfg.seed,
            workers=cfg.workers,
            solver=cfg.solver,
            device=device,
            threads=cfg.threads,
        )
        result[name] = res.to_dict()
        log.info("context %s: accuracy %.4f (C=%g)", name, res.accuracy, res.cost)
    return result
