"""TurnBudget: a few steps per reactor turn, the rest in the next turns, in order, none dropped."""

from __future__ import annotations

import pytest

from mtasts_resolver.turns import TurnBudget


class Turns:
    """A reactor's turns, as far as ``callLater(0)`` goes: what a turn schedules runs in the next one.

    (Twisted's runUntilCurrent inserts calls made while it runs only after
    it; ``task.Clock.advance(0)`` would run them at once.)
    """

    def __init__(self) -> None:
        self.calls: list = []

    def callLater(self, delay, func, *args):
        assert delay == 0
        self.calls.append((func, args))
        return object()   # a delayed call, as far as the budget looks at it

    def seconds(self) -> float:
        return 0.0

    def next(self) -> None:
        calls, self.calls = self.calls, []
        for func, args in calls:
            func(*args)


@pytest.mark.parametrize("per_turn, asked, now, per_later_turn", [
    (8, 3, 3, []),
    (8, 8, 8, []),
    (8, 20, 8, [8, 4]),
    (1, 3, 1, [1, 1]),
])
def test_a_turn_lets_per_turn_through_and_the_rest_wait_in_order(per_turn, asked, now, per_later_turn):
    clock = Turns()
    budget = TurnBudget(clock, per_turn)
    went: list[int] = []
    for i in range(asked):
        budget.turn().addCallback(lambda _, i=i: went.append(i))
    assert went == list(range(now)) and len(budget) == asked - now
    for count in per_later_turn:
        before = len(went)
        clock.next()
        assert len(went) - before == count
    assert went == list(range(asked)) and len(budget) == 0
    clock.next()
    assert not clock.calls   # an idle budget schedules nothing


def test_a_newcomer_waits_behind_those_already_waiting_even_with_budget_left():
    clock = Turns()
    budget = TurnBudget(clock, 2)
    went: list[str] = []
    for name in "abcde":
        budget.turn().addCallback(lambda _, name=name: went.append(name))
    clock.next()                  # c and d go; e still waits
    budget.turn().addCallback(lambda _: went.append("f"))
    assert went == ["a", "b", "c", "d"]
    clock.next()
    assert went == ["a", "b", "c", "d", "e", "f"]


def test_the_budget_comes_back_every_turn():
    clock = Turns()
    budget = TurnBudget(clock, 2)
    for _ in range(5):
        assert budget.turn().called and budget.turn().called
        assert not budget.turn().called
        clock.next()       # the one that waited goes
        clock.next()
