"""The install survived the ultralytics / opencv-contrib conflict (REFERENCE.md section 5)."""

import cv2


def test_edgeboxes_exists_after_ultralytics_install():
    import ultralytics  # noqa: F401  (importing it must not break cv2's contrib modules)

    eb = cv2.ximgproc.createEdgeBoxes()
    eb.setMaxBoxes(5)
    assert eb.getMaxBoxes() == 5


def test_dvc_analytics_and_updates_off():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / ".dvc" / "config").read_text()
    assert "analytics = false" in text
    assert "check_update = false" in text
