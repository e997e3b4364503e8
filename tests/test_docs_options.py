"""The options and defaults that README.md and docs/*.md quote are the code's.

What is checked, on every page:

- every ``flash ...`` command (in code blocks and in inline code) uses only options that its
  command's parser (``flash.cli.build_parser()``) has; ``python benchmarks/X.py ...`` only options
  that script's ``add_argument`` calls declare;
- every bare ``--option`` in inline code exists in the parser of the commands its section (or the
  nearest section above it that names one) talks about, and its quoted values (``--keep
  best|last``) are among the option's choices where it has choices;
- a default quoted for an option, in a table with a *default* column or as ``(default: X)``
  right after it, equals the parser's;
- a default quoted for a Python keyword, in a table with a *default* column, as
  ```name=value` (default ...)`` or as ```Class.attr = value```, equals the code's, and a
  keyword in such a table is a parameter of a class or function its section names;
- an untested Python block that is one call (a signature shown with its defaults) passes each
  keyword its default.

The parsers are read, not listed here, so options added or renamed in the code are checked as
soon as a page quotes them.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import inspect
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(?P<language>\w*)\s*$")
HEADING = re.compile(r"^(?P<level>#{1,6}) (?P<title>.+)$")
SPAN = re.compile(r"(?<!`)`(?!`)(?P<code>[^`\n]+)`(?!`)")
OPTION = re.compile(r"^--[a-z][a-z0-9-]*")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_.,\[\]:|-]*(\.\.\.)?$")
MODULES = (
    "flash",
    "flash.image",
    "flash.text",
    "flash.tabular",
    "flash.core.finetuning",
    "flash.core.serve",
    "flash.core.export",
    "flash.core.download",
    "flash.core.plots",
)


# -- the pages ------------------------------------------------------------------------------------
@dataclass
class Section:
    """A heading's text up to the next heading of the same or a higher level."""

    title: str
    level: int
    start: int
    end: int


@dataclass
class Page:
    path: Path
    lines: list[str]
    sections: list[Section]

    @property
    def name(self) -> str:
        return self.path.relative_to(ROOT).as_posix()

    def enclosing(self, line: int) -> list[Section]:
        """The sections holding line ``line``, innermost first."""
        found = [s for s in self.sections if s.start <= line < s.end]
        return sorted(found, key=lambda s: -s.level)

    def text(self, section: Section) -> str:
        return "\n".join(self.lines[section.start : section.end])


def read_page(path: Path) -> Page:
    lines = path.read_text(encoding="utf-8").splitlines()
    heads, fenced = [], False
    for number, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := HEADING.match(line)):
            heads.append((number, len(match.group("level")), match.group("title")))
    sections = []
    for k, (number, level, title) in enumerate(heads):
        end = next((n for n, lv, _ in heads[k + 1 :] if lv <= level), len(lines))
        sections.append(Section(title, level, number, end))
    sections.append(Section("(page)", 0, 0, len(lines)))
    return Page(path, lines, sections)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass
class Block:
    language: str
    start: int  # the line of the opening fence
    lines: list[str]
    tested: bool


def code_blocks(page: Page) -> list[Block]:
    blocks, k = [], 0
    while k < len(page.lines):
        match = FENCE.match(page.lines[k].strip())
        if match:
            end = next(
                (j for j in range(k + 1, len(page.lines)) if page.lines[j].strip() == "```"), len(page.lines)
            )
            before = next((page.lines[j].strip() for j in range(k - 1, -1, -1) if page.lines[j].strip()), "")
            blocks.append(
                Block(match.group("language"), k, page.lines[k + 1 : end], before.startswith("<!-- test"))
            )
            k = end
        k += 1
    return blocks


def prose_lines(page: Page) -> list[tuple[int, str]]:
    """(line number, line) of the text outside code blocks."""
    inside = set()
    for block in code_blocks(page):
        inside.update(range(block.start, block.start + len(block.lines) + 2))
    return [(n, line) for n, line in enumerate(page.lines) if n not in inside]


# -- the parsers ----------------------------------------------------------------------------------
@cache
def flash_parsers() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every ``flash`` (sub)command's parser, by its command words."""
    from flash.cli import build_parser

    found: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        found[path] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))

    walk(build_parser(), ())
    return found


@dataclass
class Option:
    strings: tuple[str, ...]
    default: object
    choices: tuple[str, ...] | None
    flag: bool  # takes no value


def parser_options(path: tuple[str, ...]) -> dict[str, list[Option]]:
    """The options of the command ``flash PATH`` and of every subcommand under it."""
    options: dict[str, list[Option]] = {}
    for key, parser in flash_parsers().items():
        if key[: len(path)] != path:
            continue
        for action in parser._actions:
            if not action.option_strings:
                continue
            choices = tuple(str(c) for c in action.choices) if action.choices else None
            option = Option(tuple(action.option_strings), action.default, choices, action.nargs == 0)
            for string in action.option_strings:
                options.setdefault(string, []).append(option)
    return options


@cache
def script_options(script: str) -> dict[str, list[Option]]:
    """The options a script under the repository declares with ``add_argument("--name", ...)``."""
    path = ROOT / script
    if not path.is_file():
        return {}
    options: dict[str, list[Option]] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            strings = tuple(
                a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")
            )
            keywords = {k.arg: k.value for k in node.keywords}
            default = _literal(keywords.get("default"))
            choices = _literal(keywords.get("choices"))
            flag = _literal(keywords.get("action")) in ("store_true", "store_false")
            option = Option(strings, default, tuple(map(str, choices)) if choices else None, flag)
            for string in strings:
                options.setdefault(string, []).append(option)
    return options


def _literal(node: ast.AST | None) -> object:
    try:
        return ast.literal_eval(node) if node is not None else None
    except ValueError:
        return None


# -- commands -------------------------------------------------------------------------------------
@dataclass
class Command:
    kind: str  # "flash" or a script's path
    path: tuple[str, ...]  # the flash command words
    tokens: list[str]  # what follows the command words
    line: int


def parse_command(text: str, line: int) -> Command | None:
    """A ``flash ...``, ``python -m flash ...`` or ``python benchmarks/X.py ...`` command line."""
    text = text.strip().removeprefix("$ ")
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        words = text.split()
    if words[:3] == ["python", "-m", "flash"]:
        words = ["flash", *words[3:]]
    if (
        words
        and words[0] == "python"
        and len(words) > 1
        and re.match(r"(benchmarks|tools)/\w+\.py$", words[1])
    ):
        return Command(words[1], (), words[2:], line)
    if not words or words[0] != "flash":
        return None
    words, path = words[1:], ()
    parsers = flash_parsers()
    while words and (*path, words[0]) in parsers:
        path, words = (*path, words[0]), words[1:]
    return Command("flash", path, words, line)


def commands(page: Page) -> list[Command]:
    found = []
    for block in code_blocks(page):
        if block.language not in ("", "bash", "sh", "console"):
            continue
        prompted = any(line.startswith("$ ") for line in block.lines)  # a session: the rest is output
        joined, start = "", None
        for offset, line in enumerate(block.lines):
            if prompted and not joined and not line.startswith("$ "):
                continue
            start = block.start + 1 + offset if start is None else start
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            command = parse_command(joined + line, start)
            if command:
                found.append(command)
            joined, start = "", None
    for number, line in prose_lines(page):
        for span in SPAN.finditer(line):
            command = parse_command(span.group("code").replace("\\|", "|"), number)
            if command:
                found.append(command)
    return found


def options_of(command: Command) -> dict[str, list[Option]]:
    return parser_options(command.path) if command.kind == "flash" else script_options(command.kind)


def command_problems(page: Page) -> list[str]:
    from flash.cli.flash_zero import is_flash_zero

    problems = []
    for command in commands(page):
        if command.kind == "flash" and command.tokens and is_flash_zero(command.tokens):
            continue  # Lightning Flash 0.8's syntax, translated before any parser sees it
        if command.kind == "flash" and command.tokens and not command.path:
            first = command.tokens[0]
            if re.match(r"[a-z]", first):
                problems.append(f"{page.name}:{command.line + 1}: `flash {first}` is not a flash command")
                continue
        known = options_of(command)
        if command.kind != "flash" and not known:
            continue  # a script without argparse options, or one that is not in the repository
        where = "flash " + " ".join(command.path) if command.kind == "flash" else command.kind
        for token in command.tokens:
            name = OPTION.match(token)
            if name and name.group(0) not in known:
                problems.append(f"{page.name}:{command.line + 1}: `{where}` has no option {name.group(0)}")
    return problems


# -- bare options and their defaults --------------------------------------------------------------
def scope_options(page: Page, line: int) -> tuple[str, dict[str, list[Option]]]:
    """The options of the commands that the innermost section around ``line`` naming any talks about."""
    for section in page.enclosing(line):
        named = [c for c in commands(page) if section.start <= c.line < section.end]
        named = [c for c in named if c.kind == "flash" or script_options(c.kind)]
        if named:
            merged: dict[str, list[Option]] = {}
            for command in named:
                for string, options in options_of(command).items():
                    merged.setdefault(string, []).extend(options)
            return section.title, merged
    return "(any command)", parser_options(())


def bare_options(page: Page) -> list[tuple[int, str]]:
    """(line, text) of inline code that starts with an option: ```--epochs N```."""
    found = []
    for number, line in prose_lines(page):
        for span in SPAN.finditer(line):
            code = span.group("code").replace("\\|", "|")
            if OPTION.match(code):
                found.append((number, code))
    return found


def bare_option_problems(page: Page) -> list[str]:
    problems = []
    for number, code in bare_options(page):
        title, known = scope_options(page, number)
        words = code.split()
        name = OPTION.match(words[0]).group(0)
        if name not in known:
            problems.append(
                f"{page.name}:{number + 1}: `{code}`: no option {name} in the commands of *{title}*"
            )
            continue
        value = words[0].partition("=")[2] or (words[1] if len(words) > 1 else "")
        choices = [o.choices for o in known[name] if o.choices]
        if value and choices and not PLACEHOLDER.match(value) and not value.startswith("-"):
            for part in value.split("|"):
                if all(part not in c for c in choices):
                    problems.append(
                        f"{page.name}:{number + 1}: `{code}`: {part!r} is not a choice of {name} {choices[0]}"
                    )
    return problems


def parse_default(text: str) -> tuple[bool, object]:
    """A quoted default as a value, and whether it is one literal (not a description)."""
    text = text.strip().strip("`").strip()
    if text.lower() in ("off", "none", "no"):
        return True, None
    if re.fullmatch(r"\d{1,3}(,\d{3})+", text):
        text = text.replace(",", "")
    try:
        return True, ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    if re.fullmatch(r"[A-Za-z0-9_.+-]+", text) and not re.search(r"\s", text):
        return True, text
    return False, None


def same_default(quoted: object, actual: object) -> bool:
    if quoted is None:
        return actual in (None, False)
    if isinstance(quoted, (int, float)) and not isinstance(quoted, bool):
        try:
            return actual is not None and not isinstance(actual, bool) and float(actual) == float(quoted)
        except (TypeError, ValueError):
            return False
    if isinstance(quoted, str):
        return str(actual) == quoted
    if isinstance(quoted, tuple) and isinstance(actual, (tuple, list)):
        return tuple(actual) == quoted
    return quoted == actual


def table_rows(page: Page) -> list[tuple[int, list[str], list[str]]]:
    """(line, header cells, row cells) of every Markdown table row."""
    rows, header = [], None
    for number, line in prose_lines(page):
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if header is None:
            header = [c.lower() for c in cells]
        elif not all(set(c) <= set("-: ") for c in cells):
            rows.append((number, header, cells))
    return rows


def option_default_problems(page: Page) -> list[str]:
    problems = []
    quoted: list[tuple[int, str, str]] = []  # line, option, quoted default
    for number, header, cells in table_rows(page):
        if "default" in header and len(cells) == len(header):
            spans = SPAN.findall(cells[0])
            if len(spans) == 1 and OPTION.match(spans[0]):
                quoted.append((number, OPTION.match(spans[0]).group(0), cells[header.index("default")]))
    for number, line in prose_lines(page):
        for match in re.finditer(r"`(--[a-z][a-z0-9-]*)[^`]*`\s*\(default:?\s+([^)]+?)\)", line):
            quoted.append((number, match.group(1), match.group(2)))
    for number, name, text in quoted:
        literal, value = parse_default(text)
        if not literal:
            continue
        _, known = scope_options(page, number)
        actual = [o.default for o in known.get(name, [])]
        if actual and not any(same_default(value, a) for a in actual):
            problems.append(
                f"{page.name}:{number + 1}: {name} quoted with default {text!r}; the code's is {actual[0]!r}"
            )
    return problems


# -- Python defaults ------------------------------------------------------------------------------
@cache
def public_names() -> dict[str, object]:
    names: dict[str, object] = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value)):
                names.setdefault(name, value)
    return names


@cache
def signatures(obj: object) -> list[inspect.Signature]:
    """The signatures of a function, or of a class's constructor and its methods that flash defines
    (``from_*`` builders, ``predict``, ``serve``, ...)."""
    if inspect.isfunction(obj):
        return [inspect.signature(obj)]
    found = []
    for name, member in inspect.getmembers(obj):
        own = (getattr(member, "__module__", None) or "").startswith("flash")
        if name == "__init__" or (own and not name.startswith("_") and callable(member)):
            with contextlib.suppress(TypeError, ValueError):
                found.append(inspect.signature(member))
    return found


def named_callables(page: Page, line: int) -> list[object]:
    """The classes and functions that the sections around ``line`` name, in inline code or code."""
    names = public_names()
    found: list[object] = []
    for section in page.enclosing(line):
        if section.level <= 1 and len(page.sections) > 2:
            break  # not the whole page: its other sections are about other things
        for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", page.text(section)):
            if (
                word in names
                and names[word] not in found
                and (inspect.isclass(names[word]) or f"`{word}" in page.text(section))
            ):
                found.append(names[word])
    return found


def declared_defaults(obj: object) -> dict[str, object]:
    """Defaults a task class declares as data: its ``optimization_defaults`` (the optimisation
    arguments every task takes by keyword, not in its signature)."""
    declared = getattr(obj, "optimization_defaults", None) if inspect.isclass(obj) else None
    return dict(declared) if isinstance(declared, dict) else {}


def keyword_defaults(callables: list[object], name: str) -> list[object]:
    """The defaults of parameter ``name`` in these callables' signatures (and declared defaults)."""
    defaults = []
    for obj in callables:
        if name in declared_defaults(obj):
            defaults.append(declared_defaults(obj)[name])
        for signature in signatures(obj):
            parameter = signature.parameters.get(name)
            if parameter is not None and parameter.kind not in (
                parameter.VAR_KEYWORD,
                parameter.VAR_POSITIONAL,
            ):
                defaults.append(parameter.default)
    return defaults


def passed_through(callables: list[object], name: str) -> bool:
    """Whether a method of these takes ``**kwargs`` and its docstring names ``name`` among them."""
    for obj in callables:
        members = [obj] if inspect.isfunction(obj) else [m for _, m in inspect.getmembers(obj, callable)]
        for member in members:
            if not (getattr(member, "__module__", None) or "").startswith("flash"):
                continue
            try:
                parameters = inspect.signature(member).parameters.values()
            except (TypeError, ValueError):
                continue
            if any(p.kind is p.VAR_KEYWORD for p in parameters) and f"``{name}``" in (member.__doc__ or ""):
                return True
    return False


def python_default_problems(page: Page) -> list[str]:
    problems = []
    quoted: list[tuple[int, str, str, bool]] = []  # line, keyword, default, must exist
    for number, header, cells in table_rows(page):
        if "default" not in header or len(cells) != len(header) or header[0] not in ("option", "argument"):
            continue
        names = SPAN.findall(cells[0])
        if not names or not all(re.fullmatch(r"[a-z_][a-z0-9_]*", n) for n in names):
            continue
        text = cells[header.index("default")]
        values = [text] if len(names) == 1 else [v for v in re.split(r",\s+(?![^()]*\))", text)]
        for k, name in enumerate(names):
            quoted.append((number, name, values[k] if len(values) == len(names) else "?", True))
    for number, line in prose_lines(page):
        pattern = r"`([a-z_][a-z0-9_]*)=([^`]+)`\s*(?:\((?:the )?default\b|by default)"
        for match in re.finditer(pattern, line):
            quoted.append((number, match.group(1), match.group(2), True))
    for number, name, text, must_exist in quoted:
        callables = named_callables(page, number)
        if not callables:
            continue
        defaults = keyword_defaults(callables, name)
        if not defaults:
            if must_exist and not passed_through(callables, name):
                names = ", ".join(getattr(c, "__name__", str(c)) for c in callables)
                problems.append(f"{page.name}:{number + 1}: `{name}` is not a parameter of {names}")
            continue
        literal, value = parse_default(text)
        if literal and not any(d is not inspect.Parameter.empty and same_default(value, d) for d in defaults):
            problems.append(
                f"{page.name}:{number + 1}: `{name}` quoted with default {text!r}; the code's: {defaults}"
            )
    for number, line in prose_lines(page):
        for match in re.finditer(r"`([A-Z]\w*)\.(\w+) = ([^`]+)`", line):
            owner = public_names().get(match.group(1))
            literal, value = parse_default(match.group(3))
            if owner is None or not literal:
                problems.append(
                    f"{page.name}:{number + 1}: {match.group(0)}: no class {match.group(1)} in flash"
                )
            elif not hasattr(owner, match.group(2)) or getattr(owner, match.group(2)) != value:
                actual = getattr(owner, match.group(2), "(not set)")
                problems.append(f"{page.name}:{number + 1}: {match.group(0)}, but the code has {actual!r}")
    return problems


def signature_block_problems(page: Page) -> list[str]:
    """An untested python block that is one call shows a signature: its keywords are the defaults."""
    problems = []
    for block in code_blocks(page):
        if block.language != "python" or block.tested:
            continue
        try:
            tree = ast.parse("\n".join(block.lines))
        except SyntaxError:
            continue
        if (
            len(tree.body) != 1
            or not isinstance(tree.body[0], ast.Expr)
            or not isinstance(tree.body[0].value, ast.Call)
        ):
            continue
        call = tree.body[0].value
        target = public_names().get(getattr(call.func, "id", ""))
        if target is None:
            continue
        signature = inspect.signature(target)
        for keyword in call.keywords:
            parameter = signature.parameters.get(keyword.arg)
            declared = declared_defaults(target)
            if parameter is None and keyword.arg not in declared:
                problems.append(
                    f"{page.name}:{block.start + 1}: {target.__name__} has no parameter {keyword.arg}"
                )
                continue
            default = declared[keyword.arg] if parameter is None else parameter.default
            try:
                value = ast.literal_eval(keyword.value)
            except ValueError:
                continue
            if not same_default(value, default):
                problems.append(
                    f"{page.name}:{block.start + 1}: {target.__name__}({keyword.arg}={value!r}) shown as the "
                    f"default; the code's is {default!r}"
                )
    return problems


# -- the tests ------------------------------------------------------------------------------------
PAGES = pages()
IDS = [p.relative_to(ROOT).as_posix() for p in PAGES]


@pytest.mark.parametrize("path", PAGES, ids=IDS)
def test_quoted_commands_use_options_their_parser_has(path):
    assert not command_problems(read_page(path)), "\n".join(command_problems(read_page(path)))


@pytest.mark.parametrize("path", PAGES, ids=IDS)
def test_quoted_options_exist_and_take_the_quoted_values(path):
    assert not bare_option_problems(read_page(path)), "\n".join(bare_option_problems(read_page(path)))


@pytest.mark.parametrize("path", PAGES, ids=IDS)
def test_quoted_option_defaults_are_the_parsers(path):
    assert not option_default_problems(read_page(path)), "\n".join(option_default_problems(read_page(path)))


@pytest.mark.parametrize("path", PAGES, ids=IDS)
def test_quoted_python_defaults_are_the_codes(path):
    page = read_page(path)
    problems = python_default_problems(page) + signature_block_problems(page)
    assert not problems, "\n".join(problems)


WRONG = """# flash

## The `flash` command

```bash
flash finetune image --train-folder data --epochs 4 --frobnicate 3
python benchmarks/text_cpu.py data --threads 1 --turbo
```

`flash serve model.ckpt` takes `--max-body-bytes` (default: 123) and `--no-such-option`;
`flash finetune image --train-bn maybe` and `--keep best|worst`.

| option | default | meaning |
|---|---|---|
| `--epochs N` | 7 | epochs |
| `--seed N` | 42 | seed |

## Image

`ImageClassifier.default_train_bn = True`; `ImageClassificationData` takes `crop_scale=(0.5, 1.0)` (the default).

| option | default | what it does |
|---|---|---|
| `hflip` | 0.5 | flips |
| `shear` | 0.1 | not a parameter |

```python
TextClassifier(num_classes, learning_rate=1.0)
```
"""


def test_the_checks_catch_options_and_defaults_the_code_lacks(tmp_path):
    path = tmp_path / "wrong.md"
    path.write_text(WRONG)
    page = Page(path, WRONG.splitlines(), read_page(path).sections)
    page.path = ROOT / "docs" / "wrong.md"  # names the page as if it were in docs/
    found = command_problems(page)
    assert any("has no option --frobnicate" in p for p in found), found
    assert any("benchmarks/text_cpu.py` has no option --turbo" in p for p in found), found
    assert not any("--epochs" in p or "--threads" in p for p in found), found
    found = bare_option_problems(page)
    assert any("no option --no-such-option" in p for p in found), found
    assert any("'worst' is not a choice of --keep" in p for p in found), found
    assert not any("--max-body-bytes`" in p and "no option" in p for p in found), found
    found = option_default_problems(page)
    assert any("--max-body-bytes quoted with default '123'" in p for p in found), found
    assert any("--epochs quoted with default '7'" in p for p in found), found
    assert not any("--seed" in p for p in found), found
    found = python_default_problems(page)
    assert any("default_train_bn = True`, but the code has False" in p for p in found), found
    assert any("`crop_scale` quoted with default '(0.5, 1.0)'" in p for p in found), found
    assert any("`shear` is not a parameter" in p for p in found), found
    assert not any("`hflip`" in p for p in found), found
    found = signature_block_problems(page)
    assert any("TextClassifier(learning_rate=1.0) shown as the default" in p for p in found), found
