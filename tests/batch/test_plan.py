"""Planning outputs: distinct names for inputs that share a stem."""

from __future__ import annotations

from pathlib import Path

from elan_deploy.batch.plan import distinct_names


def test_distinct_names_for_shared_stems() -> None:
    names = distinct_names([Path("a.jpg"), Path("A.png"), Path("b.png")])
    assert names == {Path("a.jpg"): "a.jpg.png", Path("A.png"): "A.png.png", Path("b.png"): "b.png"}
