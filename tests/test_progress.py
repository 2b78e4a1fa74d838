"""segattn.progress: plain periodic lines without a terminal, silent for short loops, rank 0 only."""

from segattn.progress import Progress, progress


def test_plain_lines_every_interval_and_a_closing_line(capsys):
    items = list(progress(range(5), desc="scan", interval=0.0))
    assert items == [0, 1, 2, 3, 4]
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("scan: 1/5 (20 %)") and err[-1].startswith("scan: done, 5/5")


def test_short_loops_and_disabled_progress_print_nothing(capsys):
    assert sum(progress(range(3), desc="quick")) == 3  # default interval 10 s
    assert list(progress(iter([1, 2]), desc="off", enabled=False, interval=0.0)) == [1, 2]
    assert capsys.readouterr().err == ""


def test_unknown_length_and_write(capsys):
    bar = Progress(iter("ab"), desc="gen", interval=0.0)
    assert "".join(bar) == "ab"
    bar.write("a warning")
    err = capsys.readouterr().err
    assert "gen: 1 it" in err and "a warning" in err


def test_early_break_closes(capsys):
    bar = Progress(range(10), desc="stop", interval=0.0)
    for i in bar:
        if i == 2:
            break
    bar.close()
    assert capsys.readouterr().err.splitlines()[-1].startswith("stop: done, 2/10")  # items finished
