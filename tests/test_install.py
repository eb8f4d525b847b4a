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


def test_pyproject_uses_no_deprecated_setuptools_config():
    """`pip install -e .` printed setuptools' "`project.license` as a TOML table is
    deprecated" four times; the project's own metadata must build without such warnings."""
    import warnings
    from pathlib import Path

    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    root = Path(__file__).resolve().parent.parent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dist = apply_configuration(Distribution(), root / "pyproject.toml")
    assert dist.get_name() == "scn-pipeline"
    assert dist.metadata.license_expression == "MIT"
