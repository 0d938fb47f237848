"""metrics.observe_all: the same histogram as observing each amount, on fewer writes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from felund.metrics import observe_all

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def _exposition(amounts: list[float], bulk: bool) -> str:
    registry = CollectorRegistry()
    hist = Histogram("felund_test_seconds", "a test histogram", buckets=BUCKETS, registry=registry)
    if bulk:
        observe_all(hist, amounts)
    else:
        for amount in amounts:
            hist.observe(amount)
    text = generate_latest(registry).decode()
    return "\n".join(line for line in text.splitlines() if "_created" not in line)  # a clock


# Integer-valued amounts keep the sum exact whatever the order of the additions.
_AMOUNTS = st.lists(
    st.one_of(st.sampled_from([0.0, *map(float, BUCKETS), 1e9]), st.integers(0, 400).map(float)),
    max_size=50,
)


@given(_AMOUNTS)
def test_observe_all_is_observe_of_each(amounts: list[float]) -> None:
    assert _exposition(amounts, bulk=True) == _exposition(amounts, bulk=False)


def test_an_amount_on_a_bound_falls_in_that_bucket() -> None:
    text = _exposition([0.025, 0.0251], bulk=True)
    assert 'felund_test_seconds_bucket{le="0.025"} 1.0' in text
    assert 'felund_test_seconds_bucket{le="0.05"} 2.0' in text
