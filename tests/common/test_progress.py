"""sosm.common.progress: a warning shown while a bar is drawn gets its own line above the bar."""
import warnings

from sosm.common.progress import progress_bar


def test_a_warning_does_not_land_inside_the_bar_line(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        before = warnings.showwarning
        with progress_bar(total=4, desc="work", mininterval=0) as bar:
            bar.update(2)
            warnings.warn("careful", UserWarning)
            bar.update(2)
        assert warnings.showwarning is before, "the previous showwarning is put back"
    err = capsys.readouterr().err
    [line] = [line for line in err.split("\n") if "UserWarning: careful" in line]
    assert line.split("\r")[-1].startswith(__file__), repr(line)  # the bar was cleared before the warning
    assert "work: 100%" in err
