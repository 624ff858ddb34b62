"""The thread count the command line picks when OMP_NUM_THREADS is unset."""

from __future__ import annotations

import os

import pytest
import torch

from vrnnkit.resources import threads


def test_idle_cores_rounds_and_keeps_one():
    assert threads.idle_cores(2, 0.1) == 2
    assert threads.idle_cores(2, 1.2) == 1
    assert threads.idle_cores(2, 3.0) == 1
    assert threads.idle_cores(16, 4.4) == 12
    assert threads.idle_cores(4, -1.0) == 4


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_omp_num_threads_wins(restore_threads, monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 50.0, 50.0))
    assert threads.choose_threads({"OMP_NUM_THREADS": "2"}) is None
    assert torch.get_num_threads() == 2


def test_a_busy_machine_gets_fewer_threads_an_idle_one_keeps_torchs_choice(restore_threads, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    torch.set_num_threads(2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert threads.choose_threads({}) == 2 and torch.get_num_threads() == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (1.9, 1.0, 1.0))
    assert threads.choose_threads({}) == 1 and torch.get_num_threads() == 1
