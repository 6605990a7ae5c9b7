"""What an engine is built from: a changed export rewrite is another model."""

from __future__ import annotations


def test_a_changed_export_rewrite_is_another_model(bundled, monkeypatch) -> None:
    """Engines and exports cached from an earlier form of the graph are not reused under the same version."""
    from elan_deploy.runtimes import source as source_module

    before = source_module.ModelSource(bundled).fingerprint()
    assert source_module.ModelSource(bundled).fingerprint() == before  # stable while the code is
    monkeypatch.setattr(source_module, "export_code_digest", lambda: "another-rewrite")
    assert source_module.ModelSource(bundled).fingerprint() != before


def test_the_size_rules_carry_the_scale_and_the_window_multiple() -> None:
    from elan_deploy.geometry import SizeRules
    from elan_deploy.model import load_bundled
    from elan_deploy.runtimes import ModelSource

    assert ModelSource(load_bundled()).size_rules == SizeRules(scale=4, multiple=16)
