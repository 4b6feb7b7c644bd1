"""The Python API works on one torch thread by default, as the command line does, unless the
user chose a count; the caller's count is restored afterwards."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import tightlip as t
import tightlip.bounds.registry as bound_registry
from tightlip.cli import app
from tightlip.errors import BadArgumentError
from tightlip.threads import library_threads, thread_count


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("TIGHTLIP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def three_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, 1),
        ({"TIGHTLIP_THREADS": "4"}, 4),
        ({"TIGHTLIP_THREADS": " 2 "}, 2),
        ({"TIGHTLIP_THREADS": "auto"}, None),
        ({"TIGHTLIP_THREADS": "0"}, None),
        ({"OMP_NUM_THREADS": "8"}, None),
        ({"MKL_NUM_THREADS": "8"}, None),
        ({"OMP_NUM_THREADS": "8", "TIGHTLIP_THREADS": "1"}, 1),
        ({"OMP_NUM_THREADS": ""}, 1),
    ],
)
def test_thread_count(environ, expected) -> None:
    assert thread_count(environ) == expected


@pytest.mark.parametrize("value", ["-1", "many", "1.5"])
def test_bad_thread_count(value) -> None:
    with pytest.raises(BadArgumentError, match="TIGHTLIP_THREADS"):
        thread_count({"TIGHTLIP_THREADS": value})


def test_library_threads_sets_and_restores(clean_env, three_threads) -> None:
    with library_threads():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 3
    clean_env.setenv("TIGHTLIP_THREADS", "2")
    with library_threads():
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 3
    clean_env.setenv("TIGHTLIP_THREADS", "auto")
    with library_threads():
        assert torch.get_num_threads() == 3


def _scipy_blas_threads() -> set[int]:
    import scipy.linalg  # noqa: F401  (loads scipy's BLAS)
    from threadpoolctl import threadpool_info

    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_library_threads_limit_scipys_blas_too(clean_env) -> None:
    """numpy/scipy load their own BLAS, which torch's count does not reach: inside the block it
    runs on the same count, and the caller's count comes back after."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):
        before = _scipy_blas_threads()
        with library_threads():
            assert _scipy_blas_threads() == {1}
        assert _scipy_blas_threads() == before


def test_library_threads_restores_after_an_error(clean_env, three_threads) -> None:
    with pytest.raises(RuntimeError), library_threads():
        raise RuntimeError("inside")
    assert torch.get_num_threads() == 3


def _threads_seen_by_bounds(monkeypatch) -> list[int]:
    seen: list[int] = []
    parse = bound_registry.parse_norm

    def spy(norm):
        seen.append(torch.get_num_threads())
        return parse(norm)

    monkeypatch.setattr(bound_registry, "parse_norm", spy)
    return seen


def test_bounds_run_on_one_thread(clean_env, three_threads) -> None:
    seen = _threads_seen_by_bounds(clean_env)
    model = t.build_model(t.ModelSpec(input_dim=6, widths=(5,), num_classes=3, activation="abs"))
    t.upper_bound(model, "2", "trivial")
    t.lower_bound(model, "2", "gradient", time_limit=1.0, steps=5)
    assert seen == [1, 1]
    assert torch.get_num_threads() == 3


def test_bounds_keep_the_users_count(clean_env, three_threads) -> None:
    clean_env.setenv("OMP_NUM_THREADS", "3")
    seen = _threads_seen_by_bounds(clean_env)
    model = t.build_model(t.ModelSpec(input_dim=6, widths=(5,), num_classes=3, activation="abs"))
    t.upper_bound(model, "2", "trivial")
    assert seen == [3]


def test_cli_refuses_a_bad_thread_count(clean_env, tmp_path) -> None:
    clean_env.setenv("TIGHTLIP_THREADS", "lots")
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "TIGHTLIP_THREADS" in result.stderr and len(result.stderr.strip().splitlines()) == 1
