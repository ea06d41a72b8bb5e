"""What a person sees on a terminal: the table and the progress bar do not write over each other,
and the plot shows the review threshold."""

import io

import matplotlib

from probhook import demo
from probhook.cli import build_parser, classify, main


class Terminal(io.StringIO):
    """stdout and stderr of one terminal (tqdm draws its bar when it sees one)."""

    def isatty(self):
        return True

    def screen(self):
        """The lines as a terminal shows them: a carriage return goes back to the line's start
        and what follows overwrites it; tqdm's clear-line escape empties the line."""
        shown = []
        for raw in self.getvalue().replace("\x1b[A", "").split("\n"):
            line: list[str] = []
            for part in raw.replace("\x1b[2K", "\r\x00").split("\r"):
                if part.startswith("\x00"):
                    line, part = [], part[1:]
                for col, ch in enumerate(part):  # from the line's start: overwrite
                    if col < len(line):
                        line[col] = ch
                    else:
                        line.append(ch)
            shown.append("".join(line).rstrip())
        return shown


def test_the_table_header_is_not_written_over_the_progress_bar(tmp_path):
    args = build_parser().parse_args(
        ["run", str(demo.SAMPLES_DIR / "memo_1.pdf"), "--out", str(tmp_path / "r.parquet")]
    )
    args.demo_model_note, args.model = False, demo.MODEL_DIR
    tty = Terminal()
    assert classify(args, out=tty, err=tty) == 0
    screen = tty.screen()
    header = next(line for line in screen if "predicted" in line)
    assert header.split() == ["document", "page", "predicted", "conf", "margin", "top-3"]
    row = next(line for line in screen if line.startswith("memo_1.pdf"))
    assert row.split()[:3] == ["memo_1.pdf", "1", "memo"]
    assert any(line.startswith("classifying: 100%") for line in screen)  # the bar was drawn


def test_the_plot_draws_the_min_confidence_threshold(tmp_path, capsys):
    plot = tmp_path / "confidence.svg"
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text: searchable
        code = main(["run", str(demo.SAMPLES_DIR), "--out", str(tmp_path / "r.parquet"), "-q",
                     "--plot", str(plot), "--min-confidence", "0.75"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    svg = plot.read_text(encoding="utf-8")
    assert "threshold 0.75" in svg
    assert "rows below" in svg
