"""Linear-SVM classification (paper sections 4.2 to 4.4): features, the SVM protocol and
its Newton solver, low-shot, one network's side, the context experiment (Table 1), and the
two stages ``classify_original`` (:mod:`.original`) and ``classify`` (:mod:`.stage`)."""
