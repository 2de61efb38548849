import pytest

from service.engine.kv_cache import SlotAllocator


def test_lowest_free_slot_is_reused_first_so_rows_stay_packed():
    slots = SlotAllocator(4)
    assert [slots.allocate() for _ in range(3)] == [0, 1, 2]
    slots.release(1)
    assert slots.allocate() == 1  # the hole, not slot 3
    slots.release(2)
    assert slots.allocate() == 2
    assert slots.allocate() == 3


def test_exhausted_allocator_raises_and_double_release_is_refused():
    slots = SlotAllocator(1)
    slot = slots.allocate()
    with pytest.raises(RuntimeError):
        slots.allocate()
    slots.release(slot)
    with pytest.raises(ValueError):
        slots.release(slot)
    assert (slots.used, slots.free) == (0, 1)


def test_compaction_moves_the_highest_used_slot_into_the_lowest_hole():
    slots = SlotAllocator(6)
    for _ in range(5):
        slots.allocate()
    slots.release(0)
    slots.release(2)
    assert slots.compaction_move() == (4, 0)
    assert slots.compaction_move() == (3, 2)
    assert slots.compaction_move() is None  # rows 0..2 used, nothing above a hole
    assert (slots.used, slots.free) == (3, 3)
    assert slots.allocate() == 3  # rows 0..2 are packed: the next one goes right above them
