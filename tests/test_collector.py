"""The cycle collector's pause (dicesim/collector.py): off inside, back as it was after, nested or not."""

from __future__ import annotations

import gc

import pytest

from dicesim.collector import collector_paused


@pytest.mark.parametrize("was_on", [True, False])
def test_pause_restores_the_collector_state(was_on):
    before = gc.isenabled()
    (gc.enable if was_on else gc.disable)()
    try:
        with collector_paused():
            assert not gc.isenabled()
            with collector_paused():  # nested (recommend's search around simulate's own pause)
                assert not gc.isenabled()
            assert not gc.isenabled()  # the inner pause leaves it off: the outer one still holds
        assert gc.isenabled() == was_on
        with pytest.raises(RuntimeError), collector_paused():
            raise RuntimeError("an error inside still resumes collection")
        assert gc.isenabled() == was_on
    finally:
        (gc.enable if before else gc.disable)()
