"""F4: the token stream of one question as the speculative loop produced it, round by round.

Accepted draft tokens are shaded in alternating light greens (one shade per round), rejected draft
tokens are struck through and faded, and the target's own token of the round is boxed (red edge:
correction after a rejection; green edge: bonus after a fully accepted draft). Written as HTML (the
full trajectory and an accepted-only variant) and as a PNG/PDF rendered with matplotlib.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import pandas as pd
from matplotlib.patches import Patch, Rectangle

from .figures import (AR_CONFIG_PATTERN, FAILFAST_CONFIG_PATTERN, PAPER_AR_CONFIG, PAPER_FAILFAST_CONFIGS,
                      NoDataError, _filter, _new_figure, _pick_config, _sorted_ids, one_run, require_columns,
                      save_figure, with_str_question_ids)

F4_COLUMNS = ("config_name", "dataset", "question_id", "round", "draft_tokens", "accepted_len", "next_token", "bonus")

ACCEPTED_SHADES = ("#c7e9c0", "#a1d99b")
CORRECTION_EDGE = "#cb181d"
BONUS_EDGE = "#006d2c"
REJECTED_ALPHA = 0.45
NEWLINE_MARK = "↵"

Decode = Callable[[list[int]], str]


def token_ids_text(ids: list[int]) -> str:
    """Default decoder: show token ids, since no tokenizer was given."""
    return "".join(f"[{i}]" for i in ids)


@dataclass
class Piece:
    text: str
    kind: str  # accepted | rejected | correction | bonus
    round: int


def trajectory_pieces(rounds: pd.DataFrame, decode: Optional[Decode] = None, accepted_only: bool = False,
                      max_rounds: Optional[int] = None) -> list[Piece]:
    """One question's rounds (in round order) as display pieces, one per token."""
    decode = decode or token_ids_text
    pieces = []
    ordered = rounds.sort_values("round")
    if max_rounds is not None:
        ordered = ordered.head(max_rounds)
    for index, row in enumerate(ordered.to_dict("records")):
        draft = [int(t) for t in row["draft_tokens"]]
        accepted = int(row["accepted_len"])

        def text(token: int) -> str:
            # Special tokens often decode to nothing; show their id rather than an invisible piece.
            return decode([token]) or f"<{token}>"

        pieces += [Piece(text(t), "accepted", index) for t in draft[:accepted]]
        if not accepted_only:
            pieces += [Piece(text(t), "rejected", index) for t in draft[accepted:]]
        pieces.append(Piece(text(int(row["next_token"])), "bonus" if bool(row["bonus"]) else "correction", index))
    return pieces


def _choose(rounds: pd.DataFrame, config_names: Optional[Sequence[str]], dataset: Optional[str],
            question_id, func: str) -> tuple[list[str], str, object]:
    if config_names is None:
        names = rounds["config_name"].unique()
        picks = [_pick_config(names, [PAPER_AR_CONFIG], AR_CONFIG_PATTERN),
                 _pick_config(names, PAPER_FAILFAST_CONFIGS, FAILFAST_CONFIG_PATTERN)]
        config_names = [p for p in picks if p is not None] or sorted(names)[:2]
    rows = with_str_question_ids(rounds[rounds["config_name"].isin(config_names)])
    if dataset is None and not rows.empty:
        dataset = sorted(rows["dataset"].unique())[0]
    rows = _filter(rows, dataset=dataset)
    if question_id is None:
        common = None
        for name in config_names:
            ids = set(rows.loc[rows["config_name"] == name, "question_id"])
            common = ids if common is None else common & ids
        ordered = _sorted_ids(common or [])
        question_id = ordered[0] if ordered else None
    question_id = None if question_id is None else str(question_id)
    present = [n for n in config_names if ((rows["config_name"] == n) & (rows["question_id"] == question_id)).any()]
    if not present:
        raise NoDataError(f"{func}: no rounds for configs {list(config_names)}, dataset {dataset!r}, "
                          f"question {question_id!r}")
    return present, dataset, question_id


def _question_rounds(rounds: pd.DataFrame, config_name: str, question_id, dataset: Optional[str],
                     run_id: Optional[str]) -> pd.DataFrame:
    rows = with_str_question_ids(_filter(rounds, config_name=config_name, dataset=dataset))
    rows, _ = one_run(rows[rows["question_id"] == str(question_id)], run_id)
    return rows


def render_trajectory_html(rounds: pd.DataFrame, *, config_name: str, question_id, dataset: Optional[str] = None,
                           decode: Optional[Decode] = None, accepted_only: bool = False,
                           run_id: Optional[str] = None) -> str:
    """A standalone HTML page of one question's trajectory under one config (one run: ``run_id``,
    else the first by id when several targets share the config)."""
    func = "render_trajectory_html (F4)"
    require_columns(rounds, F4_COLUMNS, func, "rounds")
    rows = _question_rounds(rounds, config_name, question_id, dataset, run_id)
    if rows.empty:
        raise NoDataError(f"{func}: no rounds for config {config_name!r}, question {question_id!r}")
    spans = []
    for piece in trajectory_pieces(rows, decode, accepted_only):
        text = html.escape(piece.text).replace("\n", f"{NEWLINE_MARK}\n")
        css = f"acc{piece.round % 2}" if piece.kind == "accepted" else piece.kind
        spans.append(f'<span class="{css}" title="round {piece.round}">{text}</span>')
    variant = "accepted tokens only" if accepted_only else "full trajectory"
    title = html.escape(f"{config_name} · {dataset or ''} · question {question_id} · {variant}")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: monospace; max-width: 60em; margin: 2em auto; line-height: 1.9; }}
.traj {{ white-space: pre-wrap; }}
.acc0 {{ background: {ACCEPTED_SHADES[0]}; }}
.acc1 {{ background: {ACCEPTED_SHADES[1]}; }}
.rejected {{ text-decoration: line-through; opacity: {REJECTED_ALPHA}; }}
.correction {{ outline: 1.5px solid {CORRECTION_EDGE}; }}
.bonus {{ outline: 1.5px solid {BONUS_EDGE}; }}
</style></head><body>
<h3>{title}</h3>
<p><span class="acc0">accepted</span> <span class="acc1">(alternating shade per round)</span>
<span class="rejected">rejected draft</span> <span class="correction">target correction</span>
<span class="bonus">bonus token</span></p>
<div class="traj">{"".join(spans)}</div>
</body></html>
"""


# PNG layout works in monospace character cells, so a token's box width is its length in characters.
FONT_FAMILY = "DejaVu Sans Mono"
FONT_SIZE = 8.0
CHAR_WIDTH_IN = 0.602 * FONT_SIZE / 72  # DejaVu Sans Mono advance width is 0.602 em
LINE_HEIGHT_IN = 0.21
LINE_CHARS = 110
TOKEN_GAP = 0.25  # cells between adjacent tokens, so neighbouring boxes stay distinguishable


def _layout(pieces: list[Piece]) -> list[tuple[Piece, str, float, int]]:
    """(piece, shown text, x in cells, line) for each piece, wrapping at LINE_CHARS and after newlines."""
    placed, x, line = [], 0.0, 0
    for piece in pieces:
        breaks = "\n" in piece.text and piece.kind != "rejected"
        shown = re.sub(r"\s*\n\s*", NEWLINE_MARK, piece.text).replace("\t", " ")[:LINE_CHARS]
        if x > 0 and x + len(shown) > LINE_CHARS:
            x, line = 0.0, line + 1
        placed.append((piece, shown, x, line))
        x += len(shown) + TOKEN_GAP
        if breaks:
            x, line = 0.0, line + 1
    return placed


def _draw_panel(fig, bottom_in: float, height_in: float, width_in: float, left_in: float, placed, title: str) -> None:
    fig_w, fig_h = fig.get_size_inches()
    ax = fig.add_axes((left_in / fig_w, bottom_in / fig_h, width_in / fig_w, height_in / fig_h))
    n_lines = max(line for *_, line in placed) + 1 if placed else 1
    ax.set_xlim(0, LINE_CHARS)
    ax.set_ylim(n_lines, 0)
    ax.axis("off")
    ax.set_title(title, fontsize=9, loc="left")
    for piece, shown, x, line in placed:
        y = line + 0.5
        width = len(shown)
        if piece.kind == "accepted":
            ax.add_patch(Rectangle((x, line + 0.08), width, 0.84, facecolor=ACCEPTED_SHADES[piece.round % 2],
                                   edgecolor="none"))
        elif piece.kind in ("correction", "bonus"):
            edge = CORRECTION_EDGE if piece.kind == "correction" else BONUS_EDGE
            ax.add_patch(Rectangle((x, line + 0.08), width, 0.84, facecolor="white", edgecolor=edge, linewidth=1.0))
        alpha = REJECTED_ALPHA if piece.kind == "rejected" else 1.0
        ax.text(x, y, shown, fontsize=FONT_SIZE, family=FONT_FAMILY, va="center", ha="left", alpha=alpha,
                parse_math=False)
        if piece.kind == "rejected":
            ax.plot([x, x + width], [y, y], color="black", alpha=REJECTED_ALPHA, linewidth=0.8)


def plot_trajectory(rounds: pd.DataFrame, out_dir: Path | str, *, config_names: Optional[Sequence[str]] = None,
                    question_id=None, dataset: Optional[str] = None, decode: Optional[Decode] = None,
                    max_rounds: int = 40, stem: str = "f4_trajectory") -> list[Path]:
    """F4: PNG/PDF with one panel per config (first ``max_rounds`` rounds of one question) plus, per
    config, an HTML page of the full trajectory and one of the accepted tokens only.

    ``decode`` maps a list of token ids to text (e.g. ``tokenizer.decode``); by default ids are shown.
    """
    func = "plot_trajectory (F4)"
    require_columns(rounds, F4_COLUMNS, func, "rounds")
    config_names, dataset, question_id = _choose(rounds, config_names, dataset, question_id, func)
    panels = []
    for name in config_names:
        rows = _question_rounds(rounds, name, question_id, dataset, None)
        placed = _layout(trajectory_pieces(rows, decode, max_rounds=max_rounds))
        shown = min(len(rows), max_rounds)
        title = f"{name} — {dataset}, question {question_id}: rounds 1–{shown} of {len(rows)}"
        panels.append((placed, title))

    width_in = LINE_CHARS * CHAR_WIDTH_IN
    left_in, legend_in, title_in, gap_in = 0.2, 0.45, 0.3, 0.15
    heights = [(max((p[3] for p in placed), default=0) + 1) * LINE_HEIGHT_IN for placed, _ in panels]
    total_h = legend_in + sum(h + title_in + gap_in for h in heights)
    fig = _new_figure(width_in + 2 * left_in, total_h)
    top = total_h - legend_in
    for (placed, title), h in zip(panels, heights):
        top -= title_in
        _draw_panel(fig, top - h, h, width_in, left_in, placed, title)
        top -= h + gap_in
    fig.legend(handles=[Patch(facecolor=ACCEPTED_SHADES[0], label="accepted (shade alternates per round)"),
                        Patch(facecolor="white", edgecolor="grey", alpha=REJECTED_ALPHA,
                              label="rejected draft (struck through)"),
                        Patch(facecolor="white", edgecolor=CORRECTION_EDGE, label="target correction"),
                        Patch(facecolor="white", edgecolor=BONUS_EDGE, label="bonus token")],
               loc="upper center", ncol=4, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.0))
    paths = save_figure(fig, out_dir, stem)
    for name in config_names:
        for accepted_only, suffix in ((False, ""), (True, "_accepted")):
            page = render_trajectory_html(rounds, config_name=name, question_id=question_id, dataset=dataset,
                                          decode=decode, accepted_only=accepted_only)
            path = Path(out_dir) / f"{stem}_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}{suffix}.html"
            path.write_text(page, encoding="utf-8")
            paths.append(path)
    return paths
