"""The embedded dataset: generated scenes in exact PASCAL VOC layout (stage ``scenes``).

No annotated real dataset loads offline, so the project draws its own. The rules are
fixed from the principles in docs/scenes.md (REFERENCE.md section 7), never tuned
against evaluation results:

* context: each class lives in a scene type and at a place relative to other objects
  (a wheel under a car, plates in a row on a table, a sun beside clouds high in the
  sky), so a patch predicts what lies around it and where;
* nuisance: colour, texture, size, rotation, blur, noise, occlusion, clutter and JPEG
  quality are drawn independently per object (or per image), so they cannot be
  predicted from a neighbour and are prominent in ImageNet features;
* look-alikes: sun, ball, plate and wheel are the same textured disc; only a detail
  drawn with probability ``cue_probability`` (rays, segments, rim, tyre) and their
  context tell them apart, so a crop classifier is not saturated.

Every image ``k`` draws from its own stream ``SeedSequence([seed, k])``: the same
seed gives byte-identical JPEGs and XML files, independent of the split sizes.

The package by concern:

* :mod:`~pipeline.data.scenes.items`: the :class:`Item` to draw, the disc look-alikes
  and the random helpers every rule shares;
* :mod:`~pipeline.data.scenes.layouts`: the scene types and their placement rules,
  out-of-context objects included;
* :mod:`~pipeline.data.scenes.glyphs`: the masks and colours of each kind of glyph;
* :mod:`~pipeline.data.scenes.render`: texture, rotation, blur, clutter, occluders,
  lighting and noise, and the annotation of what stays visible (:func:`render_scene`);
* :mod:`~pipeline.data.scenes.writer`: the VOC files, the atomic dataset write
  (:func:`generate_scenes`) and the DVC stage function (:func:`run_scenes`).
"""

from pipeline.data.scenes.glyphs import GLYPHS, _SafeDraw
from pipeline.data.scenes.items import ROUND_CLASSES, Item
from pipeline.data.scenes.layouts import (
    FREE_SIZE,
    LAYOUTS,
    SCENE_TYPES,
    SCENE_WEIGHTS,
    _out_of_context,
)
from pipeline.data.scenes.render import (
    MIN_VISIBLE_PIXELS,
    SceneObject,
    _render_item,
    render_scene,
)
from pipeline.data.scenes.writer import (
    SPLITS,
    annotation_xml,
    generate_scenes,
    split_ids,
    run_scenes,
)

__all__ = [
    "FREE_SIZE",
    "GLYPHS",
    "LAYOUTS",
    "MIN_VISIBLE_PIXELS",
    "ROUND_CLASSES",
    "SCENE_TYPES",
    "SCENE_WEIGHTS",
    "SPLITS",
    "Item",
    "SceneObject",
    "_SafeDraw",
    "_out_of_context",
    "_render_item",
    "annotation_xml",
    "generate_scenes",
    "render_scene",
    "split_ids",
    "run_scenes",
]
