"""The main job: one image in, one printable mesh out.

>>> from recon_core.io.image import load_picture
>>> from recon_core.io.inference import Reconstructor
>>> rec = Reconstructor.from_file()          # the shipped default model
>>> rgb, alpha, notes = load_picture("chair.png")   # or load_picture("photo.jpg", mask="photo_mask.png")
>>> result = rec.reconstruct(rgb, alpha, height_mm=120, upright=True)   # stood on its base, as recon-mesh does
>>> from recon_core.io.export import export_mesh
>>> export_mesh(result.verts, result.faces, "chair.stl", millimetres=True)

``upright`` is off by default here (the evaluation scores the shape as the picture's camera saw it); recon-mesh and
the add-on stand it on its base unless asked not to.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from recon_core.io.image import ImageError
from recon_core.io.notes import likelihood_text
from recon_core.io.notes import mm as mm_text
from recon_core.io.notes import share as share_text
from recon_core.io.notes import thin_wall_figures
from recon_core.io.weights import load_model
from recon_core.mesh.camera import (FLAT_BASE_TURN, VIEW_TO_OUTPUT, Camera, base_turn, picture_camera, rigid_motion,
                                    seen_camera, settle_on_base, stand_upright)
from recon_core.mesh.detail import DEFAULT_DETAIL, DETAIL_VERTICES
from recon_core.mesh.printable import (CLOSED_MANIFOLD, PrintableReport, check_printable, signed_volume,
                                       topology_defects)
from recon_core.mesh.repair import RepairLog, make_printable
from recon_core.mesh.thickness import THIN_WALL_MM, thin_walls, worth_noting
from recon_core.mesh.threads import thread_map
from recon_core.network.categories import CATEGORIES, category_by_name
from recon_core.network.config import VERTEX_SCHEDULES
from recon_core.network.crop import (SMALL_OBJECT_SIDE, cut_sides, object_mask, object_side, prepare_image,
                                     separate_parts, uncrop_mask)
from recon_core.network.encoder import cpu_has_native_bf16
from recon_core.network.retrieval import embed_image

__all__ = ["Reconstruction", "Reconstructor"]

log = logging.getLogger(__name__)

SMOOTH_ITERATIONS = 10
"""Taubin (volume-preserving) smoothing iterations applied after repair; and to a shape bank's solid decimated to the
medium detail (:func:`bank_smoothing_iterations`)."""
SMOOTH_MAX_MOVE = 0.008
"""The smoothing moves a shape bank's vertex at most this share of the mesh's bounding-box diagonal: half a cell of the
bank's 64-cell grid over ``2 * 0.55`` (:data:`recon_core.mesh.volume.GRID_BOUND`), the diagonal ~1."""
SMOOTH_REVERTS = 2
"""How many times a shape bank's smoothed mesh whose faces meet gets its unsmoothed places back around them
(:meth:`Reconstructor._bank_result`) before it goes on unsmoothed."""
SMOOTH_REVERT_RINGS = 2
"""... around them: the faulty faces' vertices and their neighbours this many edges away."""
BANK_DECIMATION_LADDER = 16
"""A shape bank's solid that cannot be decimated to the detail's size and mended printable is decimated to twice
that, 4 times, ... up to this many times it, before it is written whole (:meth:`Reconstructor._bank_result`). At 4,
until the forty-fifth session, a photo's car at Low detail (about 1,284 faces) came out whole, 54,644 faces, heavier
than at Medium (6,060); at 16 it is 10,926 faces, in 3.7 s against 4.3 s."""
PROGRESS = {"finder": ("finding the object", 0.1), "network": ("reading the picture", 0.15),
            "bank": ("fitting known shapes to the outline", 0.25), "meshes": (0.4, 0.9)}
"""The stages :meth:`Reconstructor.reconstruct_candidates` reports, with the fraction of the work done as each starts
(the meshes: from the first to the last, in equal steps; the fit of ten candidates and each mesh take about as long
as each other, the network less)."""
MENDED_FACES_NOTE = 1.5
"""A decimation to the detail's size whose mends left more than this many times its faces gets a note saying so
(:meth:`Reconstructor._bank_result`): each mend keeps a region at the solid's own resolution."""


def bank_smoothing_iterations(faces: int) -> int:
    """Taubin iterations for a shape bank's solid decimated to a detail of ``faces`` faces (the detail asked for,
    whatever its mends or a larger size reached instead add): :data:`SMOOTH_ITERATIONS` at the medium detail's
    ``2 * 2,562``, in proportion to the face count at others, so that every detail is smoothed over about
    the same length of the object (a pass spreads a vertex over its neighbours, an edge away, and an edge's length
    goes as ``1 / sqrt(faces)``; ``n`` passes spread it over ``sqrt(n)`` edges). None (0) below half the medium
    detail's faces: a mesh that coarse (the low detail) shows no terrace, and smoothing it made thin parts meet (on 60
    validation pictures, before the smoothing was held to half a cell and given back where faces met, 26 of the low
    detail's decimations could not be mended smoothed)."""
    medium = 2 * DETAIL_VERTICES[DEFAULT_DETAIL]
    return 0 if 2 * faces < medium else max(1, round(SMOOTH_ITERATIONS * faces / medium))


SNAP_QUERY_POINTS = 256
"""About this many of the reconstruction's vertices (every k-th) are compared with the bank's shapes."""
MIN_HEIGHT_MM = 0.1
"""Smallest ``height_mm`` accepted: about a printer's finest layer (below it float32 vertices lose the mesh)."""
MAX_HEIGHT_MM = 100_000.0
"""Largest ``height_mm`` accepted (100 m): beyond any printer, and far below where float32 vertices lose the mesh."""
_STAND_INS = {"hull": "its convex hull", "box": "its bounding box"}
"""The repair's last resorts (:attr:`recon_core.mesh.repair.RepairLog.path`) that stand in for a reconstruction."""
NOT_UPRIGHT_NOTE = ("the mesh has no pose to stand it on its base by (the network's own mesh: a model without a shape "
                    "bank, or no solid of the bank could be made): it is turned as the picture's camera saw it (level "
                    "it in your modeller if it leans)")
"""The note of a mesh asked to stand upright (``upright``) that has no pose to do it by."""
UPRIGHT_MAX_TURN = 45.0
"""Degrees: a shape whose standing would turn it by more is left as the picture's camera saw it, with a note. The
renders' cameras look from -10° to 40° above, and the fit turns a shape by up to 15° more. On the 123 validation
pictures (`runs/s40/upright_val.py`) the 9 turned by more than 40° came out of proportion (height over diagonal,
against the true model's) worse stood than as seen in 6 (median log error 0.296 against 0.147); in the median,
standing was better for turns of 15-30° (0.088 against 0.175), about even for 30-40°, and worse below 15° (0.142
against 0.108), where it turns little. With the cap: median 0.123 and mean 0.215 (from the log's rows), against 0.128
and 0.230 standing all, and 0.145 and 0.264 as seen."""
FIT_TEMPERATURE = 0.05
"""Candidates of a shape-bank model: confidence = softmax(silhouette IoU / this) among them (0.05 IoU apart: e times)."""
UNSURE_CATEGORY = 0.45
"""A predicted category whose (calibrated) probability is below this gets a note that the model is unsure what the
object is. Chosen on the 123 validation pictures (`runs/s40/unsure.py`): 12 of them (9.8 %) fall below it, 4 of those
rightly named (83.7 % in all, 89.2 % above it); of 62 pictures of the held-out categories, which the model cannot
name, 10 (16 %) fall below it: a low probability tells an unsure naming, not an object of no known category."""
CATEGORY_VOTE_FLOOR = 0.1
"""``config.category_bank_weight``: added to every category's vote before its logarithm, so that a category no
candidate is of is held back, not ruled out (chosen on the validation split with the weight; see the README)."""


def fuse_category_scores(logits: np.ndarray, votes: np.ndarray | None, weight: float) -> np.ndarray:
    """(K,) category scores: ``log softmax(logits) + weight * log(CATEGORY_VOTE_FLOOR + votes)``.

    Args:
        logits: (K,) the category head's (or branch's, ``config.category_branch``) logits.
        votes: (K,) the shape bank's candidates' shares (:meth:`recon_core.network.retrieval.ShapeBank.category_votes`),
            or None (the head alone: ``log softmax(logits)``, whose softmax over a temperature is the logits').
        weight: ``config.category_bank_weight``.
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max()
    scores = z - np.log(np.exp(z).sum())
    if votes is not None and weight > 0:
        scores = scores + weight * np.log(CATEGORY_VOTE_FLOOR + np.asarray(votes, dtype=np.float64))
    return scores


MIN_MASK_SHARE = 0.005
"""A picture without transparency whose predicted mask (``coarse="occupancy"`` models) is above 0.5 on less
than this share of the crop has no object to reconstruct: it is refused with an ``ImageError``."""


@dataclass
class Reconstruction:
    """A reconstructed mesh in the output frame (+Y up, camera on +Z; see recon_core.mesh.camera).

    Attributes:
        verts: (V, 3) float64 vertices, exactly representable in float32 (as STL and Blender store them); units: the data's (bounding-box diagonal ~1) or mm with ``height_mm``.
        faces: (F, 3) int64 triangles, outward-facing.
        category: name of the category used (given or predicted).
        category_probs: (13,) float32 probabilities, in ``CATEGORIES`` order: the category head's, or its branch's
            (``config.category_branch``) (``config.category_temperature``), or with the shape bank's votes
            (``config.category_bank_weight`` > 0 and no category given)
            ``softmax(scores / config.category_vote_temperature)`` of :func:`fuse_category_scores`.
        report: the printable check of the final mesh.
        repair: what the repair step did (its log).
        timings: seconds per stage.
        notes: human-readable notes (image conversions, untrained model, ...).
        mask: (H, W) float32 in [0, 1], the object's mask in the picture's (decoded) pixels: the alpha when
            the picture has one; else the object finder's mask (:mod:`recon_core.network.finder`) when there is
            a finder and it found the object; else a ``coarse="occupancy"`` model's predicted mask mapped back from the
            crop (0 outside it), the mask its mesh was carved by; else (a model without a mask head) the
            pixels found against the border colour, all ones when the whole picture was taken
            (:func:`recon_core.network.crop.object_mask`).
        confidence: for a shape-bank model, how well this candidate's silhouette covers the picture's compared
            with the others' (``config.bank_fit_candidates`` > 0: the softmax of the silhouette IoUs over
            :data:`FIT_TEMPERATURE` among the fitted candidates, :meth:`Reconstructor._fitted`), or else how
            strongly the picture and the network's mesh point at its training shape (the softmax of minus the
            bank's scores over the best view of every model among its candidates,
            :meth:`recon_core.network.retrieval.ShapeBank.ranked`); either way the candidates' confidences fall
            in rank order and sum to at most 1. None for other models.
        likelihood: :attr:`confidence` in words against the likeliest of the candidates made with it
            (:func:`recon_core.io.notes.likelihood_text`: "the likeliest", "about as likely", ...); "" without a
            confidence.
        mask_unsure: the object finder found :attr:`mask` and is unsure of it (the notes then ask the user to check it).
        thin_faces: (K,) int64 indices of the faces whose wall is thinner than :data:`THIN_WALL_MM` when the thin-wall
            note was given (a height asked; :func:`recon_core.mesh.thickness.worth_noting`),
            for a front end to mark; None otherwise. Indices into :attr:`faces` as returned: set last, after every
            change of the faces (:meth:`Reconstructor._thin_walls`).
        thin_share: the share of the surface's area those faces cover (the thin-wall note's "% of the surface"), when
            :attr:`thin_faces` is set; None otherwise.
        camera: for a shape-bank model's mesh, the picture's camera as the mesh was fitted to it, in the mesh's frame
            and units (the world of :class:`recon_core.mesh.camera.Camera`; :func:`recon_core.mesh.camera.picture_camera`):
            through it the mesh lies on the picture's object, so a front end can show the picture behind it. None for
            other meshes.
    """

    verts: np.ndarray
    faces: np.ndarray
    category: str
    category_probs: np.ndarray
    report: PrintableReport
    repair: Any
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    mask: np.ndarray | None = None
    confidence: float | None = None
    likelihood: str = ""
    mask_unsure: bool = False
    thin_faces: np.ndarray | None = None
    thin_share: float | None = None
    camera: Camera | None = None


class Snapped(NamedTuple):
    """A shape-bank solid placed for the picture (:meth:`Reconstructor._snap`)."""

    verts: np.ndarray
    """(V, 3) float64 output-frame vertices."""
    faces: np.ndarray
    """(F, 3) int64 triangles."""
    motion: tuple[np.ndarray, np.ndarray] | None
    """``(M (3, 3), t (3,))``: how the mesh moved from as the picture's camera saw it (stood upright and settled,
    :func:`recon_core.mesh.camera.rigid_motion`); None when it did not."""


def _float32_exact(verts: np.ndarray) -> np.ndarray:
    """(V, 3) float64 vertices rounded to the nearest float32 values."""
    return verts.astype(np.float32).astype(np.float64)


_MASK_FIX = "recon-mesh --mask MASK.png; the add-on's Object: Mask Image"
"""How a user gives the object's outline, as the sentences of a picture without a found object name it."""


def _to_height(verts: np.ndarray, height_mm: float) -> np.ndarray:
    """(V, 3) vertices scaled evenly so that their height (Y extent) is ``height_mm``."""
    return verts * (height_mm / max(float(np.ptp(verts[:, 1])), 1e-12))


def _filled_note(pockets: int) -> str:
    """The note of an output whose ``pockets`` sealed pockets were filled (``solid=True``; 0: it had none)."""
    if not pockets:
        return "no sealed hollow pocket to fill inside the solid (--solid, the add-on's Fill Hollow Pockets)"
    return f"filled {pockets} sealed hollow pocket{'s' if pockets > 1 else ''} inside the solid"


def _pockets_note(pockets: int, hollow: float) -> str:
    """The note of an output that keeps ``pockets`` (> 0) sealed hollow pockets, ``hollow`` the share of its filled
    volume they take (``solid=False``)."""
    them = "them" if pockets > 1 else "it"  # "1 sealed hollow pocket ...: ... prints it hollow"
    return (f"the mesh holds {pockets} sealed hollow pocket{'s' if pockets > 1 else ''} ({share_text(hollow)} of its "
            f"volume): a filament printer prints {them} hollow; resin and powder printers trap material in {them}, and "
            f"--solid (the add-on's Fill Hollow Pockets) fills {them}")


def _thin_note(thin: float, surface: float, median: float, filled: float | None = None) -> str:
    """The note of an output whose walls thinner than :data:`THIN_WALL_MM` cover ``thin`` mm² of its ``surface`` mm²,
    ``median`` mm thick in the median there; ``filled``: the thin area left once its sealed pockets are filled, when
    most of it is their shells."""
    pockets = ("" if filled is None else f"; most of them are the shells of its sealed pockets, and filled (--solid, "
               f"the add-on's Fill Hollow Pockets) {mm_text(filled)} mm² are left")
    return (f"{thin_wall_figures(THIN_WALL_MM, thin, surface, median)}{pockets}): thin walls print weak and break easily, "
            "and a filament printer may leave upright ones out; print it taller (--height-mm, the add-on's Height) "
            "or thicken them in your modeller (the add-on marks them)")


def _percent(probability: float) -> str:
    """A probability in whole percent, rounded down, so that one below :data:`UNSURE_CATEGORY` never reads as it."""
    return f"{math.floor(100.0 * probability + 1e-9):.0f}%"


def _check_arrays(rgb, alpha, source: str) -> None:
    """Refuse in one sentence what :meth:`Reconstructor.reconstruct_candidates` cannot take as its picture: ``rgb``
    not a (H, W, 3) uint8 array (a PIL image or a path: read it with :func:`recon_core.io.image.load_picture`),
    ``alpha`` not None nor a (H, W) uint8 array of ``rgb``'s size (a float mask, a third axis), or (ImageError) all
    zero, as :func:`load_picture` refuses such a file (it gave a made-up shape, "printable"), or a 0/1 mask. These
    went on to fail inside Pillow or numpy, or gave that shape without a word. A faint alpha is taken, as
    :func:`load_picture` gives one where reducing a large picture averaged a hairline's."""
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"rgb must be a numpy array (H, W, 3) uint8, got a {type(rgb).__name__}: read a picture file "
                         "with recon_core.io.image.load_picture(path).")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be a (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}.")
    if alpha is None:
        return
    if not isinstance(alpha, np.ndarray) or alpha.dtype != np.uint8 or alpha.shape != rgb.shape[:2]:
        got = (f"{alpha.shape} {alpha.dtype}" if isinstance(alpha, np.ndarray) else f"a {type(alpha).__name__}")
        raise ValueError(f"alpha must be None or a {rgb.shape[:2]} uint8 array (0 transparent to 255 opaque, rgb's "
                         f"height and width), got {got}.")
    peak = int(alpha.max())
    if peak == 0:
        raise ImageError(f"The alpha of {source} is fully transparent: there is no object to reconstruct.")
    if peak == 1 and not (alpha > 0).all():  # a 0/1 mask; a reduced picture's faint alpha is not so two-valued
        raise ImageError(f"The alpha of {source} holds only 0 and 1 (a 0/1 mask): give it as 0 and 255 (mask * 255).")


@contextmanager
def _timed(timings: dict[str, float], name: str):
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


class Reconstructor:
    """A loaded model, ready to reconstruct images. Several threads may call it at once: the one library that kept a
    global (the decimation's, :mod:`recon_core.mesh.simplify`) is called under a lock."""

    def __init__(self, model, metadata: dict[str, Any], finder=None, *, finder_file=None):
        self.model = model.eval()
        self.metadata = metadata
        self.trained = bool(metadata.get("trained", False))
        self._finder = finder
        self._finder_file = finder_file  # loaded on first use: pictures with alpha never pay for it
        self._bases: dict[int, bool] = {}  # shape bank index -> whether it rests on a flat base (_flat_based)

    @property
    def finder(self):
        """The :class:`recon_core.network.finder.ObjectFinder` that finds the object in pictures without
        transparency, or None (then the border-colour rule of :func:`recon_core.network.crop.object_mask`).

        A finder file given to the constructor (``finder_file``: True for the shipped one, or a path)
        is loaded here, the first time it is asked for (``WeightsError`` when it cannot be used)."""
        if self._finder is None and self._finder_file is not None:
            from recon_core.io.weights import load_finder

            self._finder = load_finder(None if self._finder_file is True else self._finder_file)
            self._finder_file = None
        return self._finder

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None, device: str = "cpu",
                  finder: str | os.PathLike | None | bool = True,
                  overrides: dict[str, Any] | None = None) -> "Reconstructor":
        """Load a model (``None``: the shipped default). Raises ``WeightsError`` with a clear message.

        ``finder``: True, the shipped object finder when its files are there
        (:func:`recon_core.io.weights.default_finder_path`); a path, that finder; False, none. It is loaded
        with the first picture without alpha (:attr:`finder`). ``overrides``: config fields set before the network
        is built (:func:`recon_core.io.weights.load_model`).
        """
        model, meta = load_model(path, device=device, overrides=overrides)
        # Inference only from here: fold the backbone norms into the convolutions and lay the encoder out for
        # oneDNN (channels-last but for its deepest stages); outputs equal up to float rounding. On a CPU that
        # computes bfloat16 in hardware the encoder runs in it (~40 % of its time saved; the rest stays float32).
        model.encoder.fold_batchnorm()
        model.encoder.inference_layout()
        if torch.device(device).type == "cpu" and cpu_has_native_bf16():
            model.encoder.inference_dtype(torch.bfloat16)
        return cls(model, meta, finder_file=None if finder is False else finder)

    @torch.inference_mode()
    def reconstruct(
        self,
        rgb: np.ndarray,
        alpha: np.ndarray | None = None,
        category: str | None = None,
        vertices: int | None = None,
        height_mm: float | None = None,
        smooth: bool = True,
        source: str = "the picture",
        solid: bool = False,
        upright: bool = False,
    ) -> Reconstruction:
        """Reconstruct one decoded image.

        Args:
            rgb: (H, W, 3) uint8.
            alpha: (H, W) uint8 object mask, or None.
            category: category name overriding the predicted one, or None for automatic.
            vertices: output vertex count (162, 642, 2562 or 10242, :data:`recon_core.network.config.VERTEX_SCHEDULES`;
                the model's default if None; the details of recon-mesh are 642, 2562 and 10242). A shape-bank model
                chooses its shape the same way at every count and decimates its solid to about twice as many faces.
            height_mm: scale the mesh so its height (Y extent) is this many millimetres.
            smooth: volume-preserving (Taubin) smoothing: of the network's own mesh after repair; of a shape-bank
                model's solid (blurred before meshing by its config's ``bank_smoothing``) after its decimation.
            source: how error messages name the picture (its path).
            solid: fill the sealed hollow pockets inside the mesh (:func:`recon_core.mesh.repair.fill_cavities`:
                the shape bank's solids keep each closed part's walls, so most outputs hold a few; resin and
                powder printers trap material in them), with a note; off by default, as the evaluation protocol
                scores those inner walls (see the README).
            upright: stand a shape-bank model's mesh on its base: turned by the least angle that makes its training
                shape's own up (+Y, as its fitted pose turns it) the output frame's +Y, about its box's centre
                (:func:`recon_core.mesh.camera.stand_upright`), then, when that shape rests on a flat base, settled on
                it (:func:`recon_core.mesh.camera.settle_on_base`, at most 20° more), before its decimation and check;
                the picture's camera looked at the object from above or below, so as seen it leans. A shape that would
                turn by more than :data:`UPRIGHT_MAX_TURN` stays as seen, with a note. Off by default: the evaluation
                scores the mesh as the picture's camera sees it. A model without a shape bank has no pose to do it by:
                its mesh stays as seen, with a note.

        Raises:
            ImageError: no object is found in a picture without transparency (the object finder's and the border
                colour's, :meth:`_find_object`; a ``coarse="occupancy"`` model's mask, :data:`MIN_MASK_SHARE`).
            ValueError: ``height_mm`` or ``vertices`` out of range (:meth:`reconstruct_candidates`).
        """
        return self.reconstruct_candidates(rgb, alpha, 1, category, vertices, height_mm, smooth, source, solid,
                                           upright=upright)[0]

    @torch.inference_mode()
    def reconstruct_candidates(
        self,
        rgb: np.ndarray,
        alpha: np.ndarray | None = None,
        count: int = 3,
        category: str | None = None,
        vertices: int | None = None,
        height_mm: float | None = None,
        smooth: bool = True,
        source: str = "the picture",
        solid: bool = False,
        progress: Callable[[str, float], None] | None = None,
        upright: bool = False,
    ) -> list[Reconstruction]:
        """Up to ``count`` plausible meshes for one picture, the likeliest first (:attr:`Reconstruction.confidence`).

        A shape-bank model's candidates are the solids of the bank's best-ranked training models
        (:meth:`recon_core.network.retrieval.ShapeBank.ranked`), each posed to the picture's silhouette and
        the ``count`` that cover it best kept (:meth:`_fitted`; the bank's first ``count`` in their views' rotations
        when ``config.bank_fit_candidates`` is 0), each decimated to the detail and through the printable
        check; the first is :meth:`reconstruct`'s mesh. Other models give one mesh. They share one category: with
        ``config.category_bank_weight`` > 0 and none given, the one the fitted candidates vote for with the head
        (:func:`fuse_category_scores`; the mesh does not depend on it). The arguments are :meth:`reconstruct`'s, and
        ``progress(stage, fraction)``, called as each stage starts (:data:`PROGRESS`: finding the object, reading the
        picture, fitting the shape bank, then each candidate's mesh, ``fraction`` rising from 0.1 to 0.9); the meshes
        do not depend on it.

        Raises:
            ValueError: ``rgb`` or ``alpha`` not arrays of the shapes and types above (:func:`_check_arrays`);
                ``count`` below 1, or above 1 for a model without a shape bank; ``height_mm`` or ``vertices`` out of
                range; ``category`` not a name.
            ImageError: as :meth:`reconstruct`, and an ``alpha`` that shows nothing (as :func:`load_picture` refuses
                such a file).
        """
        _check_arrays(rgb, alpha, source)
        if category is not None and not isinstance(category, str):
            raise ValueError(f"category must be a category's name, e.g. 'chair', or None, got {category!r}.")
        if height_mm is not None and (isinstance(height_mm, (bool, np.bool_))
                                      or not isinstance(height_mm, numbers.Real)):  # numpy's numbers are (a column's)
            raise ValueError(f"height_mm must be a number of millimetres or None, got {height_mm!r}.")
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}.")
        if count > 1 and not self.banked:
            raise ValueError("This model gives one shape per picture; several candidates need a model with a "
                             "shape bank (the shipped default has one).")
        if height_mm is not None and not MIN_HEIGHT_MM <= height_mm <= MAX_HEIGHT_MM:  # NaN fails too
            raise ValueError(f"height_mm must be a number of millimetres from {MIN_HEIGHT_MM:g} to "
                             f"{MAX_HEIGHT_MM:,.0f}, got {height_mm}.")
        if vertices is not None and self.banked and vertices not in VERTEX_SCHEDULES:
            # the network (which checks it) runs at its own level: the detail only sizes the decimation
            raise ValueError(f"vertices must be one of {sorted(VERTEX_SCHEDULES)}, got {vertices}")
        timings: dict[str, float] = {}
        cat_index = None if category is None else CATEGORIES.index(category_by_name(category))
        found_by, unsure, given = None, False, alpha is not None
        report = progress or (lambda stage, fraction: None)
        if alpha is None and self.finder is not None:
            report(*PROGRESS["finder"])
            alpha, found_by, unsure = self._find_object(rgb, source, timings)
        results = self._reconstruct(rgb, alpha, cat_index, vertices, height_mm, smooth, source, timings, count,
                                    solid, report, upright)
        if height_mm is not None:  # at the size it prints, whatever made the mesh: its walls too thin for a printer
            for result in results:
                self._thin_walls(result, solid)
        parts = 0 if results[0].mask is None else separate_parts(results[0].mask)
        side = None if results[0].mask is None else object_side(results[0].mask)
        cut = [] if results[0].mask is None else cut_sides(results[0].mask)
        probs = np.asarray(results[0].category_probs, dtype=np.float64).ravel()
        top = np.argsort(-probs)[:2]
        unsure_category = category is None and len(probs) == len(CATEGORIES) and probs[top[0]] < UNSURE_CATEGORY
        unknown = cat_index is not None and self.banked and not bool((self.model.bank.shape_category == cat_index).any())
        for result in results:  # the picture's notes (its object, its category) before the mesh's own
            result.mask_unsure = unsure
            said: list[str] = []
            if found_by is not None:
                said.append(found_by)
            if unknown:  # --category keeps the bank to that category's shapes, and it has none: it was silent
                name = CATEGORIES[cat_index].name
                said.append(
                    f"the model holds no {name} shape (its training data had none), so --category {name} (the "
                    f"add-on's Category) cannot keep it to one: the shape is the nearest of all its shapes, and only "
                    f"the category printed is {name}")
            if unsure_category:
                said.append(
                    f"the model is unsure what the object is ({CATEGORIES[top[0]].name} {_percent(probs[top[0]])}, "
                    f"{CATEGORIES[top[1]].name} {_percent(probs[top[1]])}): it knows {len(CATEGORIES)} categories, "
                    "and its shape is the nearest it has of them; if the object is one of them, --category NAME (the "
                    "add-on's Category) names it")
            if parts > 1:
                said.append(
                    f"the object mask has {parts} separate sizeable parts: if the picture shows several "
                    "objects, the mesh is one shape fitted to all of them; to make one of them, crop the picture to "
                    "it or give a mask of it alone (--mask, the add-on's Object: Mask Image)")
            if side is not None and 0 < side < SMALL_OBJECT_SIDE:
                said.append(
                    f"the object is only {side} pixels across in the picture as read, so its shape is read from few "
                    "pixels: a picture in which it is larger (cropped closer around it) gives a surer fit")
            if cut:
                edges = " and ".join(cut) if len(cut) < 3 else ", ".join(cut[:-1]) + " and " + cut[-1]
                edges += " edge" + "s" * (len(cut) > 1)
                said.append(
                    f"the object touches the picture's {edges}: if it is cut there, the shape of what lies outside "
                    "the picture is guessed (a picture with the whole object in it gives a truer mesh)" if given else
                    f"the object mask that was found touches the picture's {edges}: either the object is cut by the "
                    "picture, and the shape of what lies outside it is guessed (a picture with the whole object in it "
                    "gives a truer mesh), or the mask took some of the background (look at it with recon-mesh "
                    "--save-mask or the add-on's Object Mask, and give a corrected one with --mask or Use This Mask)")
            result.notes[:0] = said
        return results

    @staticmethod
    def _thin_walls(result: Reconstruction, solid: bool) -> None:
        """Note the walls of ``result`` (in millimetres) thinner than :data:`THIN_WALL_MM` and mark their faces
        (:attr:`Reconstruction.thin_faces`) when they are worth a note (:func:`recon_core.mesh.thickness.worth_noting`:
        they cover ``THIN_WALL_AREA_MM2`` or ``THIN_WALL_SHARE`` of its surface). Where most of them are the shells of
        sealed pockets (kept without ``solid``), the note says that filling them leaves less (measured on the filled
        mesh)."""
        from recon_core.mesh.repair import fill_cavities, part_volumes

        if not result.report.finite:  # no walls to measure (the printable check says why)
            return
        with _timed(result.timings, "check"):
            thin = thin_walls(result.verts, result.faces, THIN_WALL_MM)
            noted = worth_noting(thin)
            filled = None
            # the pockets' shells: measured again filled, unless nearly all of it is thin anyway (a tiny print)
            if (noted and not solid and thin.area < 0.95 * thin.surface
                    and (part_volumes(result.verts, result.faces) < 0).any()):
                filled = thin_walls(*fill_cavities(result.verts, result.faces)[:2], THIN_WALL_MM).area
        if noted:
            result.thin_faces, result.thin_share = thin.faces, thin.area / thin.surface
            result.notes.append(_thin_note(thin.area, thin.surface, thin.median,
                                           filled if filled is not None and filled < 0.5 * thin.area else None))

    @staticmethod
    def _fill(result: Reconstruction, height_mm: float | None) -> None:
        """``result`` with its sealed pockets filled (:func:`recon_core.mesh.repair.fill_cavities`), checked again
        and noted; unchanged when it has none."""
        from recon_core.mesh.repair import fill_cavities

        with _timed(result.timings, "repair"):
            verts, faces, pockets = fill_cavities(result.verts, result.faces)
        if not pockets:
            result.notes.append(_filled_note(0))
            return
        with _timed(result.timings, "check"):
            result.report = check_printable(verts, faces, unit_scale_mm=None if height_mm is None else 1.0)
        result.verts, result.faces = verts, faces
        result.repair.note(f"filled {pockets} sealed hollow pocket(s)")
        result.notes.append(_filled_note(pockets))

    @property
    def banked(self) -> bool:
        """Whether the output is a shape bank's solid (a bank on an ico-sphere or template network)."""
        return getattr(self.model, "bank", None) is not None and getattr(self.model, "heads", None) is None

    @property
    def voting(self) -> bool:
        """Whether the shape bank's fitted candidates vote for the category reported (``config.category_bank_weight``
        > 0 on a banked model with ``config.bank_fit_candidates`` > 0)."""
        cfg = self.model.config
        return self.banked and cfg.category_bank_weight > 0 and cfg.bank_fit_candidates > 0

    def _find_object(self, rgb: np.ndarray, source: str, timings: dict[str, float]
                     ) -> tuple[np.ndarray | None, str, bool]:
        """The alpha that the finder gives a picture without one, a note saying so, and whether the finder is unsure of
        it (:func:`recon_core.network.finder.mask_confidence` below :data:`recon_core.network.finder.UNSURE_MASK`;
        then the note asks the user to check the mask and correct it). The alpha is fitted to the object's edges in the
        picture (:func:`recon_core.network.finder.fit_to_picture`: grown on a plain background, cut along the object's
        colours on a photograph, or the object in the middle cut where the finder's lay off it); the confidence is the
        finder's own, before that.

        When the finder sees no object, the border-colour rule (:func:`recon_core.network.crop.object_box`) is the
        fallback; when that finds none either, the picture is refused.

        Raises:
            ImageError: neither finds an object.
        """
        from recon_core.network.crop import border_object, differing_pixels, too_few_pixels
        from recon_core.network.finder import UNSURE_MASK, finder_alpha, fit_to_picture, mask_confidence

        with _timed(timings, "finder"):
            found = finder_alpha(self.finder, rgb, fit=False)
            confidence = 0.0 if found is None else mask_confidence(found)  # the finder's own, before fitting
            if found is not None:
                found = fit_to_picture(found, rgb)
            if found is not None and not (found > 127).any():  # no pixel even half sure (its second look kept none)
                found = None
        if found is not None:
            if confidence < UNSURE_MASK:
                return found, (f"object found by the object finder (no transparency), but it is unsure of the object "
                               f"(confidence {confidence:.2f}): check the mask it took (recon-mesh --save-mask, the "
                               "add-on's Object Mask) and give a corrected one (--mask, Use This Mask)"), True
            return found, "object found by the object finder (no transparency)", False
        fg = differing_pixels(rgb)  # once: the border-colour rule's object, and else why there is none
        if border_object(fg) is not None:
            return None, "the object finder saw no object: taken against the border colour instead", False
        if fg is not None and fg.any() and too_few_pixels(fg):  # a plain background and a speck: maybe the object
            h, w = fg.shape
            raise ImageError(f"No object found in {source}: only {int(fg.sum())} of its pixels (as read, {w} x {h}) "
                             "differ from its plain background, too few to take for an object. If the object is "
                             "that small, crop the picture closer around it; if it is larger but hardly differs from "
                             f"the background (dark on dark, white on white), give its outline as a mask ({_MASK_FIX}).")
        raise ImageError(f"No object found in {source}: neither the object finder nor the background colour "
                         "separates one from the background. Give a picture of one object on a plainer "
                         f"background, or with transparency, or give the object's outline as a mask ({_MASK_FIX}).")

    def _reconstruct(self, rgb: np.ndarray, alpha: np.ndarray | None, cat_index: int | None, vertices: int | None,
                     height_mm: float | None, smooth: bool, source: str, timings: dict[str, float], count: int,
                     solid: bool, report: Callable[[str, float], None], upright: bool = False) -> list[Reconstruction]:
        """:meth:`reconstruct_candidates` once the picture's alpha is settled; with ``solid`` every mesh's sealed
        pockets filled (a shape bank's solid before its decimation, :meth:`_bank_result`; other meshes as made,
        :meth:`_fill`); with ``upright`` a shape bank's meshes stood on their base (:meth:`_snap`); ``report(stage,
        fraction)`` told of each stage."""
        report(*PROGRESS["network"])
        with _timed(timings, "preprocess"):
            prepared = prepare_image(rgb, alpha, self.model.config.image_size)
        device = next(self.model.parameters()).device
        cat = None if cat_index is None else torch.tensor([cat_index], device=device)
        banked = self.banked
        images = prepared.image[None].to(device)
        with _timed(timings, "network"):
            # A shape-bank model's mesh only ranks the bank: it is made at the model's own level whatever the detail,
            # so that every detail gets the same shape (the detail sets the decimation's size).
            out = self.model(images, category=cat, vertices=None if banked else vertices)
        if getattr(self.model, "heads", None) is not None:
            result = self._reconstruct_occupancy(out, rgb, alpha, prepared, cat_index, vertices, height_mm, smooth,
                                                 timings, source)
            if result.mask is None:
                result.mask = object_mask(rgb, alpha)
            if solid:
                self._fill(result, height_mm)
            if upright:
                result.notes.append(NOT_UPRIGHT_NOTE)
            return [result]
        probs = self._category_probs(out.category_logits)
        used = CATEGORIES[cat_index if cat_index is not None else int(probs.argmax())].name
        if banked:
            mask = object_mask(rgb, alpha)
            report(*PROGRESS["bank"])
            with _timed(timings, "retrieval"):
                ranked, votes = self._candidates(rgb, alpha, out.verts[0], cat_index, mask, count,
                                                 vote=cat_index is None)
            if cat_index is None and votes is not None:
                probs = self._category_probs(out.category_logits, votes)  # the mesh stays the same
                used = CATEGORIES[int(probs.argmax())].name
            ranked = ranked[:count]
            results = []
            start, end = PROGRESS["meshes"]
            for index, (row, pose, confidence) in enumerate(ranked):
                report(f"making shape {index + 1} of {len(ranked)}" if len(ranked) > 1 else "making the mesh",
                       start + (end - start) * index / len(ranked))
                own = dict(timings)  # each candidate's timings: the shared stages, then its own
                turn = self._turn_to_stand(row, pose) if upright else 0.0
                with _timed(own, "retrieval"):
                    snapped = self._snap(row, pose, mask, upright and turn <= UPRIGHT_MAX_TURN)
                if snapped is None:
                    continue
                result = self._bank_result(snapped[:2], vertices, used, probs, height_mm, own, solid, smooth)
                result.confidence, result.mask = confidence, mask
                result.camera = self._camera(result, snapped, mask, height_mm)
                if turn > UPRIGHT_MAX_TURN:
                    # 45.04° is not "45°" nor "45.0°, more than the 45°": the figure only where it shows more
                    said = f"by {turn:.0f}°, " if round(turn) > UPRIGHT_MAX_TURN else "by "
                    result.notes.append(
                        f"not stood on its base: the shape chosen would turn {said}more than the "
                        f"{UPRIGHT_MAX_TURN:.0f}° a camera's look from above takes out (it may be another kind of "
                        "object than the picture's), so it is turned as the picture's camera saw it")
                results.append(result)
            for result in results:  # the first is the likeliest: the confidences fall in rank order
                result.likelihood = likelihood_text(result.confidence, results[0].confidence)
            if results:
                return results
            if vertices is not None and vertices != out.verts.shape[1]:  # the network's own mesh, at the detail
                with _timed(timings, "network"):
                    out = self.model(images, category=cat, vertices=vertices)
        verts = out.verts[0].double().cpu().numpy() @ VIEW_TO_OUTPUT.T
        faces = self.model.topology.faces(out.level).cpu().numpy().astype(np.int64)
        sphere = self.model.topology.sphere(out.level).double().cpu().numpy() @ VIEW_TO_OUTPUT.T
        with _timed(timings, "repair"):
            verts, faces, repair_log = make_printable(
                verts, faces, smooth_iterations=SMOOTH_ITERATIONS if smooth else 0, sphere_verts=sphere
            )
        result = self._finish(verts, faces, repair_log, used, probs, height_mm, timings, [])
        result.mask = object_mask(rgb, alpha)
        if solid:  # one part as made; the bank's fallback above may reach here too
            self._fill(result, height_mm)
        if upright:
            result.notes.append(NOT_UPRIGHT_NOTE)
        return [result]

    def _bank_result(self, snapped: tuple[np.ndarray, np.ndarray], vertices: int | None, used: str,
                     probs: np.ndarray, height_mm: float | None, timings: dict[str, float],
                     solid: bool = False, smooth: bool = True) -> Reconstruction:
        """The printable :class:`Reconstruction` of one shape-bank solid ``(verts, faces)`` (output frame).

        The solid (closed, manifold and free of self-intersections by construction, :mod:`recon_core.mesh.volume`;
        blurred before meshing) is decimated to the detail's size, about 2 faces a vertex
        (:func:`recon_core.mesh.simplify.decimate`), then with ``smooth`` Taubin-smoothed
        (:func:`bank_smoothing_iterations`, each vertex moved at most :data:`SMOOTH_MAX_MOVE` of the diagonal, half a
        cell of the bank's grid: its terraces go, parts and proportions stay), except around faces the smoothing
        makes meet (given back their unsmoothed places, :data:`SMOOTH_REVERTS`). The printable check of that mesh, at
        the size it will be written, is the decimation's acceptance test, and the faces it finds intersecting are
        mended. A decimation that cannot be mended is tried at 2, 4, ... up to :data:`BANK_DECIMATION_LADDER` times
        the detail's size (with a note), then the full solid goes on (checked, and repaired if
        need be, in :meth:`_finish`; a note). Mends that leave more than :data:`MENDED_FACES_NOTE` times the detail's
        faces are noted too. A solid the detail does not decimate, and the full solid that goes on,
        are smoothed and checked the same way. With ``solid`` its sealed pockets are filled first (:func:`recon_core.mesh.repair.fill_cavities`), so
        the detail's faces all go to the surface that is seen.
        """
        from recon_core.mesh.intersect import face_defects
        from recon_core.mesh.repair import fill_cavities, part_volumes, taubin_smooth, vertex_adjacency
        from recon_core.mesh.simplify import decimate

        start, checking = time.perf_counter(), timings.get("check", 0.0)
        verts, faces = snapped
        undecimated = None  # the faces asked for, when the decimation failed
        fewer = None  # the larger size the decimation reached instead, when the detail's own could not be mended
        mended = 0  # the mends of the detail's own decimation (each keeps a region at the solid's resolution)
        report = None
        repair_log = RepairLog(path="original", input_closed_manifold=True)
        repair_log.note("the solid of the nearest training shape, meshed by marching tetrahedra")
        pockets = 0
        if solid:
            verts, faces, pockets = fill_cavities(verts, faces)
            if pockets:
                repair_log.note(f"filled {pockets} sealed hollow pocket(s)")
        target = 2 * (vertices or self.model.config.vertices)
        decimating = len(faces) > 1.2 * target
        smoothing_iterations = bank_smoothing_iterations(target) if smooth else 0  # the detail's, whatever the mends
        if decimating or smoothing_iterations:
            checked: dict[str, Any] = {}
            unit = None if height_mm is None else 1.0

            def check(sv: np.ndarray, sf: np.ndarray, iterations: int, reverted: int = 0,
                      since: dict | None = None) -> np.ndarray | None:
                """The mesh's defect vertices (empty: accepted, kept in ``checked``; None: not mendable). With
                ``since``, the same faces' last check (kept there: its vertices and intersecting pairs), only the
                faces whose vertices moved since are tested again (the same answer, :func:`face_defects`)."""
                with _timed(timings, "check"):
                    if height_mm is not None:  # checked once, at the size it will be written
                        sv = _to_height(sv, height_mm)
                    sv = _float32_exact(sv)
                    # the faces that intersect or are degenerate, computed once: the check counts them, a mend
                    # starts from them (face_defects refuses vertices that are not finite; the check reports them)
                    earlier = (since["verts"], since["pairs"]) if since else None
                    found_defects = face_defects(sv, sf, since=earlier) if np.isfinite(sv).all() else None
                    if since is not None:
                        since.clear()
                        if found_defects is not None:
                            since.update(verts=sv, pairs=found_defects[0])
                    # decimate asks only of faces without topology defects: a closed, oriented manifold
                    found = check_printable(sv, sf, unit_scale_mm=unit, topology=CLOSED_MANIFOLD,
                                            defects=found_defects)
                    if found.ok:
                        checked.update(verts=sv, report=found, iterations=iterations, reverted=reverted)
                        return np.zeros(0, dtype=np.int64)
                    if not (found.finite and found.outward) or found_defects is None:
                        return None
                    pairs, bad = found_defects
                    bad = bad.copy()
                    bad[pairs.ravel()] = True
                    return np.unique(sf[bad]) if bad.any() else None

            def defects(sv: np.ndarray, sf: np.ndarray) -> np.ndarray | None:
                """:func:`check` of the mesh smoothed where the smoothing makes no faces meet: where it does (a thin
                wall's two sides, a leg against a rail), the faulty faces' vertices and their neighbours within
                :data:`SMOOTH_REVERT_RINGS` edges get their unsmoothed places back, up to :data:`SMOOTH_REVERTS`
                times; then the unsmoothed mesh's defects, for the decimation to mend."""
                iterations = smoothing_iterations
                if iterations:  # (the time is the repair's)
                    smoothed = taubin_smooth(sv, sf, iterations, preserve_volume=False)
                    # moved at most half a cell of the bank's grid: the terraces go, parts and proportions stay
                    step = smoothed - sv
                    most = SMOOTH_MAX_MOVE * float(np.linalg.norm(np.ptp(sv, axis=0)))
                    length = np.linalg.norm(step, axis=1, keepdims=True)
                    smoothed = sv + step * np.minimum(1.0, most / np.maximum(length, 1e-12))
                    region = np.zeros(len(sv), dtype=bool)  # the vertices given back their unsmoothed places
                    adjacency, last = None, {}  # last: the previous check, so a revert's is re-tested where it moved
                    for revert in range(SMOOTH_REVERTS + 1):
                        bad = check(smoothed, sf, iterations, int(region.sum()), since=last)
                        if bad is None or len(bad) == 0 or revert == SMOOTH_REVERTS:
                            if bad is not None and len(bad) == 0:
                                return bad
                            break
                        if adjacency is None:
                            adjacency = vertex_adjacency(sf, len(sv))
                        grown = np.zeros(len(sv), dtype=bool)
                        grown[bad] = True
                        for _ in range(SMOOTH_REVERT_RINGS):
                            grown |= (adjacency @ grown.astype(np.float64)) > 0
                        region |= grown
                        smoothed = np.where(region[:, None], sv, smoothed)
                return check(sv, sf, 0)

            accepted = None
            if decimating:
                # the detail's size, else 2, 4, ... BANK_DECIMATION_LADDER times it (a coarse mesh of thin parts may
                # not mend), else the whole solid
                goal = target
                while True:
                    decimated = decimate(verts, faces, goal, defects=defects)
                    if decimated is not None:
                        _, accepted, mends = decimated
                        break
                    repair_log.note(f"decimation to {goal} faces could not be mended into a printable mesh")
                    goal *= 2
                    if goal > BANK_DECIMATION_LADDER * target or 1.2 * goal >= len(faces):
                        break
                if accepted is None:
                    undecimated = target
                else:
                    if goal != target:
                        fewer = goal  # the note below says so
                    else:
                        mended = mends
                    repair_log.note(f"decimated to {len(accepted)} faces" + (f" (mended {mends} times)" if mends else ""))
            # the solid as it is (not to be decimated, or no decimation could be mended), smoothed: kept when the
            # smoothed one passes the check (which trusts its topology, as decimate asks it only of closed,
            # oriented manifolds); else _finish checks it as meshed
            if accepted is None and smoothing_iterations and len(topology_defects(faces, len(verts))) == 0:
                found = defects(verts, faces)
                if found is not None and len(found) == 0:
                    accepted = faces  # smoothed, or as meshed when smoothing made faces meet everywhere
            if accepted is not None:
                faces = accepted
                verts, report = checked["verts"], checked["report"]
                height_mm = None  # already at its height: _finish keeps this report
                repair_log.smoothing_iterations = checked["iterations"]
                if checked["iterations"]:
                    repair_log.note(f"Taubin smoothing, {checked['iterations']} iterations, each vertex moved at most "
                                    "half a cell of the solid's grid"
                                    + (f" (not where it made faces meet: {checked['reverted']} vertices)"
                                       if checked["reverted"] else ""))
                elif smoothing_iterations:
                    repair_log.note("the smoothed mesh's faces met: kept unsmoothed")
        # the decimation and its mends as "repair", the printable checks they ran as "check"
        timings["repair"] = (timings.get("repair", 0.0) + time.perf_counter() - start
                             - (timings.get("check", 0.0) - checking))
        result = self._finish(verts, faces, repair_log, used, probs, height_mm, timings, [], report)
        if solid:
            result.notes.append(_filled_note(pockets))
        if undecimated is not None and result.repair.path not in _STAND_INS:  # else that stand-in's note
            result.notes.append(f"the solid could not be simplified to about {undecimated:,} faces and stay "
                                f"printable: it is written whole, {len(result.faces):,} faces (simplify it in your "
                                "modeller if need be)")
        elif fewer is not None:
            result.notes.append(f"the solid could not be simplified to about {target:,} faces and stay printable: "
                                f"it is simplified to {len(result.faces):,} faces instead")
        elif mended and len(result.faces) > MENDED_FACES_NOTE * target:
            result.notes.append(f"it is simplified to {len(result.faces):,} faces, more than the about {target:,} "
                                f"asked: {mended} {'place' if mended == 1 else 'places'} where simplifying folded "
                                f"the surface {'is' if mended == 1 else 'are'} kept finer")
        with _timed(result.timings, "check"):  # the mesh's parts, once: its pieces and, without solid, its pockets
            volumes = part_volumes(result.verts, result.faces)
            kept = 0
            if not solid and (volumes < 0).any():  # a pocket's shell encloses a negative volume: count and size them
                filled_verts, filled_faces, kept = fill_cavities(result.verts, result.faces)
                whole = signed_volume(filled_verts, filled_faces)
                hollow = 1.0 - float(volumes.sum()) / whole if whole > 0 else 0.0
        if kept:  # so that a printer's user can fill them
            result.notes.append(_pockets_note(kept, hollow))
        pieces = np.sort(volumes[volumes > 0])
        if len(pieces) > 1:  # each prints loose: on 123 validation pictures 8 outputs, their smallest under 5 %
            result.notes.append(f"the mesh is {len(pieces)} separate pieces, the smallest "
                                f"{share_text(pieces[0] / pieces.sum())} of its volume: each prints as a loose part "
                                "(delete the small ones or join them in your modeller)")
        return result

    def _reconstruct_occupancy(self, out, rgb: np.ndarray, alpha: np.ndarray | None, prepared, cat_index: int | None,
                               vertices: int | None, height_mm: float | None, smooth: bool, timings: dict[str, float],
                               source: str = "the picture") -> Reconstruction:
        """The mesh of a ``coarse="occupancy"`` network's output (see :func:`occupancy_mesh`); without
        alpha, the predicted mask is checked (:data:`MIN_MASK_SHARE`) and put on the result. A model
        with a shape bank blends the nearest training shape into the occupancy first (:meth:`_fuse_bank`)."""
        probs = self._category_probs(out.category_logits)
        used = CATEGORIES[cat_index if cat_index is not None else int(probs.argmax())].name
        mask = None
        if prepared.mask is None:
            logits = out.mask_logits[0, 0].float().cpu().numpy()  # (h, w) over the crop, stride 4
            share = float((logits > 0).mean())
            if share < MIN_MASK_SHARE:
                raise ImageError(
                    f"No object found in {source}: the model sees object pixels in only {share:.1%} of it; "
                    "give a picture with the object on a plain background or with transparency."
                )
            # logits resampled like occupancy_mesh's (bilinear), -30 outside the crop (sigmoid ~ 0)
            mask = torch.from_numpy(uncrop_mask(logits, prepared.box, prepared.original_size, fill=-30.0))
            mask = mask.sigmoid().numpy()
        if getattr(self.model, "bank", None) is not None and self.model.config.bank_weight > 0:
            with _timed(timings, "bank"):
                out = self._fuse_bank(out, rgb, alpha, cat_index if cat_index is not None else int(probs.argmax()))
        refine = None
        if self.model.config.occupancy_refine:
            # the stages were trained on the plain softmax: the temperature is for the reported probabilities
            plain = out.category_logits[0].float().softmax(-1).cpu().numpy()
            refine = self._refiner(out, plain if cat_index is None else np.eye(len(plain))[cat_index], timings)
        with _timed(timings, "mesh"):
            verts, faces, repair_log, report = _occupancy_mesh(
                out, prepared.mask, self.model.grid_spec, faces=2 * (vertices or self.model.config.vertices),
                smooth_iterations=SMOOTH_ITERATIONS if smooth else 0, refine=refine)
        result = self._finish(verts, faces, repair_log, used, probs, height_mm, timings, [], report)
        result.mask = mask
        return result

    def _fuse_bank(self, out, rgb: np.ndarray, alpha: np.ndarray | None, category: int):
        """``out`` with its occupancy blended with the shape bank's nearest training shape.

        The bank's view nearest to the picture and to the network's own shape
        (:meth:`recon_core.network.retrieval.ShapeBank.select`: the picture's embedding, and the distance
        between the view's posed shape and :data:`SNAP_QUERY_POINTS` centres of the cells the network
        fills (``p > 0.5``) in its predicted camera, weighted by ``config.bank_shape_weight``; within
        ``category`` when it has views of it) gives a solid and a rotation;
        posed by them and by the network's predicted grid camera, the solid's share of each frustum
        cell (:func:`recon_core.mesh.occupancy.voxelize_frustum`) is blended with the network's
        probabilities, ``p = (1 - w) p_network + w p_bank`` (``config.bank_weight``). The mask carves
        the blend afterwards as it does the network's own occupancy, so the silhouette still follows
        the picture; the bank supplies what the picture cannot show (the back, the depth).

        Returns:
            A copy of ``out`` (:class:`recon_core.network.heads.OccupancyOutput`) whose ``occupancy_logits``
            (1, Z, N, N) are the blend's logits.
        """
        import dataclasses

        from scipy import ndimage

        from recon_core.mesh.occupancy import GridCamera, voxelize_frustum
        from recon_core.mesh.volume import GRID_BOUND

        bank, w = self.model.bank, self.model.config.bank_weight
        camera = GridCamera.from_prediction(out.camera[0].float().cpu().numpy())
        probs = out.occupancy_logits[0].float().sigmoid()
        points = network_points(probs.cpu().numpy(), camera, self.model.grid_spec, SNAP_QUERY_POINTS)
        row = bank.select(torch.from_numpy(embed_image(rgb, alpha)),
                          None if points is None else torch.from_numpy(points).float(),
                          self.model.config.bank_shape_weight, category)
        rotation = bank.view_rotation[row].double().cpu().numpy()
        # the bank keeps each model's walls (thin slabs); the occupancy is of the solid they enclose
        solid = ndimage.binary_fill_holes(bank.grid(int(bank.view_shape[row])))
        share = voxelize_frustum(solid, GRID_BOUND, rotation, camera, self.model.grid_spec, supersample=2,
                                 share=True)  # (Z, N, N)
        blend = (1.0 - w) * probs + w * torch.from_numpy(share).to(probs.device)
        logits = torch.logit(blend.clamp(1e-4, 1.0 - 1e-4))[None].to(out.occupancy_logits.dtype)
        return dataclasses.replace(out, occupancy_logits=logits)

    def _category_probs(self, logits: torch.Tensor, votes: np.ndarray | None = None) -> np.ndarray:
        """(K,) float32 calibrated probabilities of a batch of one's (1, K) logits: the head's or branch's
        (``config.category_temperature``), or with the shape bank's candidates' ``votes`` (K,)
        ``softmax(fuse_category_scores(...) / config.category_vote_temperature)``."""
        cfg = self.model.config
        if votes is None:
            return (logits[0].float() / cfg.category_temperature).softmax(-1).cpu().numpy()
        scores = fuse_category_scores(logits[0].float().cpu().numpy(), votes, cfg.category_bank_weight)
        z = scores / cfg.category_vote_temperature
        e = np.exp(z - z.max())
        return (e / e.sum()).astype(np.float32)

    def _votes(self, candidates: list[tuple[int, Any, float]]) -> np.ndarray:
        """(K,) the categories' shares of the candidates' ``[(row, pose, confidence), ...]`` confidences."""
        return self.model.bank.category_votes([row for row, _, _ in candidates], [c for _, _, c in candidates],
                                              len(CATEGORIES))

    def _candidates(self, rgb: np.ndarray, alpha: np.ndarray | None, verts: torch.Tensor, category: int | None,
                    mask: np.ndarray, count: int, vote: bool = True
                    ) -> tuple[list[tuple[int, Any, float]], np.ndarray | None]:
        """``(candidates, votes)``: the shape bank's candidates for this picture, best first, as ``[(row, pose,
        confidence), ...]`` — the ``max(count, config.bank_fit_candidates)`` best-ranked views posed to the ``mask``
        (:meth:`_fitted`), or without a fit the bank's first ``count`` in their views' rotations (pose None) — and
        the (K,) category votes of the ``bank_fit_candidates`` best-ranked ones once fitted (whatever ``count``, so
        every call reports the same category), or None when the model does not vote (:attr:`voting`) or ``vote`` is
        False (a category given: no votes are counted)."""
        fit = self.model.config.bank_fit_candidates
        ranked = self._ranked(rgb, alpha, verts, category, max(count, fit))
        if not fit:
            return [(row, None, c) for row, c in ranked[:count]], None
        fitted = self._fitted(ranked, mask)
        if not (vote and self.voting):
            return fitted, None
        return fitted, self._votes(fitted if len(ranked) <= fit else self._fitted(ranked[:fit], mask))

    @torch.inference_mode()
    def category_scores(self, rgb: np.ndarray, alpha: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, head)`` of a picture whose ``alpha`` is settled, both (K,) float64: the scores whose softmax over
        ``config.category_vote_temperature`` is the reported ``category_probs`` when the shape bank's candidates vote
        (:func:`fuse_category_scores`), and the category head's own log-probabilities, whose softmax over
        ``config.category_temperature`` is reported otherwise (training/calibrate.py fits each temperature on its
        scores). When the model does not vote, both are the head's (or branch's) and only the backbone and it run;
        when it does, the network and the candidates' fits run as in :meth:`reconstruct` (~0.2 s a picture)."""
        cfg = self.model.config
        images = prepare_image(rgb, alpha, cfg.image_size).image[None].to(next(self.model.parameters()).device)
        if not self.voting:
            head = fuse_category_scores(self.model.classify(images)[0].float().cpu().numpy(), None, 0.0)
            return head, head
        out = self.model(images)
        logits = out.category_logits[0].float().cpu().numpy()
        _, votes = self._candidates(rgb, alpha, out.verts[0], None, object_mask(rgb, alpha), 1)
        return fuse_category_scores(logits, votes, cfg.category_bank_weight), fuse_category_scores(logits, None, 0.0)

    def _refiner(self, out, category_probs: np.ndarray, timings: dict[str, float]):
        """``(verts (V, 3) view frame, faces) -> refined (V, 3)``: the model's refiner stages on one mesh of ``out``."""
        from recon_core.mesh.occupancy import GridCamera
        from recon_core.mesh.topology import MeshGraph

        camera = GridCamera.from_prediction(out.camera[0].float().cpu().numpy())
        probs = torch.as_tensor(category_probs, dtype=torch.float32)[None]
        pyramid = [p.float() for p in out.pyramid]

        def refine(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
            with _timed(timings, "refiner"):
                v = torch.as_tensor(verts, dtype=torch.float32)
                stages = self.model.refine_mesh(pyramid, v, MeshGraph(faces, len(verts)), camera, probs)
                return stages[-1].double().cpu().numpy()

        return refine

    def _finish(self, verts: np.ndarray, faces: np.ndarray, repair_log, used: str, probs: np.ndarray,
                height_mm: float | None, timings: dict[str, float], notes: list[str],
                report: PrintableReport | None = None) -> Reconstruction:
        """Scale to ``height_mm``, round to float32, run the printable check (repairing once more if needed).

        ``report``: the check of exactly these float32 ``verts`` and ``faces``, when the caller ran it;
        reused unless ``height_mm`` rescales them (then the scaled mesh is checked).
        """
        if report is not None and height_mm is None:
            return Reconstruction(verts, faces, used, probs, report, repair_log, timings,
                                  self._notes(notes, repair_log))
        if height_mm is not None:
            verts = _to_height(verts, height_mm)
        scale_mm = 1.0 if height_mm is not None else None
        with _timed(timings, "check"):
            # STL files and Blender meshes hold float32 coordinates: check the mesh as they will see it.
            verts = _float32_exact(verts)
            report = check_printable(verts, faces, unit_scale_mm=scale_mm)
            if not report.ok:  # rounding created a near-contact: repair the rounded mesh once more
                verts, faces, repair_log = make_printable(verts, faces, smooth_iterations=0)
                verts = _float32_exact(verts)
                report = check_printable(verts, faces, unit_scale_mm=scale_mm)
        return Reconstruction(verts, faces, used, probs, report, repair_log, timings, self._notes(notes, repair_log))

    def _notes(self, notes: list[str], repair_log) -> list[str]:
        """``notes``, after a first note for an untrained model, and with a last one when the repair's last resort
        (``repair_log.path``, :data:`_STAND_INS`) stands in for the reconstruction."""
        stand_in = _STAND_INS.get(repair_log.path)
        if stand_in is not None:
            notes = [*notes, f"the reconstruction could not be made printable: {stand_in} stands in for it"]
        if self.trained:
            return notes
        return ["the model is untrained (random weights): the shape is not meaningful", *notes]

    def _ranked(self, rgb: np.ndarray, alpha: np.ndarray | None, verts: torch.Tensor, category: int | None,
                count: int) -> list[tuple[int, float]]:
        """The shape bank's ``count`` best views (rows) of different models for this picture and the network's
        (V, 3) view-frame reconstruction ``verts``, with their confidences (:attr:`Reconstruction.confidence`)."""
        step = max(1, verts.shape[0] // SNAP_QUERY_POINTS)
        embedding = torch.from_numpy(embed_image(rgb, alpha)).to(verts.device)
        ranked = self.model.bank.ranked(embedding, verts[::step], self.model.config.bank_shape_weight, category,
                                        count=None)
        scores = torch.tensor([score for _, score in ranked], dtype=torch.float64)
        confidence = (-scores).softmax(0).tolist()
        return [(row, c) for (row, _), c in zip(ranked[:count], confidence)]

    def _fitted(self, ranked: list[tuple[int, float]], mask: np.ndarray, count: int | None = None
                ) -> list[tuple[int, Any, float]]:
        """The bank's ranked views ``[(row, confidence), ...]`` posed to the picture's silhouette and ranked by it.

        Each candidate's solid is turned and stretched to the pose near its view's whose silhouette best
        covers the picture's ``mask`` (:func:`recon_core.mesh.silhouette.fit_pose`); the ``count`` best (None: all) by
        that intersection over union come first, as ``[(row, pose, confidence), ...]``
        (:class:`recon_core.mesh.silhouette.Pose`), each confidence the softmax of the IoUs over
        :data:`FIT_TEMPERATURE` among the candidates. When the mask is empty the bank's order and views stay
        (pose None).
        """
        from recon_core.mesh.silhouette import fit_pose, mask_grid, solid_points
        from recon_core.mesh.volume import GRID_BOUND

        target = mask_grid(mask)
        if target is None:
            return [(row, None, c) for row, c in ranked[:count]]
        bank = self.model.bank

        def fit(row: int) -> tuple[float, int, Any]:
            shape = int(bank.view_shape[row])
            # the stored walls, not the filled solid: a closed wall's projection covers what it encloses (on the
            # bank's 306 models, the silhouettes of the two differ in at most 1.1 % of their cells, 0.15 % on average)
            points = solid_points(bank.grid(shape), GRID_BOUND, seed=shape)
            if len(points) == 0:  # an empty solid: _snap says so and skips it
                return 0.0, row, None
            pose = fit_pose(points, bank.view_rotation[row].double().cpu().numpy(), target)
            return pose.iou, row, pose

        # each candidate's fit is numpy on arrays of ~10^6 elements, which runs without the GIL: threads share it out
        fitted = thread_map(fit, [row for row, _ in ranked])
        if not fitted:
            return []
        fitted.sort(key=lambda item: -item[0])  # stable: equal IoUs keep the bank's order
        weights = np.exp((np.array([iou for iou, _, _ in fitted]) - fitted[0][0]) / FIT_TEMPERATURE)
        weights /= max(weights.sum(), 1e-12)
        return [(row, pose, float(w)) for (_, row, pose), w in zip(fitted[:count], weights)]

    def _snap(self, row: int, pose=None, mask: np.ndarray | None = None, upright: bool = False) -> Snapped | None:
        """The solid of the shape bank's view ``row`` in the output frame, placed by ``pose``
        (:class:`recon_core.mesh.silhouette.Pose`; None: the view's rotation) and, with a pose, a ``mask`` and
        ``config.bank_warp``, its outline drawn onto the mask's (:func:`recon_core.mesh.silhouette.fit_warp`; not
        for a mask that takes the whole picture) and, with ``config.bank_carve``, the cells the mask shows to be
        empty carved away before meshing (:func:`recon_core.mesh.silhouette.carve_to_mask`), with
        ``config.bank_unit_diagonal`` scaled into the data's frame (:func:`recon_core.mesh.silhouette.to_diagonal`),
        then with a pose and ``config.bank_place`` moved across the view to where the picture shows it
        (:func:`recon_core.mesh.silhouette.place_in_picture`), and with ``upright`` stood on its base: turned so that
        the training shape's +Y, as the pose (else the view) turns it, is the output frame's +Y
        (:func:`recon_core.mesh.camera.stand_upright`), then settled on its base where the shape has a flat one
        (:meth:`_flat_based`, :func:`recon_core.mesh.camera.settle_on_base`), that motion kept (:class:`Snapped`);
        None when the solid is empty. The candidates' order and confidences are the fit's (:meth:`_fitted`), from
        before the warp."""
        from recon_core.mesh.silhouette import (carve_to_mask, fit_warp, keep_box, place_in_picture, solid_points,
                                                stretch_factors, to_diagonal)
        from recon_core.mesh.volume import GRID_BOUND, grid_surface, grid_surface_vertices

        cfg, bank = self.model.config, self.model.bank
        # a mask without a background pixel (the whole picture taken: a busy border and no finder) has no outline
        outlined = pose is not None and cfg.bank_warp > 0 and mask is not None and not bool((mask > 0.5).all())
        if not outlined:
            if pose is None:
                verts, faces = bank.view_mesh(row, cfg.bank_smoothing, cfg.bank_level)
                world = None  # its solid's surface, unturned, only if it is needed (below)
            else:
                verts, faces = bank.shape_mesh(int(bank.view_shape[row]), cfg.bank_smoothing, cfg.bank_level)
                world = verts
                verts = (verts * stretch_factors(verts, pose.scale)) @ pose.rotation.T
        else:
            shape = int(bank.view_shape[row])
            solid = bank.grid(shape)
            # the whole solid's surface points first (its faces only if it is not carved): they set the stretch's
            # even factor and the box the result keeps, the same values as its mesh's vertices
            whole = grid_surface_vertices(solid, smoothing=cfg.bank_smoothing, level=cfg.bank_level)
            if len(whole) == 0:
                log.warning("the shape bank's solid for view %d is empty: keeping the network's reconstruction", row)
                return None
            world = whole  # its diagonal: the stretch keeps it
            factors = stretch_factors(whole, pose.scale)  # stretched()'s map: for the vertices, points and cells alike
            whole = (whole * factors) @ pose.rotation.T
            points = (solid_points(solid, GRID_BOUND, seed=shape) * factors) @ pose.rotation.T
            warp = fit_warp(points, mask, cfg.bank_warp)
            share = 0.0
            if warp is not None and cfg.bank_carve:
                carved, share = carve_to_mask(solid, GRID_BOUND, factors, pose.rotation, warp)
            if share > 0:
                # the carved solid, posed and warped like the whole one, keeps the whole one's box (the frame)
                cv, faces = grid_surface(carved, smoothing=cfg.bank_smoothing, level=cfg.bank_level)
                verts = keep_box(warp.move((cv * factors) @ pose.rotation.T), whole, warp.move(whole))
            else:
                verts, faces = bank.shape_mesh(shape, cfg.bank_smoothing, cfg.bank_level)
                verts = (verts * factors) @ pose.rotation.T
                if warp is not None and warp.kept:
                    verts = keep_box(warp.move(verts), verts)
        if len(faces) == 0:
            log.warning("the shape bank's solid for view %d is empty: keeping the network's reconstruction", row)
            return None
        if cfg.bank_unit_diagonal:
            if world is None:  # the same values as its mesh's vertices
                world = grid_surface_vertices(bank.grid(int(bank.view_shape[row])), smoothing=cfg.bank_smoothing,
                                              level=cfg.bank_level)
            verts = to_diagonal(verts, float(np.linalg.norm(np.ptp(world, axis=0))))
        if pose is not None and cfg.bank_place and mask is not None:
            verts, _ = place_in_picture(verts, mask)
        verts = verts @ VIEW_TO_OUTPUT.T
        motion = None
        if upright:  # stood by the shape's own up, then settled on its base (the warp and carving moved its feet)
            seen = verts
            verts = stand_upright(verts, self._object_up(row, pose))
            if self._flat_based(int(bank.view_shape[row])):
                verts, _ = settle_on_base(verts, faces)
            motion = rigid_motion(seen, verts)
        return Snapped(verts, faces, motion)

    @staticmethod
    def _camera(result: Reconstruction, snapped: Snapped, mask: np.ndarray, height_mm: float | None) -> Camera | None:
        """The picture's camera for ``result``, made from ``snapped`` (:func:`recon_core.mesh.camera.picture_camera`):
        the fit's camera, :data:`recon_core.mesh.silhouette.FIT_DISTANCE` from the centre of the view, moved with the
        mesh, and with ``height_mm`` scaled as the mesh was, by its height before decimation (the mesh was scaled by
        its height after decimation and smoothing, which move each vertex by at most half a cell of the bank's grid:
        the example chair's focal length agrees to 0.1-0.3 %)."""
        from recon_core.mesh.silhouette import FIT_DISTANCE

        rotation, centre = seen_camera(FIT_DISTANCE, snapped.motion)
        if height_mm is not None:
            centre = centre * (height_mm / max(float(np.ptp(snapped.verts[:, 1])), 1e-12))
        return picture_camera(result.verts, rotation, centre, mask)

    def _flat_based(self, shape: int) -> bool:
        """Whether the bank's training shape ``shape``, as modelled, rests on a flat base (it settles within
        :data:`recon_core.mesh.camera.FLAT_BASE_TURN`: not most airplanes); kept per shape."""
        if shape not in self._bases:
            from recon_core.mesh.volume import grid_surface_vertices

            cfg = self.model.config
            verts = grid_surface_vertices(self.model.bank.grid(shape), smoothing=cfg.bank_smoothing,
                                          level=cfg.bank_level)
            self._bases[shape] = len(verts) >= 4 and base_turn(verts)[0] <= FLAT_BASE_TURN
        return self._bases[shape]

    def _object_up(self, row: int, pose=None) -> np.ndarray:
        """(3,) the output-frame direction of the training shape's own +Y for the bank's view ``row`` posed by ``pose``
        (None: the view's rotation); the stretch scales along the shape's own axes, so its +Y keeps its direction."""
        turn = self.model.bank.view_rotation[row].double().cpu().numpy() if pose is None else pose.rotation
        return VIEW_TO_OUTPUT @ turn @ np.array([0.0, 1.0, 0.0])

    def _turn_to_stand(self, row: int, pose=None) -> float:
        """Degrees :func:`recon_core.mesh.camera.stand_upright` turns the bank's view ``row`` posed by ``pose`` by."""
        up = self._object_up(row, pose)
        return math.degrees(math.acos(max(-1.0, min(1.0, up[1] / float(np.linalg.norm(up))))))


OCCUPANCY_UPSAMPLE = 2
"""The occupancy grid is trilinearly upsampled by this factor before meshing (smoother, finer silhouette)."""
ISO_LEVEL = 0.5
"""The occupancy probability the mesh's surface follows."""
MIN_COMPONENT_SHARE = 0.01
"""Parts of the occupancy mesh holding less than this share of its volume are dropped (specks)."""


def network_points(probs: np.ndarray, camera, spec, count: int) -> np.ndarray | None:
    """View-frame points of the shape a network's occupancy fills: the centres of the cells with ``p > 0.5``,
    every k-th in the grid's order (k = filled cells // count, at least 1: between ``count`` and
    ``2 count - 1`` points when at least ``count`` cells are filled, all of them otherwise); None when none is.

    Args:
        probs: (Z, N, N) occupancy probabilities.
        camera: the picture's :class:`recon_core.mesh.occupancy.GridCamera`.
        spec: the grid's :class:`recon_core.mesh.occupancy.GridSpec`.
    """
    from recon_core.mesh.occupancy import cell_centres, grid_to_view

    filled = cell_centres(spec)[np.asarray(probs) > 0.5]  # (M, 3) crop units
    if len(filled) == 0:
        return None
    return grid_to_view(filled[:: max(1, len(filled) // count)], camera)


def occupancy_mesh(out, mask: torch.Tensor | None, spec, faces: int = 5124, smooth_iterations: int = SMOOTH_ITERATIONS
                   ) -> tuple[np.ndarray, np.ndarray, RepairLog]:
    """The printable output-frame mesh of one ``coarse="occupancy"`` network output.

    The occupancy probabilities are upsampled (:data:`OCCUPANCY_UPSAMPLE`), carved by the
    object's mask (the picture's alpha when it has one, else the network's mask; its share of
    each cell's pixels) so the silhouette cannot leave it, meshed by marching tetrahedra in the
    frustum (:func:`recon_core.mesh.occupancy.mesh_occupancy`, watertight, manifold, oriented, free
    of self-intersections by construction), specks dropped, then Taubin-smoothed (no grid
    terraces) and simplified to about ``faces`` triangles by quadric decimation
    (fast-simplification). The first of (smoothed + simplified, smoothed, as meshed) that
    passes the printable check is returned; the repair chain only runs if none does.

    Args:
        out: the network's :class:`recon_core.network.heads.OccupancyOutput` (batch of one).
        mask: (S, S) float object mask of the crop in [0, 1], or None (the network's mask is used).
        spec: the model's :class:`recon_core.mesh.occupancy.GridSpec`.
        faces: target triangle count of the simplification.
        smooth_iterations: Taubin iterations before simplifying (0: none).

    Returns:
        ``(verts (V, 3) float64 output frame, faces (F, 3) int64, RepairLog)``.
    """
    verts, tris, log, _ = _occupancy_mesh(out, mask, spec, faces, smooth_iterations)
    return verts, tris, log


def _occupancy_mesh(out, mask: torch.Tensor | None, spec, faces: int, smooth_iterations: int, refine=None
                    ) -> tuple[np.ndarray, np.ndarray, RepairLog, PrintableReport | None]:
    """:func:`occupancy_mesh`, plus the printable report of the returned mesh when it was checked
    as returned (None when the repair chain made it), so the caller need not check it again.

    ``refine``: a function ``(verts (V, 3) view frame, faces (F, 3)) -> (V, 3) view frame`` (the
    model's refiner stages, :meth:`recon_core.network.model.ReconstructionNet.refine_mesh`) applied to the
    first coarse mesh; its result is tried first, the coarse meshes after it.
    """
    log_ = RepairLog(path="original", input_closed_manifold=True)
    if mask is None:
        n = out.occupancy_logits.shape[-1]
        mask = F.interpolate(out.mask_logits[:1].float(), size=(n * OCCUPANCY_UPSAMPLE * 4,) * 2, mode="bilinear",
                             align_corners=False).sigmoid()[0, 0]
    candidates = coarse_surfaces(out.occupancy_logits[0], mask, out.camera[0], spec, faces, smooth_iterations, log_)
    if not candidates:
        log_.note("the occupancy grid is empty: a box stands in for the object")
        box = np.array([[-0.2, -0.2, -0.2], [0.2, 0.2, 0.2]])
        return (*make_printable(box, np.zeros((0, 3), dtype=np.int64), smooth_iterations=0), None)
    if refine is not None:
        _, cv, cf = candidates[0]
        candidates.insert(0, ("refined", refine(cv, cf), cf))
    for name, cv, cf in candidates:
        cv = _float32_exact(_centred(cv @ VIEW_TO_OUTPUT.T))
        report = check_printable(cv, cf)
        if not report.ok and name == "refined":
            # The stages can bring faces of thin parts into contact: untangle them (a few vertices move
            # by a fraction of an edge) rather than give up the refinement.
            log_.note(f"the refined mesh has {report.self_intersecting_pairs} self-intersecting face pairs")
            rv, rf, repair = make_printable(cv, cf, smooth_iterations=0)
            if repair.path in ("original", "untangled"):
                cv, cf, name = _float32_exact(rv), rf, "refined and untangled"
                report = check_printable(cv, cf)
        if report.ok:
            log_.note(f"kept the {name} mesh ({len(cf)} faces)")
            if name != "as meshed" and smooth_iterations:
                log_.smoothing_iterations = smooth_iterations
            return cv, cf, log_, report
        log_.note(f"the {name} mesh failed the printable check")
    _, verts, tris = candidates[-1]
    return (*make_printable(_centred(verts @ VIEW_TO_OUTPUT.T), tris, smooth_iterations=0), None)


def _centred(verts: np.ndarray) -> np.ndarray:
    """(V, 3) vertices moved so their bounding box is centred on the origin, as the data's frame is.

    Where the grid puts the object depends on the predicted camera (its principal point and the
    depth bins the occupancy fills), which is off by 2-4 % of the object's size on average; the
    data's frame (and the output's) centres every object's box instead. On 60 validation pictures
    (occupancy + refiner, step 500) it moved mean F1@0.3 from 32 to 33 and Sil-IoU from 59.7 to 60.4.
    """
    return verts - 0.5 * (verts.min(axis=0) + verts.max(axis=0))


def coarse_surfaces(logits: torch.Tensor, mask: torch.Tensor, camera: torch.Tensor, spec, faces: int,
                    smooth_iterations: int, log_: RepairLog | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The meshes of one frustum occupancy, best first, in the view frame (not yet checked).

    The probabilities are upsampled (:data:`OCCUPANCY_UPSAMPLE`), carved by ``mask`` (its share of
    each cell's pixels), every ray of the mask filled up to the level at its most likely depth
    (:func:`recon_core.mesh.occupancy.fill_rays`: thin parts the picture shows stay), meshed by marching
    tetrahedra at :data:`ISO_LEVEL` (half the maximum when nothing reaches it) with the predicted
    grid camera, specks dropped; then Taubin-smoothed and
    simplified to about ``faces`` triangles. Training's refiner sees the first of them, as inference does.

    Args:
        logits: (Z, N, N) occupancy logits.
        mask: (S, S) float object mask of the crop in [0, 1].
        camera: (3,) predicted ``(log s, p_cx - 0.5, p_cy - 0.5)``.
        spec: the grid's :class:`recon_core.mesh.occupancy.GridSpec`.
        faces: target triangle count of the simplification.
        smooth_iterations: Taubin iterations (0: none).
        log_: notes of what was done, or None.

    Returns:
        ``[(name, verts (V, 3) float64 view frame, faces (F, 3) int64), ...]`` among ("simplified",
        "smoothed", "as meshed"), the best first; ``[]`` when the grid is empty.
    """
    from recon_core.mesh.occupancy import GridCamera, carve, fill_rays, mesh_occupancy
    from recon_core.mesh.repair import taubin_smooth

    if log_ is None:  # nobody reads the notes (training): keep them off the log
        log_ = RepairLog(path="original", input_closed_manifold=True)
        log_.note = log_.steps.append
    k = OCCUPANCY_UPSAMPLE
    logits = logits.detach().float()[None, None]  # (1, 1, Z, N, N)
    z, n = logits.shape[2], logits.shape[3]
    probs = F.interpolate(logits, size=(z * k, n * k, n * k), mode="trilinear", align_corners=False)
    probs = probs.sigmoid()[0, 0].cpu().numpy()
    coverage = F.adaptive_avg_pool2d(mask.detach().float()[None, None].cpu(), (n * k, n * k))[0, 0].numpy()
    values = carve(probs, coverage)
    level = ISO_LEVEL if values.max() > ISO_LEVEL else 0.5 * float(values.max())
    if not level > 0:
        return []
    values = fill_rays(values, coverage, level)
    grid_camera = GridCamera.from_prediction(camera.detach().float().cpu().numpy())
    verts, tris = mesh_occupancy(values, grid_camera, spec, level)
    verts, tris = _drop_specks(verts, tris)
    log_.note(f"occupancy meshed by marching tetrahedra: {len(tris)} faces")
    smoothed = taubin_smooth(verts, tris, smooth_iterations) if smooth_iterations else verts
    candidates = _simplified(smoothed, tris, faces, log_)
    if smooth_iterations:
        candidates.append(("smoothed", smoothed, tris))
    candidates.append(("as meshed", verts, tris))
    return candidates


def _simplified(verts: np.ndarray, faces: np.ndarray, target: int, log: RepairLog) -> list:
    """``[("simplified", verts, faces)]``: the mesh decimated to about ``target`` faces, a closed manifold
    (:func:`recon_core.mesh.simplify.decimate`; the caller runs the full printable check), or ``[]`` when it is
    already that small or could not be mended."""
    from recon_core.mesh.simplify import decimate

    if len(faces) <= target * 1.2:
        return []
    decimated = decimate(verts, faces, target)
    if decimated is None:
        log.note(f"decimation to {target} faces is not a closed manifold")
        return []
    return [("simplified", decimated[0], decimated[1])]


def _drop_specks(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove the connected parts of a closed mesh holding less than :data:`MIN_COMPONENT_SHARE` of its volume."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(verts)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    count, label = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)), directed=False)
    if count <= 1:
        return verts, faces
    tri = verts[faces]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6.0
    part = label[faces[:, 0]]
    per_part = np.bincount(part, weights=volume, minlength=count)
    keep_part = per_part >= MIN_COMPONENT_SHARE * per_part.sum()
    keep = keep_part[part]
    used = np.unique(faces[keep])
    remap = np.full(n, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return verts[used], remap[faces[keep]]
