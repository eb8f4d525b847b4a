"""Fast R-CNN detection (paper section 4.5): the detector, VOC detection AP, one network's
side, and the two stages ``detect_original`` (:mod:`.original`) and ``detect`` (:mod:`.stage`)."""
