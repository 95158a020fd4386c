"""``recon-mesh IMAGE -o OUT.{obj,stl,ply,glb,3mf}``: reconstruct one image with the shipped model.

The exit codes are listed in :data:`EPILOG` (``recon-mesh --help``) and the README.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import logging
import os
import re
import signal
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NoReturn

from recon_core.mesh.detail import DETAIL_VERTICES, approx_faces, vertices_for_detail
from recon_core.network.categories import CATEGORIES

__all__ = ["main", "EPILOG", "candidate_path", "UNITLESS_SUFFIXES"]

INTERRUPTED = 130
"""Exit code of a run stopped by Ctrl-C (the shell's 128 + SIGINT); SIGTERM and SIGHUP give 128 + theirs."""

STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
"""The signals that stop the console script cleanly (:func:`run` handles them; one the run was started ignoring, as
``nohup`` ignores SIGHUP, stays ignored): Ctrl-C, ``kill`` or ``timeout``, and the terminal closed."""


class _Stop:
    """The console script's handler of :data:`STOP_SIGNALS`: it records the first signal and raises KeyboardInterrupt
    where the run is, so that the run's files written so far, still temporary, are removed and the exit code is 128 +
    the signal. Later signals are recorded only, so that they cannot break into that cleanup. While the run is
    :meth:`holding` (torch's import and the model's loading: their C++ code turns an exception raised inside it into
    another error, a swallowed one or an abort; each file's write; the renames of the files into place) it only
    records the signal,
    and raises it once that step is done; a second signal during a ``force`` hold (a load that does not end) ends the
    process at once, as the signal's default does. Signals arriving without this handler (``main`` called in process)
    keep Python's own behaviour."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.depth = 0
        self.force = False
        self.files_written = False  # set by main once every file is on disk, for run's sentence

    @property
    def held(self) -> bool:
        return self.depth > 0

    def __call__(self, signum: int, frame) -> None:
        if self.signum is not None:  # a second signal
            if self.held and self.force:
                if sys.platform == "win32":  # os.kill ends a process there with the signal's number, 2: "bad input"
                    os._exit(128 + signum)
                else:
                    signal.signal(signum, signal.SIG_DFL)
                    os.kill(os.getpid(), signum)
            return
        self.signum = signum
        if not self.held:
            raise KeyboardInterrupt

    @contextmanager
    def holding(self, force: bool = False) -> Iterator[None]:
        """Signals are recorded, not raised, inside the block; one recorded is raised as KeyboardInterrupt at its end
        (unless the block raised: then its exception goes on, and the signal recorded says what it was). Blocks
        nest; with ``force`` a second signal ends the process."""
        self.depth += 1
        outer, self.force = self.force, self.force or force
        try:
            yield
        finally:
            self.depth -= 1
            self.force = outer
        if self.signum is not None and not self.held:
            raise KeyboardInterrupt


_STOP = _Stop()


def _stopped(written: str = "no file written") -> int:
    """Say that the run was stopped (Ctrl-C, or the signal recorded) and what was written; its exit code: 128 + the
    signal, 130 (Ctrl-C) when none was recorded."""
    if _STOP.signum is None or _STOP.signum == signal.SIGINT:
        _say(f"error: interrupted; {written}.")
        return INTERRUPTED
    _say(f"error: stopped by {signal.Signals(_STOP.signum).name}; {written}.")
    return 128 + _STOP.signum

EPILOG = """\
exit codes:
  0  the mesh was written and passed the printable check
  1  unexpected failure (one sentence on stderr; rerun with --debug and report it), or the
     report could not be printed to standard output after the files were written
  2  bad input (image, a picture with no object, model, output path or option, such as
     --detail together with the deprecated --vertices): one sentence on stderr, no file written
  3  the mesh was written but failed the printable check (with --candidates: one of them did)
  130  interrupted (Ctrl-C): one sentence on stderr; before the files were written, none was
     (while the report printed, after they were, they stay)
  143, 129  stopped by SIGTERM (kill, timeout) or SIGHUP (the terminal closed): as 130

The mesh is complete on disk before the report is printed. A reader that stops early
(recon-mesh ... | head -1) ends the report quietly and leaves the exit code as above, as does
a closed standard output or error (recon-mesh ... >&- or 2>&-)."""


CATEGORY_NAMES = tuple(c.name for c in CATEGORIES)
"""The names ``--category`` takes, in any case."""


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose option errors are one sentence on stderr and exit code 2, without the usage block."""

    def parse_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        self._given = args[:args.index("--")] if "--" in args else args  # after "--", a name is no option
        return super().parse_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        flag, _, rest = message.removeprefix("argument ").partition(": ")
        if message.startswith("argument ") and rest.startswith(flag.split("/")[-1]):  # our own sentence names it
            message = rest
        # a picture named like an option ("-chair.png") is read as one: "required: image" did not say why
        dashed = [a for a in getattr(self, "_given", ()) if a.startswith("-") and len(a) > 1 and os.path.isfile(a)]
        if dashed:
            message += (f"; {dashed[0]} is read as an option because its name starts with -: give it as "
                        f"./{dashed[0]}")
        _say(f"error: {message}; see {self.prog} --help.")
        self.exit(2)


def _category(text: str) -> str:
    """``--category``'s value, lower case; an unknown name says which names there are, and the nearest of them when
    one is near (a plural, a spelling: "chairs", "aeroplane")."""
    name = text.strip().lower()
    if name not in CATEGORY_NAMES:
        near = difflib.get_close_matches(name, CATEGORY_NAMES, n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise argparse.ArgumentTypeError(f"--category {text!r} is not a category the model knows{hint}; the "
                                         f"categories are {', '.join(CATEGORY_NAMES)}")
    return name


def _detail(text: str) -> str:
    """``--detail``'s value, lower case ("High" is high); argparse's choices then check it."""
    return text.strip().lower()


def _height_mm(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        given = text.strip()
        if re.fullmatch(r"\d{1,3}(,\d{3})+", given):  # 1,500: a thousands separator, or a decimal comma
            raise argparse.ArgumentTypeError(
                f"--height-mm must be a number of millimetres without a thousands separator and with a decimal point, "
                f"e.g. {given.replace(',', '')} (or {given.replace(',', '.', 1)} if the comma is a decimal one), got "
                f"{text!r}") from None
        if re.fullmatch(r"\d+,\d+", given):  # 90,5: a decimal comma
            raise argparse.ArgumentTypeError(f"--height-mm must be a number of millimetres with a decimal point, e.g. "
                                             f"{given.replace(',', '.')}, got {text!r}") from None
        raise argparse.ArgumentTypeError(f"--height-mm must be a number of millimetres without a unit, e.g. 90, got "
                                         f"{text!r}") from None


MAX_CANDIDATES = 10
"""The most ``--candidates`` writes: the shape bank's ten fitted shapes (``config.bank_fit_candidates``). More were
fitted one by one, half a second each: a typed 200 ran 107 s and wrote 94 files."""


def _count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--candidates must be a whole number of shapes, e.g. 3, got {text!r}") from None
    if count > MAX_CANDIDATES:
        raise argparse.ArgumentTypeError(f"--candidates must be from 1 to {MAX_CANDIDATES}, got {count}")
    return count


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="recon-mesh",
        description="Turn one photo or sketch of an object into a watertight, manifold, printable mesh.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image", help="input picture (PNG, JPEG, a phone's HEIC, WebP, TIFF, BMP, GIF, ...: what Pillow reads; an alpha "
                                 "channel is used as the object mask)")
    p.add_argument("-o", "--output", required=True,
                   help="output mesh: .obj, .stl, .ply, .glb or .3mf (STL, PLY and 3MF are +Z up on the build "
                        "plate, as slicers read them, OBJ and GLB +Y up; a 3MF is in millimetres and needs "
                        "--height-mm)")
    p.add_argument("--category", type=_category, metavar="NAME",
                   help=f"object category, in any case: {', '.join(CATEGORY_NAMES)} (default: predicted)")
    p.add_argument("--height-mm", type=_height_mm, metavar="H",
                   help="scale the mesh so that its height is this many millimetres (a GLB is then written in "
                        "metres, glTF's unit)")
    sizes = ", ".join(f"{name} ~{approx_faces(name):,}" for name in DETAIL_VERTICES)
    p.add_argument("--detail", type=_detail, choices=list(DETAIL_VERTICES),
                   help=f"output size in faces, in any case: {sizes} (default: the model's own, normally medium)")
    # Deprecated: the raw count --detail replaced; kept so that existing scripts still run.
    p.add_argument("--vertices", type=int, choices=list(DETAIL_VERTICES.values()), help=argparse.SUPPRESS)
    p.add_argument("--model", help="model to use (NAME.safetensors with NAME.json beside it, and "
                        "NAME.category.safetensors when the JSON names a category branch; default: the shipped model, "
                        "models/default in recon_core's source folder)")
    p.add_argument("--no-smooth", action="store_true",
                   help="skip the smoothing (a shape bank's solid: each vertex by at most half a cell of its grid; "
                        "the network's own mesh: volume-preserving)")
    p.add_argument("--solid", action="store_true",
                   help="fill the sealed hollow pockets inside the mesh (for resin and powder printers, which trap "
                        "material in them; a note says how many)")
    p.add_argument("--as-seen", action="store_true",
                   help="keep the mesh turned as the picture's camera saw it (default: stood on its base, the "
                        "camera's look from above or below taken out, so that --height-mm is the object's own height "
                        "and it stands on the build plate; a shape that would turn by more than 45 degrees stays as "
                        "seen, with a note)")
    p.add_argument("--mask", metavar="MASK.png",
                   help="the object's mask, used instead of finding the object: an image of the picture's size (or shape), "
                        "white on the object and black elsewhere (e.g. a --save-mask file, corrected), or a cut-out "
                        "whose transparency marks the object")
    p.add_argument("--save-mask", metavar="PATH.png",
                   help="also write the object mask that was used (8-bit grey PNG, the picture's size, 255 = object)")
    p.add_argument("--preview", metavar="PATH.png",
                   help="also write a picture of the result (PNG): the mesh over the picture, as the picture's camera "
                        "sees it, and turned 3/4, thin walls in red; with --candidates, a row each")
    p.add_argument("--candidates", type=_count, default=1, metavar="K",
                   help=f"write K plausible shapes (at most {MAX_CANDIDATES}), OUT_1.EXT ... OUT_K.EXT, the likeliest "
                        "first, each with how likely it is against the likeliest and its printable check (default 1: "
                        "OUT.EXT alone)")
    p.add_argument("--debug", action="store_true", help="also print each error's traceback, and debug logging")
    return p


def _stream_closed(err: Exception, stream) -> bool:
    """Whether ``err``, raised writing to ``stream``, says that the stream is closed or its reader gone (a broken
    pipe, a closed descriptor, a closed file object), rather than that it failed (a full disk)."""
    if isinstance(err, ValueError):  # a closed file object; not an encoding error
        return bool(getattr(stream, "closed", False))
    number = getattr(err, "errno", None)  # on Windows a pipe whose reader has gone is often EINVAL, not EPIPE
    return (isinstance(err, BrokenPipeError) or number == errno.EBADF
            or (sys.platform == "win32" and number == errno.EINVAL))


def _stream_gone(stream) -> None:
    """Point ``stream``'s descriptor at os.devnull once its reader has gone, so that later writes and the final flush
    of what it still buffers cannot fail again.

    Python's documented recipe (the ``signal`` module's note on SIGPIPE); without it a
    closed pipe ends in a traceback or an "Exception ignored ... BrokenPipeError" and exit 120.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (tests capture it): nothing left to flush
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    if devnull != fd:  # equal when the descriptor was closed: devnull took its number
        os.dup2(devnull, fd)
        os.close(devnull)


def _flush_stdout() -> None:
    stream = sys.stdout
    if stream is None:  # no stdout at all (closed when Python started): nothing was printed
        return
    try:
        stream.flush()  # to a pipe stdout is block-buffered: a closed pipe shows here, not at exit
    except (OSError, ValueError) as err:
        if not _stream_closed(err, stream):
            raise
        _stream_gone(stream)


def _print(line: str) -> None:
    """Print one line of the report; a reader that has gone (``| head -1``) or a closed stdout (``>&-``) ends the
    report quietly."""
    stream = sys.stdout
    if stream is None:
        return
    try:
        print(line, file=stream)
    except (OSError, ValueError) as err:
        if not _stream_closed(err, stream):
            raise
        _stream_gone(stream)
    _flush_stdout()


def _say(line: str) -> None:
    """Print one line to stderr (a note or the error), the add-on's controls named beside the options left out
    (:func:`recon_core.io.notes.for_command_line`). A stderr that is closed (``2>&-``) or cannot be written says
    nothing, and the exit code stays the run's: there is nowhere else to say it."""
    from recon_core.io.notes import for_command_line

    stream = sys.stderr
    if stream is None:  # print(file=None) would print it on stdout
        return
    try:
        print(for_command_line(line), file=stream)
        stream.flush()
    except (OSError, ValueError) as err:
        if _stream_closed(err, stream):
            _stream_gone(stream)


def _open_closed_streams() -> None:
    """Give each standard stream that the shell closed (``recon-mesh ... >&-`` or ``2>&-``) os.devnull, and let
    stdout and stderr escape what their encoding cannot show (``PYTHONIOENCODING=ascii``).

    Python starts such a stream as None: a print to it does nothing (to ``sys.stderr``, it goes to stdout) and a
    flush fails. And the first file opened would take its descriptor, so that whatever a library writes to
    descriptor 1 or 2 would go into that file, a mesh perhaps. The descriptor is opened on os.devnull and the
    stream made on it, so what is printed there goes nowhere, as the shell asked, and the exit code is the run's.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        if getattr(sys, name) is not None:
            continue
        try:
            os.fstat(fd)
            taken = True  # by something else: the stream gets a descriptor of its own
        except OSError:
            taken = False
        devnull = os.open(os.devnull, os.O_RDWR)
        if not taken and devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)
            devnull = fd
        setattr(sys, name, open(devnull, mode, closefd=taken, encoding="utf-8"))
    from recon_core.io.notes import escape_what_streams_cannot_show

    escape_what_streams_cannot_show()


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one existing file (the same inode, by any path or link); False when ``b`` does not
    exist (reading it will say so)."""
    try:
        return b.exists() and (a.resolve() == b.resolve() or (a.exists() and a.samefile(b)))
    except (OSError, RuntimeError):  # RuntimeError: links that point at each other (Path.resolve's loop)
        return False


def _shown(path: Path) -> str:
    """``path`` for a sentence, a name too long to read (over 60 characters) cut to its start and end."""
    name = path.name
    return str(path if len(name) <= 60 else path.with_name(f"{name[:24]}…{name[-12:]}"))


def _check_name_length(path: Path, what: str) -> None:
    """Bad input (``ExportError``) when the name of ``path`` is longer than its file system allows: said before the
    model runs, not by the write once the work is done."""
    from recon_core.io.export import ExportError, name_too_long

    too_long = name_too_long(path)
    if too_long:
        size, limit, unit = too_long
        raise ExportError(f"Cannot write {what}{_shown(path)}: its name is {size} {unit} long and the file system "
                          f"allows at most {limit}; choose a shorter name.")


def _refuse_an_input(path: Path, what: str, args: argparse.Namespace) -> None:
    """Bad input (``ExportError``) when writing ``path`` would overwrite the input picture or the ``--mask`` file (by
    any name of it: another spelling, a link)."""
    from recon_core.io.export import ExportError

    for flag, given in (("the input picture", args.image), ("the --mask file", args.mask)):
        if given is not None and _same_file(path, Path(given)):
            raise ExportError(f"Cannot write {what}{path}: it is {flag}, which would be overwritten; choose another "
                              "file name.")


def _save_mask(mask, image: str, path: Path) -> None:
    """Write ``mask`` (H, W) as a PNG of the image file's size (:func:`recon_core.io.image.save_mask`).

    The folder was checked before the model ran; should the write still fail (a full disk), ``ExportError`` is raised
    (the meshes written before it are still temporary files, removed with it: exit code 2 means no file written,
    :func:`recon_core.io.export.staged_writes`).
    """
    from recon_core.io.image import save_mask
    from recon_core.io.export import ExportError

    try:
        save_mask(mask, image, path)
    except OSError as err:
        raise ExportError(f"Cannot write the mask to {path}: {err.strerror or err}. Choose a writable location.") from None


def _check_png_output(path: Path, what: str, example: str, args: argparse.Namespace) -> None:
    """Bad input (``ExportError``, naming ``what``, e.g. "the mask to ") unless ``path`` can take a PNG: not a folder
    (``example``.png inside it offered), ending in .png, in a folder that exists and can be written, its name not too
    long, and not the input picture or ``--mask`` file."""
    from recon_core.io.export import ExportError, refuse_a_bare_extension, unwritable_reason

    if _is_folder(path):
        raise ExportError(f"Cannot write {what}{path}: it is a folder; give a file name, e.g. "
                          f"{path / (example + '.png')}.")
    if path.suffix.lower() != ".png":
        refuse_a_bare_extension(path, (".png",), what, example)
        raise ExportError(f"Cannot write {what}{path}: the extension must be .png.")
    if not path.parent.exists():  # a file in its place is said next, as for the mesh
        raise ExportError(f"Cannot write {what}{path}: there is no folder {path.parent}; create it first.")
    _check_name_length(path, what)
    reason = unwritable_reason(path, folder=False)  # a folder was said above, with an example
    if reason:
        raise ExportError(f"Cannot write {what}{path}: {reason}; choose another folder.")
    _refuse_an_input(path, what, args)


def _save_preview(rgb, alpha, results, paths: list[Path], path: Path, millimetres: bool) -> None:
    """Write the preview PNG of ``results`` (:func:`recon_core.io.preview.preview_png`, each row named by its file in
    ``paths``; the picture's own ``alpha`` on a checkerboard, None: as it is) through a temporary file and a rename. The
    folder was checked before the model ran; should the write still fail (a full disk), ``ExportError`` is raised
    (what was written before it is still temporary, and removed: :func:`recon_core.io.export.staged_writes`)."""
    from recon_core.io.export import ExportError, atomic_write_bytes
    from recon_core.io.preview import preview_png

    try:
        atomic_write_bytes(path, preview_png(rgb, results, [p.name for p in paths], millimetres, alpha=alpha))
    except OSError as err:
        raise ExportError(f"Cannot write the preview to {path}: {err.strerror or err}. Choose a writable location.") \
            from None


def main(argv: list[str] | None = None) -> int:
    """Run ``recon-mesh``; returns the exit code (:data:`EPILOG`)."""
    _STOP.files_written = False  # this run's (main may be called again in one process)
    try:
        args = _parser().parse_args(argv)
    except SystemExit:
        _flush_stdout()  # --help into a closed pipe: argparse swallows the error, the exit flush would not
        raise
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    if args.vertices is not None:
        if args.detail is not None:
            _say("error: --detail and --vertices cannot be given together (--vertices is the deprecated form of "
                 "--detail); keep only --detail.")
            return 2
        _say(f"note: --vertices is deprecated; use --detail {'|'.join(DETAIL_VERTICES)}")
    vertices = args.vertices if args.detail is None else vertices_for_detail(args.detail)
    start = time.perf_counter()
    try:  # torch's import, the first second of a run: the handlers below need these names
        with _STOP.holding(force=True):
            from recon_core.io.image import ImageError, load_picture
            from recon_core.io.export import (EXPORT_FORMATS, ExportError, export_mesh, refuse_a_bare_extension,
                                               staged_writes, unwritable_reason)
            from recon_core.io.inference import MAX_HEIGHT_MM, MIN_HEIGHT_MM, Reconstructor
            from recon_core.io.weights import WeightsError
            from recon_core.network.finder import MissingDependency
    except KeyboardInterrupt:
        return _stopped()
    except Exception as err:  # noqa: BLE001 - a broken install (torch, numpy, a module of ours): one sentence
        if args.debug:
            raise
        _say(f"error: recon-mesh's libraries could not be loaded ({type(err).__name__}: {err}); the installation is "
             "broken or incomplete: run bash scripts/setup.sh again (or reinstall with pip install -e .), or rerun "
             "with --debug.")
        return 1
    try:
        if not args.output.strip():
            raise ExportError("The output file's name is empty; give one, e.g. -o chair.stl.")
        if args.output.strip() == "-":
            raise ExportError("Writing the mesh to standard output (-) is not supported; give a file's path, e.g. "
                              "-o chair.stl.")
        if args.image == "-":
            raise ImageError("Reading the picture from standard input (-) is not supported; give its file's path.")
        out = Path(args.output)
        if _is_folder(out):
            raise ExportError(f"Cannot write {out}: it is a folder; give a file name, e.g. {out / 'mesh.stl'}.")
        if out.suffix.lower() not in EXPORT_FORMATS:
            refuse_a_bare_extension(out, EXPORT_FORMATS, "", "mesh")
            raise ExportError(f"Cannot write {out}: the extension must be one of {', '.join(EXPORT_FORMATS)}.")
        if not out.parent.exists():
            raise ExportError(f"Cannot write {out}: the folder {out.parent} does not exist; create it first.")
        _check_name_length(out, "")
        reason = unwritable_reason(out, folder=False)  # a folder was said above, with an example
        if reason:
            raise ExportError(f"Cannot write {out}: {reason}; choose another folder.")
        for flag, given, example in (("--save-mask", args.save_mask, "mask"), ("--preview", args.preview, "preview")):
            if given is not None and not given.strip():
                raise ExportError(f"The {flag} file's name is empty; give one, e.g. {flag} {example}.png.")
        mask_out = None if args.save_mask is None else Path(args.save_mask)
        if mask_out is not None:
            _check_png_output(mask_out, "the mask to ", "mask", args)
        preview_out = None if args.preview is None else Path(args.preview)
        if preview_out is not None:
            _check_png_output(preview_out, "the preview to ", "preview", args)
            if mask_out is not None and (preview_out.resolve() == mask_out.resolve()
                                         or _same_file(preview_out, mask_out)):
                raise ExportError(f"Cannot write the preview to {preview_out}: it is the --save-mask file too; give "
                                  "them different names.")
            if (mask_out is not None and sys.platform in ("win32", "darwin")  # their disks ignore case by default
                    and str(preview_out.resolve()).lower() == str(mask_out.resolve()).lower()):
                raise ExportError(f"Cannot write the preview to {preview_out}: on Windows' and macOS's disks it is the "
                                  f"--save-mask file {mask_out} too, as names differing only in case are one file "
                                  "there; give them different names.")
        if args.height_mm is not None and not MIN_HEIGHT_MM <= args.height_mm <= MAX_HEIGHT_MM:  # NaN fails too
            keep = "; to keep the model's own size, leave --height-mm out" if args.height_mm == 0 else ""
            raise ValueError(f"--height-mm must be a number of millimetres from {MIN_HEIGHT_MM:g} to "
                             f"{MAX_HEIGHT_MM:,.0f}, got {args.height_mm:g}{keep}.")  # "0" as typed, not "0.0"
        if out.suffix.lower() == ".3mf" and args.height_mm is None:
            raise ExportError(f"Cannot write {out} without a size: a 3MF file is in millimetres, so give the "
                              "object's real height, e.g. --height-mm 90.")
        if args.candidates < 1:
            raise ValueError(f"--candidates must be at least 1, got {args.candidates}.")
        for rank in range(1, args.candidates + 1) if args.candidates > 1 else ():  # one: OUT itself, checked above
            path = candidate_path(out, rank)
            _check_name_length(path, "candidate ")
            if path.is_dir():
                raise ExportError(f"Cannot write candidate {path}: it is a folder; choose another output name.")
            _refuse_an_input(path, "candidate ", args)
        if args.candidates == 1:  # with more, OUT itself is not written
            _refuse_an_input(out, "", args)
        # bad input fails fast, before the model loads
        rgb, alpha, notes, own = load_picture(args.image, args.mask, return_own_alpha=True)
        with _STOP.holding(force=True):
            rec = Reconstructor.from_file(args.model)
        results = rec.reconstruct_candidates(
            rgb, alpha, args.candidates, category=args.category, vertices=vertices, height_mm=args.height_mm,
            smooth=not args.no_smooth, source=args.image, solid=args.solid, upright=not args.as_seen,
        )
        result = results[0]
        for candidate in results:  # the picture's notes are every candidate's
            candidate.notes[:0] = notes
        paths = [out] if args.candidates == 1 else [candidate_path(out, i + 1) for i in range(len(results))]
        # exit code 2 or a stop means no file written: the files the user had at these paths stay as they were until
        # every new one is written, and then all are renamed into place at once (with the signals held)
        with staged_writes() as commit:
            for path, candidate in zip(paths, results):
                with _STOP.holding():  # inside the libraries' C code a signal's exception could turn into another
                    export_mesh(candidate.verts, candidate.faces, path, millimetres=args.height_mm is not None)
            if mask_out is not None:
                with _STOP.holding():
                    _save_mask(result.mask, args.image, mask_out)
            if preview_out is not None:
                with _STOP.holding():
                    _save_preview(rgb, own, results, paths, preview_out, args.height_mm is not None)
            with _STOP.holding():
                commit()
                _STOP.files_written = True
    except KeyboardInterrupt:  # Ctrl-C or a stop signal: no file written unless it came during the renames
        return _stopped("the files were written" if _STOP.files_written else "no file written")
    except Exception as err:  # noqa: BLE001 - each one sentence, not a traceback
        if _STOP.signum is not None:  # a signal that code it arrived in turned into another error
            return _stopped()
        if args.debug:  # the traceback too; the sentence and the exit code stay the same
            traceback.print_exc()
        if isinstance(err, (ImageError, WeightsError, ExportError, ValueError)):  # bad input
            _say(f"error: {err}")
            return 2
        if isinstance(err, MissingDependency):  # a package missing here: its sentence says how to install it
            _say(f"error: {err}")
            return 1
        _say(f"error: unexpected failure ({type(err).__name__}: {err}); rerun with --debug and report it.")
        return 1
    _STOP.files_written = True
    try:
        return _report(args, result, results, paths, out, mask_out, time.perf_counter() - start, preview_out)
    except OSError as err:  # stdout full or failing (a closed pipe ends the report quietly in _print)
        _say(f"error: the files were written, but the report could not be printed to standard output "
             f"({err.strerror or err}).")
        return 1


def _report(args, result, results, paths, out, mask_out, seconds: float, preview_out=None) -> int:
    """Print the notes (stderr) and the report (stdout) of a run whose files are written; its exit code.

    With several candidates, the notes all of them share (the picture's) are said once, and each candidate's own
    (its pockets filled, its decimation) with its file's name."""
    shared = [n for n in result.notes if all(n in c.notes for c in results[1:])]
    for note in shared + _unit_notes(args, results) + _plate_notes(args, results):
        _say(f"note: {note}")
    if len(results) > 1:
        for path, candidate in zip(paths, results):
            for note in candidate.notes:
                if note not in shared:
                    _say(f"note ({path}): {note}")  # the path as given, folder and all, as "wrote" says it
    if len(results) < args.candidates:
        plural = "s" if len(results) != 1 else ""
        _say(f"note: the model found {len(results)} candidate shape{plural} for this picture, not {args.candidates}")
    probs = result.category_probs
    # The meshes are on disk (each written to a temporary file and renamed) before the first line below.
    if len(results) == 1 and args.candidates == 1:
        _print(f"wrote {out} ({len(result.verts)} vertices, {len(result.faces)} faces) in {seconds:.2f} s")
    else:
        _print(f"wrote {len(results)} candidates in {seconds:.2f} s, the likeliest first")
    if mask_out is not None:
        _print(f"wrote {mask_out} (the object mask)")
    if preview_out is not None:
        _print(f"wrote {preview_out} (the preview)")
    _print(f"category: {result.category}" + ("" if args.category else f" (predicted, p={probs.max():.2f})"))
    from recon_core.io.notes import likelihood_said

    for path, candidate in zip(paths, results):
        if args.candidates > 1:
            likely = likelihood_said(candidate.likelihood)
            _print(f"\ncandidate {path}: {len(candidate.verts)} vertices, {len(candidate.faces)} faces"
                   + (f", {likely}" if likely else ""))
        _print(candidate.report.summary())
    return 0 if all(c.report.ok for c in results) else 3


UNITLESS_SUFFIXES = (".stl", ".obj", ".ply")
"""Mesh formats without a unit that slicers read as millimetres: written without ``--height-mm`` they get a note."""


def _unit_notes(args, results) -> list[str]:
    """The note of meshes written in the data's units (without ``--height-mm``) to a format a slicer reads as
    millimetres (STL, OBJ, PLY), or to a GLB, whose unit is the metre: how tall they would be taken, and how to give
    the real height; of an OBJ in millimetres, how Blender's importer reads it; none otherwise."""
    suffix = Path(args.output).suffix.lower()
    if args.height_mm is not None and suffix == ".obj":  # Blender's OBJ importer takes a unit as a metre
        return ["OBJ has no unit: the file is in millimetres, +Y up, as CAD tools read it (for a slicer, which takes "
                "+Z as up, write STL or 3MF); Blender's OBJ import takes one unit as a metre (a 90 mm object comes "
                "in 90 m tall): set its Scale to 0.001, or import into a scene whose Unit Scale is 0.001"]
    if args.height_mm is not None or suffix not in (*UNITLESS_SUFFIXES, ".glb"):
        return []
    heights = [float(r.verts[:, 1].max() - r.verts[:, 1].min()) for r in results if len(r.verts)]  # +Y is up
    if not heights:
        return []
    low, high = f"{min(heights):.2f}", f"{max(heights):.2f}"
    tall = low if low == high else f"{low} to {high}"
    what = "the mesh is" if len(results) == 1 else "the candidates are"
    if suffix == ".glb":
        return [f"without --height-mm {what} in the data's units ({tall} tall); glTF's unit is the metre, so Blender "
                f"and glTF viewers show it {tall} m tall: give the object's real height, e.g. --height-mm 90"]
    return [f"without --height-mm {what} in the data's units ({tall} tall); {suffix[1:].upper()} has no unit and a "
            f"slicer reads it as {tall} mm: give the object's real height, e.g. --height-mm 90"]


def _plate_notes(args, results) -> list[str]:
    """The note of meshes made ``--height-mm`` tall that are larger than a large printer's build volume along a side
    (:data:`recon_core.io.notes.PLATE_MM`): their size, and what to do; none otherwise."""
    from recon_core.io.notes import PLATE_MM, output_size, plate_note

    if args.height_mm is None:
        return []
    sizes = [output_size(r.verts) for r in results if len(r.verts)]  # width, depth, height
    large = [s for s in sizes if s.max() > PLATE_MM]
    if not large:
        return []
    which = "it is" if len(results) == 1 else ("they are" if len(large) == len(results) else "some are")
    return [plate_note(max(large, key=lambda s: s.max()), "give a smaller --height-mm", which)]


def candidate_path(out: Path, rank: int) -> Path:
    """``OUT_rank.EXT``: where ``--candidates`` writes candidate ``rank`` (1 = the likeliest) of ``OUT.EXT``."""
    return out.with_name(f"{out.stem}_{rank}{out.suffix}")


def _is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder; False where it cannot be asked (a name longer than the file system allows: that
    is said next, by the checks of the name)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def run() -> None:
    """The ``recon-mesh`` console script: :func:`main`, then the process ends without the interpreter's teardown.

    Tearing down torch and the loaded model (module and object finalisers) took about a second of
    every cold run, after the work was done. By then the mesh and the mask are on disk (each written
    to a temporary file and renamed) and the report is printed; stdout, stderr and the log are
    flushed here before ``os._exit``. ``--help`` and usage errors exit through argparse as usual. A standard
    stream the shell closed is os.devnull for the run (:func:`_open_closed_streams`). SIGTERM and SIGHUP stop the run
    as Ctrl-C does, no file written (nor an earlier run's replaced) unless the report was printing
    (:data:`STOP_SIGNALS`, :class:`_Stop`).
    """
    _open_closed_streams()
    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)  # no SIGHUP on Windows
        if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, _STOP)
    try:
        code = main()
        _flush_stdout()
    except KeyboardInterrupt:  # while a sentence or the report printed
        code = _stopped("the files were written" if _STOP.files_written else "no file written")
    except OSError:  # the report's last flush into a full stdout: main has said so, or had nothing left to say
        code = 1
    _STOP.depth += 1  # the run is over: a signal now is recorded only, and the process ends as below
    try:
        sys.stderr.flush()
    except (OSError, ValueError):  # a stderr that cannot be written: nothing more can be said
        pass
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    run()
