"""The repository's Markdown documents: every relative link names a file that exists and, with ``#anchor``, a
heading of that file (GitHub's anchors: the heading's text in lower case, without punctuation, spaces as hyphens)."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def documents() -> list[Path]:
    """The Markdown files git tracks (the working tree's when git is not there)."""
    try:
        names = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.md") if ".venv" not in p.parts]
    return [ROOT / n for n in names if (ROOT / n).is_file()]


def slug(text: str) -> str:
    """GitHub's anchor of a heading: markup and punctuation dropped, lower case, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def lines_outside_code(path: Path) -> list[tuple[int, str]]:
    """The file's (line number, line) pairs, those in fenced code blocks left out (their '#' are not headings)."""
    out, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (a repeated one also as ``-1``, ``-2``, ...)."""
    seen: dict[str, int] = {}
    for _, line in lines_outside_code(path):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            seen.setdefault(f"{base}-{count}" if count else base, 1)
    return set(seen)


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of each relative link outside code (fenced blocks and code spans), a link whose text
    runs over several lines of one paragraph included."""
    lines = path.read_text(encoding="utf-8").splitlines()
    outside = {number for number, _ in lines_outside_code(path)}
    text = "\n".join(line if number in outside else "" for number, line in enumerate(lines, 1))
    text = re.sub(r"`[^`]*`", lambda m: re.sub(r"[^\n]", " ", m.group()), text)  # code spans blanked, lines kept
    out = []
    for match in LINK.finditer(text):
        target = match.group(1)
        if "\n\n" in match.group() or re.match(r"[a-z][a-z0-9+.-]*:", target):  # across paragraphs; http:, ...
            continue
        out.append((text.count("\n", 0, match.start()) + 1, target))
    return out


def broken_links(path: Path) -> list[str]:
    """Each relative link of ``path`` whose file or heading is missing, as 'line: target (why)'."""
    found = []
    for number, target in links(path):
        name, _, anchor = target.partition("#")
        goal = path if not name else (path.parent / name).resolve()
        if not goal.exists():
            found.append(f"{number}: {target} (no such file)")
        elif anchor and goal.suffix == ".md" and anchor not in anchors(goal):
            found.append(f"{number}: {target} (no such heading)")
    return found


def test_the_slug_is_githubs():
    assert slug("The finder's mask grown to the object's edges (2026-12-06, twenty-seventh session)") == \
        "the-finders-mask-grown-to-the-objects-edges-2026-12-06-twenty-seventh-session"
    assert slug("`recon-mesh` on **two** pictures: 3 → 4 ×") == "recon-mesh-on-two-pictures-3--4-"


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n## A part\n\n[ok](#a-part) [ok](b.md#end) [no](#nowhere) "
                                   "[no](c.md) [no](b.md#top)\n\n```\n[code](#nowhere)\n```\n"
                                   "A [link over\ntwo lines](#elsewhere) and `[code](#span)`.\n", encoding="utf-8")
    (tmp_path / "b.md").write_text("# End\n", encoding="utf-8")
    assert broken_links(tmp_path / "a.md") == ["5: #nowhere (no such heading)", "5: c.md (no such file)",
                                                "5: b.md#top (no such heading)", "10: #elsewhere (no such heading)"]


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_of_the_documents_leads_somewhere(path):
    assert broken_links(path) == []
