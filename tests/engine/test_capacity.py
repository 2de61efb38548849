"""The defaults that fit the box: ORT threads from usable cores, slots from the KV budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.engine import capacity
from service.engine.kv_cache import KVCacheSpec


def test_threads_leave_one_core_to_the_event_loop() -> None:
    assert capacity.intra_op_threads(0, "cpu", cores=2) == 1
    assert capacity.intra_op_threads(0, "cpu", cores=16) == 15
    assert capacity.intra_op_threads(0, "cpu", cores=1) == 1


def test_threads_on_cuda_only_launch_kernels_and_an_explicit_setting_wins() -> None:
    assert capacity.intra_op_threads(0, "cuda", cores=16) == 1
    assert capacity.intra_op_threads(3, "cpu", cores=2) == 3


def test_cgroup_quota_bounds_the_usable_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quota = tmp_path / "cpu.max"
    monkeypatch.setattr(capacity, "_CGROUP_CPU_MAX", quota)
    quota.write_text("150000 100000\n")  # a Kubernetes limit of 1.5 CPUs
    assert capacity.usable_cores() == 1
    quota.write_text("max 100000\n")
    assert capacity.usable_cores() >= 1


def test_slots_follow_the_budget_up_to_the_device_cap() -> None:
    gpt = KVCacheSpec(num_layers=4, kv_heads=2, head_dim=48, max_len=2048)  # shakespeare-gpt
    assert gpt.bytes_per_slot == 2 * 4 * 2 * 2048 * 48 * 4
    assert capacity.slot_count(None, gpt.bytes_per_slot, 1 << 30, "cpu") == 64
    assert capacity.slot_count(None, gpt.bytes_per_slot, 1 << 30, "cuda") == (1 << 30) // gpt.bytes_per_slot
    assert capacity.slot_count(None, gpt.bytes_per_slot, 100 << 20, "cpu") == 16  # 6 MiB a slot
    assert capacity.slot_count(None, gpt.bytes_per_slot, 1, "cpu") == 1  # never zero
    assert capacity.slot_count(16, gpt.bytes_per_slot, 1 << 30, "cpu") == 16
