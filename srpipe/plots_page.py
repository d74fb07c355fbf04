"""An offline page for ``dvc plots show``: DVC's HTML template with vega, vega-lite and vega-embed inside.

DVC's own page loads the three libraries from a CDN, so it stays blank without internet. This
writes a page template that carries them instead: ``npm pack`` fetches the packages (from the
npm registry or npm's cache), and their minified UMD builds go inline into ``<script>`` tags.
The template has no ``{scripts}`` placeholder, where DVC would put its CDN tags. Use it with
``dvc plots show --html-template FILE`` or the ``plots.html_template`` setting (``make install``
writes build/dvc-plots.html and names it in .dvc/config.local)::

    python -m srpipe.plots_page build/dvc-plots.html
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .io import SrpipeError, atomic_path

# DVC's plots are Vega-Lite 5 specs; each package's UMD build is package/build/<name>.min.js
PACKAGES = ("vega@5.33.1", "vega-lite@5.23.0", "vega-embed@6.29.0")
# what DVC fills in, and what ends or escapes a <script> element: a library holding one breaks the page
FORBIDDEN = ("{plot_divs}", "{scripts}", "{refresh_tag}", "</script", "<!--")

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
%s
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def npm_pack(packages: tuple[str, ...], into: Path) -> list[Path]:
    """The packages' tarballs (``name@version`` each), in their order, fetched by ``npm pack`` into ``into``."""
    npm = shutil.which("npm")
    if npm is None:
        raise SrpipeError("npm not found: install Node.js (with npm) to make the offline plots page; "
                          "without it `dvc plots show` loads vega from a CDN")
    proc = subprocess.run([npm, "pack", "--silent", "--pack-destination", str(into), *packages],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise SrpipeError(f"npm pack {' '.join(packages)} failed ({why}); it needs the npm registry or npm's "
                          "cache of these packages")
    tarballs = [into / "{}-{}.tgz".format(*spec.rsplit("@", 1)) for spec in packages]
    missing = [t.name for t in tarballs if not t.is_file()]
    if missing:
        raise SrpipeError(f"npm pack wrote {proc.stdout.split()}, not {missing}; give exact name@version specs")
    return tarballs


def minified_build(tarball: Path) -> str:
    """``package/build/<name>.min.js`` of an npm package tarball."""
    name = tarball.name.rsplit("-", 1)[0]  # vega-lite-5.23.0.tgz -> vega-lite
    member = f"package/build/{name}.min.js"
    with tarfile.open(tarball) as tar:
        try:
            script = tar.extractfile(member).read().decode("utf-8")
        except KeyError:
            raise SrpipeError(f"{tarball.name} has no {member}") from None
    found = [p for p in FORBIDDEN if p in script.lower()]
    if found:
        raise SrpipeError(f"{member} of {tarball.name} contains {found[0]!r}, which breaks DVC's page; "
                          "pin another version in srpipe/plots_page.py")
    return script


def write_template(path: str | Path, packages: tuple[str, ...] = PACKAGES) -> Path:
    """Write the offline page template to ``path`` (atomically) and return it."""
    with tempfile.TemporaryDirectory() as work:
        tarballs = npm_pack(packages, Path(work))
        scripts = [f"    <script>/* {spec} */\n{minified_build(t)}\n    </script>"
                   for spec, t in zip(packages, tarballs)]
    with atomic_path(path) as tmp:
        tmp.write_text(PAGE % "\n".join(scripts), encoding="utf-8")
    return Path(path)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m srpipe.plots_page FILE.html\n\n{__doc__}")
    try:
        path = write_template(sys.argv[1])
    except SrpipeError as exc:
        sys.exit(f"srpipe: error: {exc}")
    print(f"{path}: offline page for dvc plots show ({', '.join(PACKAGES)})")


if __name__ == "__main__":
    main()
