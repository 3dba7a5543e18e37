"""RewardRunner (stage 2): a reward that raises, exits or times out on a row gives None for that row, a counted
`reward/<name>/errors` metric and a warning naming the function; never a crash of the run, never a silent 0."""
from __future__ import annotations

import asyncio
import math
import sys
import time
import warnings

import pytest

from rl_dlm.reward_runner import MAX_ROW_TIMEOUTS, RewardFunction, RewardRunner

COMPLETIONS = ["a", "bb", "BAD", "dddd", "eeeee"]


def call(runner, completions=COMPLETIONS, **columns):
    n = len(completions)
    return runner(["p"] * n, completions, [[1]] * n, {"gold": list(range(n)), **columns})


def length(completions, **kw):
    return [float(len(c)) for c in completions]


def values(result, name):
    return [None if math.isnan(v) else v for v in result.per_function[name].tolist()]


def test_clean_functions_log_zero_errors_and_weighted_totals():
    runner = RewardRunner([RewardFunction(length, weight=2.0, name="len"),
                           RewardFunction(lambda completions, **kw: [1.0] * len(completions), weight=0.0, name="one")])
    result = call(runner)
    assert values(result, "len") == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert values(result, "one") == [1.0] * 5  # weight 0: still scored and logged, not in the total
    assert result.total.tolist() == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert result.stats["reward/len/errors"] == 0.0 and result.stats["reward/one/errors"] == 0.0


def test_a_row_that_raises_gives_none_a_counted_metric_and_a_warning_naming_the_function():
    def picky(completions, **kw):
        if any(c == "BAD" for c in completions):
            raise KeyError("no gold for BAD")
        return length(completions)

    runner = RewardRunner([RewardFunction(picky, name="picky"), RewardFunction(length, name="len")])
    with pytest.warns(UserWarning, match=r"reward function 'picky' gave None on 1/5 rows .*KeyError"):
        result = call(runner)
    assert values(result, "picky") == [1.0, 2.0, None, 4.0, 5.0]  # None, not 0, for the failing row only
    assert result.stats["reward/picky/errors"] == 1.0
    assert result.total[2].item() == 3.0  # the other function still counts for that row
    assert result.stats["reward"] == pytest.approx((2 + 4 + 3 + 8 + 10) / 5)


def test_sys_exit_and_non_numeric_values_are_errors_not_crashes():
    def exits(completions, **kw):
        sys.exit(0)

    def words(completions, **kw):
        return ["high" if c == "BAD" else 1.0 for c in completions]

    runner = RewardRunner([RewardFunction(exits, name="exits"), RewardFunction(words, name="words")])
    with pytest.warns(UserWarning, match="'exits' gave None on 5/5 rows .*SystemExit"), \
            pytest.warns(UserWarning, match=r"'words' gave None on 1/5 rows \(1 raised; first: row 2"):
        result = call(runner)
    assert values(result, "exits") == [None] * 5 and result.stats["reward/exits/errors"] == 5.0
    assert values(result, "words") == [1.0, 1.0, None, 1.0, 1.0] and result.stats["reward/words/errors"] == 1.0


def test_a_row_that_times_out_gives_none_for_that_row_only():
    def slow_on_bad(completions, **kw):
        if "BAD" in completions:
            time.sleep(3)  # the thread is abandoned (daemon); it never blocks the interpreter's exit
        return length(completions)

    runner = RewardRunner([RewardFunction(slow_on_bad, name="slow", timeout=0.2)])
    start = time.time()
    with pytest.warns(UserWarning, match=r"'slow' gave None on 1/5 rows \(0 raised, 1 timed out after 0.2s"):
        result = call(runner)
    assert time.time() - start < 2.0
    assert values(result, "slow") == [1.0, 2.0, None, 4.0, 5.0]
    assert result.stats["reward/slow/errors"] == 1.0
    assert math.isnan(result.total[2].item()) and result.stats["reward/none_rows"] == 1.0


def test_a_function_that_hangs_everywhere_costs_a_bounded_time():
    def hangs(completions, **kw):
        time.sleep(3)

    runner = RewardRunner([RewardFunction(hangs, name="hangs", timeout=0.1), RewardFunction(length, name="len")])
    start = time.time()
    with pytest.warns(UserWarning, match=f"not retried after {MAX_ROW_TIMEOUTS} timeouts"):
        result = call(runner)
    assert time.time() - start < 0.1 * (2 + MAX_ROW_TIMEOUTS) + 0.5
    assert values(result, "hangs") == [None] * 5 and result.stats["reward/hangs/errors"] == 5.0
    assert values(result, "len") == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_batch_timeout_that_single_rows_do_not_hit_says_to_raise_the_timeout():
    def per_row_cost(completions, **kw):
        time.sleep(0.1 * len(completions))
        return length(completions)

    runner = RewardRunner([RewardFunction(per_row_cost, name="cost", timeout=0.3)])
    with pytest.warns(UserWarning, match="timed out after 0.3s on a batch of 5 but not on single rows"):
        result = call(runner)
    assert values(result, "cost") == [1.0, 2.0, 3.0, 4.0, 5.0] and result.stats["reward/cost/errors"] == 0.0


def test_a_wrong_length_return_is_a_bug_and_raises():
    runner = RewardRunner([RewardFunction(lambda completions, **kw: [1.0], name="short")])
    with pytest.raises(ValueError, match="'short' returned 1 values for 5 completions"):
        call(runner)


def test_columns_are_passed_by_name_and_async_functions_are_awaited():
    def gold_only(completions, gold):  # no **kwargs: only the columns it names are passed
        return [float(g) for g in gold]

    async def later(completions, **kw):
        await asyncio.sleep(0)
        return [0.5] * len(completions)

    runner = RewardRunner([RewardFunction(gold_only), RewardFunction(later)], correct="gold_only")
    result = call(runner)
    assert values(result, "gold_only") == [0.0, 1.0, 2.0, 3.0, 4.0] and values(result, "later") == [0.5] * 5
    assert runner.is_correct(result.per_function).tolist() == [False, True, True, True, True]


def test_config_mistakes_fail_at_construction():
    with pytest.raises(ValueError, match="task.rewards is empty"):
        RewardRunner([])
    with pytest.raises(ValueError, match="unique"):
        RewardRunner([RewardFunction(length, name="x"), RewardFunction(length, name="x")])
    with pytest.raises(ValueError, match="correct_reward='nope'"):
        RewardRunner([RewardFunction(length)], correct="nope")


def test_nan_and_inf_are_counted_as_errors_per_row_and_warned_once_naming_the_function():
    """A NaN or inf is a broken score, not "not applicable" (that is None): the row becomes None and counts in
    reward/<name>/errors, with one warning per function, in the batch call and in the row-by-row retry alike."""
    def broken(completions, **kw):
        return [math.nan if c == "BAD" else math.inf if c == "bb" else None if c == "a" else 1.0
                for c in completions]

    def raises_once_then_nan(completions, **kw):
        if len(completions) > 1:
            raise RuntimeError("batch")
        return [-math.inf if completions[0] == "dddd" else 0.5]

    runner = RewardRunner([RewardFunction(broken, name="broken"), RewardFunction(raises_once_then_nan, name="rows")])
    with pytest.warns(UserWarning) as caught:
        result = call(runner)
    assert values(result, "broken") == [None, None, None, 1.0, 1.0]
    assert result.stats["reward/broken/errors"] == 2.0  # NaN and inf; the None row is "not applicable"
    assert values(result, "rows") == [0.5, 0.5, 0.5, None, 0.5]
    assert result.stats["reward/rows/errors"] == 1.0
    texts = [str(w.message) for w in caught]
    assert sum("'broken'" in t and "NaN or inf" in t for t in texts) == 1
    assert sum("'rows'" in t and "NaN or inf" in t for t in texts) == 1
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        result = call(runner)
    assert result.stats["reward/broken/errors"] == 2.0  # still counted every step ...
    assert not any("NaN or inf" in str(w.message) for w in again)  # ... but warned once
