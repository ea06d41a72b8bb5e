"""A sink on a full disk: a failed write leaves no torn bytes, the file stays readable and the
retry adds each row once (simulated with a file-size limit, in a child process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import resource, signal, sys, warnings
    import numpy as np, torch
    import probhook
    from probhook.sink import SinkError

    path = sys.argv[1]
    model = torch.nn.Linear(8, 16)
    cap = probhook.capture_probs(model, sink=path, flush_rows=10_000, flush_seconds=3600)
    cap.start()
    with torch.no_grad():
        model(torch.randn(1, 8))  # the first row is written at once: the stream has a schema
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1200, hard))
    with torch.no_grad():
        for i in range(30):
            model(torch.randn(1, 8))  # single rows wait in the queue
    try:
        next(iter(cap.heads.values())).buffer.flush()
    except SinkError as err:
        print("failed:", err, file=sys.stderr)
    else:
        raise SystemExit("the write should have failed")
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
    cap.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no torn block in the file
        view = probhook.load(path)
    assert np.array_equal(view.rows().seq, np.arange(31)), view.rows().seq
    assert np.array_equal(view.probs, cap.probs)
    print("ok")
    """
)


@pytest.mark.parametrize("suffix", [".arrows", ".parquet"])
def test_a_write_failing_half_way_leaves_a_readable_file_with_each_row_once(tmp_path, suffix):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / f"rows{suffix}")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"
    assert "could not be written" in out.stderr


class _FullDisk:
    """A sink that refuses every write while ``full`` is set."""

    def __init__(self):
        self.full, self.seq, self.closed = True, [], False

    def write(self, rows):
        if self.full:
            raise OSError(28, "No space left on device")
        self.seq += [int(s) for s in rows.seq]

    def close(self):
        self.closed = True


def test_batches_a_full_disk_refused_are_written_once_space_returns():
    import numpy as np
    import torch

    import probhook
    from probhook.sink import SinkError

    sink = _FullDisk()
    model = torch.nn.Linear(4, 3)
    cap = probhook.capture_probs(model, sink=sink)
    cap.start()
    inputs = [torch.randn(2, 4) for _ in range(3)]
    for i, x in enumerate(inputs):
        with pytest.raises(SinkError, match=r"2 rows .*No space left"), cap.keys_for([i, -i]):
            model(x)  # batches are written during the forward, which raises for the full disk
    with pytest.raises(SinkError):
        cap.close()
    assert len(cap) == 0  # nothing stored before the sink has it
    sink.full = False
    cap.close()  # the refused batches are written now, in order, once each
    assert sink.seq == list(range(6))
    assert sink.closed
    assert cap.keys == [0, 0, 1, -1, 2, -2]
    expected = torch.softmax(model(torch.cat(inputs)), -1).detach().numpy()
    assert np.array_equal(cap.probs, expected)


class _FailingClose(_FullDisk):
    """Takes rows, but fails to close while ``full`` is set (Parquet on a full disk)."""

    def write(self, rows):
        self.seq += [int(s) for s in rows.seq]

    def close(self):
        if self.full:
            raise OSError(28, "No space left on device")
        super().close()


def test_a_sink_failing_to_close_raises_a_sink_error_and_closes_when_called_again():
    import torch

    import probhook
    from probhook.sink import SinkError

    sink = _FailingClose()
    model = torch.nn.Linear(4, 3)
    cap = probhook.capture_probs(model, sink=sink)
    closing = r"could not be closed .*No space left.*close\(\) again"
    with pytest.raises(SinkError, match=closing), cap:
        model(torch.randn(2, 4))
    sink.full = False
    cap.close()
    assert sink.closed
    assert sink.seq == [0, 1]
