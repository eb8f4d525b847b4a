"""Metrics dicts shaped like ``dvc exp show``'s, for the report writers' tests."""

from __future__ import annotations


def fake_metrics(obj: tuple[float, float], img: tuple[float, float], det: tuple[float, float],
                 context: float = 0.5) -> dict:  # fmt: skip
    return {
        "classify": {
            "obj": {"original": {"map": obj[0], "map_11point": obj[0]},
                    "scn": {"map": obj[1], "map_11point": obj[1]}, "n_train": 81, "n_test": 83},
            "img": {"original": {"map": img[0], "map_11point": img[0]},
                    "scn": {"map": img[1], "map_11point": img[1]}, "n_train": 10, "n_test": 10},
            "context": {"own": {"accuracy": 0.71}, "context": {"accuracy": context},
                        "both": {"accuracy": 0.7345}, "majority_baseline": 0.33,
                        "same_class_share_train": 0.23, "same_class_share_test": 0.15,
                        "n_train_pairs": 200, "n_test_pairs": 190},
        },
        "detect": {"original": {"map": det[0], "map_11point": det[0] + 0.01, "loss_first": 1.8},
                   "scn": {"map": det[1], "map_11point": det[1] + 0.01, "loss_first": 2.25}},
        "synthetic": {"epochs": 40, "test_mse_offset": 1.5, "test_mse_no_offset": 30.25,
                      "test_mse_ratio": 1.5 / 30.25, "test_mse_mean_predictor": 40.0,
                      "n_train": 600, "n_test": 200},
        "proposals": {"splits": {s: {"boxes_per_image": 8.5, "recall_iou0.5": 0.9,
                                     "recall_iou0.7": 0.75} for s in ("train", "test")}},
        "pairs": {"splits": {s: {"patches": 66, "pairs": 60} for s in ("train", "test")}},
        "train": {"test_loss": 123.4, "test_explained": 0.25, "h1_drift": 1.234,
                  "h1_norm_ratio": 1.5, "frozen_test_explained_nonoverlap": 0.04,
                  "test_explained_nonoverlap": 0.0512, "finetune_gain_nonoverlap": 0.0112},
    }  # fmt: skip
