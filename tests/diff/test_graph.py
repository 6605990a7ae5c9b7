"""Groups of graph tensors compared together fit the memory budget."""

from __future__ import annotations


def test_layer_groups_fit_the_memory_budget():
    from elan_deploy.diff.graph import GraphTensor, plan_chunks

    tensors = [GraphTensor(f"t{i}", "Conv", i, size) for i, size in enumerate([40, 30, 50, None, 10, 100])]
    chunks = plan_chunks(tensors, budget_bytes=80)
    assert [[t.name for t in c] for c in chunks] == [["t0", "t1"], ["t2"], ["t3"], ["t4"], ["t5"]]
    assert [t for c in chunks for t in c] == tensors
