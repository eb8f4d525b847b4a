"""Evaluation of a trained bottom stream against the original network, grouped by protocol:
:mod:`.classify` (linear SVMs) and :mod:`.detect` (Fast R-CNN); shared here: AP primitives
(:mod:`.ap`), the paired bootstrap (:mod:`.bootstrap`), the params sections (:mod:`.config`)
and the original-vs-trained comparison (:mod:`.compare`)."""
