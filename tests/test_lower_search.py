"""The gradient search's plumbing: options, search state, reproducibility.

The soundness and strength of the lower bounds are tested in test_soundness.py; here the
package structure: one options object (keywords of ``lower_bound`` map onto it, unknown ones
are refused with the list of choices), one search state, and a seed that reproduces a search.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tightlip import lower_bound
from tightlip.bounds.lower import GradientOptions, gradient_lower_bound
from tightlip.bounds.lower.state import SearchState
from tightlip.errors import BadArgumentError
from tightlip.layers import make_activation
from tightlip.model import LayerChain, to_chain

QUICK = {"steps": 15, "num_random": 8, "screen": 64, "refine_steps": 5, "search_rounds": 2}


def _chain(activation: str = "abs", seed: int = 0) -> LayerChain:
    torch.manual_seed(seed)
    return to_chain(
        nn.Sequential(
            nn.Linear(5, 6, bias=False), make_activation(activation), nn.Linear(6, 3, bias=False)
        ).double()
    )


@pytest.mark.parametrize("norm", ["1", "2", "inf"])
def test_a_seed_reproduces_the_search_and_options_equal_keywords(norm: str) -> None:
    chain = _chain()
    first = lower_bound(chain, norm, "gradient", seed=3, **QUICK)
    again = lower_bound(chain, norm, "gradient", seed=3, **QUICK)
    as_object = gradient_lower_bound(chain, norm, options=GradientOptions(seed=3, **QUICK))
    for other in (again, as_object):
        assert other.value == first.value
        assert other.details["witness"] == first.details["witness"]
        assert other.details["evaluations"] == first.details["evaluations"]
    other_seed = lower_bound(chain, norm, "gradient", seed=4, **QUICK)
    assert other_seed.details["witness"] != first.details["witness"]


def test_keywords_override_an_options_object() -> None:
    chain = _chain("relu")
    base = GradientOptions(steps=5, num_random=4, screen=8)
    cert = gradient_lower_bound(chain, "2", options=base, steps=0, refine_steps=0)
    assert cert.details["ascent_value"] == cert.details["sampled_value"]  # no ascent ran
    assert base.steps == 5  # frozen: the object is not changed


def test_unknown_and_invalid_options_are_refused() -> None:
    chain = _chain()
    with pytest.raises(BadArgumentError, match="stepz.*choose from.*steps"):
        lower_bound(chain, "2", "gradient", stepz=3)
    with pytest.raises(BadArgumentError, match="refresh_every"):
        GradientOptions(refresh_every=0)
    with pytest.raises(BadArgumentError, match="num_random"):
        GradientOptions(num_random=-1)
    with pytest.raises(BadArgumentError, match="no starting points"):
        lower_bound(chain, "2", "gradient", num_random=0)


def test_search_state_budget_and_reserve() -> None:
    unlimited = SearchState.seeded(0)
    assert not unlimited.out_of_time() and unlimited.reserve == 0.0
    spent = SearchState.seeded(0, time_limit=1.0)
    spent.start -= 0.97  # 0.97 s elapsed: inside the 5 % reserve, not past the limit
    assert spent.out_of_time() and not spent.out_of_time(keep_reserve=False)
    spent.count(5)
    spent.count(2)
    assert spent.evaluations == 7
    assert math.isclose(spent.reserve, 0.05)


def test_time_limit_zero_still_reports_a_witness() -> None:
    cert = lower_bound(_chain(), "inf", "gradient", time_limit=0.0, **QUICK)
    assert cert.details["time_limited"] and cert.value > 0
