"""The documentation stays true to the code: the params reference is generated from the schema."""

from srpipe.config import Params
from srpipe.reference import keys, render

from .conftest import ROOT


def test_the_params_reference_is_current():
    """docs/params.md is written by `python -m srpipe.reference`; run it after changing the schema or params.yaml."""
    page = (ROOT / "docs" / "params.md").read_text()
    assert page == render((ROOT / "params.yaml").read_text()), "docs/params.md is stale: run python -m srpipe.reference"


def test_the_params_reference_names_every_key_with_its_default_and_bounds():
    page = render((ROOT / "params.yaml").read_text())
    every = [key for key, _ in keys(Params)]
    assert len(every) > 100 and all(f"| `{key}` |" in page for key in every)
    assert "| `train.lr` | number | `0.0002` | `0.002` | > 0, <= 1 |" in page
    assert "| `scale` | integer | `2` | `2` | `2`, `3`, `4`, `8` |" in page
    assert "| `model.global_skip` | text or null | `null` | `null` | `bicubic`, `none` |" in page
    assert "| `data.train` | text or list of text |" in page
    assert not [line for line in page.splitlines() if line.startswith("| `") and line.endswith("|  |")], \
        "every key has a description (the schema's, or its comment in params.yaml)"


# ---------------------------------------------------------------- links and commands

import re  # noqa: E402
import shlex  # noqa: E402

import pytest  # noqa: E402

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page) -> set[str]:
    seen, found = {}, set()
    in_code = False
    for line in page.read_text().splitlines():
        in_code ^= line.startswith("```")
        if not in_code and (m := re.match(r"#{1,6} (.+)", line)):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for m in LINK.finditer(text):
        yield m.group(1) or m.group(2)


def broken_links(page) -> list[str]:
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):
            continue  # https://, mailto: ...: not checked offline
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists():
            broken.append(f"{target}: no such file")
        elif anchor and where.suffix == ".md" and anchor not in anchors(where):
            broken.append(f"{target}: no heading with that anchor in {where.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    assert not broken_links(page), f"{page.name}: " + "; ".join(broken_links(page))


def test_the_link_check_finds_a_broken_file_and_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# A `code` heading: with punctuation\n")
    page = tmp_path / "page.md"
    page.write_text("## Time to quality: the best\n[ok](#time-to-quality-the-best) [ok](other.md#a-code-heading-with-"
                    "punctuation) [bad](#nowhere) [gone](missing.md) ![img](other.md) [web](https://example.com/x)\n"
                    "```\n[in code](#ignored)\n```\n")
    assert broken_links(page) == ["#nowhere: no heading with that anchor in page.md", "missing.md: no such file"]


def shown_commands(page):
    """Every `srpipe ...` line in the page's code blocks, continuation lines joined."""
    for block in re.findall(r"```[a-z]*\n(.*?)```", page.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("srpipe "):
                yield shlex.split(line, comments=True)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_srpipe_command_shown_is_real(page):
    """Each command and option a page shows exists in the CLI (parsed against the Typer app)."""
    assert not wrong_commands(page), "; ".join(wrong_commands(page))


def test_the_command_check_finds_a_wrong_command_and_option(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\nsrpipe trian\nsrpipe upscale a.png \\\n  --modle m.onnx --out up\n"
                    "srpipe data fetch set5  # ok\n$ srpipe evaluate --set eval.lpips=false\n```\n")
    assert wrong_commands(page) == ["srpipe trian: no command 'trian'", "srpipe upscale a.png --modle m.onnx --out up: "
                                    "no option --modle"]


def wrong_commands(page) -> list[str]:
    import typer

    from srpipe.cli import app

    group, wrong = typer.main.get_command(app), []
    for argv in shown_commands(page):
        command, words = group, argv[1:]
        while words and hasattr(command, "commands") and not words[0].startswith("-"):
            if words[0] not in command.commands:
                wrong.append(f"{' '.join(argv)}: no command {words[0]!r}")
                break
            command, words = command.commands[words[0]], words[1:]
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        options |= {"--help"}
        wrong += [f"{' '.join(argv)}: no option {w.split('=')[0]}" for w in words
                  if w.startswith("--") and w.split("=")[0] not in options]
    return wrong


# ---------------------------------------------------------------- --help as a reference


def every_command():
    import typer

    from srpipe.cli import app

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        for sub, leaf in getattr(command, "commands", {name: command}).items():
            yield (f"{name} {sub}" if sub != name else name), leaf


@pytest.mark.parametrize("name", [name for name, _ in every_command()])
def test_every_command_has_an_example_that_parses(name, tmp_path):
    """Each command's --help ends with an `Example: srpipe ...` line, and that line is a real command."""
    command = dict(every_command())[name]
    examples = [line.split("Example: ", 1)[1] for line in (command.help or "").splitlines() if "Example: " in line]
    assert examples and examples[0].startswith(f"srpipe {name} ") or examples[0] == f"srpipe {name}", command.help
    page = tmp_path / "example.md"
    page.write_text(f"```\n{examples[0]}\n```\n")
    assert not wrong_commands(page)


def test_version():
    from typer.testing import CliRunner

    from srpipe import __version__
    from srpipe.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"srpipe {__version__}\n"
