"""What train_func prints or warns reaches the flow-run log, rate-limited (policy and tee: no cluster)."""
from __future__ import annotations

import sys
import warnings

from trainflow.distributors.worker_output import RateLimit, forward_output


def test_a_burst_passes_then_a_steady_rate_and_what_was_refused_is_counted():
    limit = RateLimit(burst=3, per_second=1.0)
    assert [limit.allow(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert limit.take_dropped() == 2 and limit.take_dropped() == 0
    assert limit.allow(0.5) is False  # half a line earned
    assert limit.allow(1.1) is True  # 1.1 earned since 0.0
    assert limit.allow(100.0) and limit.tokens == 2.0  # never more than the burst


def test_prints_and_warnings_are_copied_with_the_rank_and_the_console_keeps_everything(capsys):
    lines: list[str] = []
    with forward_output(lines.append, rank=1, limit=RateLimit(burst=5, per_second=0.0), clock=lambda: 0.0):
        print("epoch 1 loss 0.5")
        warnings.warn("lr is high", UserWarning, stacklevel=1)
        for i in range(10):
            print(f"step {i}")
        sys.stderr.write("on stderr: the console's only\n")
        sys.stdout.write("no newline at the end")
    assert lines[0] == "rank 1: epoch 1 loss 0.5"
    assert lines[1].startswith("rank 1: UserWarning: lr is high (test_worker_output.py:")
    assert lines[2:5] == ["rank 1: step 0", "rank 1: step 1", "rank 1: step 2"]
    # 7 steps and the unfinished last line did not pass; said once, at the end
    assert lines[5:] == ["rank 1: (8 more line(s) not shown here: over the rate limit)"]
    seen = capsys.readouterr()
    assert "step 9" in seen.out and "no newline at the end" in seen.out and "on stderr" in seen.err
    assert sys.stdout is not None and not hasattr(sys.stdout, "finish")  # streams restored


def test_a_gone_watcher_does_not_stop_training():
    def broken(line: str) -> None:
        raise ConnectionError("the queue actor is gone")

    with forward_output(broken, rank=0):
        print("still training")
