"""Model cards: the README.md written into every model folder (source, licence, metrics, use and limits).

The reported metrics are the paper's (Li et al., 2025: Table 2 for EarthReason, Table 3 for RRSIS-D),
copied for the checkpoints trained on those sets; `georeason eval` measures a folder itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from georeason.config import SegEarthConfig

PAPER = "Li et al., SegEarth-R1: Geospatial Pixel Reasoning via Large Language Model, 2025"
# (metric, validation, test) as printed in the paper; cIoU is the paper's oIoU, gIoU its mIoU.
REPORTED = {
    "EarthReason": ("Table 2 (geospatial pixel reasoning, EarthReason)",
                    [("cIoU", "64.13", "68.25"), ("gIoU", "68.60", "70.75")]),
    "RRSIS-D": ("Table 3 (referring segmentation, RRSIS-D)",
                [("P@0.5", "78.62", "76.96"), ("cIoU", "78.92", "78.01"), ("gIoU", "67.56", "66.40")]),
}


@dataclass
class Provenance:
    """Where a model folder's weights came from, for its card."""

    source: str  # hub id or folder of the original weights
    how: str  # one paragraph: how this folder was produced from the source
    revision: str | None = None  # the hub commit the weights were read at
    licence: str | None = None  # the source's licence identifier, when it states one
    licence_note: str = ("not stated by the source; check the terms of the source weights before using or "
                         "redistributing this folder")


def reported_metrics(source: str) -> tuple[str, list[tuple[str, str, str]]] | None:
    """The paper's numbers for a checkpoint named after its training set, else None."""
    name = source.lower().replace("_", "-")
    for dataset, reported in REPORTED.items():
        if dataset.lower() in name or (dataset == "RRSIS-D" and "rrsis" in name):
            return reported
    return None


def model_card(config: SegEarthConfig, provenance: Provenance | None = None) -> str:
    """README.md text: front matter (huggingface_hub's ModelCardData) and the sections of the card."""
    from huggingface_hub import ModelCardData

    llm = config.llm.source or "built from config.json"
    if provenance is None:
        provenance = Provenance(
            source=f"preset `{config.preset}`",
            how=("Written by georeason's `save_pretrained`: a model trained with `georeason train` (its recipe, "
                 "when present, is `train_recipe.json` beside this card) or initialised with `georeason init`. "
                 f"Language model weights: {llm}."),
            licence_note=f"that of the weights it started from (language model: {llm})")
    hub_source = "/" in provenance.source and not provenance.source.startswith(("/", ".", "~"))
    data = ModelCardData(license=provenance.licence, library_name="georeason",
                         tags=["remote-sensing", "image-segmentation", "segearth-r1", "geospatial-pixel-reasoning"],
                         base_model=provenance.source if hub_source and provenance.revision else None)
    reported = reported_metrics(provenance.source)
    if reported is None:
        metrics = ["The paper reports no figures for these weights. Measure them with `georeason eval --model "
                   "THIS_FOLDER --data DATASET` (docs/eval.md)."]
    else:
        table, rows = reported
        metrics = [f"As reported by the authors ({PAPER}, {table}); not re-measured by georeason:", "",
                   "| metric | val | test |", "|---|---|---|", *[f"| {m} | {v} | {t} |" for m, v, t in rows]]
    revision = f" at commit `{provenance.revision}`" if provenance.revision else ""
    encoder = []
    if config.encoder.backbone != "swin":
        from georeason.model.encoder import PRETRAINED_TRUNKS

        trunk_source = PRETRAINED_TRUNKS[config.encoder.backbone][0]
        encoder = [f"Image encoder: {trunk_source.WEIGHTS_PROVENANCE}. It is frozen; only the 1x1 adapter after it "
                   "was trained.", ""]
    licence = f"`{provenance.licence}` (as the source states it)" if provenance.licence else provenance.licence_note
    size = config.image_size
    lines = [
        "---", data.to_yaml(), "---", "",
        f"# SegEarth-R1 (georeason, preset `{config.preset}`)", "",
        "Geospatial pixel reasoning: an optical remote-sensing image and a question in, the mask of the region "
        f"that answers it and a short text answer out ({PAPER}).", "",
        "## Source", "", f"Weights from {provenance.source}{revision}.", "", provenance.how, "", *encoder,
        "## Licence", "",
        f"{licence[0].upper()}{licence[1:]}. The georeason code that reads this folder is Apache-2.0."
        + (f" The image encoder's weights are {trunk_source.WEIGHTS_LICENCE} (see Source)." if encoder else ""), "",
        "## Reported metrics", "", *metrics, "",
        "## Preprocessing", "",
        f"RGB, long side resized to {size} px (bilinear), centred zero padding to {size}x{size}, then normalised "
        f"with mean {config.pixel_mean} and std {config.pixel_std} (0-255 scale); masks come back at the "
        "original size (docs/data.md). georeason reads 8/16-bit, float and multi-band rasters and stretches them "
        "to 8-bit first.", "",
        "## Use", "",
        "```bash", "georeason predict --model THIS_FOLDER_OR_HUB_ID scene.tif --question \"...\" --out pred", "```",
        "", "Python: `GeoReasoner.from_pretrained(...)` (docs/python_api.md).", "",
        "## Intended use and limits", "",
        "Research and mapping support on optical aerial and satellite RGB images similar to the training data "
        "(EarthReason: Million-AID and fMoW scenes; RRSIS-D: referring expressions on optical scenes). Not "
        "validated on SAR, multispectral band combinations, night or oblique imagery. Masks are model outputs, "
        "not surveyed boundaries: check them before decisions that matter. Text answers can be wrong or "
        "unrelated to the image. Questions are English.", "",
    ]
    return "\n".join(lines)
