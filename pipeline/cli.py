"""The ``scn`` command line: one command per stage, plus ``inspect`` and ``show``."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from pipeline.config import ConfigError
from pipeline.errors import DataError, TooManySkipped
from pipeline.runner import STAGE_NAMES, run_stage, setup_logging


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def main(verbose: bool) -> None:
    """Spatial Context Networks pipeline."""
    setup_logging(logging.DEBUG if verbose else logging.INFO)


def _stage_command(name: str) -> click.Command:
    @click.command(name=name, help=f"Run the {name!r} stage (runs stages/{name}.py as DVC does).")
    @click.option("--params", default="params.yaml", show_default=True, type=click.Path())
    def command(params: str) -> None:
        try:
            run_stage(name, params)
        except (ConfigError, DataError, TooManySkipped) as err:
            raise click.ClickException(str(err)) from None

    return command


for _name in STAGE_NAMES:
    main.add_command(_stage_command(_name))


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--stats/--no-stats", default=True, help="feature statistics of float arrays")
def inspect(path: Path, stats: bool) -> None:
    """Summarise an artifact: HDF5 file, JSON, checkpoint, CSV, or VOC folder."""
    from pipeline.inspect import summarise

    try:
        click.echo(summarise(path, stats=stats))
    except (DataError, ValueError) as err:
        raise click.ClickException(str(err)) from None


class _ShowGroup(click.Group):
    """``scn show IMAGE_ID`` (an image) or ``scn show pairs ...`` (a pair of patches)."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["image", *args]
        return super().resolve_command(ctx, args)


@main.group(cls=_ShowGroup)
def show() -> None:
    """Render an image with its boxes, or a pair of patches with its offset, to PNG."""


@show.command("image")
@click.argument("image_id")
@click.option("--split", default="train", show_default=True)
@click.option("--params", default="params.yaml", show_default=True, type=click.Path())
@click.option(
    "--proposals",
    "proposals_file",
    type=click.Path(path_type=Path),
    default=None,
    help="also draw the boxes of this proposals HDF5 file for the image",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="output PNG (default: <image_id>.png)",
)
def show_image(
    image_id: str, split: str, params: str, proposals_file: Path | None, out: Path | None
) -> None:
    """Render IMAGE_ID with its ground-truth boxes (and proposals) to PNG."""
    from pipeline.data.voc import open_split
    from pipeline.params import load_params
    from pipeline.visualize import render_boxes

    try:
        p = load_params(params)
        ds = open_split(p.dataset_ref, split, check_images=False)
        out = out or Path(f"{image_id}.png")
        render_boxes(ds, image_id, out, proposals_file=proposals_file)
    except (ConfigError, DataError, KeyError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(str(out))


@show.command("pairs")
@click.argument("pairs_file", type=click.Path(exists=True, path_type=Path))
@click.option("--index", default=0, show_default=True, help="which pair of the manifest")
@click.option("--split", default=None, help="dataset split (default: the file's own)")
@click.option("--params", default="params.yaml", show_default=True, type=click.Path())
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="output PNG (default: pair_<index>.png)",
)
def show_pairs(
    pairs_file: Path, index: int, split: str | None, params: str, out: Path | None
) -> None:
    """Render pair INDEX of a pairs manifest: both boxes and the offset vector."""
    import h5py

    from pipeline.data.voc import open_split
    from pipeline.params import load_params
    from pipeline.visualize import render_pair

    try:
        p = load_params(params)
        if split is None:
            with h5py.File(pairs_file, "r") as fh:
                split = str(fh.attrs.get("split", pairs_file.stem))
        ds = open_split(p.dataset_ref, split, check_images=False)
        out = out or Path(f"pair_{index}.png")
        render_pair(ds, pairs_file, index, out)
    except (ConfigError, DataError, KeyError, OSError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(str(out))
